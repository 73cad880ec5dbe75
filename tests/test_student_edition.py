"""The student edition, executed as a student would: it runs to the end, each unsolved exercise answers with
the friendly "not done yet" message, and pasting the stored solution into the stub makes the check pass."""
from __future__ import annotations

import re

import nbformat
import pytest

from kernel_env import CELL_TIMEOUT_S, course_notebooks, kernel_environment

from course_lib.publish import editions

NOTEBOOKS = course_notebooks()
PARAMS = [pytest.param(p, id=p.stem) for p in NOTEBOOKS] or [
    pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason="no notebooks yet"))]


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
        elif output.get("output_type") == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


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


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("notebook", PARAMS)
def test_student_edition_runs_and_each_stored_solution_passes_its_check(notebook, tmp_path, monkeypatch):
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

    source = nbformat.read(notebook, as_version=4)
    solutions = [c.source for c in source.cells if "solution" in _tags(c)]
    student = editions.student_notebook(source)
    for name, value in kernel_environment("quick").items():
        monkeypatch.setenv(name, value)
    km = KernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager())
    client = NotebookClient(student, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(notebook.parent)}})
    try:  # a kernel manager passed in is ours to stop: nbclient leaves it running
        with client.setup_kernel():
            for index, cell in enumerate(student.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError if anything but a check fails
            check_cells = [c for c in student.cells if "check" in _tags(c)]
            exercise_checks = [c for c in check_cells if re.search(r"check\(\s*[\"']\d\d\.", c.source)]
            for cell in exercise_checks:
                assert "not done yet" in _text(cell), f"{notebook.name}: unsolved check said:\n{_text(cell)}"
            stubs = [c for c in student.cells if "exercise" in _tags(c)]
            assert len(stubs) == len(solutions)
            for stub, solution in zip(stubs, solutions):
                name = re.search(editions.EXERCISE_NAME, stub.source).group(1)
                check = next(c for c in exercise_checks if name in c.source)
                pasted = nbformat.v4.new_code_cell(solution)
                rerun = nbformat.v4.new_code_cell(check.source)
                student.cells += [pasted, rerun]  # nbclient stores outputs by cell index
                client.execute_cell(pasted, len(student.cells) - 2)
                client.execute_cell(rerun, len(student.cells) - 1)
                assert "[passed]" in _text(rerun), f"{notebook.name} {name}: the stored solution failed:\n{_text(rerun)}"
    finally:
        if km.is_alive():
            km.shutdown_kernel(now=True)
