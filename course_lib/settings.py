"""Profile, device and seeding: the only global state of the course.

``COURSE_PROFILE`` picks how much data and compute a notebook uses:

* ``quick``: small slices that run in minutes on a laptop CPU (the default without a GPU);
* ``full``: whole data sets, meant for a GPU (the default when CUDA is available).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

PROFILES = ("quick", "full")
DEFAULT_SEED = 0


class ProfileError(ValueError):
    """COURSE_PROFILE holds something other than a known profile name."""


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
        if self.split_rows is None:
            return available
        if split not in self.split_rows:
            raise ValueError(f"the {self.name} profile has no size for a split named {split!r}; "
                             f"known splits: {', '.join(self.split_rows)}")
        return min(available, self.split_rows[split])


_PROFILES = {
    "quick": Profile("quick", split_rows={"train": 3000, "validation": 500, "test": 500}, epochs=1, batch_size=32),
    "full": Profile("full", split_rows=None, epochs=3, batch_size=32),
}


def profile_name(value: str | None = None) -> str:
    """The active profile name: ``value``, else ``$COURSE_PROFILE``, else full with CUDA / quick without."""
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


def get_device(prefer: str | None = None) -> torch.device:
    """``$COURSE_DEVICE`` or ``prefer`` if given, else CUDA when available, else CPU."""
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device {choice!r} was asked for, but CUDA is not available on this machine.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = DEFAULT_SEED) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated. Returns the seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed
