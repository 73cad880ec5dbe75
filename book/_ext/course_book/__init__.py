"""Sphinx extension for the course website: folded solutions, speaker notes left out, MathJax served locally,
optional includes, and the instructor guide (a lesson index, one guide page per lesson, the lecture and term
plans).

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
from course_lib.editions import (
    EXERCISE_NAME,
    MATHJAX_DIR_IN_DIST,
    MATHJAX_DIST,
    NOTES_TAG,
    copy_mathjax_parts,
    installed_mathjax,
)

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


# ----------------------------------------------------------------------------------------------- instructor guide
# The guide is data (book/instructor_notes.yml per lesson, book/teaching_plans.yml for the course) rendered
# together with what the notebooks already say, so nothing is written twice: objectives, sections, exercises
# and their titles come from the notebooks, machine run times from docs/timings.json.
NOTES_FILE = "book/instructor_notes.yml"
PLANS_FILE = "book/teaching_plans.yml"
TIMINGS_FILE = "docs/timings.json"
LESSON_GLOB = "notebooks/[0-9][0-9]_*.ipynb"
GUIDE_DIR = "book/guide"  # one page per lesson, book/guide/<notebook stem>.md, holding only the directive
PLANS_PAGE = f"{GUIDE_DIR}/plans"
OBJECTIVES_MARKER = "**What you will learn**"
CHECK_CALL = re.compile(r"""check\(\s*["']([^"']+)["']""")
CHECK_VERDICT = re.compile(r"\[(?:passed|not yet)\] (\d\d\.[\w-]+) \((.+?)\): ")  # a check's printed verdict
UNTIMED_SECTIONS = ("Summary", "Further reading")  # the only sections a budget may give 0 minutes
# A question to the reader: a sentence ending in "?" or starting with one of these, outside Summary and Further reading.
QUESTION_OPENING = re.compile(r"(look for|think about|before you start, think about|predict|guess|what happens if)\b",
                              re.IGNORECASE)
LECTURE_MINUTES = 90
REFERENCING_KINDS = ("misconceptions", "live_coding", "answers", "cuts")


def heading_text(line: str) -> str:
    """``## 3. Measuring: `compute_metrics` `` -> ``3. Measuring: `compute_metrics` `` (Markdown kept)."""
    return line.lstrip("#").strip()


def section_anchor(heading: str) -> str:
    """The id Sphinx gives the section of this heading (its plain text through docutils' ``make_id``)."""
    plain = re.sub(r"[`*]", "", heading)
    return nodes.make_id(plain)


def solution_anchor(exercise: str) -> str:
    """The id of an exercise's solution cell on its lesson's page (set by :func:`anchor_solutions`)."""
    return nodes.make_id(f"solution {exercise}")


def plain_text(markdown: str) -> str:
    """Markdown without emphasis markers, with single spaces: what quotes from a lesson are compared with."""
    return " ".join(re.sub(r"\*+", "", markdown).split())


def notebook_outline(path: Path) -> dict:
    """What the guide reuses from a lesson notebook: title, objectives, headings (every level) and ``##``
    sections in order, the text of each section as the reader sees it (speaker notes left out), and the
    exercises (their names from the check cells, the title their check prints, the section of their stub)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    title, objectives, headings, sections, exercises = path.stem, [], [], [], []
    text: dict[str, list[str]] = {"": []}  # "" is the introduction, before the first ## heading
    exercise_sections, exercise_titles = {}, {}
    section = ""
    for cell in notebook.get("cells", []):
        source = "".join(cell.get("source", []))
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "markdown":
            if NOTES_TAG in tags:
                continue  # remarks for whoever teaches, not part of the lesson's text
            lines = source.splitlines()
            if title == path.stem and lines and lines[0].startswith("# "):
                title = heading_text(lines[0])
            if OBJECTIVES_MARKER in source and not objectives:
                objectives = bullet_items(source.split(OBJECTIVES_MARKER, 1)[1])
            for line in lines:
                if re.match(r"#{1,6} ", line):
                    headings.append(heading_text(line))
                    if line.startswith("## "):
                        section = heading_text(line)
                        sections.append(section)
                        text.setdefault(section, [])
                    text[section].append("")  # a heading ends a paragraph and is no part of the prose
                    continue
                text[section].append(line)
            text[section].append("")
        elif "exercise" in tags:
            match = EXERCISE_NAME.search(source)
            if match:
                exercise_sections[match.group(1)] = section
        elif "check" in tags:
            exercises += CHECK_CALL.findall(source)
            for output in cell.get("outputs", []):
                printed = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
                exercise_titles.update(CHECK_VERDICT.findall(printed))
    return {"title": title, "objectives": objectives, "headings": headings, "sections": sections,
            "exercises": exercises, "exercise_sections": exercise_sections, "exercise_titles": exercise_titles,
            "text": {name: "\n".join(lines) for name, lines in text.items()}}


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


def sentences(markdown: str) -> list[str]:
    """The sentences of a section's prose, paragraph by paragraph: code blocks and display math left out,
    emphasis markers removed."""
    prose = re.sub(r"```.*?```", "\n\n", markdown, flags=re.DOTALL)
    prose = re.sub(r"\$\$.*?\$\$", "\n\n", prose, flags=re.DOTALL)
    return [sentence for paragraph in re.split(r"\n\s*\n", prose)
            for sentence in re.split(r"(?<=[.?!])\s+", plain_text(paragraph)) if sentence]


def reader_questions(outline: dict) -> list[tuple[str, str]]:
    """(section, sentence) for every question a lesson asks its reader in its numbered sections: sentences
    that end with a question mark or start with "Look for", "Think about", "Predict", "What happens if" ..."""
    found = []
    for section in outline["sections"]:
        if section in UNTIMED_SECTIONS:
            continue  # a recap and paper titles, not questions
        for sentence in sentences(outline["text"].get(section, "")):
            if sentence.endswith("?") or QUESTION_OPENING.match(sentence):
                found.append((section, sentence))
    return found


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


def quick_run_time(timings: dict, name: str) -> str:
    quick = timings.get("notebooks", {}).get(name, {}).get("quick") or {}
    return duration(quick.get("wall_s"))


def is_minutes(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def clock(minutes: float) -> str:
    """Minutes since the start of a session as h:mm (0:00, 1:05)."""
    hours, rest = divmod(round(minutes), 60)
    return f"{hours}:{rest:02d}"


def clock_range(start: float, minutes: float) -> str:
    """``0:12–0:26``, kept on one line (word joiners around the dash)."""
    return f"{clock(start)}\u2060–\u2060{clock(start + minutes)}"


def check_notes(notes: dict, outlines: dict[str, dict]) -> list[str]:
    """Problems with the notes file: a lesson without notes, notes without a lesson, a section that is not there."""
    problems = [f"{name}: no entry in {NOTES_FILE}" for name in outlines if name not in (notes or {})]
    for name, entry in (notes or {}).items():
        if name not in outlines:
            problems.append(f"{name}: has notes but there is no such notebook")
            continue
        headings = outlines[name]["headings"]
        for kind in ("misconceptions", "live_coding"):
            if not entry.get(kind):
                problems.append(f"{name}: no {kind}")
        for kind in REFERENCING_KINDS:
            for item in entry.get(kind) or []:
                if item.get("section") not in headings:
                    problems.append(f"{name}: {kind} points at a section that does not exist: {item.get('section')!r}")
        for section in entry.get("budget") or {}:
            if section not in outlines[name].get("sections", headings):
                problems.append(f"{name}: budget points at a section that does not exist: {section!r}")
    return problems


def check_budget(name: str, entry: dict, outline: dict) -> list[str]:
    """Problems with a lesson's minutes: ``session`` must be a number of minutes, the budget must give every
    ``##`` section its minutes (only Summary and Further reading may get 0) and add up to the session, and the
    cuts of a section must not save more than the section's minutes."""
    session, budget = entry.get("session"), entry.get("budget")
    if not is_minutes(session) or not session:
        return [f"{name}: session must be a number of minutes, got {session!r}"]
    if not isinstance(budget, dict):
        return [f"{name}: no budget (minutes per ## section)"]
    problems = []
    for section in outline["sections"]:
        minutes = budget.get(section)
        if not is_minutes(minutes):
            problems.append(f"{name}: the budget gives no minutes to the section {section!r}")
        elif minutes == 0 and section not in UNTIMED_SECTIONS:
            problems.append(f"{name}: the budget gives 0 minutes to the section {section!r}")
    total = sum(minutes for minutes in budget.values() if is_minutes(minutes))
    if total != session:
        problems.append(f"{name}: the budget adds up to {total} minutes, the session is {session}")
    saved: dict[str, float] = {}
    for cut in entry.get("cuts") or []:
        if not is_minutes(cut.get("saves")) or not cut.get("saves") or not cut.get("what"):
            problems.append(f"{name}: a cut needs `what` and `saves` (minutes): {cut!r}")
            continue
        saved[cut.get("section")] = saved.get(cut.get("section"), 0) + cut["saves"]
    for section, minutes in saved.items():
        if is_minutes(budget.get(section)) and minutes > budget[section]:
            problems.append(f"{name}: the cuts of {section!r} save {minutes} minutes, the section has "
                            f"{budget[section]}")
    return problems


def check_answers(name: str, entry: dict, outline: dict) -> list[str]:
    """Problems with a lesson's answer keys: each quotes (``asks``) the lesson's own words from the ``##``
    section it names and has an answer, and every question the lesson asks its reader has an answer key."""
    problems, keys = [], []
    for item in entry.get("answers") or []:
        section, asks = item.get("section"), plain_text(item.get("asks") or "")
        if not asks or not (item.get("answer") or "").strip():
            problems.append(f"{name}: an answer key needs `asks` and `answer`: {item!r}")
        elif section not in outline["sections"]:
            problems.append(f"{name}: answer key in a section that is not a ## section: {section!r}")
        elif asks not in plain_text(outline["text"].get(section, "")):
            problems.append(f"{name}: section {section!r} does not ask {asks!r}")
        else:
            keys.append((section, asks))
    for section, question in reader_questions(outline):
        if not any(where == section and (asks in question or question in asks) for where, asks in keys):
            problems.append(f"{name}: no answer key for {question!r} (section {section!r})")
    return problems


def check_plans(plans: dict, outlines: dict[str, dict]) -> list[str]:
    """Problems with the course plans: the one-lecture path must add up to 90 minutes over ``##`` sections that
    exist; the term plan must name every lesson once and assign only exercises of that lesson."""
    problems = []
    steps = (plans or {}).get("one_lecture") or []
    if not steps:
        problems.append(f"{PLANS_FILE}: no one_lecture path")
    total = 0
    for step in steps:
        lesson, section, minutes = step.get("lesson"), step.get("section"), step.get("minutes")
        if lesson not in outlines:
            problems.append(f"one_lecture: no such lesson {lesson!r}")
        elif section not in outlines[lesson]["sections"]:
            problems.append(f"one_lecture: {lesson} has no section {section!r}")
        if not is_minutes(minutes) or not minutes:
            problems.append(f"one_lecture: {section!r} needs a number of minutes, got {minutes!r}")
        else:
            total += minutes
        if not step.get("do"):
            problems.append(f"one_lecture: {section!r} says nothing to do (`do`)")
    if steps and total != LECTURE_MINUTES:
        problems.append(f"one_lecture: adds up to {total} minutes, not {LECTURE_MINUTES}")
    weeks = (plans or {}).get("term") or []
    named = [week.get("lesson") for week in weeks]
    for lesson in outlines:
        if named.count(lesson) != 1:
            problems.append(f"term: {lesson} is planned {named.count(lesson)} times, not once")
    for week in weeks:
        lesson = week.get("lesson")
        if lesson not in outlines:
            problems.append(f"term: no such lesson {lesson!r}")
            continue
        if not week.get("assign"):
            problems.append(f"term: {lesson} assigns no exercise")
        for exercise in week.get("assign") or []:
            if exercise not in outlines[lesson]["exercises"]:
                problems.append(f"term: {lesson} has no exercise {exercise!r}")
    return problems


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


def load_guide_data(root: Path) -> tuple[dict, dict, dict, dict[str, dict]]:
    """(notes, plans, timings, outlines by notebook file name) from the book's source folder."""
    import yaml

    def read_yaml(relative: str) -> dict:
        path = root / relative
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}

    timings_path = root / TIMINGS_FILE
    timings = json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.is_file() else {}
    outlines = {path.name: notebook_outline(path) for path in sorted(root.glob(LESSON_GLOB))}
    return read_yaml(NOTES_FILE), read_yaml(PLANS_FILE), timings, outlines


def guide_docname(notebook: str) -> str:
    return f"{GUIDE_DIR}/{Path(notebook).stem}"


class GuideDirective(SphinxDirective):
    """What the three guide directives share: the data, Markdown, links, tables."""

    has_content = False

    def data(self) -> tuple[dict, dict, dict, dict[str, dict]]:
        root = Path(self.env.srcdir)
        for relative in (NOTES_FILE, PLANS_FILE, TIMINGS_FILE):
            self.env.note_dependency(str(root / relative))
        for path in root.glob(LESSON_GLOB):
            self.env.note_dependency(str(path))
        return load_guide_data(root)

    def warn(self, problem: str) -> None:
        logger.warning("instructor guide: %s", problem, location=self.get_location(), type="course", subtype="notes")

    def markdown(self, text: str) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(text.splitlines(), source=NOTES_FILE), self.content_offset, container)
        return container.children

    def uri(self, docname: str, anchor: str = "") -> str:
        uri = self.env.app.builder.get_relative_uri(self.env.docname, docname)
        return f"{uri}#{anchor}" if anchor else uri

    def link(self, docname: str, heading: str, text: str | None = None) -> nodes.reference:
        """A link to the section of a lesson page titled ``heading``."""
        reference = nodes.reference("", "", refuri=self.uri(docname, section_anchor(heading)),
                                    classes=["notes-section-link"])
        reference += nodes.Text(text or "→ " + re.sub(r"[`*]", "", heading))
        return reference

    def page_link(self, docname: str, text: str, anchor: str = "", classes=()) -> nodes.Node:
        if docname not in self.env.found_docs:
            return nodes.Text(text)
        reference = nodes.reference("", "", refuri=self.uri(docname, anchor), classes=list(classes))
        reference += nodes.Text(text)
        return reference

    def section(self, title: str, anchor: str) -> nodes.section:
        section = nodes.section(ids=[nodes.make_id(anchor)], names=[nodes.fully_normalize_name(anchor)])
        section += nodes.title(text=title)
        return section

    @staticmethod
    def table(headers: list[str], rows: list[list], widths: list[int], classes: list[str]) -> nodes.table:
        """A table; each cell is text, a node, or a list of nodes."""
        table = nodes.table(classes=["guide-table", *classes])
        group = nodes.tgroup(cols=len(headers))
        table += group
        group.extend(nodes.colspec(colwidth=width) for width in widths)

        def row(cells) -> nodes.row:
            out = nodes.row()
            for cell in cells:
                entry = nodes.entry()
                children = cell if isinstance(cell, list) else [cell]
                for child in children:
                    entry += child if isinstance(child, nodes.Element) and not isinstance(child, nodes.Inline) \
                        else nodes.paragraph("", "", child if isinstance(child, nodes.Node) else nodes.Text(str(child)))
                out += entry
            return out

        head, body = nodes.thead(), nodes.tbody()
        head += row(headers)
        body.extend(row(cells) for cells in rows)
        group += head
        group += body
        return table


class InstructorNotes(GuideDirective):
    """The lesson index of the instructors page: per lesson its session, the shortest version, the answer keys
    and exercises it has, the machine run time, and a link to its guide page."""

    def run(self) -> list[nodes.Node]:
        notes, plans, timings, outlines = self.data()
        # Incomplete data (a lesson without notes or without a guide page, a lesson not written yet) is shown as it
        # is: tests/test_instructor_guide.py holds the repository's own guide complete. A link to a section that
        # does not exist would be a broken page, so that is a warning (an error under -W).
        for problem in check_notes(notes, outlines) + check_plans(plans, outlines):
            if "does not exist" in problem or "has no section" in problem:
                self.warn(problem)
        rows = []
        for name, outline in outlines.items():
            entry = notes.get(name) or {}
            session = entry.get("session")
            saved = sum(cut.get("saves", 0) for cut in entry.get("cuts") or [] if is_minutes(cut.get("saves")))
            shortest = f"{session - saved}" if is_minutes(session) else "–"
            rows.append([self.page_link(guide_docname(name), outline["title"], classes=["guide-link"]),
                         f"{session if is_minutes(session) else '–'}", shortest,
                         str(len(entry.get("answers") or [])), str(len(outline["exercises"])),
                         quick_run_time(timings, name)])
        table = self.table(["Lesson", "Session", "Shortest", "Answer keys", "Exercises", "Run time"], rows,
                           [36, 10, 10, 10, 10, 16], ["guide-index"])
        legend = nodes.paragraph("", "Session: minutes in class, exercises included; shortest: the session with "
                                     "every cut its guide suggests; run time: the notebook top to bottom in the quick "
                                     "profile, as recorded in the timings above. The whole course in one 90-minute lecture, and a "
                                     "term with one lesson a week: ")
        legend += self.page_link(PLANS_PAGE, "plans for a lecture and a term", classes=["guide-link"])
        legend += nodes.Text(".")
        return [table, legend]


class InstructorGuide(GuideDirective):
    """The guide to one lesson (the page's name is the notebook's): objectives, minutes per section, cuts,
    answer keys, exercises with their solutions, misconceptions and live-coding moments."""

    def run(self) -> list[nodes.Node]:
        notes, _, timings, outlines = self.data()
        name = Path(self.env.docname).name + ".ipynb"
        if name not in outlines:  # a guide page kept for a lesson that is not written (or not present) here
            page = self.section(f"Guide · {Path(name).stem}", f"guide {Path(name).stem}")
            page += nodes.paragraph("", f"There is no lesson notebooks/{name} here, so there is nothing to guide.")
            return [page]
        outline, entry = outlines[name], notes.get(name) or {}
        lesson = f"notebooks/{Path(name).stem}"
        page = self.section(f"Guide · {outline['title']}", f"guide {outline['title']}")
        intro = nodes.paragraph("", "The lesson: ")
        intro += self.page_link(lesson, outline["title"])
        intro += nodes.Text(". Back to the ")
        intro += self.page_link("book/instructors", "list of lessons")
        intro += nodes.Text(".")
        page += intro
        lines = []
        if outline["objectives"]:
            lines += ["**Learning objectives** (as the lesson states them):", ""]
            lines += [f"- {item}" for item in outline["objectives"]] + [""]
        session = entry.get("session")
        lines += [f"**Session:** {session} minutes, exercises included." if is_minutes(session)
                  else "**Session:** not planned yet.", "",
                  f"**Machine time** (the notebook run top to bottom): {lesson_timing(timings, name)}", ""]
        page.extend(self.markdown("\n".join(lines)))
        parts = (self.budget(lesson, outline, entry), self.cuts(lesson, entry),
                 self.answers(lesson, outline, entry), self.exercises(lesson, outline),
                 self.misconceptions(lesson, entry))
        for part in parts:
            if part is not None:
                page += part
        return [page]

    def budget(self, lesson: str, outline: dict, entry: dict) -> nodes.section | None:
        budget = entry.get("budget") or {}
        if not budget:
            return None
        section = self.section("Minute by minute", "minute by minute")
        rows, start = [], 0
        for heading in outline["sections"]:
            minutes = budget.get(heading)
            if not is_minutes(minutes):
                continue
            rows.append([clock_range(start, minutes) if minutes else "–",
                         self.link(lesson, heading, re.sub(r"[`*]", "", heading)), f"{minutes:g}"])
            start += minutes
        rows.append(["", nodes.strong(text="Total"), nodes.strong(text=f"{start:g}")])
        section += self.table(["Clock", "Section", "Minutes"], rows, [12, 70, 10], ["guide-budget"])
        section.extend(self.markdown("The slides (`make slides`) pace each section by these minutes in the speaker "
                                     "view (press `s`)."))
        return section

    def cuts(self, lesson: str, entry: dict) -> nodes.section | None:
        cuts = entry.get("cuts") or []
        if not cuts:
            return None
        section = self.section("When time is short", "when time is short")
        rows = [[self.link(lesson, cut["section"], re.sub(r"[`*]", "", cut["section"])), self.markdown(cut["what"]),
                 f"{cut['saves']:g}"] for cut in cuts]
        section += self.table(["Section", "What to cut", "Saves (min)"], rows, [30, 60, 10], ["guide-cuts"])
        saved = sum(cut["saves"] for cut in cuts)
        if is_minutes(entry.get("session")):
            section += nodes.paragraph("", f"Every cut together saves {saved:g} minutes: a session of "
                                           f"{entry['session'] - saved:g} minutes.")
        return section

    def answers(self, lesson: str, outline: dict, entry: dict) -> nodes.section | None:
        answers = entry.get("answers") or []
        if not answers:
            return None
        order = {heading: i for i, heading in enumerate(outline["sections"])}
        section = self.section(f"Answer keys ({len(answers)})", "answer keys")
        section += nodes.paragraph("", "The questions the lesson asks its reader, in its own words, with a short "
                                       "answer built on the notebook's stored outputs.")
        bullets = nodes.bullet_list(classes=["guide-answers"])
        for item in sorted(answers, key=lambda item: order.get(item["section"], len(order))):
            list_item = nodes.list_item()
            list_item.extend(self.markdown(f"**“{item['asks'].strip()}”**\n\n{item['answer'].strip()}"))
            list_item += nodes.paragraph("", "", self.link(lesson, item["section"]))
            bullets += list_item
        section += bullets
        return section

    def exercises(self, lesson: str, outline: dict) -> nodes.section | None:
        if not outline["exercises"]:
            return None
        section = self.section(f"Exercises ({len(outline['exercises'])})", "exercises")
        section.extend(self.markdown("Each exercise has a stub, a check that gives feedback, and a solution cell, "
                                     "which is its answer key: folded under *Show solution* on the lesson page, in "
                                     "place in the instructor edition (`make editions`)."))
        rows = []
        for exercise in outline["exercises"]:
            where = outline["exercise_sections"].get(exercise)
            solution = nodes.reference("", "", refuri=self.uri(lesson, solution_anchor(exercise)),
                                       classes=["guide-solution-link"])
            solution += nodes.Text("solution\u00a0→")
            rows.append([nodes.literal(text=exercise), outline["exercise_titles"].get(exercise, ""),
                         self.link(lesson, where, re.sub(r"[`*]", "", where)) if where else "", solution])
        section += self.table(["Exercise", "What it asks", "Section", "Solution"], rows, [20, 36, 28, 16],
                              ["guide-exercises"])
        return section

    def misconceptions(self, lesson: str, entry: dict) -> nodes.section | None:
        parts = [(kind, title) for kind, title in (("misconceptions", "Common misconceptions"),
                                                    ("live_coding", "Live-coding points")) if entry.get(kind)]
        if not parts:
            return None
        section = self.section("Misconceptions and live coding", "misconceptions and live coding")
        for kind, title in parts:
            section += nodes.paragraph("", "", nodes.strong(text=title + "."))
            bullet = nodes.bullet_list()
            for item in entry[kind]:
                text = f"*\"{item['belief']}\"* {item['truth']}" if kind == "misconceptions" else item["point"]
                list_item = nodes.list_item()
                list_item.extend(self.markdown(text))
                list_item += nodes.paragraph("", "", self.link(lesson, item["section"]))
                bullet += list_item
            section += bullet
        return section


class TeachingPlans(GuideDirective):
    """The course in one 90-minute lecture (sections of lessons, minute by minute) and a term of one lesson a week
    (with the exercises to assign)."""

    def run(self) -> list[nodes.Node]:
        notes, plans, _, outlines = self.data()
        out: list[nodes.Node] = []
        steps = plans.get("one_lecture") or []
        if steps:
            section = self.section(f"The course in one {LECTURE_MINUTES}-minute lecture", "one lecture")
            if plans.get("one_lecture_intro"):
                section.extend(self.markdown(plans["one_lecture_intro"]))
            rows, start = [], 0
            for step in steps:
                lesson = f"notebooks/{Path(step['lesson']).stem}"
                title = outlines.get(step["lesson"], {}).get("title", step["lesson"])
                rows.append([clock_range(start, step["minutes"]),
                             self.page_link(lesson, title.split(" · ")[0], classes=["guide-link"]),
                             self.link(lesson, step["section"], re.sub(r"[`*]", "", step["section"])),
                             f"{step['minutes']:g}", self.markdown(step["do"])])
                start += step["minutes"]
            rows.append(["", "", nodes.strong(text="Total"), nodes.strong(text=f"{start:g}"), ""])
            section += self.table(["Clock", "Lesson", "Section", "Min", "What to do"], rows, [10, 7, 30, 6, 47],
                                  ["guide-lecture"])
            out.append(section)
        weeks = plans.get("term") or []
        if weeks:
            section = self.section("A term: one lesson a week", "one term")
            if plans.get("term_intro"):
                section.extend(self.markdown(plans["term_intro"]))
            rows = []
            for number, week in enumerate(weeks, 1):
                name = week["lesson"]
                session = (notes.get(name) or {}).get("session")
                title = outlines.get(name, {}).get("title", name)
                assign = [nodes.literal(text=exercise) for exercise in week.get("assign") or []]
                cell = []
                for i, literal in enumerate(assign):
                    cell += [nodes.Text(", ")] if i else []
                    cell.append(literal)
                rows.append([str(number), self.page_link(guide_docname(name), title, classes=["guide-link"]),
                             f"{session:g}" if is_minutes(session) else "–", nodes.paragraph("", "", *cell),
                             self.markdown(week.get("note", ""))])
            section += self.table(["Week", "Lesson (its guide)", "Class (min)", "Exercises to assign", "Notes"], rows,
                                  [6, 30, 8, 22, 34], ["guide-term"])
            out.append(section)
        return out


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_local_mathjax)
    app.connect("source-read", on_source_read)
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", report_external_resources)
    app.connect("html-page-context", drop_thebe_loader)
    app.connect("doctree-read", anchor_solutions)
    app.add_directive("include-if-present", IncludeIfPresent)
    app.add_directive("instructor-notes", InstructorNotes)
    app.add_directive("instructor-guide", InstructorGuide)
    app.add_directive("teaching-plans", TeachingPlans)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
