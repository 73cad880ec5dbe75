"""Every exercise of every lesson, through the same checker: the reference passes, each known mistake is
rejected with its own hint, and an unfinished stub is told it is not done yet. The lesson files
(tests/test_checks_lessonNN.py) test what is particular to each exercise."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.checks import check, exercises, get_exercise
from course_lib.editions import exercise_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import nbtools  # noqa: E402

IN_NOTEBOOKS = [name for path in nbtools.course_notebooks() for name in exercise_names(nbformat.read(path, 4))]


def test_every_exercise_in_the_notebooks_is_registered_and_none_without_a_notebook():
    assert sorted(IN_NOTEBOOKS) == sorted(exercises())


@pytest.mark.parametrize("name", IN_NOTEBOOKS)
def test_reference_solution_passes_its_check(name):
    result = check(name, get_exercise(name).reference)
    assert result.passed, result.message
    assert result.message.startswith(f"[passed] {name}")


@pytest.mark.parametrize("name", IN_NOTEBOOKS)
def test_each_known_mistake_is_rejected_with_its_own_hint(name):
    exercise = get_exercise(name)
    assert len(exercise.mistakes) >= 2
    for mistake in exercise.mistakes:
        result = check(name, mistake.wrong)
        assert not result.passed, f"{name}: a known mistake passed the check"
        assert result.hint == mistake.hint, f"{name}: expected hint {mistake.hint!r}, got {result.hint!r}"
        assert "Hint: " + mistake.hint in result.message


@pytest.mark.parametrize("name", IN_NOTEBOOKS)
def test_unfinished_stub_is_told_it_is_not_done_yet(name):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {name}: fill me in")

    result = check(name, stub)
    assert not result.passed and "not done yet" in result.message
