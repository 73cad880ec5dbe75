"""Exercise checks: run a student's function on several inputs, compare with the reference, give a hint.

A lesson module (``course_lib.checks.lesson01`` ...) registers its exercises with :func:`register`.
In a notebook::

    from course_lib.checks import check
    check("01.greedy_wordpiece", greedy_wordpiece)   # shows "passed" or what went wrong and a hint
    hint("01.greedy_wordpiece")      # stuck: the first rung of the hint ladder (the idea)
    hint("01.greedy_wordpiece", 2)   # the second rung (the line to write); the third is the instructor edition

Every exercise has a level: ``warm-up`` (a few lines that set up the lesson's piece), ``core`` (the piece the lesson
is about, written whole) or ``stretch`` (beyond the lesson, for the strong student), and the minutes it takes.

A check never raises on a wrong answer: it returns a :class:`CheckResult` whose text says which case
failed, what was expected, and, when the answer matches a known mistake, a specific hint. It cannot be
talked round: types are compared as they are (a float mask is not a boolean one, 3.0 is not the count 3;
see :func:`compare_outputs`), and an answer that gets the result right by changing its inputs in place
fails too. Each call gets fresh copies of the inputs, so no answer can spoil a case for the next one.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from course_lib.checks.compare import _describe, _short, compare_exact_dtype, compare_outputs  # noqa: F401


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


def _clone(value: Any) -> Any:
    """Fresh copies of mutable inputs (tensors, arrays, lists, models), so that a student's in-place edit can
    neither change the reference's input nor the stored case."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, nn.Module):
        return copy.deepcopy(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _unchanged(value: Any, original: Any) -> bool:
    """Whether an input still equals its original after the student's function ran."""
    if isinstance(original, torch.Tensor):
        return (isinstance(value, torch.Tensor) and value.dtype == original.dtype and value.shape == original.shape
                and bool(torch.isclose(value, original, rtol=0, atol=0, equal_nan=True).all()))
    if isinstance(original, np.ndarray):
        return (isinstance(value, np.ndarray) and value.dtype == original.dtype
                and np.array_equal(value, original, equal_nan=original.dtype.kind in "fc"))
    if isinstance(original, nn.Module):
        now, before = dict(value.named_parameters()), dict(original.named_parameters())
        return now.keys() == before.keys() and all(
            now[k].requires_grad == before[k].requires_grad and _unchanged(now[k].detach(), before[k].detach())
            for k in before)
    if isinstance(original, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(original)
                and all(_unchanged(v, o) for v, o in zip(value, original)))
    if isinstance(original, dict):
        return isinstance(value, dict) and value.keys() == original.keys() and all(
            _unchanged(value[k], original[k]) for k in original)
    return True


def _changed_inputs(fn: Callable[..., Any], args: tuple, kwargs: dict, case: Case) -> list[str]:
    """Names (as the student's function calls them) of the inputs that ``fn`` changed in place."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    changed = [names[i] if i < len(names) else f"argument {i + 1}"
               for i, (value, original) in enumerate(zip(args, case.args)) if not _unchanged(value, original)]
    return changed + [name for name in case.kwargs if not _unchanged(kwargs[name], case.kwargs[name])]


def randn(*shape: int, seed: int, scale: float = 1.0) -> Tensor:
    """Reproducible standard-normal case inputs (times ``scale``), without touching the global random state."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


LEVELS = ("warm-up", "core", "stretch")


@dataclass
class Exercise:
    name: str
    title: str
    reference: Callable[..., Any]
    # The inputs to try; a function returning them for cases that need real weights or data (loaded on the
    # first check, not when the lesson imports the checks).
    cases: list[Case] | Callable[[], list[Case]]
    mistakes: list[Mistake] = field(default_factory=list)
    compare: Callable[[Any, Any], str | None] = compare_outputs
    # For exercises whose function does not take the case arguments itself (say, it changes a model in
    # place): turns a function in the student's form into one that takes a case's arguments and returns
    # what to compare. Applied alike to the student's answer, the reference and every mistake.
    adapt: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
    level: str = "warm-up"  # one of LEVELS
    minutes: int = 5  # what it takes a student who followed the lesson, for the instructor guide
    # The hint ladder: the first rung names the idea, the second the line to write; the instructor edition's
    # solution is the last rung. Shown one at a time by :func:`hint`.
    hints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"{self.name}: level must be one of {LEVELS}, got {self.level!r}")
        if self.level == "core" and len(self.hints) < 2:
            raise ValueError(f"{self.name}: a core exercise needs a hint ladder of at least two rungs")

    def case_list(self) -> list[Case]:
        if callable(self.cases):
            self.cases = list(self.cases())
        return self.cases

    def _runnable(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn if self.adapt is None else self.adapt(fn)

    def check(self, student: Callable[..., Any]) -> CheckResult:
        if not callable(student):
            return self._fail(f"pass your function itself (without calling it), got {type(student).__name__}")
        reference, student = self._runnable(self.reference), self._runnable(student)
        cases = self.case_list()
        for number, case in enumerate(cases, 1):
            label = case.label or f"case {number}"
            expected = reference(*_clone(case.args), **_clone(case.kwargs))
            args, kwargs = _clone(case.args), _clone(case.kwargs)
            try:
                got = student(*args, **kwargs)
            except NotImplementedError:
                return self._fail("not done yet: replace the `raise NotImplementedError(...)` line with your code "
                                  "and run the cell again.", case=label)
            except Exception as error:  # a wrong answer must never crash the notebook
                where = traceback.extract_tb(error.__traceback__)[-1]
                return self._fail(f"on {label} your function raised {type(error).__name__}: {error} "
                                  f"(line {where.lineno}: {where.line})", case=label)
            problem = self.compare(got, expected)
            if problem is None:
                changed = _changed_inputs(student, args, kwargs, case)
                if changed:
                    return self._fail(f"on {label} the result is right, but your function changed its input "
                                      f"{', '.join(changed)} in place. Leave the inputs as they were: work on a "
                                      "copy, or use operations that return a new object (x = x - m, not x -= m; "
                                      "masked_fill, not masked_fill_).", case=label)
                continue
            for mistake in self.mistakes:
                try:
                    wrong = self._runnable(mistake.wrong)(*_clone(case.args), **_clone(case.kwargs))
                except Exception:
                    continue
                if self.compare(got, wrong) is None:
                    return self._fail(f"on {label}: {problem}.", hint=mistake.hint, case=label)
            return self._fail(f"on {label}: {problem}.", case=label)
        return CheckResult(self.name, True, f"[passed] {self.name} ({self.title}): all {len(cases)} cases match "
                                            "the reference.")

    def _fail(self, problem: str, hint: str | None = None, case: str | None = None) -> CheckResult:
        message = f"[not yet] {self.name} ({self.title}): {problem}"
        if hint:
            message += f"\nHint: {hint}"
        if self.hints:
            message += f'\nStuck? hint("{self.name}") names the idea; hint("{self.name}", 2) names the line.'
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


@dataclass(frozen=True)
class Hint:
    """One rung of an exercise's hint ladder; shows as its text in a notebook."""

    text: str

    def __repr__(self) -> str:
        return self.text


def hint(name: str, step: int = 1) -> Hint:
    """Rung ``step`` (1, 2, ...) of exercise ``name``'s hint ladder. Past the last rung: where the solution is."""
    exercise = get_exercise(name)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be 1, 2, ... (the rung of the ladder), got {step!r}")
    ladder = exercise.hints
    if not ladder:
        return Hint(f"{name} has no hint ladder: its check's message says what differs and, for a known "
                    "mistake, what to change.")
    if step <= len(ladder):
        more = f' (hint("{name}", {step + 1}) for the next)' if step < len(ladder) else ""
        return Hint(f"{name}, hint {step} of {len(ladder)}: {ladder[step - 1]}{more}")
    return Hint(f"{name}: no more hints. The instructor edition of the lesson holds the solution, in the cell "
                "after the stub; ask whoever teaches the course for it, or compare with the reference in course_lib.")


def check(name: str, student: Callable[..., Any]) -> CheckResult:
    """Check ``student`` against exercise ``name``; the result shows as text in a notebook."""
    return get_exercise(name).check(student)
