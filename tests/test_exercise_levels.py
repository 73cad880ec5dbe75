"""Every lesson has a core exercise (the piece it is about, written whole) and a stretch exercise; a core exercise
has a hint ladder, at least four known mistakes with their own hints, at least four independent wrong answers in
its lesson's WRONG list, and a solution of at least 15 lines; ``hint`` climbs the ladder one rung at a time."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.checks import LEVELS, check, exercises, get_exercise, hint
from course_lib.publish.editions import EXERCISE_NAME

from kernel_env import course_notebooks

NOTEBOOKS = {path.name[:2]: path for path in course_notebooks()}
WRONG = [answer for path in sorted(Path(__file__).parent.glob("test_checks_lesson*.py"))
         for answer in getattr(importlib.import_module(path.stem), "WRONG", [])]
CORE = sorted(name for name, exercise in exercises().items() if exercise.level == "core")


def solution_lines(lesson: str) -> dict[str, int]:
    """Lines of code (not blank, not comments) of each solution cell of a lesson, by exercise name."""
    lines, current = {}, None
    for cell in nbformat.read(NOTEBOOKS[lesson], 4).cells:
        tags = set(cell.metadata.get("tags", []))
        if "exercise" in tags:
            current = EXERCISE_NAME.search(cell.source).group(1)
        elif "solution" in tags and current:
            lines[current] = sum(1 for line in cell.source.splitlines()
                                 if line.strip() and not line.strip().startswith("#"))
    return lines


@pytest.mark.parametrize("lesson", sorted(NOTEBOOKS))
def test_every_lesson_has_a_core_and_a_stretch_exercise(lesson):
    levels = {e.level for name, e in exercises().items() if name.startswith(f"{lesson}.")}
    assert {"core", "stretch"} <= levels, f"lesson {lesson} has exercises of levels {sorted(levels)}"


@pytest.mark.parametrize("name", sorted(exercises()))
def test_every_exercise_has_a_level_and_a_time(name):
    exercise = get_exercise(name)
    assert exercise.level in LEVELS and 1 <= exercise.minutes <= 90


@pytest.mark.parametrize("name", CORE)
def test_a_core_exercise_is_the_lessons_piece_written_whole(name):
    exercise = get_exercise(name)
    assert len(exercise.hints) >= 2, f"{name}: a hint ladder of two rungs at least"
    assert len(exercise.mistakes) >= 4, f"{name}: {len(exercise.mistakes)} known mistakes, want 4"
    assert len({m.hint for m in exercise.mistakes}) == len(exercise.mistakes), f"{name}: each mistake its own hint"
    wrong = [answer for answer in WRONG if answer.values[0] == name]
    assert len(wrong) >= 4, f"{name}: {len(wrong)} independent wrong answers in the WRONG list, want 4"
    lines = solution_lines(name[:2]).get(name, 0)
    assert lines >= 15, f"{name}: the solution has {lines} lines of code; a core exercise has at least 15"


def test_hint_climbs_the_ladder_and_then_points_to_the_solution():
    name = CORE[0]
    ladder = get_exercise(name).hints
    first, second = str(hint(name)), str(hint(name, 2))
    assert ladder[0] in first and f'hint("{name}", 2)' in first
    assert ladder[1] in second
    assert "instructor edition" in str(hint(name, len(ladder) + 1))
    for bad in (0, -1, "2", True):
        with pytest.raises(ValueError, match="rung"):
            hint(name, bad)


def test_a_failing_check_of_a_core_exercise_offers_the_ladder():
    name = CORE[0]

    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {name}: not yet")

    message = check(name, stub).message
    assert f'hint("{name}")' in message and "not done yet" in message


def test_an_exercise_without_a_ladder_says_where_help_is():
    plain = next(name for name, e in exercises().items() if not e.hints)
    assert "no hint ladder" in str(hint(plain))


def test_unknown_exercises_and_levels_are_refused():
    with pytest.raises(KeyError, match="Unknown exercise"):
        hint("99.nothing")
    from course_lib.checks import Exercise
    with pytest.raises(ValueError, match="level"):
        Exercise("99.x", "x", lambda: 0, cases=[], level="hard")
    with pytest.raises(ValueError, match="ladder"):
        Exercise("99.y", "y", lambda: 0, cases=[], level="core", hints=("one rung",))


def test_the_exercise_name_pattern_matches_every_stub():
    assert all(re.fullmatch(r"\d\d\.[\w-]+", name) for name in exercises())


def test_readme_shows_the_hint_ladder_of_a_core_exercise_that_exists():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r'hint\("(\d\d\.[\w-]+)"', readme))
    assert named and named <= set(CORE), f"README names {sorted(named)}; core exercises: {CORE}"
