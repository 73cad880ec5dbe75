"""Sphinx extension for the course website: folded solutions, speaker notes left out, MathJax served locally,
optional includes, a report of anything a page would load from the web, accessibility repairs of the theme's
controls (:mod:`.accessibility`), and the instructor guide (a lesson index,
one guide page per lesson, the lecture and term plans).

Loaded by Jupyter Book through `sphinx.local_extensions` in book/_config.yml (the package book/_ext/course_book).
This module holds :func:`setup` and the book-wide parts; the instructor guide is in :mod:`.guide_data` (its data:
notebook outlines, minutes, checks of the notes and plans) and :mod:`.guide_pages` (its directives).
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from course_lib.runtime.install import requirement
from course_lib.publish.editions import (
    EXERCISE_NAME,
    MATHJAX_DIR_IN_DIST,
    MATHJAX_DIST,
    NOTES_TAG,
    copy_mathjax_parts,
    installed_mathjax,
)

from .accessibility import repair_pages
from .guide_data import solution_anchor
from .guide_pages import InstructorGuide, InstructorNotes, TeachingPlans

logger = logging.getLogger(__name__)

SOLUTION_TAG = "solution"
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}

# MathJax 3 comes from a pinned PyPI package; course_lib.publish.editions knows where it is and which of its parts the
# TeX-input, HTML-output component loads (the lecture slides use the same copy).
MATHJAX_ENTRY = "tex-chtml.js"


def fold_solutions(notebook: dict) -> int:
    """Give every code cell tagged "solution" the hide-cell behaviour with solution prompts; return how many."""
    folded = 0
    for cell in notebook.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or SOLUTION_TAG not in tags:
            continue
        cell["metadata"]["tags"] = [*tags, "hide-cell"] if "hide-cell" not in tags else tags
        cell["metadata"].setdefault("mystnb", {}).update(SOLUTION_PROMPTS)
        folded += 1
    return folded


def drop_speaker_notes(notebook: dict) -> int:
    """Remove the cells tagged "speaker-notes" (remarks for whoever teaches: slides only); return how many."""
    cells = notebook.get("cells", [])
    kept = [cell for cell in cells if NOTES_TAG not in cell.get("metadata", {}).get("tags", [])]
    notebook["cells"] = kept
    return len(cells) - len(kept)


def drop_widget_state(notebook: dict) -> None:
    """Remove saved ipywidgets state, which would make the page load the widget manager from a CDN."""
    notebook.get("metadata", {}).pop("widgets", None)


def on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    notebook = json.loads(source[0])
    drop_speaker_notes(notebook)
    fold_solutions(notebook)
    mark_solutions(notebook)
    drop_widget_state(notebook)
    source[0] = json.dumps(notebook, ensure_ascii=False)


def mathjax_source() -> Path:
    """The folder holding MathJax 3's components, from the installed PyPI package."""
    folder = installed_mathjax()
    if folder is None:
        raise ExtensionError(
            f"MathJax files not found: expected the package {MATHJAX_DIST} (with {MATHJAX_DIR_IN_DIST}/"
            f"{MATHJAX_ENTRY}); install it with `pip install --no-deps {requirement(MATHJAX_DIST)}`."
        )
    return folder


def use_local_mathjax(app: Sphinx, config) -> None:
    mathjax_source()  # fail at the start of the build, not after it
    config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"  # relative, so Sphinx serves it from _static/


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    copy_mathjax_parts(mathjax_source(), Path(app.outdir) / "_static" / "mathjax")


# Attributes through which a page loads something by itself (links a reader clicks are not loads).
LOADING_ATTRIBUTES = {"script": "src", "img": "src", "iframe": "src", "source": "src", "audio": "src",
                      "video": "src", "track": "src", "embed": "src", "object": "data", "input": "src"}
LOADING_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut", "manifest",
                     "apple-touch-icon", "dns-prefetch", "preconnect"}
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])(https?:)?//""", re.IGNORECASE)
# In inline scripts: URLs of code, styles or fonts, or on a CDN host (XML namespaces and plain links pass).
SCRIPT_URL = re.compile(r"""https?://[^\s"'<>)\\]+""")
RESOURCE_SUFFIXES = (".js", ".css", ".woff", ".woff2", ".ttf", ".otf")
CDN_HOSTS = re.compile(r"cdn|unpkg|jsdelivr|googleapis|gstatic|cloudflare")


def is_external(url: str) -> bool:
    return url.startswith("//") or urlsplit(url).scheme in ("http", "https")


class _ExternalResourceFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        wanted = LOADING_ATTRIBUTES.get(tag)
        if wanted and is_external(values.get(wanted, "")):
            self.found.append(f"<{tag} {wanted}={values[wanted]}>")
        if tag == "link" and LOADING_LINK_RELS & set(values.get("rel", "").lower().split()):
            if is_external(values.get("href", "")):
                self.found.append(f"<link href={values['href']}>")
        if CSS_URL.search(values.get("style", "")):
            self.found.append(f"<{tag} style=...url(http...)>")
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            return
        if CSS_URL.search(data):
            self.found.append("url(http...) in an inline style")
        for url in SCRIPT_URL.findall(data):
            host, path = urlsplit(url).netloc, urlsplit(url).path
            if CDN_HOSTS.search(host) or path.endswith(RESOURCE_SUFFIXES):
                self.found.append(f"{url} in an inline script")


def external_resources(html: str) -> list[str]:
    """What an HTML page would load from another host by itself (scripts, styles, fonts, images, frames)."""
    finder = _ExternalResourceFinder()
    finder.feed(html)
    return finder.found


def report_external_resources(app: Sphinx, exception: Exception | None) -> None:
    """Warn (an error under -W) about any built page or style sheet that would load from the web."""
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    for path in sorted(outdir.rglob("*.html")):
        if "_sources" in path.parts:
            continue
        for item in sorted(set(external_resources(path.read_text(encoding="utf-8", errors="replace")))):
            logger.warning("%s loads from the web: %s", path.relative_to(outdir), item[:200],
                           type="course", subtype="offline")
    for path in sorted((outdir / "_static").rglob("*.css")):
        if CSS_URL.search(path.read_text(encoding="utf-8", errors="replace")):
            logger.warning("%s loads from the web (url(http...))", path.relative_to(outdir),
                           type="course", subtype="offline")


def thebe_enabled(app: Sphinx) -> bool:
    return bool(app.config.html_theme_options.get("launch_buttons", {}).get("thebe"))


def drop_thebe_loader(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """With Thebe off, leave out its loader script, which names a CDN address (nothing else uses it)."""
    if thebe_enabled(app) or "script_files" not in context:
        return

    def is_thebe(script) -> bool:
        return "thebe" in str(script.filename or "") or "THEBE_JS_URL" in script.attributes.get("body", "")

    context["script_files"] = [script for script in context["script_files"] if not is_thebe(script)]


def without_title(lines: list[str]) -> list[str]:
    """Drop a leading level-1 heading: the section around the directive already names the content."""
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    if start < len(lines) and lines[start].startswith("# "):
        return lines[start + 1:]
    return lines


class IncludeIfPresent(SphinxDirective):
    """Include a Markdown file (without its title) when it exists; otherwise show the directive's content."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        relative, absolute = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(relative)  # a file appearing or changing rebuilds the page
        path = Path(absolute)
        if path.is_file():
            lines = StringList(without_title(path.read_text(encoding="utf-8").splitlines()), source=str(path))
        else:
            lines = self.content
        container = nodes.container(classes=["include-if-present"])
        self.state.nested_parse(lines, self.content_offset, container, match_titles=True)
        return container.children


# ----------------------------------------------------------------------------------------------- solution anchors
# Each solution cell of a lesson page gets an id from its exercise's name, which the instructor guide links to.
def mark_solutions(notebook: dict) -> int:
    """Note in each solution cell's metadata the exercise whose stub comes before it; return how many."""
    marked, exercise = 0, None
    for cell in notebook.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code":
            continue
        if "exercise" in tags:
            match = EXERCISE_NAME.search("".join(cell.get("source", [])))
            exercise = match.group(1) if match else None
        elif SOLUTION_TAG in tags and exercise:
            cell["metadata"]["course_exercise"] = exercise
            marked += 1
    return marked


def anchor_solutions(app: Sphinx, doctree: nodes.document) -> None:
    """Give each solution cell of a lesson page an id (``solution-04-causal-mask``), so the guide can link to it."""
    for node in doctree.findall(nodes.container):
        exercise = (node.get("cell_metadata") or {}).get("course_exercise")
        if node.get("nb_element") == "cell_code" and exercise:
            node["ids"].append(solution_anchor(exercise))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_local_mathjax)
    app.connect("source-read", on_source_read)
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", report_external_resources)
    app.connect("build-finished", repair_pages)
    app.connect("html-page-context", drop_thebe_loader)
    app.connect("doctree-read", anchor_solutions)
    app.add_directive("include-if-present", IncludeIfPresent)
    app.add_directive("instructor-notes", InstructorNotes)
    app.add_directive("instructor-guide", InstructorGuide)
    app.add_directive("teaching-plans", TeachingPlans)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
