"""Where each cell of a lecture deck goes (:class:`SlideLayoutPreprocessor`): estimated heights on a slide, long code
folded, cells packed into slides and sub-slides. It runs last, after the preprocessors of :mod:`.slides`."""
from __future__ import annotations

import base64
import copy
import math
import re
import struct

from nbconvert.preprocessors import Preprocessor

from course_lib.publish import slide_fit, slide_notes
from course_lib.publish.slide_fit import fold_code
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
    text_cpl, code_cpl = g.chars_per_line(g.text_px, g.text_em_per_char), g.chars_per_line(g.code_px, g.mono_em_per_char)
    text_line, height = g.text_px * g.text_line, 0.0
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


def _mono_rows(text: str, g: Geometry, px: float) -> int:
    """Rows a block of monospace text takes on the slide, its long lines wrapped."""
    cpl = max(20, int((g.content_width - g.mono_padding) / (px * g.mono_em_per_char)))
    return sum(max(1, math.ceil(len(part.expandtabs(4)) / cpl)) for part in text.rstrip("\n").split("\n"))


def _table_height(html_text: str, g: Geometry) -> float:
    """A table's rows, each as tall as its longest cell wraps to (columns share the width evenly)."""
    height = 0.0
    for row in re.findall(r"<tr.*?</tr>", html_text, flags=re.S):
        cells = [re.sub(r"<[^>]+>|&\w+;", "x", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        if not cells:
            continue
        cpl = max(4, int(g.content_width / len(cells) / (g.output_px * g.text_em_per_char)) - 1)
        lines = max(max(1, math.ceil(len(c) / cpl)) for c in cells)
        height += g.table_row_px + (lines - 1) * g.output_px * 1.25
    return height


def output_height(output, g: Geometry) -> float:
    line = g.output_px * g.output_line
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
    elif kind == "error":
        text = "\n".join(output.get("traceback", []))
    else:
        data = output.get("data", {})
        if "course_shown" in output.get("metadata", {}):
            return output["metadata"]["course_shown"] + g.block_gap_px
        if "image/png" in data:
            size = _png_size(data["image/png"])
            meta = output.setdefault("metadata", {})
            if size is None:
                return g.image_max_px + g.block_gap_px
            width, height = size
            packed = meta.get("course_packed") or min(g.image_min_px, height * g.content_width / width)
            meta["course_size"], meta["course_packed"] = [width, height], packed
            return packed + g.block_gap_px
        if "text/html" in data:
            html_text = data["text/html"]
            if "slides-view-note" in html_text:
                return 2 * g.text_px * g.text_line * 1.0 + 2 * g.block_gap_px
            if "<tr" in html_text:
                return _table_height(html_text, g) + 2 * g.block_gap_px
            return markdown_height(re.sub(r"<[^>]+>", " ", html_text), g)
        text = data.get("text/plain", "")
    return _mono_rows(text, g, g.output_px) * line + 2 * 6 + g.block_gap_px


def input_height(source: str, g: Geometry) -> float:
    return _mono_rows(source, g, g.code_px) * g.code_px * g.code_line + 2 * 6 + g.block_gap_px


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


def _full_output_rows(cell, g: Geometry) -> tuple[int, int]:
    """Rows of output a ``slide-full-output`` cell shows under its code (below a heading, if one leads the
    sub-slide), and rows on a sub-slide of their own."""
    line = g.output_px * g.output_line
    block = 2 * 6 + g.block_gap_px
    fold = _slides(cell).get("fold")
    code = input_height(fold["shown"] if fold else cell.source, g) + (g.text_px * 1.5 if fold else 0)
    heading = g.h3_px * 1.8
    return max(1, int((g.budget - code - heading - block) / line)), max(1, int((g.budget - block) / line))


def _is_heading_only(cell) -> bool:
    """A markdown cell that is nothing but headings."""
    return cell.cell_type == "markdown" and all(HEADING.match(line) for line in cell.source.strip().splitlines())


def _words(cell) -> int:
    return slide_fit.words(cell.source) if cell.cell_type == "markdown" else 0


def _heading_level(cell) -> int:
    if cell.cell_type != "markdown":
        return 0
    first = cell.source.lstrip().split("\n", 1)[0]
    match = HEADING.match(first)
    return len(match.group(1)) if match else 0


class SlideLayoutPreprocessor(Preprocessor):
    """Choose every cell's slide type: slides at ``#``/``##``, sub-slides at ``###`` and wherever the packing
    by estimated height needs one, fragments for code and later explanations; setup cells skipped, long
    code folded, speaker notes attached to their sub-slide (those of the notebook, and those
    :mod:`course_lib.publish.slide_notes` takes from the lesson and its guide)."""

    def preprocess(self, nb, resources):
        g = resources.get("course_slides", {}).get("geometry") or Geometry()
        explained = slide_notes.explanations(nb.cells)
        slide_notes.mark_origins(nb.cells)
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
            if KEEP_TAG in tags:
                cells.append(cell)
            elif cell.cell_type == "code":
                for part in slide_fit.reduce_checks(cell):
                    if NOTES_TAG in _tags(part):
                        cells.append(part)
                        continue
                    fold = fold_code(part.source, g.code_lines_shown)
                    if fold:
                        _slides(part)["fold"] = fold
                    first, rows = _full_output_rows(part, g)
                    for piece in slide_fit.split_full_output(part, first, rows, lambda line: _mono_rows(line, g, g.output_px)):
                        cells.extend(_split_code(piece, g))
            elif cell.cell_type == "markdown":
                for part in slide_fit.split_prose(cell, markdown_blocks(cell.source)):
                    cells.extend([part] if NOTES_TAG in _tags(part) else _split_markdown(part, g))
            else:
                cells.append(cell)
        self._assign(cells, g)
        slide_fit.grow_images(slide_fit.subslides(cells), g, lambda c: cell_height(c, g))
        cells = slide_notes.add_notes(cells, explained, resources.get("course_slides", {}).get("guide"))
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
        if _slides(cell).get("own_slide") or (_slides(cell).get("continued") and cell.cell_type == "markdown"):
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

        used, said, bare = None, 0, False  # height and words on the current sub-slide; True while only headings
        for unit in units:
            visible = [c for c in unit if NOTES_TAG not in _tags(c)]
            if not visible:
                continue
            forced = self._starts_subslide(visible[0])
            height = sum(cell_height(c, g) for c in visible)
            count = sum(_words(c) for c in visible)
            if used is None or forced == "slide":
                kind = "slide"
            elif bare:
                kind = None  # a heading is never alone on its sub-slide: what follows joins it
            elif forced or used + height > g.budget or said + count > slide_fit.SLIDE_MAX_WORDS:
                kind = "subslide"
            else:
                kind = None  # the unit continues the current sub-slide
            if kind:
                used, said = 0.0, 0
            for position, cell in enumerate(visible):
                h, w = cell_height(cell, g), _words(cell)
                opens = position == 0 and kind
                if opens:
                    cell_type = kind
                elif used > 0 and not bare and (used + h > g.budget or said + w > slide_fit.SLIDE_MAX_WORDS):
                    cell_type, used, said, opens = "subslide", 0.0, 0, True  # no room left under the explanation
                elif cell.cell_type == "code" or position == 0:
                    cell_type = "fragment" if used > 0 else "-"
                else:
                    cell_type = "-"
                cell.metadata["slideshow"] = {"slide_type": cell_type}
                used, said = used + h, said + w
                bare = _is_heading_only(cell) and (bool(opens) or bare)

    @staticmethod
    def _attach_notes(cells) -> list:
        """Move each speaker-notes cell right after the cell that opens its sub-slide (outside any fragment)."""
        out: list = []
        start = None  # index in `out` after the notes of the cell that opened the current sub-slide, in their order
        for cell in cells:
            if NOTES_TAG in _tags(cell):
                if start is None:
                    out.append(cell)
                else:
                    out.insert(start, cell)
                    start += 1
                continue
            if cell.metadata.get("slideshow", {}).get("slide_type") in ("slide", "subslide") or start is None:
                start = len(out) + 1
            out.append(cell)
        return out
