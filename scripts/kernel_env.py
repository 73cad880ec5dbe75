"""Which notebooks make the course, and the environment their kernels run in.

A canonical run uses a fresh kernel with the course profile, the network guard, a fixed hash seed and the
Hub's offline switches. The quick profile also pins the CPU and 2 threads, the machine kind the stored
outputs come from. ``numerics`` chooses a floating-point configuration:

* ``native``: the CPU's fastest kernels (what a student gets);
* ``alternate``: PyTorch's portable kernels without vector instructions, MKL and oneDNN limited to SSE4,
  and one thread: every reduction sums in another order and every last digit may move, the way another CPU,
  thread count or GPU moves it. The stored outputs must pass under both (see docs/notebook_policy.md).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NETBLOCK_DIR = REPO / "scripts" / "netblock"
CELL_TIMEOUT_S = 900

NUMERICS = {
    "native": {},
    "alternate": {
        "ATEN_CPU_CAPABILITY": "default",  # PyTorch's own kernels without AVX2/AVX-512
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",  # matrix products through MKL's SSE4 code path
        "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN's convolutions and matmuls likewise
        "OMP_NUM_THREADS": "1",  # one thread: reductions are no longer split across cores
        "MKL_NUM_THREADS": "1",
    },
}


def numerics_environment(numerics: str | None = None) -> dict[str, str]:
    """The variables of a numeric configuration (``$COURSE_NUMERICS`` by default, else ``native``)."""
    name = numerics or os.environ.get("COURSE_NUMERICS") or "native"
    if name not in NUMERICS:
        raise ValueError(f"unknown numeric configuration {name!r}: use one of {', '.join(NUMERICS)}")
    return {"COURSE_NUMERICS": name, **NUMERICS[name]}


def course_notebooks(paths: list[str | Path] | None = None) -> list[Path]:
    """The lesson notebooks in course order (``00_...``, ``01_...``), or the given ones, checked to exist."""
    if paths:
        chosen = [Path(p).resolve() for p in paths]
        missing = [str(p) for p in chosen if not p.is_file() or p.suffix != ".ipynb"]
        if missing:
            raise FileNotFoundError(f"expected existing .ipynb files, got: {', '.join(missing)}")
        return sorted(chosen, key=lambda p: p.name)
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"), key=lambda p: p.name)


def kernel_environment(profile: str = "quick", base: dict[str, str] | None = None,
                       numerics: str | None = None) -> dict[str, str]:
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
    env.update(numerics_environment(numerics or env.get("COURSE_NUMERICS")))
    return env


if __name__ == "__main__":  # `env $(python scripts/kernel_env.py alternate) ...`: the variables, one per word
    import sys

    print(" ".join(f"{name}={value}" for name, value in numerics_environment(sys.argv[1] if len(sys.argv) > 1
                                                                            else None).items()))
