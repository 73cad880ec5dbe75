"""Speaker notes for the sub-slides that need the instructor's words, taken from the lesson and from its instructor
guide (``book/instructor_notes.yml``), never written here.

Used by :class:`course_lib.publish.slide_layout.SlideLayoutPreprocessor` once every cell has its slide type:

* **Explanations.** A code cell is explained by the markdown cell that precedes it, or the run of code cells it
  belongs to, in the lesson ("explain, then show"). A sub-slide that shows code or its output without that
  explanation (the explanation is on an earlier sub-slide, the output continues on a sub-slide of its own, a
  solution comes after its stub) gets the explanation as notes, once per sub-slide.
* **Answer keys.** Each of the guide's ``answers`` goes to the notes of the sub-slide that asks its question (the
  guide quotes the question from the lesson).
* **Misconceptions and live coding.** The guide's ``misconceptions`` and ``live_coding`` go to the notes of the
  first sub-slide of the section they name.
"""
from __future__ import annotations

import re

from course_lib.publish.slide_fit import NOTES_TAG, notes_cell
from course_lib.publish.slides import HEADING, _slides, _tags, is_setup_cell


def origin(cell) -> int | None:
    """Index, in the notebook the layout received, of the cell that ``cell`` is or was cut from."""
    return cell.get("metadata", {}).get("course_slides", {}).get("origin")


def mark_origins(cells) -> None:
    for index, cell in enumerate(cells):
        _slides(cell)["origin"] = index


def _prose(markdown: str) -> str:
    """Markdown without its heading lines."""
    return "\n".join(line for line in markdown.strip().splitlines() if not HEADING.match(line)).strip()


def explanations(cells) -> dict[int, tuple[int, str]]:
    """For each code cell (by index): the index and the text (headings left out) of the markdown cell that
    explains it, the last one with prose before its run of code cells."""
    found: dict[int, tuple[int, str]] = {}
    lead: tuple[int, str] | None = None
    after_code = False
    for index, cell in enumerate(cells):
        if NOTES_TAG in _tags(cell) or is_setup_cell(cell) or _slides(cell).get("role") == "solution-header":
            continue
        if cell.cell_type == "markdown":
            if after_code:
                lead, after_code = None, False
            text = _prose(cell.source)
            if text:
                lead = (index, text)
        elif cell.cell_type == "code":
            after_code = True
            if lead:
                found[index] = lead
    return found


def _plain(markdown: str) -> str:
    """What a quote from a lesson is compared with: no emphasis markers, single spaces (as the guide's checks)."""
    return " ".join(re.sub(r"\*+", "", markdown).split())


def _kind(cell) -> str | None:
    return cell.metadata.get("slideshow", {}).get("slide_type")


def add_notes(cells: list, explained: dict[int, tuple[int, str]], guide: dict | None) -> list:
    """``cells`` (slide types assigned) with notes cells inserted after the cell whose sub-slide they belong to."""
    guide = guide or {}
    after: dict[int, list] = {}  # position in cells -> notes cells to insert after it

    # explanations: per sub-slide, the origins of the markdown shown or said there
    start, shown, said, pending = 0, set(), set(), []
    def flush():
        given = set()
        for position, cell in pending:
            lead = explained.get(origin(cell))
            if lead and lead[0] not in shown | said | given:
                given.add(lead[0])
                after.setdefault(position, []).append(_note(lead[1], cell, "explained"))
    for position, cell in enumerate(cells):
        kind = _kind(cell)
        if kind in ("slide", "subslide") and position:
            flush()
            shown, said, pending = set(), set(), []
        if kind == "notes":
            said.add(origin(cell))
        elif cell.cell_type == "markdown":
            shown.add(origin(cell))
        elif cell.cell_type == "code" and kind != "skip":
            pending.append((position, cell))
    flush()

    # answer keys: after the first markdown (shown or said) that holds the question
    for key in guide.get("answers", []):
        asks = _plain(str(key.get("asks", "")))
        for position, cell in enumerate(cells):
            if cell.cell_type == "markdown" and asks and asks in _plain(cell.source):
                after.setdefault(position, []).append(
                    _note(f"**Answer key** (instructor guide): {key['answer']}", cell, "answer"))
                break

    # misconceptions and live coding: after the heading that opens their section
    section_notes: dict[str, list[str]] = {}
    for item in guide.get("misconceptions", []):
        section_notes.setdefault(item["section"], []).append(
            f"**Misconception** (instructor guide): {item['belief']} **In fact:** {item['truth']}")
    for item in guide.get("live_coding", []):
        section_notes.setdefault(item["section"], []).append(f"**Live coding** (instructor guide): {item['point']}")
    for position, cell in enumerate(cells):
        if cell.cell_type != "markdown" or NOTES_TAG in _tags(cell):
            continue
        for line in cell.source.splitlines():
            heading = HEADING.match(line)
            texts = section_notes.pop(heading.group(2), []) if heading else []
            for number, text in enumerate(texts):
                after.setdefault(position, []).append(_note(text, cell, f"guide{number}"))

    out = []
    for position, cell in enumerate(cells):
        out.append(cell)
        out.extend(after.get(position, []))
    return out


def _note(text: str, cell, suffix: str):
    notes = notes_cell(text, cell, suffix)
    _slides(notes)["origin"] = origin(cell)
    return notes
