"""What a lecture slide shows of a cell, so that a room can read it: checks reduced to their verdict, long prose
moved to the speaker notes, outputs tagged ``slide-full-output`` shown whole over several sub-slides, figures grown
into the height their sub-slide has left, and long code folded.

Used by :class:`course_lib.publish.slide_layout.SlideLayoutPreprocessor` before it packs cells into sub-slides
(checks, prose, outputs, folds) and after (figures); the sizes come from :class:`course_lib.publish.slides.Geometry`.

* **Checks.** A cell tagged ``check`` (other than an exercise's ``check("NN.name", fn)`` call), or a cell made of
  nothing but ``assert`` statements and prints, shows only its output (its verdict); its
  code goes to the speaker notes. Any other cell shows its code without its ``assert`` statements, which go to the
  speaker notes.
* **Prose.** A markdown cell shows at most :data:`SLIDE_WORDS` words of prose at a time: headings always show; a
  later paragraph of plain prose goes to the speaker notes of the sub-slide it would have been on; lists, tables,
  formulas and code in it stay on the slides, on a sub-slide of their own when the words would be too many.
* **Whole outputs.** A cell tagged ``slide-full-output`` keeps its text output whole, in pieces of one sub-slide: as
  much as fits under its code, then a full sub-slide per piece.
* **Figures.** Images are packed at :attr:`Geometry.image_min_px` high (or less, if that is their own height) and
  then grown into the free height of their sub-slide, never wider than the slide; they carry the alt text of their
  cell (``mystnb.image.alt``) and the cell's id (``data-cell``).
"""
from __future__ import annotations

import ast
import html
import math
import re

from nbformat.v4 import new_markdown_cell

FULL_OUTPUT_TAG = "slide-full-output"
VERDICT_TAG = "slide-verdict"  # given on the slides to a check cell shown as its verdict
CHECK_TAG, EXERCISE_TAG, SOLUTION_TAG = "check", "exercise", "solution"
NOTES_TAG = "speaker-notes"
SLIDE_WORDS = 100  # most words of prose a markdown cell shows at a time; the rest is said (speaker notes)
SLIDE_MAX_WORDS = 120  # most words of markdown (headings too) on one sub-slide
CHECK_CALL = re.compile(r"""\bcheck\(\s*["']\d\d\.""")
PRINT_LIKE = {"print", "display"}
SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`*][.!?])\s+(?=[A-Z(*`\"])")


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def words(markdown: str) -> int:
    """Words of rendered markdown (links count their text; markup, math signs and code fences not)."""
    text = re.sub(r"\]\([^)]*\)", " ", markdown)
    text = re.sub(r"^```.*$", " ", text, flags=re.M)
    return len(re.findall(r"[A-Za-z0-9][\w'’.-]*", text))


def notes_cell(text: str, cell, suffix: str):
    """A speaker-notes cell, attached by the layout to the sub-slide it follows."""
    notes = new_markdown_cell(text)
    notes.metadata["tags"] = [NOTES_TAG]
    notes.metadata["course_slides"] = {"role": "notes-from-slide",
                                       "origin": cell.get("metadata", {}).get("course_slides", {}).get("origin")}
    notes.metadata["slideshow"] = {"slide_type": "notes"}
    if "id" in cell:
        notes["id"] = f"{cell['id']}-{suffix}"[:64]
    return notes


# ----------------------------------------------------------------------------------------------- checks
def _is_print(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") in PRINT_LIKE)


def _only_asserts(body) -> bool:
    return all(isinstance(node, ast.Assert) or _is_print(node) for node in body)


def _is_verdict_only(tree) -> bool:
    """Asserts, prints, loops of asserts and ``del``: the cell computes nothing worth showing."""
    allowed = (ast.Assert, ast.Delete)
    kinds = []
    for node in tree.body:
        if isinstance(node, ast.Assert) or (isinstance(node, (ast.For, ast.If)) and _only_asserts(node.body)
                                            and any(isinstance(n, ast.Assert) for n in node.body)):
            kinds.append("assert")
        elif isinstance(node, allowed) or _is_print(node):
            kinds.append("other")
        elif isinstance(node, ast.For) and all(isinstance(n, allowed) or _is_print(n) for n in node.body):
            kinds.append("other")
        else:
            return False
    return "assert" in kinds


def _assert_lines(tree) -> set[int]:
    """0-based lines of the ``assert`` statements (whole), and of loops or ifs that hold nothing but asserts."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) or (isinstance(node, (ast.For, ast.If)) and not node.orelse
                                            and all(isinstance(n, ast.Assert) for n in node.body)):
            lines.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    return lines


def reduce_checks(cell) -> list:
    """The cell as the slide shows it (its verdict, or its code without asserts), and a notes cell with what left."""
    tags = _tags(cell)
    if cell.cell_type != "code" or tags & {EXERCISE_TAG, SOLUTION_TAG} or CHECK_CALL.search(cell.source):
        return [cell]
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return [cell]
    asserted = _assert_lines(tree)
    if not asserted and CHECK_TAG not in tags:
        return [cell]
    if CHECK_TAG in tags or _is_verdict_only(tree):
        notes = notes_cell("The check behind this verdict, in the notebook:\n\n```python\n"
                           + cell.source.rstrip() + "\n```", cell, "check")
        if not cell.get("outputs"):
            return [notes]
        cell.metadata["transient"] = {"remove_source": True}
        cell.metadata["tags"] = sorted(tags | {VERDICT_TAG})  # shown as the class celltag_slide-verdict
        return [cell, notes]
    lines = cell.source.split("\n")
    kept = [line for number, line in enumerate(lines) if number not in asserted]
    while kept and not kept[-1].strip():
        kept.pop()
    dropped = "\n".join(line for number, line in enumerate(lines) if number in asserted)
    cell.source = "\n".join(kept)
    return [cell, notes_cell("Asserted in the notebook after this code:\n\n```python\n" + dropped + "\n```",
                             cell, "asserts")]


# ----------------------------------------------------------------------------------------------- prose
def _is_prose(block: str) -> bool:
    """Plain paragraphs: no heading, list, table, formula, code or HTML in the block."""
    display = r"(#|```|\$\$|\||[-*+] |\d+\. |<|>)"
    return not any(re.match(r"\s*" + display, line) for line in block.splitlines()) and "$$" not in block


def split_prose(cell, blocks: list[str]) -> list:
    """The markdown cell as parts of at most :data:`SLIDE_WORDS` words each: the prose that does not fit goes to
    notes cells, the displays (lists, tables, formulas, code) that do not fit to parts of their own."""
    if words(cell.source) <= SLIDE_WORDS:
        return [cell]
    pieces: list[tuple[str, str]] = []  # (text, separator before it)
    for block in blocks:  # a list item by item, a long paragraph sentence by sentence
        items = re.split(r"\n(?=(?:[-*+]|\d+\.) )", block)
        sentences = SENTENCE_END.split(block) if _is_prose(block) else []
        sentences = [part for sentence in sentences for part in (
            re.split(r"(?<=;)\s+", sentence) if words(sentence) > SLIDE_WORDS else [sentence])]
        if len(items) > 1:
            parts = [(item, "\n" if number else "\n\n") for number, item in enumerate(items)]
        elif len(sentences) > 1 and words(block) > SLIDE_WORDS:
            parts = [(sentence, " " if number else "\n\n") for number, sentence in enumerate(sentences)]
        else:
            parts = [(block, "\n\n")]
        lead = pieces[-1][0] if pieces else ""
        if _is_prose(lead) and lead.rstrip().endswith(":") and not _is_prose(parts[0][0]):
            parts[0] = (lead + "\n\n" + parts[0][0], pieces.pop()[1])  # a lead-in stays with what it leads to
        pieces += parts
    parts: list[list] = []  # [kind, text]: "show" (same sub-slide), "new" (a sub-slide of its own), "notes"
    count, said = 0, False  # words of prose on the current sub-slide; whether prose went to the notes
    for text, separator in pieces:
        n = words(text)
        prose = _is_prose(text)
        if prose and said:  # once the prose goes on in the notes, it goes on there
            kind = "notes"
        elif count == 0 or count + n <= SLIDE_WORDS:
            kind, count = "show", count + n
        elif prose:
            kind, said = "notes", True
        else:
            kind, count = "new", n
        if parts and parts[-1][0] == kind != "new":
            parts[-1][1] += separator + text
        else:
            parts.append([kind, text])
    cells = []
    for number, (kind, text) in enumerate(parts):
        if kind == "notes":
            cells.append(notes_cell(text, cell, f"said{number}"))
            continue
        piece = cell if number == 0 else _twin(cell, f"part{number}")
        piece.source = text
        if kind == "new":
            piece.metadata.setdefault("course_slides", {})["continued"] = True
        cells.append(piece)
    return cells


def _twin(cell, suffix: str):
    import copy

    twin = copy.deepcopy(cell)
    if "id" in cell:
        twin["id"] = f"{cell['id']}-{suffix}"[:64]
    return twin


# ----------------------------------------------------------------------------------------------- outputs
def split_full_output(cell, first_rows: int, rows: int, rows_of=None) -> list:
    """A cell tagged ``slide-full-output``: its long text outputs in pieces of one sub-slide each. The first piece
    stays under the code and holds at most ``first_rows`` rows; each later piece is a cell of its own on its own
    sub-slide and holds at most ``rows``; the pieces share the rows evenly (no sub-slide with a lone last line).
    ``rows_of(line)``: the rows a line wraps to on the slide (default 1)."""
    if FULL_OUTPUT_TAG not in _tags(cell) or cell.cell_type != "code":
        return [cell]
    rows_of = rows_of or (lambda line: 1)
    lines = []  # (output, line, rows) of every text output, in order; other outputs as (output, None, 0)
    for output in cell.get("outputs", []):
        text = output.get("text") if output.get("output_type") == "stream" else None
        if text:
            lines += [(output, line, rows_of(line)) for line in text.rstrip("\n").split("\n")]
        else:
            lines.append((output, None, 0))
    total = sum(need for _, _, need in lines)
    count = 1 if total <= first_rows else 1 + math.ceil((total - first_rows) / rows)
    caps = [min(first_rows, math.ceil(total / count))] + [rows] * (count - 1)
    pieces: list[list] = [[]]  # [output, [lines]] of the cell itself, then of each later sub-slide
    used, left = 0, total
    for output, line, need in lines:
        piece = pieces[-1]
        if need and used and used + need > caps[len(pieces) - 1] and len(pieces) < count:
            left -= used
            caps[len(pieces)] = min(rows, math.ceil(left / (count - len(pieces))))
            pieces.append([])
            piece, used = pieces[-1], 0
        if line is None:
            piece.append([output, None])
            continue
        if not piece or piece[-1][0] is not output:
            piece.append([output, []])
        piece[-1][1].append(line)
        used += need

    def outputs(piece):
        return [output if text is None else dict(output, text="\n".join(text) + "\n") for output, text in piece]

    cell.outputs = outputs(pieces[0])
    cells = [cell]
    for number, piece in enumerate(pieces[1:], start=1):
        twin = _twin(cell, f"full{number}")
        twin.outputs = outputs(piece)
        twin.metadata["transient"] = {"remove_source": True}
        twin.metadata.setdefault("course_slides", {}).update(continued=True, own_slide=True)
        cells.append(twin)
    return cells


# ----------------------------------------------------------------------------------------------- figures
def subslides(cells) -> list[list]:
    """The visible cells of each sub-slide, in order, once the layout has chosen every cell's slide type."""
    groups: list[list] = []
    for cell in cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type")
        if kind == "notes":
            continue
        if kind in ("slide", "subslide") or not groups:
            groups.append([])
        groups[-1].append(cell)
    return groups


def grow_images(groups: list[list], g, heights) -> None:
    """Give each image its height on the slide: its packed height and its share of the sub-slide's free height, no
    more than the slide's width allows. ``groups``: the visible cells of each sub-slide; ``heights(cell)``: their
    estimated heights."""
    for group in groups:
        images = [(cell, output) for cell in group if cell.cell_type == "code" for output in cell.get("outputs", [])
                  if "image/png" in output.get("data", {}) and "course_size" in output.get("metadata", {})]
        if not images:
            continue
        free = max(0.0, g.budget - sum(heights(cell) for cell in group))
        for cell, output in images:
            width, height = output["metadata"]["course_size"]
            grown = output["metadata"]["course_packed"] + free / len(images)
            shown = int(min(g.content_width * height / width, grown))
            output["metadata"]["course_shown"] = shown
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt") or "a figure of the lesson"
            output["data"] = {"text/plain": output["data"].get("text/plain", "a figure"), "text/html": (
                f'<img class="slides-figure" alt="{html.escape(alt)}" data-cell="{html.escape(cell.get("id", ""))}" '
                f'style="height: {shown}px; width: auto; max-width: 100%" '
                f'src="data:image/png;base64,{output["data"]["image/png"].strip()}">')}


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
