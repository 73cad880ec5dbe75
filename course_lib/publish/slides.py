"""Lecture slides from the lesson notebooks: reveal.js decks that fit the screen, written by nbconvert.

The notebooks are the one source. nbconvert's ``SlidesExporter`` renders them through the template in
``resources/slides_template``, whose ``conf.json`` runs the preprocessors below (outputs, exercises) and then
:class:`course_lib.publish.slide_layout.SlideLayoutPreprocessor` (heights, code folds, packing) before nbconvert's own
reveal.js preprocessor; they choose the slide structure, so no cell needs hand-set slide metadata (any ``slideshow``
metadata in a notebook is ignored):

* ``# `` (the title) and ``## `` headings start a new slide, a column of the deck; ``### `` headings a sub-slide;
* explanation before code: the markdown that opens a sub-slide is shown first, and each code cell (with its
  output) and each later explanation appears as a fragment;
* cells are packed into sub-slides by an estimate of their height on the slide (:class:`Geometry`); a markdown
  cell too tall for one slide is split at a paragraph, a code cell too tall is split from its output;
* long code shows its first lines (plot styling left out first) with an elision marker, and the whole cell
  behind a fold; long text outputs are cut with a marker;
* noise is dropped: stderr (warnings), progress bars, widget views; interactive HTML views (BertViz) become a
  short note: they carry hundreds of kB of script and need a live kernel to be worth showing;
* an exercise shows its task, its stub and the call of its check; the solution follows on a sub-slide of its
  own, with the check's output after it;
* markdown cells tagged ``speaker-notes`` become reveal.js speaker notes (``<aside class="notes">``) of the
  sub-slide they are in; the student edition and the website leave them out. A sub-slide of code or output without
  its explanation gets the explanation as notes, and the guide's answer keys, misconceptions and live-coding
  moments go to the notes of their question's or section's sub-slide (:mod:`course_lib.publish.slide_notes`);
* table words break only between words; a table too wide for the slide at the output size gets a smaller font.

* a room reads them: code and outputs at 22 px, long lines wrapped; no sub-slide with more than about 120 words of
  prose or with nothing but a heading; check cells shown as their verdict, ``assert`` code in the speaker notes;
  figures grown into the free height of their sub-slide (:mod:`course_lib.publish.slide_fit`).

Per-cell tags override the rules: ``slide-skip`` leaves a cell out (nbconvert's ``TagRemovePreprocessor``),
``slide-keep`` keeps a cell whole (no folding, no cutting, no dropped output, setup cells too),
``slide-full-output`` shows a cell's text output whole, over as many sub-slides as it needs, and
``slide-break`` starts a new sub-slide at the cell.
"""
from __future__ import annotations

import copy
import html
import re
from dataclasses import dataclass

from nbconvert.preprocessors import Preprocessor
from nbformat.v4 import new_markdown_cell

SKIP_TAG, KEEP_TAG, BREAK_TAG = "slide-skip", "slide-keep", "slide-break"
NOTES_TAG = "speaker-notes"
EXERCISE_TAG, SOLUTION_TAG, CHECK_TAG = "exercise", "solution", "check"
EXERCISE_NAME = re.compile(r"NotImplementedError\(\s*[\"']Exercise\s+(\d\d\.[\w-]+)")
CHECK_NAME = re.compile(r"""check\(\s*["'](\d\d\.[\w-]+)["']""")
SETUP_MARKDOWN = "**Setup.**"
SETUP_CODE = ("import course_lib", "# Colab or any Jupyter without the course")
HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*$")


@dataclass(frozen=True)
class Geometry:
    """Sizes of the slide and of what is drawn on it, in CSS pixels of the unscaled slide.

    The style sheet of the decks reads these numbers (:func:`css_variables`), and the packing estimates
    heights from them; the browser test measures the real heights.
    """

    width: int = 1280
    height: int = 720
    padding: int = 20  # reveal.js pads each slide section by 20 px at top and bottom
    content_width: int = 1216  # the section's width less the notebook's margins
    text_px: int = 22
    text_line: float = 1.4
    text_em_per_char: float = 0.55  # average width of a character of prose, in em (conservative)
    h1_px: int = 40
    h2_px: int = 32
    h3_px: int = 27
    code_px: int = 22  # code and outputs: read from the back of a lecture hall
    code_line: float = 1.25
    output_px: int = 22
    output_line: float = 1.25
    mono_em_per_char: float = 0.62  # DejaVu Sans Mono and Menlo: 0.60
    mono_padding: int = 24  # left and right padding of a code or output block, together
    image_min_px: int = 300  # the height a figure is packed at, before it grows into its sub-slide's free height
    image_max_px: int = 660
    table_row_px: int = 34
    math_block_px: int = 64
    block_gap_px: int = 14  # space between paragraphs, between a code cell and its output, ...
    code_lines_shown: int = 12  # a longer cell shows this many lines and folds the whole cell
    output_lines_shown: int = 10  # a longer text output is cut to this many lines (unless slide-full-output)
    fill: float = 0.93  # share of the slide height the packing fills (the rest absorbs estimation errors)

    @property
    def budget(self) -> float:
        return (self.height - 2 * self.padding) * self.fill

    def chars_per_line(self, px: float, em_per_char: float) -> int:
        return max(20, int(self.content_width / (px * em_per_char)))


def css_variables(geometry: Geometry) -> str:
    """The geometry as CSS custom properties, read by ``static/course_slides.css``, and the rules that keep code,
    outputs and tables inside the slide's width: long lines wrap (the packing counts the wrapped rows)."""
    g = geometry
    values = {"text": g.text_px, "text-line": g.text_line, "h1": g.h1_px, "h2": g.h2_px, "h3": g.h3_px,
              "code": g.code_px, "code-line": g.code_line, "output": g.output_px, "output-line": g.output_line,
              "image-max": g.image_max_px, "gap": g.block_gap_px}
    body = "; ".join(f"--slides-{name}: {value}{'px' if isinstance(value, int) else ''}"
                     for name, value in values.items())
    pad = g.mono_padding // 2
    wrap = "white-space: pre-wrap; overflow-wrap: anywhere; word-break: normal"
    rules = [
        f".reveal .slides .jp-InputArea-editor pre, .reveal .slides .jp-OutputArea-output pre "
        f"{{ {wrap}; padding: 6px {pad}px; overflow: visible; box-sizing: border-box; max-width: 100%; }}",
        ".reveal .slides .jp-InputArea-editor, .reveal .slides .jp-OutputArea, .reveal .slides .jp-Cell, "
        ".reveal .slides .jp-OutputArea-output { max-width: 100%; min-width: 0; overflow: visible; }",
        ".reveal .slides .jp-OutputArea-output table { font-size: var(--slides-output); max-width: 100%; "
        "table-layout: auto; }",
        ".reveal .slides .jp-OutputArea-output td, .reveal .slides .jp-OutputArea-output th "
        "{ white-space: normal; line-height: 1.25; padding: 2px 6px; }",
        # a word or number in a table breaks only between words, never inside one (a column is as wide as its
        # longest word); a table that would then be wider than the slide gets a smaller font (TABLE_FIT)
        ".reveal .slides table th, .reveal .slides table td "
        "{ overflow-wrap: normal; word-break: normal; hyphens: none; }",
        ".reveal .slides .jp-RenderedMarkdown pre { " + wrap + "; }",
    ]
    return f":root {{ {body}; }}\n" + "\n".join(rules)


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _slides(cell) -> dict:
    """The working metadata the slide preprocessors keep on a cell (removed before rendering is not needed)."""
    return cell.setdefault("metadata", {}).setdefault("course_slides", {})


def is_setup_cell(cell) -> bool:
    """The lesson's setup cells: the "**Setup.**" explanation and the code cell that imports course_lib."""
    source = cell.source.lstrip()
    if cell.cell_type == "markdown":
        return source.startswith(SETUP_MARKDOWN)
    return cell.cell_type == "code" and source.startswith(SETUP_CODE)


# ----------------------------------------------------------------------------------------------- outputs
PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*\d|\bit/s\]|s/it\]")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
HEAVY_HTML_BYTES = 50_000


def _is_progress_text(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(PROGRESS_LINE.search(line) for line in lines)


def view_note(output) -> dict:
    """A small HTML note standing in for an interactive view (its script is left out of the slides)."""
    data = output["data"]
    size_kb = len(data["text/html"]) / 1000
    described = data.get("text/plain", "an interactive view").strip().strip("<>").split(";")[0]
    body = (f'<div class="slides-view-note"><strong>Interactive view, not in the slides</strong> '
            f"({size_kb:,.0f} kB of HTML and script): {html.escape(described)}. Show it live from the notebook "
            "(run the cell) or from the lesson's page on the course website.</div>")
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": body, "text/plain": described}}


def _cut_lines(text: str, keep: int) -> str:
    lines = text.splitlines()
    if len(lines) <= keep + 1:
        return text
    rest = len(lines) - keep
    return "\n".join(lines[:keep]) + f"\n⋯ {rest} more lines (in the notebook)\n"


TABLE_MIN_PX = 16  # the smallest font a table too wide for the slide at the output size is given
TABLE_EM_PER_CHAR, TABLE_CELL_EM = 0.57, 0.75  # a character of a table, a cell's padding and border, in em (measured)


def _cell_words(cell_html: str) -> list[str]:
    text = html.unescape(re.sub(r"<[^>]+>", " ", cell_html))
    return text.split() or [""]


def fit_table(html_text: str, g: Geometry) -> str:
    """A table of an output as the slide shows it: hyphenated words in its headers do not break at the hyphen
    (U+2011), and a table whose longest words (one column cannot be narrower) would not fit the slide's width at
    the output size gets the largest font that fits, no smaller than :data:`TABLE_MIN_PX`, and the class
    ``slides-wide-table``."""
    def headers(match):
        parts = re.split(r"(<[^>]+>)", match.group(2))
        parts = [part if part.startswith("<") else re.sub(r"(?<=\w)-(?=\w)", "\u2011", part) for part in parts]
        return match.group(1) + "".join(parts) + match.group(3)

    html_text = re.sub(r"(<th\b[^>]*>)(.*?)(</th>)", headers, html_text, flags=re.S)
    columns: dict[int, int] = {}  # characters of the longest word in each column
    for row in re.findall(r"<tr.*?</tr>", html_text, flags=re.S):
        for number, cell in enumerate(re.findall(r"<t[dh]\b[^>]*>(.*?)</t[dh]>", row, flags=re.S)):
            columns[number] = max(columns.get(number, 0), max(len(word) for word in _cell_words(cell)))
    widest = sum(chars * TABLE_EM_PER_CHAR + TABLE_CELL_EM for chars in columns.values())  # em
    room = g.content_width - 24  # px: the output area's padding
    if widest * g.output_px <= room:
        return html_text
    px = max(TABLE_MIN_PX, int(room / widest))

    def widen(match):
        tag = re.sub(r"""\sclass=(["'])""", r" class=\1slides-wide-table ", match.group(0), count=1)
        if "slides-wide-table" not in tag:
            tag = tag[:-1] + ' class="slides-wide-table">'
        return tag[:-1] + f' style="font-size: {px}px" data-slides-em="{widest:.1f}">'

    return re.sub(r"<table\b[^>]*>", widen, html_text, count=1)


class SlideOutputsPreprocessor(Preprocessor):
    """Drop the noise from outputs (stderr, progress bars, widgets), cut long text, replace heavy views, fit tables
    to the slide's width."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or KEEP_TAG in _tags(cell):
            return cell, resources
        lines_shown = resources.get("course_slides", {}).get("output_lines_shown", Geometry.output_lines_shown)
        whole = "slide-full-output" in _tags(cell)
        kept = []
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                if output.get("name") == "stderr":
                    continue  # warnings and progress bars
                text = "\n".join(line for line in output["text"].split("\n") if not PROGRESS_LINE.search(line))
                if not text.strip():
                    continue
                output = copy.deepcopy(output)
                output["text"] = text if whole else _cut_lines(text, lines_shown)
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                if WIDGET_VIEW in data:
                    plain = data.get("text/plain", "")
                    if not plain.strip() or _is_progress_text(plain):
                        continue
                    output = copy.deepcopy(output)
                    output["data"] = {"text/plain": plain}
                    data = output["data"]
                html_text = data.get("text/html", "")
                if html_text and (len(html_text) > HEAVY_HTML_BYTES or "<script" in html_text):
                    output = view_note(output)
                elif "<table" in html_text:
                    geometry = resources.get("course_slides", {}).get("geometry") or Geometry()
                    output = copy.deepcopy(output)
                    output["data"]["text/html"] = fit_table(html_text, geometry)
                elif "text/plain" in data and not set(data) & {"text/html", "image/png", "image/svg+xml",
                                                               "image/jpeg", "text/latex", "text/markdown"}:
                    output = copy.deepcopy(output)
                    output["data"]["text/plain"] = data["text/plain"] if whole else _cut_lines(data["text/plain"],
                                                                                          lines_shown)
            elif kind == "error":
                output = copy.deepcopy(output)
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
            kept.append(output)
        cell.outputs = kept
        return cell, resources


# ----------------------------------------------------------------------------------------------- exercises
def _copy_cell(cell, suffix: str):
    """A deep copy of ``cell`` with an id of its own (the original's id and ``suffix``)."""
    twin = copy.deepcopy(cell)
    if "id" in cell:
        twin["id"] = f"{cell['id']}-{suffix}"[:64]
    return twin


class SlideExercisesPreprocessor(Preprocessor):
    """Each exercise: task, stub and the call of its check first; then, on a sub-slide of its own, the
    solution and the check's output. The solution is never on the sub-slide of its stub."""

    def preprocess(self, nb, resources):
        cells, out, index = nb.cells, [], 0
        while index < len(cells):
            cell = cells[index]
            if EXERCISE_TAG not in _tags(cell) or cell.cell_type != "code":
                out.append(cell)
                index += 1
                continue
            match = EXERCISE_NAME.search(cell.source)
            name = match.group(1) if match else None
            out.append(cell)
            index += 1
            solutions, checks, between = [], [], []
            while index < len(cells):  # the solutions and checks that follow, and cells between them
                nxt = cells[index]
                tags = _tags(nxt)
                if SOLUTION_TAG in tags:
                    solutions.append(nxt)
                elif CHECK_TAG in tags and (name is None or name in CHECK_NAME.findall(nxt.source)):
                    checks.append(nxt)
                else:
                    break
                index += 1
            for check in checks:
                call = _copy_cell(check, "call")
                call.outputs, call.execution_count = [], None
                out.append(call)
            if solutions:
                title = f"### Solution · `{name}`" if name else "### Solution"
                header = new_markdown_cell(title)
                header.metadata["course_slides"] = {"role": "solution-header"}
                out.append(header)
                out.extend(solutions)
                for check in checks:
                    result = _copy_cell(check, "result")
                    result.metadata["transient"] = {"remove_source": True}
                    out.append(result)
            out.extend(between)
        nb.cells = out
        return nb, resources
