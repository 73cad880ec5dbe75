"""What the benchmarks share: command-line options, the machine description, timing and summaries.

Every benchmark runs on the CPU by default (``--device cuda`` for a GPU), prints the machine it ran on,
repeats each measurement and reports the median with the spread (min, max), and has a ``--quick`` smoke
mode with tiny sizes that only proves the code runs.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import course_lib  # noqa: F401  (offline mode before transformers is imported)
import torch
import transformers

from course_lib.settings import get_device


def add_common_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--device``, ``--quick`` and ``--threads``, the options every benchmark accepts."""
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, numbers mean nothing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def setup(device: str = "cpu", threads: int | None = None) -> torch.device:
    """Set the CPU thread count and return the device, failing clearly when CUDA is asked for but absent."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    return get_device(device)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none): a busy machine times badly."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_clock() -> dict | None:
    """Core-seconds so far: the whole machine busy (``/proc/stat``: user, nice, system, irq, softirq and steal,
    the time a hypervisor gave to other guests), and this process with its finished children (``os.times``); with
    the wall clock. None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    times = os.times()
    return {"machine_busy": (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            "own": times.user + times.system + times.children_user + times.children_system,
            "wall": time.monotonic()}


def others_cpu(start: dict | None, end: dict | None, cores: int) -> dict | None:
    """What other processes (and other guests, through steal) took between two :func:`cpu_clock` readings:
    core-seconds, and their share of the ``cores`` x wall time there was."""
    if start is None or end is None:
        return None
    wall = end["wall"] - start["wall"]
    others = max(0.0, (end["machine_busy"] - start["machine_busy"]) - (end["own"] - start["own"]))
    return {"core_seconds": round(others, 1), "share": round(others / (cores * wall), 4) if wall > 0 else 0.0,
            "wall_seconds": round(wall, 1)}


# The CPU features that decide how fast a matmul can go: vector width, fused multiply-add, native bf16 (AVX512-BF16
# dot products, AMX tiles), int8 dot products.
MATMUL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`MATMUL_FLAGS` this CPU reports (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return {flag: flag in present for flag in MATMUL_FLAGS}
    except OSError:
        pass
    return {}


def library_versions() -> dict[str, str | None]:
    import importlib.metadata

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("onnxruntime", "onnx", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info(device: torch.device) -> dict:
    """CPU (model, cores, matmul flags), threads, load, library versions and the GPU (if one is used)."""
    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        **library_versions(),
        "device": str(device),
        "gpu": None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def describe_machine(info: dict) -> str:
    """One line for the console and the Markdown report."""
    load = info["load_average"]
    flags = " ".join(flag for flag, present in info.get("cpu_flags", {}).items() if present)
    text = (f"{info['cpu']}, {info['logical_cores']} logical cores, {info['torch_threads']} torch threads"
            f"{f' (flags: {flags})' if flags else ''}"
            f"{f', load average {load[0]:.1f}' if load else ''}; python {info['python']}, torch {info['torch']}, "
            f"transformers {info['transformers']}, onnxruntime {info.get('onnxruntime')}")
    if info["gpu"]:
        text += f"; GPU {info['gpu']} (CUDA {info.get('cuda')})"
    return text


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' info logs and progress bars inside the block (the load report of a model whose
    fresh head is, as intended, missing from the checkpoint)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock reading includes it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device) -> tuple[float, object]:
    """Seconds one call of ``fn`` takes (GPU work included) and what it returned."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def spread(values: list[float]) -> dict:
    """Median, min, max, mean and standard deviation (0 for a single value) of repeated measurements."""
    if not values:
        raise ValueError("spread() needs at least one measurement, got none")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }
