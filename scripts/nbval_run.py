"""Run lesson notebooks under nbval, one pytest process per notebook, with the network guard on.

    .venv/bin/python scripts/nbval_run.py                          # quick profile, every output compared
    .venv/bin/python scripts/nbval_run.py --profile full --record  # on a GPU (what scripts/gpu_run.sh does)

In the full profile the notebooks run on the GPU with the whole data sets, so outputs tagged
``device-dependent`` or ``profile-dependent`` cannot match the stored (quick, CPU) ones: they run but are
not compared (``--nbval-lax`` on a copy in ``build/`` where every other code cell is marked for comparison).
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbtools  # noqa: E402
import timings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of notebooks/)")
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--record", action="store_true",
                        help="store wall time and peak memory under this profile in docs/timings.json")
    args = parser.parse_args(argv)

    try:
        notebooks = nbtools.course_notebooks(args.notebooks)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not notebooks:
        print(f"no notebooks found in {nbtools.NOTEBOOK_DIR}")
        return 0
    failed = []
    for notebook in notebooks:
        lax = args.profile == "full"
        target = nbtools.lax_copy_for_gpu(notebook) if lax else notebook
        print(f"nbval ({args.profile}{', lax' if lax else ''}): {notebook.name} ...", flush=True)
        result = nbtools.run_nbval(target, profile=args.profile, lax=lax)
        result.notebook = notebook
        print(f"  {'passed' if result.passed else 'FAILED'} in {result.wall_s:.0f} s, "
              f"peak memory {result.peak_rss_mb:.0f} MB", flush=True)
        if not result.passed:
            failed.append(notebook.name)
            print(result.report(), flush=True)
        if args.record:
            entry = {"wall_s": round(result.wall_s, 1), "peak_rss_mb": round(result.peak_rss_mb),
                     "passed": result.passed, "date": datetime.date.today().isoformat(),
                     **nbtools.machine_description()}
            nbtools.record_timing(notebook.name, args.profile, entry)
    if args.record:
        timings.write_markdown()
    print(f"\n{len(notebooks) - len(failed)}/{len(notebooks)} notebooks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
