"""A fresh JupyterLab of the project's environment, as `make lab` starts it, in headless Chromium: on first start it
asks nothing about Jupyter news (the course is offline: binder/overrides.json, installed by binder/lab-settings.sh),
and a lesson whose metadata holds the course's kernelspec (scripts/execute_notebooks.py) opens with its kernel
without being marked modified."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from execute_notebooks import COURSE_KERNELSPEC, apply_kernelspec  # scripts/ is on pytest's pythonpath

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
LESSON = "00_behind_the_pipeline.ipynb"
TOKEN = "course-lab-test"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a copy of one lesson (kernelspec applied), with empty user settings and workspaces."""
    folder = tmp_path_factory.mktemp("lab")
    notebooks, home = folder / "notebooks", folder / "home"
    notebooks.mkdir()
    home.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / LESSON, as_version=4)
    apply_kernelspec(nb)
    nbformat.write(nb, notebooks / LESSON)
    subprocess.run(["bash", str(ROOT / "binder" / "lab-settings.sh"), sys.executable], check=True)
    port = free_port()
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"),
           "IPYTHONDIR": str(home / "ipython")}
    jupyter = Path(sys.executable).parent / "jupyter"
    command = [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={TOKEN}", f"--notebook-dir={notebooks}", "--ServerApp.open_browser=False"]
    if os.getuid() == 0:
        command.append("--allow-root")
    log = (folder / "lab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start:\n{(folder / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield base
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()
    shutil.rmtree(home, ignore_errors=True)


def test_the_course_kernelspec_is_the_kernel_the_environment_runs():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(COURSE_KERNELSPEC["name"])
    assert spec.display_name == COURSE_KERNELSPEC["display_name"]
    assert spec.language == COURSE_KERNELSPEC["language"]


def test_a_fresh_lab_asks_no_news_question_and_opens_a_lesson_unmodified(browser, lab):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(f"{lab}/lab/tree/{LESSON}?token={TOKEN}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        # The kernel starts and reports its info (JupyterLab updates the metadata then): wait until it is idle.
        page.wait_for_function(
            "() => /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
            timeout=60_000)
        page.wait_for_timeout(2500)  # the news question, when asked, comes a moment after start
        toasts = page.locator(".jp-toast-message, .Toastify__toast").all_inner_texts()
        assert not [t for t in toasts if "news" in t.lower()], f"JupyterLab asked: {toasts}"
        tab = page.locator(f".lm-TabBar-tab:has-text('{LESSON[:12]}')").first
        classes = tab.get_attribute("class") or ""
        assert "jp-mod-dirty" not in classes, "the lesson is marked modified right after opening"
    finally:
        page.close()
