"""Make the course's setup cell the first code cell of lesson notebooks (idempotent).

    python scripts/insert_setup_cell.py                 every notebooks/NN_*.ipynb
    python scripts/insert_setup_cell.py notebooks/02_attention.ipynb
    python scripts/insert_setup_cell.py --check         exit 1 if a lesson lacks the current cell, change nothing

The cell's source lives in one place, ``course_lib.runtime.install.SETUP_CELL``;
``course_lib.publish.lessons.with_setup_cell`` puts it in (or replaces an older version). A notebook that changes needs re-executing (`make execute`), since
its stored outputs were recorded against the old list of code cells.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from course_lib.publish.lessons import LESSON_PATTERN, with_setup_cell

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson in notebooks/")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if any notebook would change")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob(LESSON_PATTERN))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    changed = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if not with_setup_cell(notebook):
            print(f"unchanged {path}")
            continue
        changed.append(path)
        if args.check:
            print(f"missing   {path}: its first code cell is not the current setup cell")
        else:
            nbformat.validate(notebook)
            path.write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")
            print(f"updated   {path}")
    if changed and not args.check:
        print("Re-execute the updated notebooks (make execute NB=...) so their stored outputs match their cells.")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
