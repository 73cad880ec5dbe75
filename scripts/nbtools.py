"""Shared pieces of the notebook tooling: which notebooks, the kernel environment, nbval runs, staleness.

Used by ``tests/test_notebooks.py``, ``scripts/execute_notebooks.py`` and ``scripts/nbval_run.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
SANITIZE_CONFIG = REPO / "tests" / "nbval_sanitize.cfg"
NETBLOCK_DIR = REPO / "scripts" / "netblock"
TIMINGS_JSON = REPO / "docs" / "timings.json"
CELL_TIMEOUT_S = 900

METADATA_KEY = "course"  # notebook.metadata["course"]["executed"] = {"profile", "code_sha256"}
# Cells whose output legitimately differs on a GPU or in the full profile; the GPU run does not compare them.
UNCOMPARED_ON_GPU_TAGS = ("device-dependent", "profile-dependent")


def course_notebooks(paths: list[str | Path] | None = None) -> list[Path]:
    """The lesson notebooks in course order (``00_...``, ``01_...``), or the given ones, checked to exist."""
    if paths:
        chosen = [Path(p).resolve() for p in paths]
        missing = [str(p) for p in chosen if not p.is_file() or p.suffix != ".ipynb"]
        if missing:
            raise FileNotFoundError(f"expected existing .ipynb files, got: {', '.join(missing)}")
        return sorted(chosen, key=lambda p: p.name)
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"), key=lambda p: p.name)


def kernel_environment(profile: str = "quick", base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a canonical notebook run: profile, network guard, fixed hash seed, offline Hub.

    The quick profile also pins the run to the CPU and to 2 threads, the machine the stored outputs
    come from, so that a larger workstation reproduces them digit for digit.
    """
    if profile not in ("quick", "full"):
        raise ValueError(f"expected profile 'quick' or 'full', got {profile!r}")
    env = dict(os.environ if base is None else base)
    env.update({
        "COURSE_PROFILE": profile,
        "COURSE_BLOCK_NETWORK": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join([str(NETBLOCK_DIR), *filter(None, [env.get("PYTHONPATH")])]),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # debugger notice that ipykernel prints on some setups
    })
    if profile == "quick":
        env.update({"COURSE_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""})
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = env.get("COURSE_KERNEL_THREADS", "2")
    return env


# ------------------------------------------------------------------------------------- stored outputs
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


# ------------------------------------------------------------------------------------- memory sampling
class ProcessTreeSampler:
    """Polls the resident memory and CPU time of this process's children (a kernel and its workers)."""

    def __init__(self, interval_s: float = 0.2):
        import psutil

        self._psutil = psutil
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.cpu_seconds = 0.0
        self._cpu_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = 0
        for child in self._psutil.Process().children(recursive=True):
            try:
                rss += child.memory_info().rss
                times = child.cpu_times()
                self._cpu_by_pid[child.pid] = times.user + times.system
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        self.cpu_seconds = sum(self._cpu_by_pid.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------- nbval
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
              timeout_s: int = 3600) -> NbvalResult:
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
                nbval_command(notebook, junit, lax=lax), cwd=REPO, env=kernel_environment(profile),
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


# ------------------------------------------------------------------------------------- timings
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
