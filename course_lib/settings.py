"""Profile, device and seeding: the only global state of the course.

``COURSE_PROFILE`` picks how much data and compute a notebook uses:

* ``quick``: small slices that run in minutes on a laptop CPU (the default without a GPU);
* ``full``: whole data sets, meant for a GPU (the default when CUDA is available).
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

import numpy as np
import torch

from course_lib.runtime.validate import CourseInputError, nonnegative_int, number

PROFILES = ("quick", "full")
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit
DEVICE_NAMES = "cpu, cuda, cuda:N (the GPU of index N) and mps (Apple GPUs)"


class ProfileError(CourseInputError):
    """COURSE_PROFILE holds something other than a known profile name (a ``ValueError``, as it always was)."""


@dataclass(frozen=True)
class Profile:
    """How much data and compute a notebook uses: the one place that says how big "quick" and "full" are."""

    name: str
    split_rows: dict[str, int] | None  # rows kept of each data-set split; None keeps every row
    epochs: int
    batch_size: int

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"

    def rows(self, split: str, available: int) -> int:
        """How many of a split's ``available`` rows this profile uses."""
        available = nonnegative_int("available", available)
        if self.split_rows is None:
            return available
        if split not in self.split_rows:
            raise CourseInputError(f"the {self.name} profile has no size for a split named {split!r}; "
                                   f"known splits: {', '.join(self.split_rows)}")
        return min(available, self.split_rows[split])


_PROFILES = {
    "quick": Profile("quick", split_rows={"train": 3000, "validation": 500, "test": 500}, epochs=1, batch_size=32),
    "full": Profile("full", split_rows=None, epochs=3, batch_size=32),
}


def profile_name(value: str | None = None) -> str:
    """The active profile name: ``value``, else ``$COURSE_PROFILE``, else full with CUDA / quick without."""
    if value is not None and not isinstance(value, str):
        raise ProfileError(f"the profile must be a name ({', '.join(PROFILES)}) or None, got {value!r}")
    raw = value if value is not None else os.environ.get("COURSE_PROFILE", "")
    name = raw.strip().lower()
    if not name:
        return "full" if torch.cuda.is_available() else "quick"
    if name not in PROFILES:
        raise ProfileError(
            f"Unknown course profile {raw!r}: use one of {', '.join(PROFILES)} "
            "(for example COURSE_PROFILE=quick)."
        )
    return name


def get_profile(value: str | None = None) -> Profile:
    """The active :class:`Profile` (see :func:`profile_name`)."""
    return _PROFILES[profile_name(value)]


def _device_choices() -> str:
    """The devices this machine has, by the names :func:`get_device` takes."""
    cuda = ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))] if torch.cuda.is_available() else []
    return ", ".join(["cpu", *cuda, *(["mps"] if torch.backends.mps.is_available() else [])])


def _device_problem(name: str) -> str | None:
    """Why the device ``name`` cannot be used here, or None if it can."""
    match = re.fullmatch(r"cpu|mps|cuda(?::(\d+))?", name)
    if not match:
        return "is not a device name"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return "asks for CUDA, but CUDA is not available on this machine"
    if match[1] and int(match[1]) >= torch.cuda.device_count():
        return f"asks for a GPU this machine lacks (it has {torch.cuda.device_count()})"
    if name == "mps" and not torch.backends.mps.is_available():
        return "asks for an Apple GPU (MPS), which is not available on this machine"
    return None


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """``prefer`` if given, else ``$COURSE_DEVICE`` if set, else CUDA when available, else CPU.

    The names are cpu, cuda, cuda:N and mps (case and surrounding spaces do not matter); one this machine does not
    have raises :class:`~course_lib.runtime.errors.CourseInputError` listing the ones it has.
    """
    if prefer is not None and not isinstance(prefer, (str, torch.device)):
        raise CourseInputError(f"prefer must be a device name such as 'cpu' or 'cuda' (or None), got {prefer!r}")
    source, choice = ("prefer", str(prefer)) if prefer else ("COURSE_DEVICE", os.environ.get("COURSE_DEVICE", ""))
    if not choice:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = choice.strip().lower()
    problem = _device_problem(name)
    if problem:
        raise CourseInputError(f"{source}={choice!r} {problem}: set it to a device this machine has "
                               f"({_device_choices()}) or leave it unset to choose automatically; the names are "
                               f"{DEVICE_NAMES}.")
    return torch.device(name)


def seed_everything(seed: int = DEFAULT_SEED) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated. Returns the seed."""
    nonnegative_int("seed", number("seed", seed, 0, MAX_SEED))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed
