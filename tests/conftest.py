"""Shared fixtures: the real course assets, loaded once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import course_lib  # noqa: F401  (switches the Hub to offline mode before transformers is imported)


@pytest.fixture(scope="session")
def tokenizer():
    from course_lib.assets import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def hf_encoder():
    """transformers.BertModel with eager attention (returns attention weights)."""
    from course_lib.assets import load_encoder

    return load_encoder(attn_implementation="eager")


@pytest.fixture(scope="session")
def hf_encoder_sdpa():
    from course_lib.assets import load_encoder

    return load_encoder(attn_implementation="sdpa")


@pytest.fixture(scope="session")
def hf_decoder():
    from course_lib.assets import load_decoder

    return load_decoder(attn_implementation="eager")


@pytest.fixture(scope="session")
def decoder_tokenizer():
    from course_lib.assets import load_decoder_tokenizer

    return load_decoder_tokenizer()


@pytest.fixture(scope="session")
def movie_reviews_full():
    from course_lib.data import load_movie_reviews

    return load_movie_reviews(profile="full")


@pytest.fixture(scope="session")
def tweets_full():
    from course_lib.data import load_tweets

    return load_tweets(profile="full")


def find_chromium() -> str | None:
    return os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_path():
    """Debian's Chromium; the browser tests are skipped without it, except in CI where that is a failure."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required for the browser tests in CI (scripts/ensure-chromium.sh installs it).")
        pytest.skip("Chromium not found: install it (apt-get install chromium) or set COURSE_CHROMIUM.")
    return path


# Headless Chromium for the browser tests: no GPU, no background traffic, and no host name resolves except
# localhost, a second wall behind each test's own request filter.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def launch_chromium(playwright, chromium_path: str):
    return playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser(chromium_path):
    """One headless Chromium per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path)
        yield browser
        browser.close()


# The course website, built by scripts/build_book.sh (warnings are errors). Building the real site takes minutes, so
# every test module that looks at it shares one build per test session (the `book_build` fixture).
ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build_book.sh"


def build_book(source: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BOOK_SOURCE": str(source), "BOOK_OUTPUT": str(output), "VENV": str(Path(sys.prefix))}
    return subprocess.run(["bash", str(BUILD_SCRIPT), "--all", *extra], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="session")
def book_build(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The website of this repository, built once per test session: (the build's result, its html folder)."""
    output = tmp_path_factory.mktemp("book")
    return build_book(ROOT, output), output / "_build" / "html"


@pytest.fixture(scope="session")
def site(book_build) -> Path:
    """The built website's HTML folder; a failed build fails the tests that read it, with the build's log."""
    result, html = book_build
    if result.returncode != 0:
        pytest.fail(f"the website did not build:\n{(result.stdout + result.stderr)[-6000:]}")
    return html
