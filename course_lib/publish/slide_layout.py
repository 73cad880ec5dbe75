"""Where each cell of a lecture deck goes: the estimated heights of cells on a slide, the folding of long code, and
the packing of cells into slides and sub-slides (:class:`SlideLayoutPreprocessor`).

The last of the course's preprocessors in ``resources/slides_template/conf.json``; it runs after the outputs and
exercises preprocessors of :mod:`course_lib.publish.slides`, whose :class:`~course_lib.publish.slides.Geometry` gives
the sizes the heights are estimated from. The rules it follows are listed in that module's docstring.
"""
from __future__ import annotations

import base64
import copy
import math
import re
import struct

from nbconvert.preprocessors import Preprocessor

from course_lib.publish.slides import (
    BREAK_TAG,
    HEADING,
    KEEP_TAG,
    NOTES_TAG,
    Geometry,
    _copy_cell,
    _slides,
    _tags,
    is_setup_cell,
)


# ----------------------------------------------------------------------------------------------- heights
def _visible_length(text: str) -> int:
    """Roughly how many characters a line of markdown shows once rendered."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links show their text
    text = re.sub(r"\$([^$]+)\$", lambda m: "x" * max(1, int(len(m.group(1)) * 0.6)), text)  # inline math
    text = re.sub(r"[*_`]", "", text)
    return len(text)


def markdown_blocks(source: str) -> list[str]:
    """Split markdown at blank lines, keeping fenced code, display math and lists whole."""
    blocks, current, fence, math_open = [], [], False, False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = not fence
        elif not fence and stripped.count("$$") % 2:
            math_open = not math_open
        if not stripped and not fence and not math_open:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def markdown_height(source: str, g: Geometry) -> float:
    """Estimated height of rendered markdown on the slide."""
    text_cpl = g.chars_per_line(g.text_px, g.text_em_per_char)
    code_cpl = g.chars_per_line(g.code_px, g.mono_em_per_char)
    text_line = g.text_px * g.text_line
    height = 0.0
    for block in markdown_blocks(source):
        lines = block.splitlines()
        if lines[0].strip().startswith("```"):
            code_lines = sum(max(1, math.ceil(len(line) / code_cpl)) for line in lines[1:-1])
            height += code_lines * g.code_px * g.code_line + 2 * 10 + g.block_gap_px
            continue
        if lines[0].strip().startswith("$$"):
            rows = 1 + block.count("\\\\")
            height += rows * g.math_block_px * (1.3 if "frac" in block or "sum" in block else 1.0) + g.block_gap_px
            continue
        if lines[0].startswith("|"):
            height += len([line for line in lines if not set(line) <= set("|-: ")]) * g.table_row_px
            height += g.block_gap_px
            continue
        paragraph: list[str] = []

        def flush(indent: int = 0) -> float:
            if not paragraph:
                return 0.0
            length = _visible_length(" ".join(part.strip() for part in paragraph))
            paragraph.clear()
            return max(1, math.ceil(length / (text_cpl - indent))) * text_line

        for line in lines:
            heading = HEADING.match(line)
            if heading:
                height += flush()
                level = len(heading.group(1))
                size = {1: g.h1_px, 2: g.h2_px}.get(level, g.h3_px)
                cpl = g.chars_per_line(size, 0.55)
                height += max(1, math.ceil(len(heading.group(2)) / cpl)) * size * 1.2 + 0.6 * size
                continue
            if re.match(r"\s*([-*]|\d+\.) ", line):
                height += flush(8)
                height += 4  # list item spacing
            paragraph.append(line)
        height += flush(8) + g.block_gap_px
    return height


def _png_size(data: str) -> tuple[int, int] | None:
    try:
        raw = base64.b64decode(data[:64])
    except (ValueError, TypeError):
        return None
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", raw[16:24])


def output_height(output, g: Geometry) -> float:
    out_cpl = g.chars_per_line(g.output_px, g.mono_em_per_char)
    line = g.output_px * g.output_line
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
    elif kind == "error":
        text = "\n".join(output.get("traceback", []))
    else:
        data = output.get("data", {})
        if "image/png" in data:
            size = _png_size(data["image/png"])
            if size is None:
                return g.image_max_px + g.block_gap_px
            width, height = size
            return min(g.image_max_px, height * min(1.0, g.content_width / width)) + g.block_gap_px
        if "text/html" in data:
            html_text = data["text/html"]
            if "slides-view-note" in html_text:
                return 2 * g.text_px * g.text_line * 1.0 + 2 * g.block_gap_px
            rows = html_text.count("<tr")
            if rows:
                return rows * g.table_row_px + 2 * g.block_gap_px
            return markdown_height(re.sub(r"<[^>]+>", " ", html_text), g)
        text = data.get("text/plain", "")
    rows = sum(max(1, math.ceil(len(part) / out_cpl)) for part in text.rstrip("\n").split("\n"))
    return rows * line + 2 * 8 + g.block_gap_px


def input_height(source: str, g: Geometry) -> float:
    rows = source.rstrip("\n").count("\n") + 1
    return rows * g.code_px * g.code_line + 2 * 9 + g.block_gap_px


def cell_height(cell, g: Geometry) -> float:
    """Estimated height of a cell as drawn on a slide (notes and skipped cells take none)."""
    if cell.get("metadata", {}).get("slideshow", {}).get("slide_type") in ("notes", "skip"):
        return 0.0
    if cell.cell_type == "markdown":
        return markdown_height(cell.source, g)
    if cell.cell_type != "code":
        return 0.0
    height = 0.0
    if not cell.get("metadata", {}).get("transient", {}).get("remove_source"):
        fold = cell.get("metadata", {}).get("course_slides", {}).get("fold")
        height += input_height(fold["shown"] if fold else cell.source, g)
        if fold:
            height += g.text_px * 1.5  # the fold's summary line
    height += sum(output_height(output, g) for output in cell.get("outputs", []))
    return height


# ----------------------------------------------------------------------------------------------- code folds
PLOT_STYLING = re.compile(
    r"^\s*(ax\w*|axes\[[^\]]*\]|left|right|fig|plt|cbar|label)\.(set_\w+|legend|tick_params|grid|axis|"
    r"axhline|axvline|spines|suptitle|colorbar|set)\b|^\s*plt\.(show|tight_layout|xlabel|ylabel|title|legend)\b|"
    r"^\s*for label in .*get_\w+labels")


def fold_code(source: str, shown: int) -> dict | None:
    """The lines a long cell shows on a slide, or None if it fits: plot styling and blank lines are left out
    first, then the cell is cut; each gap is marked with a comment saying how many lines it hides."""
    lines = source.rstrip("\n").split("\n")
    if len(lines) <= shown + 1:  # hiding a single line would cost as much room as the marker
        return None
    keep = [bool(line.strip()) and not PLOT_STYLING.search(line) for line in lines]
    if sum(keep) > shown - 1:
        budget, count = shown - 1, 0  # one line for the marker of the cut
        for i, kept in enumerate(keep):
            if kept:
                count += 1
                keep[i] = count <= budget
    visible, hidden = [], 0
    for line, kept in zip(lines, keep):
        if kept:
            if hidden:
                visible.append(f"# ⋯ {hidden} line{'s' if hidden > 1 else ''} folded")
                hidden = 0
            visible.append(line)
        elif line.strip():
            hidden += 1
    if hidden:
        visible.append(f"# ⋯ {hidden} more line{'s' if hidden > 1 else ''}: open the fold below")
    return {"shown": "\n".join(visible), "total": len(lines)}


# ----------------------------------------------------------------------------------------------- layout
def _split_markdown(cell, g: Geometry) -> list:
    """A markdown cell taller than a slide, as several cells cut at paragraph breaks (or the cell itself)."""
    if markdown_height(cell.source, g) <= g.budget:
        return [cell]
    pieces = []  # (text, separator before it): paragraphs, and the items of a list too tall for one slide
    for block in markdown_blocks(cell.source):
        items = re.split(r"\n(?=(?:[-*]|\d+\.) )", block)
        if len(items) > 1 and markdown_height(block, g) > g.budget:
            pieces += [(item, "\n" if number else "\n\n") for number, item in enumerate(items)]
        else:
            pieces.append((block, "\n\n"))
    parts, current = [], ""
    for text, separator in pieces:
        joined = current + separator + text if current else text
        if current and markdown_height(joined, g) > g.budget:
            parts.append(current)
            joined = text
        current = joined
    parts.append(current)
    cells = []
    for number, text in enumerate(parts):
        piece = _copy_cell(cell, f"part{number}") if number else cell
        piece.source = text
        if number:
            _slides(piece)["continued"] = True
        cells.append(piece)
    return cells


def _split_code(cell, g: Geometry) -> list:
    """A code cell taller than a slide: the input on one sub-slide, the outputs after it (packed again)."""
    if cell_height(cell, g) <= g.budget or not cell.get("outputs"):
        return [cell]
    source_only = copy.deepcopy(cell)
    source_only.outputs = []
    pieces = [source_only]
    for number, output in enumerate(cell.outputs):
        piece = _copy_cell(cell, f"output{number}")
        piece.outputs = [output]
        piece.metadata["transient"] = {"remove_source": True}
        _slides(piece)["continued"] = True
        pieces.append(piece)
    return pieces


def _heading_level(cell) -> int:
    if cell.cell_type != "markdown":
        return 0
    first = cell.source.lstrip().split("\n", 1)[0]
    match = HEADING.match(first)
    return len(match.group(1)) if match else 0


class SlideLayoutPreprocessor(Preprocessor):
    """Choose every cell's slide type: slides at ``#``/``##``, sub-slides at ``###`` and wherever the packing
    by estimated height needs one, fragments for code and later explanations; setup cells skipped, long
    code folded, speaker notes attached to their sub-slide."""

    def preprocess(self, nb, resources):
        g = resources.get("course_slides", {}).get("geometry") or Geometry()
        cells = []
        for cell in nb.cells:
            cell.setdefault("metadata", {}).pop("slideshow", None)  # hand-set metadata is ignored
            tags = _tags(cell)
            if is_setup_cell(cell) and KEEP_TAG not in tags:
                continue
            if NOTES_TAG in tags:
                cell.metadata["slideshow"] = {"slide_type": "notes"}
                cells.append(cell)
                continue
            if cell.cell_type == "code" and KEEP_TAG not in tags:
                fold = fold_code(cell.source, g.code_lines_shown)
                if fold:
                    _slides(cell)["fold"] = fold
            if cell.cell_type == "markdown" and KEEP_TAG not in tags:
                cells.extend(_split_markdown(cell, g))
            elif cell.cell_type == "code" and KEEP_TAG not in tags:
                cells.extend(_split_code(cell, g))
            else:
                cells.append(cell)
        self._assign(cells, g)
        self._pace(cells, resources.get("course_slides", {}).get("timings") or {})
        nb.cells = self._attach_notes(cells)
        return nb, resources

    @staticmethod
    def _pace(cells, minutes: dict[str, float]) -> None:
        """Give each sub-slide its share of its section's minutes (``data-timing``, in seconds), for the pacing
        timer of reveal.js's speaker view. The slides before the first section share the first section's."""
        if not minutes:
            return
        sections: list[list] = [[]]  # the cells that open a sub-slide, per ## section
        names: list[str | None] = [None]
        for cell in cells:
            kind = cell.metadata.get("slideshow", {}).get("slide_type")
            if kind not in ("slide", "subslide"):
                continue
            if _heading_level(cell) == 2:
                sections.append([])
                names.append(HEADING.match(cell.source.lstrip().split("\n", 1)[0]).group(2))
            sections[-1].append(cell)
        if len(sections) > 1:  # the title and preamble go with the first section
            sections[1][:0], sections[0] = sections[0], []
        for name, openers in zip(names, sections):
            if name in minutes and openers:
                seconds = round(60 * float(minutes[name]) / len(openers))
                for cell in openers:
                    cell.metadata["slideshow"]["data"] = {"timing": seconds}

    @staticmethod
    def _starts_subslide(cell) -> str | None:
        """"slide" or "subslide" when the cell must open one, whatever the space left."""
        level = _heading_level(cell)
        if level in (1, 2):
            return "slide"
        if level >= 3 or BREAK_TAG in _tags(cell) or _slides(cell).get("role") == "solution-header":
            return "subslide"
        if _slides(cell).get("continued") and cell.cell_type == "markdown":
            return "subslide"
        return None

    def _assign(self, cells, g: Geometry) -> None:
        units, current = [], []  # a unit: explanation (markdown) followed by the code it explains
        for cell in cells:
            if NOTES_TAG not in _tags(cell):
                opens = self._starts_subslide(cell) or (
                    cell.cell_type == "markdown" and any(c.cell_type == "code" for c in current))
                if opens and current:
                    units.append(current)
                    current = []
            current.append(cell)
        if current:
            units.append(current)

        used = None  # height filled on the current sub-slide; None before the first
        for unit in units:
            visible = [c for c in unit if NOTES_TAG not in _tags(c)]
            if not visible:
                continue
            forced = self._starts_subslide(visible[0])
            height = sum(cell_height(c, g) for c in visible)
            if used is None or forced == "slide":
                kind = "slide"
            elif forced or used + height > g.budget:
                kind = "subslide"
            else:
                kind = None  # the unit continues the current sub-slide
            if kind:
                used = 0.0
            for position, cell in enumerate(visible):
                h = cell_height(cell, g)
                if position == 0 and kind:
                    cell_type = kind
                elif used > 0 and used + h > g.budget:
                    cell_type, used = "subslide", 0.0  # no room left under the explanation
                elif cell.cell_type == "code" or position == 0:
                    cell_type = "fragment" if used > 0 else "-"
                else:
                    cell_type = "-"
                cell.metadata["slideshow"] = {"slide_type": cell_type}
                used += h

    @staticmethod
    def _attach_notes(cells) -> list:
        """Move each speaker-notes cell right after the cell that opens its sub-slide (outside any fragment)."""
        out: list = []
        start = None  # index in `out` of the cell that opened the current sub-slide
        for cell in cells:
            if NOTES_TAG in _tags(cell):
                if start is None:
                    out.append(cell)
                else:
                    out.insert(start + 1, cell)
                continue
            if cell.metadata.get("slideshow", {}).get("slide_type") in ("slide", "subslide") or start is None:
                start = len(out)
            out.append(cell)
        return out
