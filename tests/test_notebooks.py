"""Every lesson notebook, executed under nbval in the quick profile with the network blocked.

Each notebook is one test: a separate ``pytest --nbval`` process (its own kernel, the sanitiser in
tests/nbval_sanitize.cfg, a per-cell timeout), so a failure names the notebook, the cell and the error.
One run tests both editions (``stored_outputs.student_run_copy``): the student edition's cells (solutions
removed) run top to bottom and reproduce every stored output outside the exercises, each unsolved check says
"not done yet", and each stored solution, pasted at the end, passes its check.
A second, fast test per notebook checks that the stored outputs come from the current sources.
"""
from __future__ import annotations

import nbformat
import pytest

from kernel_env import NOTEBOOK_DIR, course_notebooks
from nbval_runs import run_nbval
from stored_outputs import (
    METADATA_KEY,
    code_cells,
    compared_share,
    execution_record,
    lax_copy_for_gpu,
    stale_output_problems,
    student_run_copy,
)

NOTEBOOKS = course_notebooks()
PARAMS = [pytest.param(path, id=path.stem) for path in NOTEBOOKS] or [
    pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason=f"no notebooks in {NOTEBOOK_DIR}"))
]
# The lessons that train or fit for minutes repeat under the alternate numeric configuration (one thread, portable
# kernels: several times slower) only in `make test-numerics-all`; `make test` repeats the others, so that CI stays
# within its time (docs/notebook_policy.md).
LONG_LESSONS = {"04_masking_and_decoders", "06_features_and_umap", "07_fine_tuning", "08_fine_tuning_at_scale"}
NUMERIC_PARAMS = [
    pytest.param(*param.values, id=param.id,
                 marks=[*param.marks, pytest.mark.numeric_all if param.id in LONG_LESSONS else pytest.mark.numeric])
    for param in PARAMS
]


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("notebook", NUMERIC_PARAMS)
def test_notebook_reproduces_its_stored_outputs_as_the_student_edition(notebook, tmp_path):
    result = run_nbval(student_run_copy(notebook), profile="quick", workdir=tmp_path)
    result.notebook = notebook
    if not result.passed:
        pytest.fail(result.report(), pytrace=False)


@pytest.mark.parametrize("notebook", PARAMS)
def test_stored_outputs_come_from_the_current_sources(notebook):
    problems = stale_output_problems(nbformat.read(notebook, as_version=4))
    if problems:
        pytest.fail(f"{notebook.name}: stored outputs are out of date:\n  - " + "\n  - ".join(problems)
                    + f"\nFix: .venv/bin/python scripts/execute_notebooks.py notebooks/{notebook.name}",
                    pytrace=False)


@pytest.mark.parametrize("notebook", PARAMS)
def test_most_outputs_are_compared_by_nbval(notebook):
    nb = nbformat.read(notebook, as_version=4)
    share, ignored = compared_share(nb)
    assert share >= 0.6, (f"{notebook.name}: only {share:.0%} of the code cells with output are compared; "
                          f"ignored: code cells {ignored}. Assert a range in a visible cell instead of ignoring.")


# ------------------------------------------------------------------ the machinery, on small notebooks
def _notebook(*sources: str, outputs: list[list[dict]] | None = None):
    """A notebook whose code cells have the given sources, executed once in order (counts 1..n)."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells.append(nbformat.v4.new_markdown_cell("# A title"))
    for number, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source, execution_count=number + 1)
        cell.outputs = [nbformat.from_dict(o) for o in (outputs[number] if outputs else [])]
        nb.cells.append(cell)
    nb.metadata[METADATA_KEY] = {"executed": execution_record(nb, "quick")}
    return nb


def test_staleness_check_accepts_a_notebook_executed_from_its_current_sources():
    assert stale_output_problems(_notebook("x = 1", "print(x)")) == []


def test_staleness_check_names_the_code_cell_edited_after_execution():
    nb = _notebook("x = 1", "print(x)")
    nb.cells[2].source = "print(x + 1)"
    problems = stale_output_problems(nb)
    assert len(problems) == 1 and "code cell 1" in problems[0] and "print(x + 1)" in problems[0]


def test_staleness_check_flags_added_cells_missing_records_and_out_of_order_runs():
    added = _notebook("x = 1")
    added.cells.append(nbformat.v4.new_code_cell("y = 2", execution_count=2))
    assert any("2 code cells, 1 when it was executed" in p for p in stale_output_problems(added))

    unrecorded = _notebook("x = 1")
    del unrecorded.metadata[METADATA_KEY]
    assert "no execution record" in stale_output_problems(unrecorded)[0]

    rerun = _notebook("x = 1", "y = 2")
    rerun.cells[1].execution_count = 3  # the first cell was run a second time by hand
    assert any("execution counts are [3, 2]" in p for p in stale_output_problems(rerun))


def test_staleness_check_rejects_outputs_stored_from_the_full_profile():
    nb = _notebook("x = 1")
    nb.metadata[METADATA_KEY]["executed"]["profile"] = "full"
    assert any("'full' profile" in p for p in stale_output_problems(nb))


def test_compared_share_counts_ignored_cells_by_tag_and_by_comment():
    nb = _notebook("print(1)", "# NBVAL_IGNORE_OUTPUT\nprint(2)", "print(3)", "x = 4",
                   outputs=[[{"output_type": "stream", "name": "stdout", "text": "1\n"}]] * 3 + [[]])
    nb.cells[3].metadata["tags"] = ["nbval-ignore-output"]
    share, ignored = compared_share(nb)
    assert share == pytest.approx(1 / 3) and ignored == [1, 2]


def test_gpu_copy_marks_only_device_independent_cells_for_comparison(tmp_path):
    nb = _notebook("print(1)", "print(torch.cuda.is_available())", "print(len(data))", "print(time.time())")
    nb.cells[2].metadata["tags"] = ["device-dependent"]
    nb.cells[3].metadata["tags"] = ["profile-dependent"]
    nb.cells[4].metadata["tags"] = ["nbval-ignore-output"]
    source = tmp_path / "07_example.ipynb"
    nbformat.write(nb, source)
    copy = nbformat.read(lax_copy_for_gpu(source, tmp_path / "build"), as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in code_cells(copy)]
    assert ["nbval-check-output" in t for t in tags] == [True, False, False, False]


@pytest.mark.slow
def test_nbval_run_reports_the_failing_cells_and_refuses_the_network_in_the_kernel(tmp_path):
    stream = [{"output_type": "stream", "name": "stdout", "text": "2\n"}]
    loopback = (
        "import socket, threading\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "threading.Thread(target=lambda: server.accept()[0].sendall(b'pong'), daemon=True).start()\n"
        "client = socket.create_connection(server.getsockname(), timeout=5)\n"
        "print(client.recv(4))"
    )
    outbound = (
        "import socket\n"
        "assert 'netblock' in socket.socket.connect.__module__, 'the network guard is not installed'\n"
        "socket.create_connection(('192.0.2.1', 80), timeout=2)"
    )
    nb = _notebook("print(1 + 1)", "print(2 + 2)", loopback, outbound, outputs=[
        stream, stream, [{"output_type": "stream", "name": "stdout", "text": "b'pong'\n"}], []])
    path = tmp_path / "99_probe.ipynb"
    nbformat.write(nb, path)

    result = run_nbval(path, workdir=tmp_path)

    assert not result.passed
    assert len(result.failures) == 2, result.report()
    wrong_output, blocked = result.failures
    assert wrong_output.startswith("code cell 1 (cell index 2 in the notebook)") and "4" in wrong_output
    assert blocked.startswith("code cell 3 (cell index 4 in the notebook)")
    assert "NetworkBlockedError" in blocked and "192.0.2.1" in blocked
    assert "99_probe.ipynb" in result.report()


@pytest.mark.slow
def test_executed_notebook_records_its_sources_and_reproduces_under_nbval(tmp_path):
    import execute_notebooks

    nb = _notebook(
        "import os, socket\nprint(os.environ['COURSE_PROFILE'], os.environ['PYTHONHASHSEED'])",
        "print('netblock' in socket.socket.connect.__module__)",
        "print(hash('tokens'))",  # string hashing is randomised per process unless PYTHONHASHSEED is fixed
    )
    for cell in code_cells(nb):
        cell.execution_count = None
    del nb.metadata[METADATA_KEY]
    path = tmp_path / "98_probe.ipynb"
    nbformat.write(nb, path)

    entry = execute_notebooks.execute(path)

    executed = nbformat.read(path, as_version=4)
    outputs = [cell.outputs[0]["text"] for cell in code_cells(executed)]
    assert outputs[:2] == ["quick 0\n", "True\n"]
    assert stale_output_problems(executed) == []
    assert entry["wall_s"] > 0 and entry["peak_rss_mb"] > 10
    assert run_nbval(path, workdir=tmp_path).passed  # a second process reproduces every output


def _lesson_with_exercise(solution: str, after: str = "print(3)") -> nbformat.NotebookNode:
    """A lesson with one exercise (stub, solution, check) and one ordinary cell after it."""
    stub = "def double(x):\n    raise NotImplementedError('Exercise 09.double: times two')"
    check = ("from course_lib.checks import Case, Exercise, Mistake, register, check\n"
             "register(Exercise('09.double', 'double a number', lambda x: 2 * x, cases=[Case((3,))],\n"
             "                  mistakes=[Mistake(lambda x: x + 2, 'times, not plus'), Mistake(lambda x: x, 'x2')]))\n"
             "check('09.double', double)")
    stream = [{"output_type": "stream", "name": "stdout", "text": "3\n"}]
    nb = _notebook(stub, solution, check, after, outputs=[[], [], [], stream])
    for cell, tag in zip(code_cells(nb), ("exercise", "solution", "check")):
        cell.metadata["tags"] = [tag]
    return nb


def test_student_run_copy_drops_solutions_and_appends_the_checks_of_both_editions(tmp_path):
    path = tmp_path / "09_probe.ipynb"
    nbformat.write(_lesson_with_exercise("def double(x):\n    return x * 2"), path)
    copy = nbformat.read(student_run_copy(path, tmp_path / "build"), as_version=4)
    sources = [cell.source for cell in code_cells(copy)]
    assert not any("return x * 2" in s for s in sources[:3])  # the solution cell is gone from its place
    assert "not done yet" in sources[-2] and "return x * 2" in sources[-1] and "_course_result.passed" in sources[-1]
    ignored = ["nbval-ignore-output" in cell.metadata.get("tags", []) for cell in code_cells(copy)]
    assert ignored == [True, True, False, True, True, True]  # stub, check, ordinary cell, then the appended ones


@pytest.mark.slow
@pytest.mark.parametrize("solution, after, failing", [
    ("def double(x):\n    return x + 2", "print(3)", "the stored solution of 09.double fails"),  # wrong answer
    ("def double(x):\n    return 2 * x", "print(double(1) + 1)", "NotImplementedError"),  # uses the student's fn
], ids=["wrong-solution", "cell-after-the-stub-calls-it"])
def test_student_run_fails_on_a_wrong_solution_or_a_cell_that_needs_the_solution(tmp_path, solution, after, failing):
    path = tmp_path / "09_probe.ipynb"
    nbformat.write(_lesson_with_exercise(solution, after), path)
    good = tmp_path / "09_good.ipynb"
    nbformat.write(_lesson_with_exercise("def double(x):\n    return 2 * x"), good)
    assert run_nbval(student_run_copy(good, tmp_path / "build"), workdir=tmp_path).passed
    result = run_nbval(student_run_copy(path, tmp_path / "build"), workdir=tmp_path)
    assert not result.passed and failing in result.report(), result.report()
