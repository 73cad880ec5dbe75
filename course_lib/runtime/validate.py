"""Checks for the arguments of public functions: one line per argument at the call site, one sentence per problem.

Each helper returns the value it checked (so ``r = positive_int("r", r)`` reads as an assignment) and raises
:class:`~course_lib.runtime.errors.CourseInputError`, which is both a ``ValueError`` and a ``TypeError``: code
that catches either keeps working, and the message says what was given and what is expected.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from course_lib.runtime.errors import CourseInputError

__all__ = ["positive_int", "nonnegative_int", "number", "one_of", "names", "tensor", "folder",
           "CourseInputError"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (``True`` is not an integer here)."""
    if not _is_int(value) or value < minimum:
        raise CourseInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def nonnegative_int(name: str, value) -> int:
    return positive_int(name, value, minimum=0)


def number(name: str, value, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> float:
    """A real number (not a bool, not NaN) in the interval from ``low`` to ``high``, each end closed unless open."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "any" if low is None else f"{'(' if low_open else '['}{low}"
        right = "" if high is None else f", {high}{')' if high_open else ']'}"
        where = f" in {left}{right}" if low is not None and high is not None else (
            f" {'>' if low_open else '>='} {low}" if low is not None else
            f" {'<' if high_open else '<='} {high}" if high is not None else "")
        raise CourseInputError(f"{name} must be a number{where}, got {value!r}")
    return value


def one_of(name: str, value, choices: Iterable):
    """``value`` must be one of ``choices`` (listed in the message)."""
    choices = tuple(choices)
    if value not in choices:
        raise CourseInputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def names(name: str, value, *, allow_empty: bool = False) -> tuple[str, ...]:
    """One name (a ``str``) or any iterable of names, each a non-blank ``str``; returned as a tuple."""
    values = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Iterable) else None
    if values is None or not (values or allow_empty) or not all(isinstance(v, str) and v.strip() for v in values):
        raise CourseInputError(f"{name} must be a non-blank string or a list of them, got {value!r}")
    return values


def tensor(name: str, value, *, dim: int | None = None, kind: str | None = None) -> Tensor:
    """A ``torch.Tensor`` with ``dim`` dimensions; ``kind`` ``"float"`` or ``"long"`` pins the dtype family."""
    if not isinstance(value, Tensor):
        raise CourseInputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dim is not None and value.dim() != dim:
        raise CourseInputError(f"{name} must have {dim} dimensions, got shape {tuple(value.shape)}")
    if kind == "float" and not value.is_floating_point():
        raise CourseInputError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    if kind == "long" and value.dtype != torch.long:
        raise CourseInputError(f"{name} must hold token ids as torch.long, got dtype {value.dtype}")
    return value


def token_mask(name: str, value) -> Tensor:
    """A tokenizer's ``(batch, tokens)`` mask: integers 0/1 or booleans, 1 (True) for a real token."""
    if not isinstance(value, Tensor):
        raise CourseInputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2:
        raise CourseInputError(f"expected {name} of shape (batch, tokens), got {tuple(value.shape)}")
    if value.is_floating_point() or value.is_complex():
        raise CourseInputError(f"{name} must hold integers or booleans (1 = token, 0 = padding), got dtype "
                               f"{value.dtype}")
    if value.dtype != torch.bool and not ((value == 0) | (value == 1)).all():
        raise CourseInputError(f"{name} must contain only 0 and 1, got values {value.unique().tolist()}")
    return value


def folder(name: str, value, *, must_exist: bool = True) -> Path:
    """A path to a folder (a ``str`` or ``Path``); an existing file in its place is refused."""
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise CourseInputError(f"{name} must be a folder path (str or pathlib.Path), got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise CourseInputError(f"{name} must be a folder, but {path} is a file")
    if must_exist and not path.is_dir():
        raise CourseInputError(f"{name}: the folder {path} does not exist")
    return path
