"""Sphinx extension for the course website: folded solutions, MathJax served locally, optional includes,
and the per-lesson instructor notes.

Loaded by Jupyter Book through `sphinx.local_extensions` in book/_config.yml.
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

from course_lib.install import requirement
from course_lib.editions import MATHJAX_DIR_IN_DIST, MATHJAX_DIST, copy_mathjax_parts, installed_mathjax

logger = logging.getLogger(__name__)

SOLUTION_TAG = "solution"
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}

# MathJax 3 comes from a pinned PyPI package; course_lib.editions knows where it is and which of its parts the
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


def drop_widget_state(notebook: dict) -> None:
    """Remove saved ipywidgets state, which would make the page load the widget manager from a CDN."""
    notebook.get("metadata", {}).pop("widgets", None)


def on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    notebook = json.loads(source[0])
    fold_solutions(notebook)
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


# ----------------------------------------------------------------------------------------------- instructor notes
NOTES_FILE = "book/instructor_notes.yml"
TIMINGS_FILE = "docs/timings.json"
LESSON_GLOB = "notebooks/[0-9][0-9]_*.ipynb"
OBJECTIVES_MARKER = "**What you will learn**"
CHECK_CALL = re.compile(r"""check\(\s*["']([^"']+)["']""")


def heading_text(line: str) -> str:
    """``## 3. Measuring: `compute_metrics` `` -> ``3. Measuring: `compute_metrics` `` (Markdown kept)."""
    return line.lstrip("#").strip()


def section_anchor(heading: str) -> str:
    """The id Sphinx gives the section of this heading (its plain text through docutils' ``make_id``)."""
    plain = re.sub(r"[`*]", "", heading)
    return nodes.make_id(plain)


def notebook_outline(path: Path) -> dict:
    """What the notes reuse from a lesson notebook: title, objectives, section headings, exercise names."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    title, objectives, headings, exercises = path.stem, [], [], []
    for cell in notebook.get("cells", []):
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            lines = source.splitlines()
            headings += [heading_text(line) for line in lines if re.match(r"#{1,6} ", line)]
            if title == path.stem and lines and lines[0].startswith("# "):
                title = heading_text(lines[0])
            if OBJECTIVES_MARKER in source and not objectives:
                objectives = bullet_items(source.split(OBJECTIVES_MARKER, 1)[1])
        elif "check" in cell.get("metadata", {}).get("tags", []):
            exercises += CHECK_CALL.findall(source)
    return {"title": title, "objectives": objectives, "headings": headings, "exercises": exercises}


def bullet_items(markdown: str) -> list[str]:
    """The items of the first bullet list in ``markdown``, continuation lines joined."""
    items: list[str] = []
    for line in markdown.lstrip("\n").splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        elif items or line.strip():
            break
    return items


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def lesson_timing(timings: dict, name: str) -> str:
    """One sentence from docs/timings.json: quick profile on the CPU, full profile on a GPU where measured."""
    entry = timings.get("notebooks", {}).get(name, {})
    quick, full = entry.get("quick"), entry.get("full")
    text = f"quick profile on a {quick.get('threads', 2)}-thread CPU: {duration(quick.get('wall_s'))}" if quick \
        else "quick profile: not measured yet"
    if quick and quick.get("peak_rss_mb"):
        text += f" (kernel memory up to {quick['peak_rss_mb'] / 1024:.1f} GB)"
    text += f"; full profile on a GPU: {duration(full.get('wall_s'))}" if full else "; full profile on a GPU: " \
        "not measured yet"
    return text + "."


def check_notes(notes: dict, outlines: dict[str, dict]) -> list[str]:
    """Problems with the notes file: a lesson without notes, notes without a lesson, a section that is not there."""
    problems = [f"{name}: no entry in {NOTES_FILE}" for name in outlines if name not in (notes or {})]
    for name, entry in (notes or {}).items():
        if name not in outlines:
            problems.append(f"{name}: has notes but there is no such notebook")
            continue
        for kind in ("misconceptions", "live_coding"):
            if not entry.get(kind):
                problems.append(f"{name}: no {kind}")
            for item in entry.get(kind) or []:
                if item.get("section") not in outlines[name]["headings"]:
                    problems.append(f"{name}: {kind} points at a section that does not exist: {item.get('section')!r}")
    return problems


class InstructorNotes(SphinxDirective):
    """One section per lesson: objectives, timing, exercises, misconceptions and live-coding points."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import yaml

        root = Path(self.env.srcdir)
        self.env.note_dependency(str(root / NOTES_FILE))
        self.env.note_dependency(str(root / TIMINGS_FILE))
        notes = yaml.safe_load((root / NOTES_FILE).read_text(encoding="utf-8")) or {}
        timings_path = root / TIMINGS_FILE
        timings = json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.is_file() else {}
        paths = sorted(root.glob(LESSON_GLOB))
        outlines = {path.name: notebook_outline(path) for path in paths}
        for path in paths:
            self.env.note_dependency(str(path))
        # A lesson without notes, or notes of a lesson not written yet, is shown as it is (tests check the
        # repository's own notes are complete); a link to a section that does not exist is a broken page.
        for problem in (p for p in check_notes(notes, outlines) if "section that does not exist" in p):
            logger.warning("instructor notes: %s", problem, location=self.get_location(),
                           type="course", subtype="notes")
        out: list[nodes.Node] = []
        for path in paths:
            out += self.lesson(path, outlines[path.name], notes.get(path.name) or {}, timings)
        return out

    def markdown(self, text: str) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(text.splitlines(), source=NOTES_FILE), self.content_offset, container)
        return container.children

    def link(self, docname: str, heading: str) -> nodes.reference:
        uri = self.env.app.builder.get_relative_uri(self.env.docname, docname) + "#" + section_anchor(heading)
        reference = nodes.reference("", "", refuri=uri, classes=["notes-section-link"])
        reference += nodes.Text("→ " + re.sub(r"[`*]", "", heading))
        return reference

    def lesson(self, path: Path, outline: dict, entry: dict, timings: dict) -> list[nodes.Node]:
        docname = f"notebooks/{path.stem}"
        anchor = nodes.make_id(f"notes {outline['title']}")
        section = nodes.section(ids=[anchor], names=[nodes.fully_normalize_name(outline["title"])])
        section += nodes.title(text=outline["title"])
        lines = []
        if outline["objectives"]:
            lines += ["**Learning objectives** (as the lesson states them):", ""]
            lines += [f"- {item}" for item in outline["objectives"]] + [""]
        lines += [f"**Timing.** {lesson_timing(timings, path.name)} Suggested session: "
                  f"{entry.get('session', 'not given')}.", ""]
        if outline["exercises"]:
            names = ", ".join(f"`{name}`" for name in outline["exercises"])
            lines += [f"**Exercises ({len(outline['exercises'])}).** {names}", ""]
        section.extend(self.markdown("\n".join(lines)))
        for kind, title in (("misconceptions", "Common misconceptions"), ("live_coding", "Live-coding points")):
            items = entry.get(kind) or []
            if not items:
                continue
            section += nodes.paragraph("", "", nodes.strong(text=title + "."))
            bullet = nodes.bullet_list()
            for item in items:
                text = f"*\"{item['belief']}\"* {item['truth']}" if kind == "misconceptions" else item["point"]
                list_item = nodes.list_item()
                list_item.extend(self.markdown(text))
                list_item += nodes.paragraph("", "", self.link(docname, item["section"]))
                bullet += list_item
            section += bullet
        return [section]


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_local_mathjax)
    app.connect("source-read", on_source_read)
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", report_external_resources)
    app.connect("html-page-context", drop_thebe_loader)
    app.add_directive("include-if-present", IncludeIfPresent)
    app.add_directive("instructor-notes", InstructorNotes)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
