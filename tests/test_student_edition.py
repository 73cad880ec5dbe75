"""The student edition's structure: each exercise has its stub, its solution and its check.

That the student edition runs to the end, that each unsolved exercise answers "not done yet" and that each
stored solution, pasted in, passes its check is tested by the one nbval run of each lesson
(tests/test_notebooks.py, ``stored_outputs.student_run_copy``)."""
from __future__ import annotations

import nbformat
import pytest

from kernel_env import course_notebooks

from course_lib.publish import editions

NOTEBOOKS = course_notebooks()
PARAMS = [pytest.param(p, id=p.stem) for p in NOTEBOOKS] or [
    pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason="no notebooks yet"))]


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


@pytest.mark.parametrize("notebook", PARAMS)
def test_every_exercise_has_stub_solution_and_check(notebook):
    nb = nbformat.read(notebook, as_version=4)
    names = editions.exercise_names(nb)
    assert len(names) >= 3, f"{notebook.name} has {len(names)} exercises; each lesson needs at least 3"
    solutions = [c for c in nb.cells if "solution" in _tags(c)]
    checks = [c for c in nb.cells if "check" in _tags(c)]
    assert len(solutions) == len(names) and len(checks) >= len(names)
    for name in names:
        assert any(f'"{name}"' in c.source or f"'{name}'" in c.source for c in checks), f"no check cell for {name}"
