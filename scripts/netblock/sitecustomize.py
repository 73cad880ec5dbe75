"""Started by Python itself when this folder is on PYTHONPATH: turns on the course's network guard.

Notebook runs (tests, ``scripts/execute_notebooks.py``) put this folder on ``PYTHONPATH`` and set
``COURSE_BLOCK_NETWORK=1``; every Python process they start, Jupyter kernels included, then refuses
connections to other hosts (see ``netblock_guard.py`` beside this file).
"""
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_guard():
    """The guard module in this folder, loaded by path: this folder is on PYTHONPATH, but another
    ``netblock_guard`` earlier on sys.path must not take its place."""
    spec = importlib.util.spec_from_file_location("netblock_guard", os.path.join(_HERE, "netblock_guard.py"))
    guard = importlib.util.module_from_spec(spec)
    sys.modules["netblock_guard"] = guard
    spec.loader.exec_module(guard)
    return guard


def _run_shadowed_sitecustomize():
    """Run the sitecustomize this file hides (a distribution may ship one), so its setup still happens."""
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get("COURSE_BLOCK_NETWORK", "").strip().lower() in ("1", "true", "yes", "on"):
    _load_guard().install()
_run_shadowed_sitecustomize()
