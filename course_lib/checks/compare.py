"""Comparing a student's answer with the reference: types count, nothing is converted into agreement.

:func:`compare_outputs` returns ``None`` for a match, else one short sentence naming the first difference
(which item, which index, expected vs got)."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor


def compare_outputs(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """``None`` when ``got`` matches ``expected``, else a short description of the difference.

    Types count, never converted into agreement: an integer or boolean tensor must have the reference's exact
    dtype, a floating one any floating dtype (values within the tolerances); a NumPy array must have the same
    kind of dtype (integer, boolean, floating); a Python ``int`` wants an integer (NumPy's too, not a bool), a
    ``bool`` a bool, a ``float`` a real number. Lists, tuples and dicts are compared item by item.
    """
    if isinstance(expected, torch.Tensor):
        return _compare_tensors(got, expected, atol, rtol)
    if isinstance(expected, np.ndarray):
        return _compare_arrays(got, expected, atol, rtol)
    if isinstance(expected, Mapping):
        return _compare_mappings(got, expected, atol, rtol)
    if isinstance(expected, (list, tuple)):
        return _compare_sequences(got, expected, atol, rtol)
    problem = _scalar_type_problem(got, expected)
    if problem:
        return problem
    if isinstance(expected, numbers.Real) and not isinstance(expected, numbers.Integral):
        if math.isnan(expected) and math.isnan(got) or abs(got - expected) <= atol + rtol * abs(expected):
            return None
        return f"expected {expected:.6g}, got {got:.6g}"
    try:
        differ = bool(got != expected)
    except Exception:  # e.g. an array compared with a string
        differ = True
    return f"expected {_short(expected)}, got {_short(got)}" if differ else None


def compare_exact_dtype(got: Any, expected: Any) -> str | None:
    """Like :func:`compare_outputs`, but a floating tensor must also have the reference's exact dtype (item by
    item inside tuples and lists): for exercises where the dtype is part of the answer, such as keeping the
    input's precision."""
    if isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and got.dtype != expected.dtype:
        return f"expected a {expected.dtype} tensor (the dtype of the inputs), got {got.dtype}"
    if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)) and len(got) == len(expected):
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare_exact_dtype(g, e)
            if problem:
                return f"item {i}: {problem}"
        return None
    return compare_outputs(got, expected)


def _describe(value: Any) -> str:
    """What a value is, for messages: "a torch.float32 tensor of shape (2, 3)", "float 3.0", "list"."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a NumPy {value.dtype} array of shape {value.shape}"
    if isinstance(value, (bool, np.bool_, numbers.Number, str)):
        return f"{type(value).__name__} {_short(value)}"
    return type(value).__name__


def _scalar_type_problem(got: Any, expected: Any) -> str | None:
    """For Python/NumPy scalars: bool wants a bool, int an integer (not a bool), float a real number."""
    got_bool = isinstance(got, (bool, np.bool_))
    if isinstance(expected, (bool, np.bool_)):
        return None if got_bool else f"expected a bool, got {_describe(got)}"
    if isinstance(expected, numbers.Integral):
        return None if isinstance(got, numbers.Integral) and not got_bool else f"expected an int, got {_describe(got)}"
    if isinstance(expected, numbers.Real):
        return None if isinstance(got, numbers.Real) and not got_bool else f"expected a number, got {_describe(got)}"
    if isinstance(expected, str) and not isinstance(got, str):
        return f"expected a str, got {_describe(got)}"
    return None


def _first_difference(differs: Tensor, got: Tensor, expected: Tensor) -> str:
    index = tuple(int(i) for i in differs.nonzero()[0])
    where = f" at index {index}" if index else ""
    return f"{where}: expected {_scalar_text(expected[index])}, got {_scalar_text(got[index])}"


def _scalar_text(value: Tensor) -> str:
    item = value.item()
    return f"{item:.6g}" if isinstance(item, float) else repr(item)


def _compare_tensors(got: Any, expected: Tensor, atol: float, rtol: float) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor, got {_describe(got)}"
    if expected.is_floating_point():
        if not got.is_floating_point():
            return f"expected a floating tensor (like {expected.dtype}), got {got.dtype}"
    elif got.dtype != expected.dtype:
        return f"expected a {expected.dtype} tensor, got {got.dtype}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    got = got.detach().to(device=expected.device, dtype=expected.dtype)  # floating to floating, or the same dtype
    if expected.is_floating_point():
        differs = ~torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    else:
        differs = got != expected
    if differs.any():
        return "values differ from the reference" + _first_difference(differs, got, expected)
    return None


_KINDS = {"i": "integer", "u": "integer", "b": "boolean", "f": "floating", "c": "complex"}


def _compare_arrays(got: Any, expected: np.ndarray, atol: float, rtol: float) -> str | None:
    if not isinstance(got, np.ndarray):
        return f"expected a NumPy array, got {_describe(got)}"
    want, have = _KINDS.get(expected.dtype.kind, expected.dtype.kind), _KINDS.get(got.dtype.kind, got.dtype.kind)
    if want != have:
        return f"expected a NumPy array of {want} dtype (like {expected.dtype}), got {got.dtype}"
    if got.shape != expected.shape:
        return f"expected shape {expected.shape}, got {got.shape}"
    if want in ("floating", "complex", "integer", "boolean"):
        return _compare_tensors(torch.from_numpy(np.ascontiguousarray(got).astype(expected.dtype)),
                                torch.from_numpy(np.ascontiguousarray(expected)), atol, rtol)
    return None if np.array_equal(got, expected) else "values differ from the reference"


def _compare_mappings(got: Any, expected: Mapping, atol: float, rtol: float) -> str | None:
    keys = sorted(expected, key=str)
    if not isinstance(got, Mapping):
        return f"expected a dict with keys {keys}, got {_describe(got)}"
    if set(got) != set(expected):
        return f"expected the keys {keys}, got {sorted(got, key=str)}"
    for key in keys:
        problem = compare_outputs(got[key], expected[key], atol, rtol)
        if problem:
            return f"{key}: {problem}"
    return None


def _compare_sequences(got: Any, expected: list | tuple, atol: float, rtol: float) -> str | None:
    """Item by item; a list and a tuple count as the same. For lists of plain values (token strings, ids)
    a difference shows both lists whole, which says more than the first differing item."""
    if not isinstance(got, (list, tuple)):
        return f"expected a {type(expected).__name__}, got {_describe(got)}"
    plain = all(isinstance(e, (str, bool, numbers.Number, type(None))) for e in expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        problem = _scalar_type_problem(g, e) if plain else compare_outputs(g, e, atol, rtol)
        if problem:
            return f"item {i}: {problem}"
    if plain:
        same = len(got) == len(expected) and all(compare_outputs(g, e, atol, rtol) is None
                                                  for g, e in zip(got, expected))
        return None if same else f"expected {_short(expected)}, got {_short(got)}"
    if len(got) != len(expected):
        return f"expected {len(expected)} items, got {len(got)}"
    return None


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
