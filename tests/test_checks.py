"""The checker itself, and every exercise of every lesson through it: the reference passes, each known mistake
is rejected with its own hint, an unfinished stub is told it is not done yet, and every wrong answer written
the way a student might (the ``WRONG`` list of each tests/test_checks_lessonNN.py) is rejected with the
expected words. The lesson files test what is particular to each exercise."""
from __future__ import annotations

import importlib
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from course_lib.checks import Case, Exercise, check, compare_outputs, exercises, get_exercise
from course_lib.publish.editions import exercise_names

from kernel_env import course_notebooks

IN_NOTEBOOKS = [name for path in course_notebooks() for name in exercise_names(nbformat.read(path, 4))]
# The wrong answers of every lesson's test file: (exercise, answer, a fragment the check's message must contain).
WRONG = [answer for path in sorted(Path(__file__).parent.glob("test_checks_lesson*.py"))
         for answer in getattr(importlib.import_module(path.stem), "WRONG", [])]
# Every exercise a notebook asks for and every registered one: a mismatch fails the first test below, and the
# contract still runs on each side.
ALL_EXERCISES = sorted(set(IN_NOTEBOOKS) | set(exercises()))


def test_every_exercise_in_the_notebooks_is_registered_and_none_without_a_notebook():
    assert sorted(IN_NOTEBOOKS) == sorted(exercises())


@pytest.mark.parametrize("name, answer, fragment", WRONG)
def test_wrong_answers_written_as_students_would_are_rejected(name, answer, fragment):
    result = check(name, answer)
    assert not result.passed and fragment in result.message, result.message


def test_every_lesson_with_exercises_has_wrong_answers_for_each_exercise():
    answered = {answer.values[0] if hasattr(answer, "values") else answer[0] for answer in WRONG}
    lessons_with_lists = {name[:2] for name in answered}
    missing = sorted(name for name in exercises() if name[:2] in lessons_with_lists and name not in answered)
    assert not missing, f"exercises without wrong answers in their lesson's WRONG list: {missing}"


@pytest.mark.parametrize("name", ALL_EXERCISES)
def test_reference_solution_passes_its_check(name):
    result = check(name, get_exercise(name).reference)
    assert result.passed, result.message
    assert result.message.startswith(f"[passed] {name}")


@pytest.mark.parametrize("name", ALL_EXERCISES)
def test_each_known_mistake_is_rejected_with_its_own_hint(name):
    exercise = get_exercise(name)
    assert len(exercise.mistakes) >= 2
    for mistake in exercise.mistakes:
        result = check(name, mistake.wrong)
        assert not result.passed, f"{name}: a known mistake passed the check"
        assert result.hint == mistake.hint, f"{name}: expected hint {mistake.hint!r}, got {result.hint!r}"
        assert "Hint: " + mistake.hint in result.message


@pytest.mark.parametrize("name", ALL_EXERCISES)
def test_unfinished_stub_is_told_it_is_not_done_yet(name):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {name}: fill me in")

    result = check(name, stub)
    assert not result.passed and "not done yet" in result.message


# ------------------------------------------------------------------ types count: nothing is converted into agreement
@pytest.mark.parametrize("got, expected, message", [
    (torch.tensor([[1.0, 0.0], [1.5, 1.0]]), torch.tensor([[True, False], [True, True]]),
     "expected a torch.bool tensor, got torch.float32"),
    (torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[True, False], [True, True]]),
     "expected a torch.bool tensor, got torch.float32"),  # 0/1 floats are not a boolean mask
    (torch.tensor([1, 0]), torch.tensor([True, False]), "expected a torch.bool tensor, got torch.int64"),
    (torch.tensor([1, 0], dtype=torch.int32), torch.tensor([1, 0]), "expected a torch.int64 tensor, got torch.int32"),
    (torch.tensor([3.0, 2.0]), torch.tensor([3, 2]), "expected a torch.int64 tensor, got torch.float32"),
    (torch.tensor([3, 2]), torch.tensor([3.0, 2.0]), "expected a floating tensor (like torch.float32), got torch.int64"),
    ([3.0, 2.0], torch.tensor([3.0, 2.0]), "expected a torch.Tensor, got list"),
    (np.array([3.0, 2.0]), torch.tensor([3.0, 2.0]), "expected a torch.Tensor, got a NumPy float64 array"),
    (np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64), "expected a NumPy array of integer dtype (like int64), got "
                                                          "float64"),
    (np.array([1, 0]), np.array([True, False]), "expected a NumPy array of boolean dtype"),
    ([[0, 1], [1, 0]], np.array([[0, 1], [1, 0]]), "expected a NumPy array, got list"),
    (torch.zeros(2), np.zeros(2), "expected a NumPy array, got a torch.float32 tensor"),
    (3.0, 3, "expected an int, got float 3.0"),
    (True, 1, "expected an int, got bool True"),
    (torch.tensor(3), 3, "expected an int, got a torch.int64 tensor of shape ()"),
    (1, True, "expected a bool, got int 1"),
    ("0.5", 0.5, "expected a number, got str '0.5'"),
    (torch.tensor(0.5), 0.5, "expected a number, got a torch.float32 tensor"),
    ([1, 2.0], [1, 2], "item 1: expected an int, got float 2.0"),
    ({"ids": torch.tensor([1.0])}, {"ids": torch.tensor([1])}, "ids: expected a torch.int64 tensor, got torch.float32"),
    ({"ids": torch.tensor([1])}, {"ids": torch.tensor([1]), "mask": torch.tensor([1])},
     "expected the keys ['ids', 'mask'], got ['ids']"),
    (["un", "aff"], ["un", "##aff"], "expected ['un', '##aff'], got ['un', 'aff']"),
    (torch.tensor([0.0, 0.0]), torch.tensor([0.0, float("-inf")]),
     "values differ from the reference at index (1,): expected -inf, got 0"),
])
def test_an_answer_of_another_type_fails_with_a_message_naming_the_expected_type(got, expected, message):
    problem = compare_outputs(got, expected)
    assert problem is not None and message in problem, problem


@pytest.mark.parametrize("got, expected", [
    (torch.tensor([0.5, 0.25], dtype=torch.float64), torch.tensor([0.5, 0.25])),  # any floating precision
    (torch.tensor([0.5, 0.25], dtype=torch.float16), torch.tensor([0.5, 0.25])),
    (np.array([1, 2], dtype=np.int32), np.array([1, 2], dtype=np.int64)),  # NumPy: the same kind of dtype
    (np.array([0.5], dtype=np.float32), np.array([0.5])),
    (np.int64(3), 3),  # NumPy integers count as integers
    (np.float32(0.5), 0.5),
    (2, 2.0),  # an int is a real number
    (np.bool_(True), True),
    (("a", "b"), ["a", "b"]),  # a tuple where a list is expected
    (torch.tensor([float("-inf"), float("nan")]), torch.tensor([float("-inf"), float("nan")])),
])
def test_equal_values_of_an_acceptable_type_match(got, expected):
    assert compare_outputs(got, expected) is None


# ------------------------------------------------------------------ inputs are the student's own, never changed
def _exercise_on_a_tensor() -> Exercise:
    return Exercise("xx.double", "double a tensor", lambda x: x * 2, [Case((torch.tensor([1.0, -2.0]),), label="two")])


def test_an_answer_that_changes_its_input_in_place_fails_and_names_the_input():
    result = _exercise_on_a_tensor().check(lambda values: values.mul_(2))
    assert not result.passed
    assert "changed its input values in place" in result.message and "on two" in result.message


def test_an_in_place_edit_reaches_neither_the_stored_case_nor_the_next_check():
    exercise = _exercise_on_a_tensor()
    exercise.check(lambda values: values.mul_(2))
    assert torch.equal(exercise.cases[0].args[0], torch.tensor([1.0, -2.0]))
    assert exercise.check(lambda values: values + values).passed


def test_numpy_arrays_lists_and_models_are_copied_for_the_student_too():
    rows, model = [[1, 2], [3]], torch.nn.Linear(2, 1)
    exercise = Exercise("xx.first", "first items", lambda r, m: [row[0] for row in r],
                        [Case((rows, model), label="lists")])
    result = exercise.check(lambda r, m: [row.pop(0) for row in r])
    assert not result.passed and "changed its input r in place" in result.message
    result = exercise.check(lambda r, m: (m.requires_grad_(False), [row[0] for row in r])[1])
    assert not result.passed and "changed its input m in place" in result.message
    assert rows == [[1, 2], [3]] and all(p.requires_grad for p in model.parameters())


def test_loading_the_checks_leaves_the_global_random_state_alone():
    import importlib

    import course_lib.checks.lesson00 as lesson00
    import course_lib.checks.lesson03 as lesson03

    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    importlib.reload(lesson00)
    importlib.reload(lesson03)
    check("07.freeze", get_exercise("07.freeze").reference)
    assert torch.equal(torch.rand(3), expected)
