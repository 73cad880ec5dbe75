"""Binder, JupyterHub images and dev containers: what repo2docker and VS Code read, and the script they run.

Docker does not run here, so the image itself is not built: repo2docker renders the Dockerfile it would build
(``--no-build``), and the install script that the image's postBuild and the dev container run is run for real
in a clean virtual environment (torch from pip's own sources instead of the PyTorch CPU index, which is the
one step that differs).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from course_lib.assets import cache_dir

ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = "scripts/install_cpu_env.sh"


@pytest.fixture(scope="module")
def dockerfile() -> str:
    """The Dockerfile repo2docker would build for this repository (as mybinder.org and a JupyterHub admin run it)."""
    result = subprocess.run([sys.executable, "-m", "repo2docker", "--no-build", "--no-run", "--debug",
                             "--user-id", "1000", "--user-name", "jovyan", str(ROOT)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def test_repo2docker_reads_the_binder_folder_and_picks_python_311(dockerfile):
    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11" and "3.11" in requires
    assert "Building conda environment for python=3.11" in dockerfile
    assert "environment.yml" not in dockerfile, "the root environment.yml must not take over the build"


def test_image_copies_the_repository_then_runs_postbuild_and_starts_through_binder_start(dockerfile):
    copy = dockerfile.index("COPY --chown=1000:1000 src/ ${REPO_DIR}/")
    post_build = dockerfile.index("RUN ./binder/postBuild")
    assert copy < post_build
    assert 'ENV R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in dockerfile


def test_postbuild_and_the_dev_container_run_the_same_install_script():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert re.search(rf"^bash {re.escape(INSTALL_SCRIPT)}$", post_build, flags=re.MULTILINE)
    container = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert container["postCreateCommand"].startswith(f"bash {INSTALL_SCRIPT} ")
    assert "python:3.11" in container["image"]
    for script in ("binder/postBuild", "binder/start", INSTALL_SCRIPT):
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"


def test_build_and_start_agree_on_where_the_caches_are(tmp_path):
    """postBuild builds the caches where binder/start points the course at every container start."""
    built = subprocess.run(["bash", "-c", "source binder/course-env.sh && echo $COURSE_CACHE_DIR"], cwd=ROOT,
                           env={k: v for k, v in os.environ.items() if k != "COURSE_CACHE_DIR"},
                           capture_output=True, text=True, check=True).stdout.strip()
    started = subprocess.run(["bash", str(ROOT / "binder" / "start"), sys.executable, "-c",
                              "import os; print(os.environ['COURSE_CACHE_DIR'])"], cwd=tmp_path,
                             env={k: v for k, v in os.environ.items() if k != "COURSE_CACHE_DIR"},
                             capture_output=True, text=True, check=True).stdout.strip()
    assert built == started == str(ROOT / ".cache" / "course")
    assert "source binder/course-env.sh" in (ROOT / "binder" / "postBuild").read_text()


def test_start_runs_the_command_it_is_given_with_its_exit_status(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "binder" / "start"), "bash", "-c", "echo started; exit 3"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (3, "started\n")


def test_install_script_rejects_an_unknown_option():
    result = subprocess.run(["bash", INSTALL_SCRIPT, "--gpu"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


@pytest.mark.slow
def test_install_script_sets_up_a_clean_environment_that_passes_prepare(tmp_path):
    """The script of postBuild and the dev container, end to end: torch, the pinned libraries, the course
    (as a regular package, not editable), the asset packages, then `course-lib prepare` (the caches exist:
    it checks them)."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env.update({"TORCH_PIP_ARGS": "", "PIP_NO_COMPILE": "1", "COURSE_CACHE_DIR": str(cache_dir()),
                "PYTHON": sys.executable})
    result = subprocess.run(["bash", INSTALL_SCRIPT, "--venv", str(venv)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=2400)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "assets ok" in result.stdout and "course installed in" in result.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import course_lib, torch; print(course_lib.__file__); print(torch.__version__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(venv), "the course should be installed into the venv, not linked to the clone"
    assert where[1].startswith("2.13.0")
