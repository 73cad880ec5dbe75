"""Run one notebook under nbval in its own pytest process, with the network guard on, and say what failed.

Used by ``tests/test_notebooks.py`` and ``scripts/nbval_run.py``.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from kernel_env import CELL_TIMEOUT_S, REPO, kernel_environment
from memory_sampler import ProcessTreeSampler

SANITIZE_CONFIG = REPO / "tests" / "nbval_sanitize.cfg"


@dataclass
class NbvalResult:
    notebook: Path
    returncode: int
    wall_s: float
    peak_rss_mb: float
    output: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    def report(self) -> str:
        """Notebook, cell and error of each failure, then the end of nbval's own output."""
        lines = [f"{self.notebook.name}: nbval failed (exit code {self.returncode})"]
        lines += [f"  - {failure}" for failure in self.failures] or ["  (no cell failure recorded; see the output)"]
        tail = _ANSI.sub("", self.output)[-6000:]
        return "\n".join(lines) + "\n\n--- end of the nbval output ---\n" + tail


def nbval_command(notebook: Path, junit: Path, lax: bool = False, cell_timeout: int = CELL_TIMEOUT_S) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(notebook),
        "--nbval-lax" if lax else "--nbval", "--nbval-current-env",
        "--nbval-sanitize-with", str(SANITIZE_CONFIG), "--nbval-cell-timeout", str(cell_timeout),
        f"--junitxml={junit}", "-p", "no:cacheprovider", "-q", "-rf", "--color=no",
    ]


_ANSI = re.compile(r"(\x1b|#x1B)\[[0-9;]*[A-Za-z]")


def summarize_failure(text: str) -> str:
    """The useful part of an nbval failure: the exception line, or the output difference."""
    lines = [line.rstrip() for line in _ANSI.sub("", text).splitlines()]
    if any("caused an exception" in line for line in lines):
        errors = [line.strip() for line in lines if re.match(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*:", line)]
        return "raised " + (errors[-1] if errors else "an exception")
    if any("outputs differ" in line for line in lines):
        start = next((i for i, line in enumerate(lines) if line.strip() == "Traceback:"), 0) + 1
        diff = [line.strip() for line in lines[start:] if line.strip()][:12]
        return "outputs differ from the stored ones: " + " | ".join(diff)
    return " | ".join(line.strip() for line in lines if line.strip())[:700]


def junit_failures(junit: Path, notebook) -> list[str]:
    """One line per failed cell: nbval's cell number (code cells only, from 0), notebook cell index, error."""
    if not junit.exists():
        return []
    index_of_code_cell = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    failures = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        for problem in [*case.findall("failure"), *case.findall("error")]:
            name = case.get("name", "?")
            where = name
            if name.startswith("Cell ") and name[5:].isdigit() and int(name[5:]) < len(index_of_code_cell):
                code_number = int(name[5:])
                where = f"code cell {code_number} (cell index {index_of_code_cell[code_number]} in the notebook)"
            failures.append(f"{where}: {summarize_failure(problem.text or problem.get('message') or '')}")
    return failures


def run_nbval(notebook: Path, profile: str = "quick", lax: bool = False, workdir: Path | None = None,
              timeout_s: int = 3600, numerics: str | None = None) -> NbvalResult:
    """Run one notebook under nbval in a separate pytest process with the network guard on."""
    import nbformat

    workdir = workdir or REPO / "build" / "nbval-reports"
    workdir.mkdir(parents=True, exist_ok=True)
    junit = workdir / f"{notebook.stem}.{profile}.xml"
    junit.unlink(missing_ok=True)
    start = time.perf_counter()
    with ProcessTreeSampler() as sampler:
        try:
            completed = subprocess.run(
                nbval_command(notebook, junit, lax=lax), cwd=REPO, env=kernel_environment(profile, numerics=numerics),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s,
            )
            returncode, output = completed.returncode, completed.stdout
        except subprocess.TimeoutExpired as error:
            returncode = -1
            output = (error.stdout or b"").decode("utf-8", "replace") if isinstance(error.stdout, bytes) \
                else (error.stdout or "")
            output += f"\nnbval did not finish within {timeout_s} s"
    wall = time.perf_counter() - start
    result = NbvalResult(notebook, returncode, wall, sampler.peak_rss_bytes / 2**20, output)
    result.failures = junit_failures(junit, nbformat.read(notebook, as_version=4))
    return result
