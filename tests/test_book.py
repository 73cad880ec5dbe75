"""The course website: it builds offline with warnings as errors, and every page works in a real browser
with the network cut off (only localhost answers).

The chapters are the notebooks in notebooks/; a planned lesson that is not written yet is skipped with a reason,
while the introduction, setup and instructors pages are always checked.
"""
from __future__ import annotations

import functools
import importlib.util
import re
import sys
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml
from conftest import build_book, launch_chromium
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
PLANNED_LESSONS = [
    "00_behind_the_pipeline", "01_tokenization", "02_attention", "03_encoder",
    "04_masking_and_decoders", "05_modern_decoders", "06_features_and_umap", "07_fine_tuning",
    "08_fine_tuning_at_scale",
]
LESSONS_WITH_ATTENTION_VIEWS = {"02_attention"}  # lesson 04 has none since its SmolLM2 part moved to lesson 05
VIEW_CONTAINER = "div.course-viz"  # course_lib.viz wraps each BertViz view in one (the script draws an SVG)
BOOK_PAGES = {"book/intro": "Transformers, from tokens to fine-tuning", "book/setup": "Setup",
              "book/instructors": "For instructors"}
TIMINGS_PLACEHOLDER = "Measured timings per lesson are not published yet."


def present_lessons() -> list[str]:
    return sorted(path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


ALL_LESSONS = sorted(set(PLANNED_LESSONS) | set(present_lessons()))


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def notebook_title(notebook) -> str:
    """The text of the notebook's first level-1 heading (the chapter title)."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^# (.+)$", cell.source, flags=re.MULTILINE)
            if match:
                return match.group(1).strip()
    raise AssertionError("the notebook has no '# Title' heading")


def cells_tagged(notebook, tag: str) -> list:
    return [c for c in notebook.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def soup(path: Path) -> BeautifulSoup:
    """The parsed page, parsed once per version of the file (a lesson's page is megabytes; tests only read it)."""
    path = Path(path).resolve()
    return _parsed(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, _version: int) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_package(name: str, folder: Path):
    """A package from its folder, registered in sys.modules so that its relative imports work."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------------------
# The book's Sphinx extension, on its own (fast).

@pytest.fixture(scope="module")
def extension():
    return load_package("course_book", ROOT / "book" / "_ext" / "course_book")


@pytest.fixture(scope="module")
def guide_data(extension):
    """The instructor guide's data and checks: a submodule of the extension."""
    return extension.guide_data


def test_only_code_cells_tagged_solution_are_folded_with_solution_prompts(extension):
    notebook = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "source": "def f(): raise NotImplementedError"},
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": "def f(): return 1"},
        {"cell_type": "code", "metadata": {"tags": ["check"]}, "source": "check('00.f', f)"},
        {"cell_type": "markdown", "metadata": {"tags": ["solution"]}, "source": "The answer."},
    ]}
    assert extension.fold_solutions(notebook) == 1
    exercise, solution, check, markdown = notebook["cells"]
    assert solution["metadata"]["tags"] == ["solution", "hide-cell"]
    assert solution["metadata"]["mystnb"] == {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}
    assert exercise["metadata"] == {"tags": ["exercise"]} and check["metadata"] == {"tags": ["check"]}
    assert markdown["metadata"] == {"tags": ["solution"]}


def test_external_resource_finder_flags_what_a_page_loads_and_ignores_links(extension):
    page = """
    <a href="https://github.com/example/transformers-course">repository</a>
    <script src="../_static/mathjax/tex-chtml.js"></script>
    <svg xmlns="http://www.w3.org/2000/svg"></svg>
    <script>var ns = "http://www.w3.org/2000/svg";</script>
    <script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"></script>
    <link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">
    <script>require.config({paths: {d3: "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min"}});</script>
    <img src="//example.org/logo.png">
    <div style="background: url('https://example.org/bg.png')"></div>
    """
    found = extension.external_resources(page)
    assert len(found) == 5, found
    assert any("require.min.js" in item for item in found) and any("fonts.googleapis" in item for item in found)
    assert any("d3.min" in item for item in found) and any("logo.png" in item for item in found)
    assert extension.external_resources('<a href="https://colab.research.google.com/x">Colab</a>') == []


def test_included_file_loses_only_its_leading_title(extension):
    assert extension.without_title(["", "# Run times", "", "| a |", "# Later"]) == ["", "| a |", "# Later"]
    assert extension.without_title(["Text first", "# Heading"]) == ["Text first", "# Heading"]
    assert extension.without_title([]) == []


def test_serve_script_serves_a_built_site_on_localhost_and_refuses_an_unbuilt_one(tmp_path):
    serve = load_module("serve_book", ROOT / "scripts" / "serve_book.py")
    with pytest.raises(FileNotFoundError, match="make book"):
        serve.make_server(tmp_path, port=0)
    (tmp_path / "index.html").write_text("<title>course</title>", encoding="utf-8")
    (tmp_path / "view.js").write_text("console.log(1);", encoding="utf-8")
    server = serve.make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
            assert response.read() == b"<title>course</title>"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/view.js", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/javascript")
    finally:
        server.shutdown()
        server.server_close()


def test_instructor_notes_cover_every_lesson_and_point_at_sections_that_exist(guide_data):
    import yaml as _yaml

    notes = _yaml.safe_load((ROOT / guide_data.NOTES_FILE).read_text(encoding="utf-8"))
    outlines = {path.name: guide_data.notebook_outline(path) for path in sorted(ROOT.glob(guide_data.LESSON_GLOB))}
    assert guide_data.check_notes(notes, outlines) == []
    for name, entry in notes.items():
        assert len(entry["misconceptions"]) >= 2 and entry["live_coding"], name
        assert entry.get("session"), name


def test_instructor_notes_flag_a_missing_lesson_an_unknown_notebook_and_a_wrong_section(guide_data):
    outlines = {"01_a.ipynb": {"headings": ["1. Intro"]}, "02_b.ipynb": {"headings": ["1. Other"]}}
    item = {"belief": "b", "truth": "t", "section": "1. Intro"}
    notes = {"01_a.ipynb": {"misconceptions": [item], "live_coding": [{"point": "p", "section": "2. Gone"}]},
             "09_z.ipynb": {"misconceptions": [item], "live_coding": [item]}}
    problems = guide_data.check_notes(notes, outlines)
    assert any("02_b.ipynb: no entry" in p for p in problems)
    assert any("09_z.ipynb" in p and "no such notebook" in p for p in problems)
    assert any("'2. Gone'" in p for p in problems)
    assert not any("'1. Intro'" in p for p in problems)


def test_notebook_outline_reads_objectives_headings_and_exercises_from_the_notebook(guide_data):
    for path in sorted(ROOT.glob(guide_data.LESSON_GLOB)):
        outline = guide_data.notebook_outline(path)
        notebook = read_notebook(path)
        assert outline["title"] == notebook_title(notebook)
        assert len(outline["objectives"]) >= 3, path.name
        assert all(item and not item.startswith("-") for item in outline["objectives"])
        from course_lib.publish.editions import exercise_names
        assert outline["exercises"] == exercise_names(notebook), path.name


# --------------------------------------------------------------------------------------------------------------
# The real website, built from this repository.

@pytest.fixture(scope="module")
def built(book_build) -> tuple[subprocess.CompletedProcess, Path]:
    return book_build  # built once per test session (conftest), shared with test_instructor_guide.py


@pytest.fixture(scope="module")
def build(built) -> subprocess.CompletedProcess:
    return built[0]


@pytest.mark.slow
def test_book_builds_offline_with_warnings_as_errors(build):
    log = build.stdout + build.stderr
    assert build.returncode == 0, f"build failed (warnings are errors):\n{log[-6000:]}"
    assert "WARNING" not in log, log[-6000:]
    assert "website built in" in build.stdout


@pytest.mark.slow
def test_every_lesson_notebook_is_a_chapter_in_course_order(site):
    nav = soup(site / "book" / "intro.html").select("nav.bd-docs-nav a.reference.internal")
    chapters = [Path(urlsplit(a["href"]).path).stem for a in nav if "notebooks/" in a["href"]]
    assert chapters == present_lessons()
    assert [Path(urlsplit(a["href"]).path).stem for a in nav[1:3]] == ["setup", "instructors"]


@pytest.mark.slow
def test_pages_use_the_local_mathjax(site):
    page = soup(site / "book" / "intro.html")
    assert page.select(".math"), "the introduction should contain a formula"
    sources = [s["src"] for s in page.find_all("script", src=True) if "mathjax" in s["src"].lower()]
    assert sources == ["../_static/mathjax/tex-chtml.js"]
    assert (site / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000
    assert list((site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


@pytest.mark.slow
def test_instructors_page_shows_the_lesson_timings_or_says_they_are_missing(site):
    text = soup(site / "book" / "instructors.html").get_text(" ", strip=True)
    timings = ROOT / "docs" / "timings.md"
    if timings.is_file():
        lines = [ln.strip("|*- ") for ln in timings.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
        lines = [ln for ln in lines if len(ln) > 12 and not set(ln) <= set("|-: ")]
        assert lines, "docs/timings.md has no text line to look for"
        assert " ".join(lines[0].split()).replace("`", "")[:40] in text.replace("`", "")
        assert TIMINGS_PLACEHOLDER not in text
    else:
        assert TIMINGS_PLACEHOLDER in text


@pytest.mark.slow
def test_instructors_page_links_a_guide_per_lesson_whose_notes_link_to_their_sections(site):
    guides = {a["href"] for a in soup(site / "book" / "instructors.html").select("a.guide-link")}
    for lesson in present_lessons():
        assert f"guide/{lesson}.html" in guides, f"the instructors page does not link the guide of {lesson}"
        page = soup(site / "book" / "guide" / f"{lesson}.html")
        text = page.get_text(" ", strip=True)
        assert notebook_title(read_notebook(ROOT / "notebooks" / f"{lesson}.ipynb")) in text
        assert "Common misconceptions" in text and "Live-coding points" in text and "Learning objectives" in text
        links = page.select("a.notes-section-link")
        assert len(links) >= 4, lesson
        for link in links:
            target, _, anchor = link["href"].partition("#")
            landing = soup((site / "book" / "guide" / target).resolve())
            assert anchor and landing.find(id=anchor) is not None, f"{link['href']} lands on no section"


def written_lesson(lesson: str) -> Path:
    """The lesson's notebook; a planned lesson that is not written yet skips the test that asks for it."""
    path = ROOT / "notebooks" / f"{lesson}.ipynb"
    if not path.is_file():
        pytest.skip(f"notebooks/{lesson}.ipynb is not written yet")
    return path


def repository_settings() -> dict:
    return yaml.safe_load((ROOT / "book" / "_config.yml").read_text(encoding="utf-8"))["repository"]


@pytest.mark.slow
@pytest.mark.parametrize("lesson", ALL_LESSONS)
def test_chapter_offers_the_notebook_download_and_launch_buttons_from_the_repository(site, lesson):
    notebook = written_lesson(lesson)
    links = [a["href"] for a in soup(site / "notebooks" / f"{lesson}.html").find_all("a", href=True)]
    download = f"../_sources/notebooks/{lesson}.ipynb"
    assert download in links
    assert (site / "_sources" / "notebooks" / f"{lesson}.ipynb").read_bytes() == notebook.read_bytes()
    repo = repository_settings()
    owner_name = urlsplit(repo["url"]).path.strip("/")
    assert repo["url"] in links
    colab = f"https://colab.research.google.com/github/{owner_name}/blob/{repo['branch']}/notebooks/{lesson}.ipynb"
    assert colab in links
    assert any(link.startswith(f"https://mybinder.org/v2/gh/{owner_name}/{repo['branch']}?")
               and f"notebooks/{lesson}.ipynb" in unquote(link) for link in links)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", ALL_LESSONS)
def test_chapter_folds_every_solution_and_shows_every_check(site, lesson):
    path = written_lesson(lesson)
    notebook = read_notebook(path)
    page = soup(site / "notebooks" / f"{lesson}.html")
    solutions, checks = page.select("div.cell.tag_solution"), page.select("div.cell.tag_check")
    assert len(solutions) == len(cells_tagged(notebook, "solution"))
    assert len(checks) == len(cells_tagged(notebook, "check"))
    for cell in solutions:
        folded = cell.find("details", recursive=False)
        assert folded is not None and folded.find("div", class_="cell_input"), "solution code is not folded"
        assert "Show solution" in folded.summary.get_text()
    for cell in checks:
        assert cell.find("details") is None, "a check cell is folded"


# --------------------------------------------------------------------------------------------------------------
# The build's own safeguards, on a small book made here.

def make_small_book(root: Path, *, extra_output: dict | None = None) -> None:
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build"))
    (root / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {"m1": {"model_name": "HBoxModel", "model_module": "@jupyter-widgets/controls",
                         "model_module_version": "2.0.0", "state": {}}},
        "version_major": 2, "version_minor": 0}}
    progress = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2, "version_minor": 0},
        "text/plain": "Map: 100%|##########| 3/3"})
    outputs = [progress] + ([nbformat.v4.new_output("display_data", data=extra_output)] if extra_output else [])
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# 01 · Small lesson\n\nThe softmax $e^{z_i} / \\sum_j e^{z_j}$."),
        nbformat.v4.new_code_cell("progress()", outputs=outputs, execution_count=1),
        nbformat.v4.new_code_cell("def double(x):\n    raise NotImplementedError", metadata={"tags": ["exercise"]}),
        nbformat.v4.new_code_cell("def double(x):\n    return 2 * x", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("check('01.double', double)", metadata={"tags": ["check"]}),
    ]
    nbformat.write(notebook, root / "notebooks" / "01_small.ipynb")


@pytest.mark.slow
def test_small_book_folds_solutions_drops_widget_scripts_and_shows_the_timings_placeholder(tmp_path):
    make_small_book(tmp_path / "src")
    result = build_book(tmp_path / "src", tmp_path / "out")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    html = tmp_path / "out" / "_build" / "html"
    page = soup(html / "notebooks" / "01_small.html")
    solution = page.select_one("div.cell.tag_solution > details")
    assert solution is not None and "return 2 * x" in solution.get_text() and "Show solution" in solution.get_text()
    assert page.select_one("div.cell.tag_check").find("details") is None
    assert "Map: 100%" in page.get_text()
    assert "widget-state" not in str(page) and not page.find("script", src=re.compile("https?://"))
    assert TIMINGS_PLACEHOLDER in soup(html / "book" / "instructors.html").get_text(" ", strip=True)


@pytest.mark.slow
def test_small_book_fails_to_build_when_an_output_loads_a_script_from_the_web(tmp_path):
    cdn_view = {"text/html": '<div id="view"></div><script src="https://cdn.example.org/d3.min.js"></script>'}
    make_small_book(tmp_path / "src", extra_output=cdn_view)
    result = build_book(tmp_path / "src", tmp_path / "out")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "notebooks/01_small.html loads from the web" in log and "cdn.example.org/d3.min.js" in log


# --------------------------------------------------------------------------------------------------------------
# The real website in headless Chromium, served on localhost; every other host is blocked and recorded.

@pytest.fixture(scope="module")
def server_url(site):
    server = load_module("serve_book", ROOT / "scripts" / "serve_book.py").make_server(site, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Browser:
    """One Chromium context that lets only localhost through, and remembers what it blocked or logged."""

    def __init__(self, playwright, chromium_path: str):
        self.browser = launch_chromium(playwright, chromium_path)
        self.context = self.browser.new_context(viewport={"width": 1200, "height": 900}, service_workers="block")
        self.blocked: list[str] = []
        self.context.route("**/*", self._route)

    def _route(self, route):
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def open(self, url: str):
        """Open `url` in a new tab; returns (page, console errors and page errors seen while it loaded)."""
        page = self.context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        response = page.goto(url, wait_until="load")
        assert response is not None and response.ok, f"{url} answered {response and response.status}"
        page.wait_for_load_state("networkidle")
        return page, errors


@pytest.fixture(scope="module")
def browser(chromium_path, server_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        b = Browser(playwright, chromium_path)
        yield b
        b.browser.close()


def check_page(browser: Browser, url: str, title: str):
    """Open a page and check what every page needs; returns the page for more checks."""
    blocked_before = len(browser.blocked)
    page, errors = browser.open(url)
    heading = page.locator("article h1").first.inner_text()
    assert title in heading and title in page.title(), f"{url}: title {page.title()!r}, heading {heading!r}"
    if page.locator(".math").count():
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.document "
                               "&& document.querySelectorAll('mjx-container').length > 0", timeout=20_000)
        page.evaluate("() => MathJax.startup.promise")
        assert page.locator("mjx-container").count() >= page.locator(".math").count()
        assert page.locator("mjx-merror").count() == 0, f"{url}: a formula failed to typeset"
    broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => i.src)")
    assert broken == [], f"{url}: images that did not load: {broken}"
    assert errors == [], f"{url}: {errors}"
    assert browser.blocked[blocked_before:] == [], f"{url} asked the web for {browser.blocked[blocked_before:]}"
    return page


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("docname", list(BOOK_PAGES))
def test_course_page_works_offline_in_a_browser(browser, server_url, docname):
    page = check_page(browser, f"{server_url}/{docname}.html", BOOK_PAGES[docname])
    if docname == "book/intro":
        assert page.locator("mjx-container").count() >= 1, "the formula on the introduction did not render"
    page.close()


@pytest.mark.browser
@pytest.mark.slow
def test_site_root_opens_the_introduction(browser, server_url):
    page = check_page(browser, f"{server_url}/index.html", BOOK_PAGES["book/intro"])
    assert page.url.endswith("/book/intro.html")
    page.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("lesson", ALL_LESSONS)
def test_chapter_works_offline_in_a_browser(browser, server_url, lesson):
    path = written_lesson(lesson)
    notebook = read_notebook(path)
    page = check_page(browser, f"{server_url}/notebooks/{lesson}.html", notebook_title(notebook))

    if cells_tagged(notebook, "solution"):
        solution = page.locator("div.cell.tag_solution").first
        assert not solution.locator("div.cell_input").is_visible(), "a solution is visible before unfolding"
        solution.locator("summary").click()
        assert solution.locator("div.cell_input").is_visible(), "'Show solution' did not unfold the solution"
    if cells_tagged(notebook, "check"):
        assert page.locator("div.cell.tag_check div.cell_input").first.is_visible()

    if lesson in LESSONS_WITH_ATTENTION_VIEWS:
        views = page.locator(f"div.cell_output {VIEW_CONTAINER}")
        assert views.count() >= 1, f"{lesson}: no attention view in the page"
        page.wait_for_function(
            f"() => [...document.querySelectorAll('div.cell_output {VIEW_CONTAINER}')]"
            ".some(v => [...v.querySelectorAll('svg')].some(s => s.getBoundingClientRect().width > 0))",
            timeout=20_000)
    page.close()


@pytest.mark.browser
@pytest.mark.slow
def test_search_finds_terms_from_the_pages_and_lesson_01(browser, server_url):
    queries = {"troubleshooting": "book/setup.html"}
    if (ROOT / "notebooks" / "01_tokenization.ipynb").is_file():
        queries["WordPiece"] = "notebooks/01_tokenization.html"
    for query, expected in queries.items():
        blocked_before = len(browser.blocked)
        page, errors = browser.open(f"{server_url}/search.html?q={query}")
        page.wait_for_selector("#search-results ul.search li", timeout=20_000)
        hits = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
        assert any(urlsplit(hit).path.endswith(expected) for hit in hits), f"{query!r} found {hits}"
        assert errors == [] and browser.blocked[blocked_before:] == []
        page.close()
