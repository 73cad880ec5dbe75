"""Started by Python itself when this folder is on PYTHONPATH: turns on the course's network guard.

Notebook runs (tests, ``scripts/execute_notebooks.py``) put this folder on ``PYTHONPATH`` and set
``COURSE_BLOCK_NETWORK=1``; every Python process they start, Jupyter kernels included, then refuses
connections to other hosts (see ``course_lib/netblock.py``).
"""
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_guard():
    try:
        from course_lib import netblock
    except ImportError:  # course_lib not installed in this interpreter: load the file from the checkout
        path = os.path.join(_HERE, os.pardir, os.pardir, "course_lib", "netblock.py")
        spec = importlib.util.spec_from_file_location("_course_netblock", path)
        netblock = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(netblock)
    return netblock


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
