"""What a notebook's stored outputs are: where they came from, whether they are stale, what nbval compares.

``scripts/execute_notebooks.py`` records, in ``notebook.metadata["course"]["executed"]``, the profile and a
hash of every code cell; :func:`stale_output_problems` says why stored outputs may not come from the current
sources. A cell tagged ``nbval-ignore-output`` runs but its output is not compared (docs/notebook_policy.md).
"""
from __future__ import annotations

import hashlib
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
