"""The website's Colab and Binder buttons open the course's own notebooks.

The repository is decided in one place, ``[project.urls] Repository`` in pyproject.toml. Jupyter Book's own
configuration step turns book/_config.yml into the theme options that sphinx-book-theme builds the buttons
from; the links are computed from those options with the theme's URL scheme (tests/test_book.py checks the
same links in the built HTML against book/_config.yml). Each link must name the pyproject repository and
branch and a lesson notebook that git tracks, and the repository must carry what Binder builds from.
"""
from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from jupyter_book.config import get_final_config

from course_lib.publish.lessons import LESSON_PATTERN

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
LESSONS = sorted((ROOT / "notebooks").glob(LESSON_PATTERN))


@pytest.fixture(scope="module")
def theme_options() -> dict:
    config, _ = get_final_config(user_yaml=ROOT / "book" / "_config.yml", sourcedir=ROOT, validate=True,
                                 raise_on_invalid=True, cli_config={"latex_individualpages": False})
    return config["html_theme_options"]


def launch_links(options: dict, page: str) -> dict[str, str]:
    """The Colab and Binder links sphinx-book-theme puts on ``page`` (a path without suffix, like a docname)."""
    org, repo = urlsplit(options["repository_url"]).path.strip("/").split("/")
    branch = options.get("repository_branch") or "master"
    buttons = options["launch_buttons"]
    prefix = options.get("path_to_docs", "").strip("/")
    path = f"{prefix}/{page}.ipynb" if prefix else f"{page}.ipynb"
    ui = {"classic": "tree", "jupyterlab": "lab/tree"}[buttons.get("notebook_interface", "classic")]
    return {
        "colab": f"{buttons['colab_url'].strip('/')}/github/{org}/{repo}/blob/{branch}/{path}",
        "binder": f"{buttons['binderhub_url'].strip('/')}/v2/gh/{org}/{repo}/{branch}?urlpath={ui}/{path}",
    }


def test_the_book_points_at_the_repository_pyproject_names(theme_options):
    assert urlsplit(REPOSITORY).netloc == "github.com" and len(urlsplit(REPOSITORY).path.strip("/").split("/")) == 2
    assert yaml.safe_load((ROOT / "book" / "_config.yml").read_text())["repository"]["url"] == REPOSITORY
    assert theme_options["repository_url"] == REPOSITORY
    assert theme_options["repository_branch"] == "main"
    assert theme_options["launch_buttons"]["colab_url"] and theme_options["launch_buttons"]["binderhub_url"]
    assert theme_options["launch_buttons"].get("thebe") is False


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_colab_and_binder_open_a_tracked_lesson_of_that_repository(theme_options, lesson):
    owner_repo = urlsplit(REPOSITORY).path.strip("/")
    relative = lesson.relative_to(ROOT).as_posix()
    links = launch_links(theme_options, relative.removesuffix(".ipynb"))
    assert links["colab"] == f"https://colab.research.google.com/github/{owner_repo}/blob/main/{relative}"
    assert links["binder"] == f"https://mybinder.org/v2/gh/{owner_repo}/main?urlpath=lab/tree/{relative}"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", relative],
                             capture_output=True, text=True)
    assert tracked.returncode == 0, f"{relative} is not in git: Colab and Binder could not open it"


def test_binder_finds_its_build_files_in_the_repository():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "binder", "scripts/install_cpu_env.sh"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert {"binder/postBuild", "binder/start", "binder/runtime.txt", "binder/course-env.sh",
            "scripts/install_cpu_env.sh"} <= set(tracked)


def test_readme_launch_links_and_image_build_use_the_same_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    owner_repo = urlsplit(REPOSITORY).path.strip("/")
    links = re.findall(r"https://(?:colab\.research\.google\.com/github|mybinder\.org/v2/gh)/[^\s)]+", text)
    assert len(links) >= 2
    for link in links:
        assert f"/{owner_repo}/" in link, link
        notebook = re.search(r"notebooks/[^?#\s)]+\.ipynb", link)
        assert notebook and (ROOT / notebook.group(0)).is_file(), link
    assert REPOSITORY in text, "the repo2docker command should build the repository pyproject names"
