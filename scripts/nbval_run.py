"""Run lesson notebooks under nbval, one pytest process per notebook, with the network guard on.

    .venv/bin/python scripts/nbval_run.py                          # quick profile, stored outputs compared
    .venv/bin/python scripts/nbval_run.py --numerics alternate     # the same under the second configuration
    .venv/bin/python scripts/nbval_run.py --profile full --record  # `make test-full`, on a CPU or a GPU

In the full profile the notebooks run with the whole data sets (on the GPU when there is one), so outputs
tagged ``device-dependent`` or ``profile-dependent`` cannot match the stored (quick, CPU) ones: they run but
are not compared (``--nbval-lax`` on a copy in ``build/`` where every other code cell is marked for
comparison); the assertions of every check cell must hold. ``--record`` stores the wall time and peak memory
in docs/timings.json under ``full-cpu`` or ``full-gpu``.
"""
from __future__ import annotations

import argparse
import datetime
import sys

import timings
from kernel_env import NOTEBOOK_DIR, course_notebooks
from nbval_runs import run_nbval
from stored_outputs import lax_copy_for_gpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of notebooks/)")
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--numerics", choices=("native", "alternate"), default=None,
                        help="floating-point configuration of the kernels (default: $COURSE_NUMERICS, else native)")
    parser.add_argument("--record", action="store_true",
                        help="store wall time and peak memory under this profile in docs/timings.json")
    args = parser.parse_args(argv)
    if args.record and args.profile != "full":
        parser.error("--record stores full-profile runs; quick-profile timings come from `make execute`")

    try:
        notebooks = course_notebooks(args.notebooks)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not notebooks:
        print(f"no notebooks found in {NOTEBOOK_DIR}")
        return 0
    failed = []
    for notebook in notebooks:
        lax = args.profile == "full"
        target = lax_copy_for_gpu(notebook) if lax else notebook
        print(f"nbval ({args.profile}{', lax' if lax else ''}): {notebook.name} ...", flush=True)
        result = run_nbval(target, profile=args.profile, lax=lax, numerics=args.numerics)
        result.notebook = notebook
        print(f"  {'passed' if result.passed else 'FAILED'} in {result.wall_s:.0f} s, "
              f"peak memory {result.peak_rss_mb:.0f} MB", flush=True)
        if not result.passed:
            failed.append(notebook.name)
            print(result.report(), flush=True)
        if args.record:
            machine = timings.machine_description()
            entry = {"wall_s": round(result.wall_s, 1), "peak_rss_mb": round(result.peak_rss_mb),
                     "passed": result.passed, "date": datetime.date.today().isoformat(), **machine}
            timings.record_timing(notebook.name, "full-gpu" if "gpu" in machine else "full-cpu", entry)
    if args.record:
        timings.write_markdown()
    print(f"\n{len(notebooks) - len(failed)}/{len(notebooks)} notebooks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
