"""Re-execute lesson notebooks in place, in the canonical quick profile, and record their cost.

    .venv/bin/python scripts/execute_notebooks.py                # every notebook, in course order
    .venv/bin/python scripts/execute_notebooks.py notebooks/00_behind_the_pipeline.ipynb

Each run uses a fresh kernel of this interpreter with COURSE_PROFILE=quick, the CPU, 2 threads,
PYTHONHASHSEED=0 and the network guard on. The notebook's metadata then records the profile and a hash
of every code cell (``tests/test_notebooks.py`` checks them); wall time, kernel CPU time and peak kernel
memory go to ``docs/timings.json``, and ``docs/timings.md`` is re-rendered.

The notebook also stores the kernelspec of the course's kernel (:data:`COURSE_KERNELSPEC`, what the venv's
ipykernel registers), so that JupyterLab, on opening a lesson, finds nothing to update and does not mark it
modified. ``--kernelspec-only`` writes that metadata into the notebooks without running them:

    .venv/bin/python scripts/execute_notebooks.py --kernelspec-only          # every notebook
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import timings
from kernel_env import CELL_TIMEOUT_S, NOTEBOOK_DIR, REPO, course_notebooks, kernel_environment
from memory_sampler import ProcessTreeSampler
from stored_outputs import METADATA_KEY, execution_record

PROFILE = "quick"
# The kernel the course runs in: ipykernel's own spec ("python3"), as `jupyter kernelspec list` shows it.
COURSE_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def apply_kernelspec(nb) -> bool:
    """Store :data:`COURSE_KERNELSPEC` in ``nb``'s metadata; True if that changed anything."""
    if nb.metadata.get("kernelspec") == COURSE_KERNELSPEC:
        return False
    nb.metadata["kernelspec"] = dict(COURSE_KERNELSPEC)
    return True


def write_kernelspecs(paths: list[Path]) -> list[Path]:
    """Apply :func:`apply_kernelspec` to each notebook in place (outputs untouched); returns those changed."""
    import nbformat

    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if apply_kernelspec(nb):
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def execute(path: Path, cell_timeout: int = CELL_TIMEOUT_S) -> dict:
    """Run ``path`` top to bottom and write it back with outputs; returns its timing entry."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # wall-clock stamps from other tools: noise in diffs
    km = KernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager())
    client = NotebookClient(nb, km=km, timeout=cell_timeout, record_timing=True, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with ProcessTreeSampler() as sampler:
        try:
            client.execute(env=kernel_environment(PROFILE))
        except CellExecutionError as error:
            failed = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and any(
                out.get("output_type") == "error" for out in cell.get("outputs", []))), "?")
            raise SystemExit(f"{path.name}: cell index {failed} raised an error; the notebook was NOT "
                             f"written.\n{error}") from None
        finally:  # nbclient leaves a kernel it was handed running; a live one would count towards the next notebook
            if km.is_alive():
                km.shutdown_kernel(now=True)
    wall = time.perf_counter() - start
    report_slowest_cells(nb)
    nb.metadata[METADATA_KEY] = {"executed": execution_record(nb, PROFILE)}
    apply_kernelspec(nb)
    nbformat.write(nb, path)
    return {
        "wall_s": round(wall, 1),
        "kernel_cpu_s": round(sampler.cpu_seconds, 1),
        "peak_rss_mb": round(sampler.peak_rss_bytes / 2**20),
        "device": "cpu",
        "threads": int(kernel_environment(PROFILE)["OMP_NUM_THREADS"]),
        "date": datetime.date.today().isoformat(),
        **timings.machine_description(),
    }


def report_slowest_cells(nb, count: int = 5) -> None:
    """Print the ``count`` slowest code cells (where a lesson's time goes) and drop nbclient's timestamps."""
    costs = []
    for index, cell in enumerate(nb.cells):
        stamps = cell.metadata.pop("execution", None) or {}
        begin, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if cell.cell_type == "code" and begin and end:
            seconds = (datetime.datetime.fromisoformat(end.replace("Z", "+00:00"))
                       - datetime.datetime.fromisoformat(begin.replace("Z", "+00:00"))).total_seconds()
            costs.append((seconds, index, cell.source.splitlines()[0][:70] if cell.source else ""))
    for seconds, index, first_line in sorted(costs, reverse=True)[:count]:
        print(f"    cell {index:3d}: {seconds:6.1f} s  {first_line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of notebooks/)")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell")
    parser.add_argument("--no-timings", action="store_true", help="do not update docs/timings.json")
    parser.add_argument("--kernelspec-only", action="store_true",
                        help="only write the course's kernelspec into the notebooks' metadata (no execution)")
    args = parser.parse_args(argv)

    try:
        notebooks = course_notebooks(args.notebooks)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not notebooks:
        print(f"no notebooks found in {NOTEBOOK_DIR}")
        return 0
    os.chdir(REPO)
    if args.kernelspec_only:
        changed = write_kernelspecs(notebooks)
        print(f"kernelspec {COURSE_KERNELSPEC['display_name']!r} written into {len(changed)} of "
              f"{len(notebooks)} notebooks")
        return 0
    for path in notebooks:
        print(f"executing {path.relative_to(REPO)} (profile {PROFILE}) ...", flush=True)
        entry = execute(path, args.cell_timeout)
        print(f"  done: {entry['wall_s']:.0f} s wall, {entry['kernel_cpu_s']:.0f} s kernel CPU, "
              f"peak kernel memory {entry['peak_rss_mb']} MB", flush=True)
        if not args.no_timings:
            timings.record_timing(path.name, PROFILE, entry)
    if not args.no_timings:
        timings.write_markdown()
        print(f"updated {timings.TIMINGS_JSON.relative_to(REPO)} and docs/timings.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
