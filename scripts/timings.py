"""Notebook run times: stored in ``docs/timings.json``, rendered as ``docs/timings.md`` and README's table.

    .venv/bin/python scripts/timings.py

Entries are recorded per notebook under a run kind: ``quick`` (``make execute``: quick profile, CPU, 2
threads), ``full-cpu`` and ``full-gpu`` (``make test-full``, ``scripts/nbval_run.py --profile full --record``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from kernel_env import REPO

TIMINGS_JSON = REPO / "docs" / "timings.json"
MARKDOWN = REPO / "docs" / "timings.md"
README = REPO / "README.md"
RUN_KINDS = ("quick", "full-cpu", "full-gpu")
README_START, README_END = "<!-- timings:start -->", "<!-- timings:end -->"


def load_timings(path: Path = TIMINGS_JSON) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"notebooks": {}}


def record_timing(notebook_name: str, profile: str, entry: dict, path: Path = TIMINGS_JSON) -> None:
    """Store one notebook's entry under ``profile``, keeping every other entry (locked against parallel runs)."""
    import fcntl
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "course-timings.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load_timings(path)
        data.setdefault("notebooks", {}).setdefault(notebook_name, {})[profile] = entry
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def machine_description() -> dict:
    import platform

    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(terse=True)}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


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


def _metrics(entry: dict) -> str:
    """The notebook's own result figures of a full-profile run (``metrics`` in its entry), e.g. "acc 0.87"."""
    metrics = entry.get("metrics") or {}
    return ", ".join(f"{name} {value}" for name, value in metrics.items())


def render(data: dict) -> str:
    """The Markdown page: one row per notebook in course order, then totals and how it was measured."""
    rows = ["| notebook | quick profile, CPU | peak kernel memory (quick) | full profile, CPU | full profile, GPU "
            "| peak host memory (full, GPU) |",
            "|---|---|---|---|---|---|"]
    totals = dict.fromkeys(RUN_KINDS, 0.0)
    for name in sorted(data["notebooks"]):
        entry = data["notebooks"][name]
        quick, full_cpu, full_gpu = (entry.get(kind, {}) for kind in RUN_KINDS)
        for kind in RUN_KINDS:
            totals[kind] += entry.get(kind, {}).get("wall_s", 0.0)
        rows.append(f"| `{name}` | {_duration(quick.get('wall_s'))} | {_memory(quick.get('peak_rss_mb'))} | "
                    f"{_duration(full_cpu.get('wall_s'))} | {_duration(full_gpu.get('wall_s'))} | "
                    f"{_memory(full_gpu.get('peak_rss_mb'))} |")
    rows.append(f"| **whole course** | **{_duration(totals['quick'])}** | | "
                f"**{_duration(totals['full-cpu'] or None)}**{' (the notebooks run)' if totals['full-cpu'] else ''} | "
                f"**{_duration(totals['full-gpu'] or None)}** | |")
    full_runs = [f"`{name}`: {_duration(e['full-cpu']['wall_s'])}, peak {_memory(e['full-cpu'].get('peak_rss_mb'))}"
                 + (f", {_metrics(e['full-cpu'])}" if _metrics(e["full-cpu"]) else "")
                 for name, e in sorted(data["notebooks"].items()) if "full-cpu" in e]
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
        "- **full profile, CPU**: `make test-full` on a machine without a GPU: the whole data sets, every "
        "assertion of the notebook checked, timed around the run of each notebook. Measured on: "
        f"{_machines(data, 'full-cpu')}. A notebook shown as not recorded was not run in this kind.",
        "- **full profile, GPU**: `make test-full` (or `scripts/gpu_run.sh`) on a CUDA machine. Measured on: "
        f"{_machines(data, 'full-gpu')}.",
        "- **peak memory**: resident memory of the kernel and its child processes, sampled every 0.2 s "
        "(GPU memory is not included).",
        "",
        *(["Full-profile CPU runs, with the figures each notebook reports:", "",
           *[f"- {line}" for line in full_runs], ""] if full_runs else []),
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
    markdown = render(load_timings())
    path.write_text(markdown)
    if readme is not None and readme.is_file():
        readme.write_text(readme_with_table(readme.read_text(encoding="utf-8"), markdown), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_markdown().relative_to(REPO)} and the table in README.md")
