"""Exercise checks: run a student's function on several inputs, compare with the reference, give a hint.

A lesson module (``course_lib.checks.lesson01`` ...) registers its exercises with :func:`register`.
In a notebook::

    from course_lib.checks import check
    check("01.wordpiece", my_wordpiece)       # shows "passed" or what went wrong and a hint

A check never raises on a wrong answer: it returns a :class:`CheckResult` whose text says which case
failed, what was expected, and, when the answer matches a known mistake, a specific hint.
"""
from __future__ import annotations

import importlib
import pkgutil
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Case:
    """One input to try: ``fn(*args, **kwargs)``; ``label`` names it in messages (e.g. "empty string")."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer: if the student's output equals ``wrong(*args)`` on a case, show ``hint``."""

    wrong: Callable[..., Any]
    hint: str


@dataclass
class CheckResult:
    exercise: str
    passed: bool
    message: str
    hint: str | None = None
    case: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:  # same text, coloured, for notebook frontends
        import html

        colour = "#1a7f37" if self.passed else "#b35900"
        return f'<pre style="color:{colour};white-space:pre-wrap">{html.escape(self.message)}</pre>'


def compare_outputs(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """``None`` when ``got`` matches ``expected``, else a short description of the difference."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor, got {type(got).__name__}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if not torch.equal(got.to(expected.dtype), expected):
                return "the values differ from the reference"
            return None
        got = got.detach().to(expected.dtype)
        if not torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True):
            diff = (got - expected).abs().nan_to_num(float("inf")).max().item()
            return f"values differ from the reference (largest difference {diff:.3g})"
        return None
    if isinstance(expected, np.ndarray):
        return compare_outputs(torch.as_tensor(np.asarray(got)), torch.as_tensor(expected), atol, rtol)
    if isinstance(expected, (tuple, list)) and expected and any(
        isinstance(e, (torch.Tensor, np.ndarray, float)) for e in expected
    ):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare_outputs(g, e, atol, rtol)
            if problem:
                return f"item {i}: {problem}"
        return None
    if isinstance(expected, float):
        try:
            ok = abs(float(got) - expected) <= atol + rtol * abs(expected)
        except (TypeError, ValueError):
            return f"expected a number, got {type(got).__name__}"
        return None if ok else f"expected {expected:.6g}, got {float(got):.6g}"
    if got != expected:
        return f"expected {_short(expected)}, got {_short(got)}"
    return None


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clone(value: Any) -> Any:
    """Fresh copies of tensor inputs, so a student's in-place edit cannot change the reference's input."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


@dataclass
class Exercise:
    name: str
    title: str
    reference: Callable[..., Any]
    cases: list[Case]
    mistakes: list[Mistake] = field(default_factory=list)
    compare: Callable[[Any, Any], str | None] = compare_outputs
    # For exercises whose function does not take the case arguments itself (say, it changes a model in
    # place): turns a function in the student's form into one that takes a case's arguments and returns
    # what to compare. Applied alike to the student's answer, the reference and every mistake.
    adapt: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None

    def _runnable(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn if self.adapt is None else self.adapt(fn)

    def check(self, student: Callable[..., Any]) -> CheckResult:
        if not callable(student):
            return self._fail(f"pass your function itself (without calling it), got {type(student).__name__}")
        reference, student = self._runnable(self.reference), self._runnable(student)
        for number, case in enumerate(self.cases, 1):
            label = case.label or f"case {number}"
            expected = reference(*_clone(case.args), **_clone(case.kwargs))
            try:
                got = student(*_clone(case.args), **_clone(case.kwargs))
            except NotImplementedError:
                return self._fail("not done yet: replace the `raise NotImplementedError(...)` line with your code "
                                  "and run the cell again.", case=label)
            except Exception as error:  # a wrong answer must never crash the notebook
                where = traceback.extract_tb(error.__traceback__)[-1]
                return self._fail(f"on {label} your function raised {type(error).__name__}: {error} "
                                  f"(line {where.lineno}: {where.line})", case=label)
            problem = self.compare(got, expected)
            if problem is None:
                continue
            for mistake in self.mistakes:
                try:
                    wrong = self._runnable(mistake.wrong)(*_clone(case.args), **_clone(case.kwargs))
                except Exception:
                    continue
                if self.compare(got, wrong) is None:
                    return self._fail(f"on {label}: {problem}.", hint=mistake.hint, case=label)
            return self._fail(f"on {label}: {problem}.", case=label)
        return CheckResult(self.name, True, f"[passed] {self.name} ({self.title}): all {len(self.cases)} cases match "
                                            "the reference.")

    def _fail(self, problem: str, hint: str | None = None, case: str | None = None) -> CheckResult:
        message = f"[not yet] {self.name} ({self.title}): {problem}"
        if hint:
            message += f"\nHint: {hint}"
        return CheckResult(self.name, False, message, hint=hint, case=case)


_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    _REGISTRY[exercise.name] = exercise
    return exercise


def _load_lessons() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("lesson"):
            importlib.import_module(f"{__name__}.{module.name}")


def exercises() -> dict[str, Exercise]:
    """Every registered exercise, by name."""
    _load_lessons()
    return dict(_REGISTRY)


def get_exercise(name: str) -> Exercise:
    known = exercises()
    if name not in known:
        raise KeyError(f"Unknown exercise {name!r}; known exercises: {', '.join(sorted(known))}")
    return known[name]


def check(name: str, student: Callable[..., Any]) -> CheckResult:
    """Check ``student`` against exercise ``name``; the result shows as text in a notebook."""
    return get_exercise(name).check(student)
