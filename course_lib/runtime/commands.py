"""The command that fixes something, as the user can run it where the course runs.

In a clone of the repository (``course_lib/`` sits beside ``pyproject.toml`` and the ``Makefile``) that is a
``make`` target; where the course was installed from its distribution (pip, Colab, a JupyterHub or Binder
image) it is the ``course-lib`` command. Every message that names a fix takes it from :func:`fix_command`.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from course_lib.runtime.errors import CourseInputError

PACKAGE = Path(__file__).resolve().parents[1]  # course_lib/, this module being course_lib/runtime/commands.py
# action: (the make target in a clone, the course-lib command elsewhere)
ACTIONS = {
    "prepare": ("prepare", "prepare"),
    "doctor": ("doctor", "doctor"),
    "setup": ("setup", "install-assets"),
    "install-assets": ("setup", "install-assets"),
}


def clone_root() -> Path | None:
    """The clone's folder where ``course_lib`` runs from a clone (its parent holds pyproject.toml and the
    Makefile), else None (an installed course)."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file() else None


def fix_command(action: str, **environment: str | Path) -> str:
    """The command for ``action``, in backticks: ``fix_command("prepare")`` is "`make prepare`" in a clone and
    "`course-lib prepare`" elsewhere; ``fix_command("prepare", COURSE_CACHE_DIR=root)`` puts the variable first."""
    if action not in ACTIONS:
        raise CourseInputError(f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    make, command = ACTIONS[action]
    variables = "".join(f"{name}={shlex.quote(str(value))} " for name, value in environment.items())
    return f"`{variables}make {make}`" if clone_root() else f"`{variables}course-lib {command}`"


def lessons_hint() -> str:
    """Where the lesson notebooks are: this clone's ``notebooks/``, or the command that writes them."""
    root = clone_root()
    if root is not None and (root / "notebooks").is_dir():
        return f"this clone's lessons are in {root / 'notebooks'}"
    return "`course-lib notebooks DIR` writes the course's lessons into DIR"
