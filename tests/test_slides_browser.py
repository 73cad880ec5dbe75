"""Lecture slides in a real browser (Debian's Chromium, headless) with every request outside the deck's folder
aborted: the decks of the attention and encoder lessons open, reveal.js starts, the first slides show the
lesson, arrow keys move through the deck, the math is typeset by the local MathJax, and nothing is fetched
from the web and no console error happens."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from course_lib.editions import installed_mathjax, write_slides

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ["02_attention", "03_encoder"]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
]
TIMEOUT_MS = 60_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    written = write_slides([ROOT / "notebooks" / f"{name}.ipynb" for name in LESSONS], out)
    return {path.name.removesuffix(".slides.html"): path for path in written}


@pytest.fixture(scope="module")
def browser(chromium_path):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def lesson_title(name: str) -> str:
    import nbformat

    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    return notebook.cells[0].source.splitlines()[0].removeprefix("# ").strip()


def test_deck_folder_carries_reveal_and_mathjax_and_names_no_web_address(decks):
    folder = next(iter(decks.values())).parent
    assert (folder / "reveal.js" / "dist" / "reveal.js").is_file()
    assert installed_mathjax() is not None and (folder / "mathjax" / "tex-chtml.js").is_file()
    for path in decks.values():
        html = path.read_text(encoding="utf-8")
        assert 'src="reveal.js/dist/reveal.js"' in html and 'src="mathjax/tex-chtml.js"' in html
        for cdn in ("cdnjs", "unpkg", "jsdelivr", "cdn.mathjax"):
            assert cdn not in html, f"{path.name} names {cdn}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_deck_renders_its_first_slides_offline(browser, decks, lesson):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def guard(route):
        if route.request.url.startswith("file://"):
            return route.continue_()
        problems.append(f"blocked request: {route.request.url}")
        return route.abort()

    page.route("**/*", guard)
    page.goto(decks[lesson].as_uri())
    page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=TIMEOUT_MS)
    total = page.evaluate("() => Reveal.getTotalSlides()")
    assert total >= 8, f"{lesson}: only {total} slides"

    first = page.locator(".reveal .slides section.present").first
    expect(first).to_contain_text(lesson_title(lesson))
    assert first.bounding_box()["height"] > 100  # something is drawn, not an empty frame

    seen = [page.evaluate("() => Reveal.getIndices()")]
    for _ in range(3):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(400)  # the slide or fragment transition
        seen.append(page.evaluate("() => Reveal.getIndices()"))
        assert page.locator(".reveal .slides section.present").last.inner_text().strip(), f"{lesson}: blank slide"
    assert len({(s["h"], s["v"], s["f"]) for s in seen}) == len(seen), f"{lesson}: the arrow key did not move: {seen}"

    page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0", timeout=TIMEOUT_MS)
    assert page.locator(".reveal mjx-container").count() > 0  # the local MathJax typeset the lesson's formulas
    assert not problems, problems
    page.close()
