"""Render ``docs/timings.json`` (written by execute_notebooks.py and gpu_run.sh) as ``docs/timings.md``.

    .venv/bin/python scripts/timings.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbtools  # noqa: E402

MARKDOWN = nbtools.REPO / "docs" / "timings.md"
README = nbtools.REPO / "README.md"
README_START, README_END = "<!-- timings:start -->", "<!-- timings:end -->"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _memory(megabytes: float | None) -> str:
    return "not recorded" if megabytes is None else f"{megabytes / 1024:.1f} GB"


def _machines(data: dict, profile: str) -> str:
    seen = []
    for entry in data["notebooks"].values():
        if profile in entry:
            e = entry[profile]
            where = e.get("gpu") or f"{e.get('threads', e.get('cpus', '?'))} CPU threads"
            line = f"{where}, torch {e.get('torch', '?')}, python {e.get('python', '?')} ({e.get('date', '?')})"
            if line not in seen:
                seen.append(line)
    return "; ".join(seen) or "no run recorded yet"


def render(data: dict) -> str:
    """The Markdown page: one row per notebook in course order, then totals and how it was measured."""
    rows = ["| notebook | quick profile, CPU | peak kernel memory (quick) | full profile, GPU | peak host memory (full) |",
            "|---|---|---|---|---|"]
    totals = {"quick": 0.0, "full": 0.0}
    for name in sorted(data["notebooks"]):
        entry = data["notebooks"][name]
        quick, full = entry.get("quick", {}), entry.get("full", {})
        for profile, e in (("quick", quick), ("full", full)):
            totals[profile] += e.get("wall_s", 0.0)
        rows.append(f"| `{name}` | {_duration(quick.get('wall_s'))} | {_memory(quick.get('peak_rss_mb'))} | "
                    f"{_duration(full.get('wall_s'))} | {_memory(full.get('peak_rss_mb'))} |")
    rows.append(f"| **whole course** | **{_duration(totals['quick'])}** | | **{_duration(totals['full'] or None)}** | |")
    return "\n".join([
        "# Notebook run times",
        "",
        "How long each lesson takes to run from top to bottom, and the most memory its kernel held.",
        "This page is generated from `docs/timings.json` by `scripts/timings.py`; do not edit it by hand.",
        "",
        *rows,
        "",
        "How these numbers are measured:",
        "",
        "- **quick profile, CPU**: `make execute` (`scripts/execute_notebooks.py`) runs each notebook in a fresh "
        "kernel with `COURSE_PROFILE=quick` on the CPU with 2 threads. Time is wall-clock time of the whole "
        f"notebook, kernel start included. Measured on: {_machines(data, 'quick')}.",
        "- **full profile, GPU**: `scripts/gpu_run.sh` on a CUDA machine, `COURSE_PROFILE=full`, timed around the "
        f"nbval run of each notebook. Measured on: {_machines(data, 'full')}.",
        "- **peak memory**: resident memory of the kernel and its child processes, sampled every 0.2 s "
        "(GPU memory is not included).",
        "",
    ])


def table(markdown: str) -> str:
    """Just the table of a rendered page (its lines that start with "|")."""
    return "\n".join(line for line in markdown.splitlines() if line.startswith("|"))


def readme_with_table(readme: str, markdown: str) -> str:
    """README's text with the table between its timings markers replaced by the current one."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {README_START} and {README_END} around the timing table")
    return readme[:start + len(README_START)] + "\n" + table(markdown) + "\n" + readme[end:]


def write_markdown(path: Path = MARKDOWN, readme: Path | None = README) -> Path:
    """Write docs/timings.md, and the same table into README.md between its markers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    markdown = render(nbtools.load_timings())
    path.write_text(markdown)
    if readme is not None and readme.is_file():
        readme.write_text(readme_with_table(readme.read_text(encoding="utf-8"), markdown), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_markdown().relative_to(nbtools.REPO)} and the table in README.md")
