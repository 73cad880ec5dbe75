"""What a notebook's stored outputs are: where they came from, whether they are stale, what nbval compares.

``scripts/execute_notebooks.py`` records, in ``notebook.metadata["course"]["executed"]``, the profile and a
hash of every code cell; :func:`stale_output_problems` says why stored outputs may not come from the current
sources. A cell tagged ``nbval-ignore-output`` runs but its output is not compared (docs/notebook_policy.md).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kernel_env import REPO

METADATA_KEY = "course"  # notebook.metadata["course"]["executed"] = {"profile", "code_sha256"}
# Cells whose output legitimately differs on a GPU or in the full profile; the full-profile run does not compare them.
UNCOMPARED_ON_GPU_TAGS = ("device-dependent", "profile-dependent")


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def execution_record(notebook, profile: str) -> dict:
    """What ``execute_notebooks.py`` stores in the notebook's metadata after a run."""
    return {"profile": profile, "code_sha256": [source_hash(cell.source) for cell in code_cells(notebook)]}


def stale_output_problems(notebook) -> list[str]:
    """Reasons why the stored outputs may not come from the current sources ([] when they do)."""
    record = notebook.metadata.get(METADATA_KEY, {}).get("executed")
    if not record:
        return ["no execution record in the notebook metadata (it was not executed by scripts/execute_notebooks.py)"]
    problems = []
    if record.get("profile") != "quick":
        problems.append(f"stored outputs come from the {record.get('profile')!r} profile, expected 'quick'")
    cells = code_cells(notebook)
    stored = record.get("code_sha256", [])
    if len(stored) != len(cells):
        problems.append(f"the notebook has {len(cells)} code cells, {len(stored)} when it was executed")
    for number, (cell, old) in enumerate(zip(cells, stored)):
        if source_hash(cell.source) != old:
            first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else "(empty)"
            problems.append(f"code cell {number} ({first_line[:60]!r}) was edited after the last execution")
            break
    counts = [cell.get("execution_count") for cell in cells if cell.source.strip()]
    if counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts are {counts}, expected 1..{len(counts)} in order (one top-to-bottom run)")
    expected_to_raise = {"raises-exception", "nbval-raises-exception"}
    errors = [n for n, cell in enumerate(cells)
              if not expected_to_raise & set(cell.metadata.get("tags", []))
              and any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
    if errors:
        problems.append(f"code cells {errors} have stored error outputs")
    return problems


def compared_share(notebook) -> tuple[float, list[int]]:
    """Share of code cells with output whose output nbval compares, and the code-cell numbers it ignores."""
    skipped = {"nbval-ignore-output", "nbval-skip"}
    with_output, ignored = 0, []
    for number, cell in enumerate(code_cells(notebook)):
        if not cell.get("outputs"):
            continue
        with_output += 1
        comments = {line.strip().lstrip("#").strip() for line in cell.source.splitlines() if line.strip().startswith("#")}
        if skipped & set(cell.metadata.get("tags", [])) or {"NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP"} & comments:
            ignored.append(number)
    return (1.0 if with_output == 0 else 1 - len(ignored) / with_output), ignored


def lax_copy_for_gpu(notebook: Path, target_dir: Path = REPO / "build") -> Path:
    """A copy for ``--nbval-lax`` whose comparable cells carry ``nbval-check-output``.

    Cells tagged ``device-dependent`` / ``profile-dependent`` (or already ``nbval-ignore-output``) are run
    but not compared. The copy goes to ``build/`` (git-ignored), the same depth as ``notebooks/``, so the
    kernel's working directory has the same relative paths.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in code_cells(nb):
        tags = list(cell.metadata.get("tags", []))
        if not set(tags) & {*UNCOMPARED_ON_GPU_TAGS, "nbval-ignore-output", "nbval-skip"}:
            cell.metadata["tags"] = [*tags, "nbval-check-output"]
    target_dir.mkdir(parents=True, exist_ok=True)
    copy = target_dir / f"{notebook.stem}.gpu.ipynb"
    nbformat.write(nb, copy)
    return copy


# --------------------------------------------------------------------------- one run for both editions
EXERCISE_CHECK = re.compile(r"check\(\s*[\"'](\d\d\.[\w-]+)[\"']")
EXERCISE_STUB = re.compile(r"NotImplementedError\(\s*[\"']Exercise\s+(\d\d\.[\w-]+)")  # as in publish.editions
_LAST_VALUE = '''import ast as _ast


def _course_last_value(source):
    """Run a cell's source here and return the value of its last expression (what the cell would show)."""
    tree = _ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], _ast.Expr) else None
    exec(compile(tree, "<check cell>", "exec"), globals())
    return eval(compile(_ast.Expression(last.value), "<check cell>", "eval"), globals()) if last else None
'''


def student_run_copy(notebook: Path, target_dir: Path = REPO / "build") -> Path:
    """A copy of a lesson that nbval runs once to test both editions.

    The code cells are the student edition's (the solution cells removed), so the run shows that a student's
    notebook runs top to bottom with every exercise unsolved; every stored output outside the exercises is
    compared as usual, so it also shows that the lesson reproduces its outputs without the solutions' help.
    Exercise stubs and exercise checks run but are not compared (a student sees "not done yet" where the stored
    notebook shows "passed"). Appended cells then assert that each check said "not done yet", and paste each
    stored solution and assert that its check passes. The copy goes to ``build/``, the same depth as
    ``notebooks/``.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    solutions, checks, kept, stub = {}, {}, [], None
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if "solution" in tags:
            solutions[stub] = cell.source
            continue
        if "exercise" in tags:
            stub = EXERCISE_STUB.search(cell.source).group(1)
        names = EXERCISE_CHECK.findall(cell.source) if cell.cell_type == "code" and "check" in tags else []
        if "exercise" in tags or names:
            cell.metadata["tags"] = [*tags, "nbval-ignore-output"]
        for name in names:
            checks.setdefault(name, cell.source)
        kept.append(cell)
    if set(solutions) != set(checks):
        raise ValueError(f"{notebook.name}: exercises with a solution {sorted(solutions, key=str)} and with a "
                         f"check {sorted(checks)} differ")
    ignore = {"tags": ["nbval-ignore-output"]}
    appended = [nbformat.v4.new_code_cell(_LAST_VALUE, metadata=ignore)]
    appended.append(nbformat.v4.new_code_cell(
        f"_course_unsolved = [(_name, _course_last_value(_source)) for _name, _source in {list(checks.items())!r}]\n"
        "for _name, _result in _course_unsolved:\n"
        "    assert not _result.passed and 'not done yet' in _result.message, (_name, _result.message)\n",
        metadata=ignore))
    for name, solution in solutions.items():
        appended.append(nbformat.v4.new_code_cell(
            f"{solution}\n\n_course_result = _course_last_value({checks[name]!r})\n"
            f"assert _course_result.passed, 'the stored solution of {name} fails: ' + _course_result.message\n",
            metadata=ignore))
    nb.cells = kept + appended
    target_dir.mkdir(parents=True, exist_ok=True)
    copy = target_dir / f"{notebook.stem}.student.ipynb"
    nbformat.write(nb, copy)
    return copy
