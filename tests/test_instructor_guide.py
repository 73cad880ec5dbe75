"""The instructor guide: its data (book/instructor_notes.yml per lesson, book/teaching_plans.yml for the course)
checked against the lesson notebooks without running them, and its pages in the built website.

Decisions the tests hold the data to: every ``##`` section of a lesson gets minutes (only Summary and Further
reading may get 0) and the minutes add up to the lesson's ``session``; every answer key quotes its question from
the section it names; every question a lesson asks its reader (a sentence ending in "?" or starting "Look for",
"Think about", "Predict", "What happens if" ...) has an answer key; the one-lecture path adds up to 90 minutes;
the term plan names every lesson once and assigns only exercises of that lesson.
"""
from __future__ import annotations

import functools
import copy
import importlib.util
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(path.name for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load_extension():
    """The book's Sphinx extension, the package book/_ext/course_book, under a name of its own."""
    folder = ROOT / "book" / "_ext" / "course_book"
    spec = importlib.util.spec_from_file_location("course_book_guide", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its relative imports (.guide_data, .guide_pages) look for it there
    spec.loader.exec_module(module)
    return module


ext = load_extension()
guide_data = ext.guide_data  # the guide's outlines, minutes and checks


def read_yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def notes() -> dict:
    return read_yaml(guide_data.NOTES_FILE)


@pytest.fixture(scope="module")
def plans() -> dict:
    return read_yaml(guide_data.PLANS_FILE)


@pytest.fixture(scope="module")
def outlines() -> dict[str, dict]:
    return {name: guide_data.notebook_outline(ROOT / "notebooks" / name) for name in LESSONS}


# --------------------------------------------------------------------------------------------------------------
# The guide's data against the notebooks (fast: the notebooks are read, not run).

@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_has_a_guide_entry_and_a_guide_page(notes, lesson):
    assert lesson in notes, f"{lesson} has no entry in {guide_data.NOTES_FILE}"
    page = ROOT / guide_data.GUIDE_DIR / f"{Path(lesson).stem}.md"
    assert page.is_file() and "{instructor-guide}" in page.read_text(encoding="utf-8"), f"no guide page {page}"


def test_guide_pages_belong_to_lessons_that_exist():
    pages = {path.stem for path in (ROOT / guide_data.GUIDE_DIR).glob("[0-9][0-9]_*.md")}
    assert pages == {Path(lesson).stem for lesson in LESSONS}


def test_every_section_the_guide_names_is_a_heading_of_its_notebook(notes, outlines):
    assert guide_data.check_notes(notes, outlines) == []


@pytest.mark.parametrize("lesson", LESSONS)
def test_budget_gives_every_section_minutes_that_add_up_to_the_session(notes, outlines, lesson):
    entry, sections = notes[lesson], outlines[lesson]["sections"]
    assert guide_data.check_budget(lesson, entry, outlines[lesson]) == []
    assert list(entry["budget"]) == sections, "the budget lists the ## sections in the notebook's order"
    assert sum(entry["budget"].values()) + entry["exercises_in_class"] == entry["session"]
    assert entry["exercises_in_class"] >= 10, f"{lesson}: the core exercise needs time in class"
    shortest = entry["session"] - sum(cut["saves"] for cut in entry["cuts"])
    assert shortest <= 90 * entry.get("slots", 1), f"{lesson}: {shortest} minutes with every cut"
    assert all(entry["budget"][s] > 0 for s in sections if s not in ("Summary", "Further reading"))
    assert entry["cuts"], f"{lesson}: no place to cut when time is short"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_question_the_lesson_asks_has_an_answer_key_quoted_from_its_section(notes, outlines, lesson):
    assert guide_data.check_answers(lesson, notes[lesson], outlines[lesson]) == []
    assert len(notes[lesson]["answers"]) >= 4, f"{lesson}: fewer than four answer keys"


def test_one_lecture_path_adds_up_to_90_minutes_over_sections_that_exist(plans, outlines):
    problems = guide_data.check_plans(plans, outlines)
    assert [p for p in problems if p.startswith(("one_lecture", guide_data.PLANS_FILE))] == []
    steps = plans["one_lecture"]
    assert sum(step["minutes"] for step in steps) == 90
    for step in steps:
        assert step["section"] in outlines[step["lesson"]]["sections"], step


def test_term_plan_names_every_lesson_once_and_assigns_exercises_that_exist(plans, outlines):
    from course_lib.checks import exercises

    assert [p for p in guide_data.check_plans(plans, outlines) if p.startswith("term")] == []
    assert [week["lesson"] for week in plans["term"]] == LESSONS
    registered = exercises()
    for week in plans["term"]:
        for name in week["assign"]:
            assert name in registered and name in outlines[week["lesson"]]["exercises"], (week["lesson"], name)


def test_slides_pace_every_lesson_by_the_guide_budget(notes):
    from course_lib.publish.editions import section_budgets

    budgets = section_budgets(ROOT / guide_data.NOTES_FILE)
    assert budgets == {Path(name).stem: entry["budget"] for name, entry in notes.items()}


# Numbers worth quoting: with a decimal point or a thousands separator, or three digits and more (a lesson number
# or a small count is not worth a test).
QUOTED_NUMBER = re.compile(r"(?<![\w.,])(?:\d+\.\d+|\d{1,3}(?:,\d{3})+|\d{3,})(?![\w,]\d)")


def notebook_text(name: str) -> str:
    """What a lesson says and prints: its markdown (speaker notes left out) and its text outputs."""
    cells = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))["cells"]
    parts = []
    for cell in cells:
        if "speaker-notes" not in cell.get("metadata", {}).get("tags", []):
            parts.append("".join(cell["source"]))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def numbers_not_in(text: str, printed: str) -> list[str]:
    def printed_as(number: str) -> bool:
        return re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d]|[.,]\d)", printed) is not None

    return [n for n in QUOTED_NUMBER.findall(text) if not printed_as(n) and not printed_as(n.replace(",", ""))]


@pytest.mark.parametrize("lesson", LESSONS)
def test_answer_keys_and_misconceptions_quote_only_numbers_the_notebook_prints(notes, lesson):
    printed = notebook_text(lesson)
    texts = [key["answer"] for key in notes[lesson]["answers"]] + [m["truth"] for m in notes[lesson]["misconceptions"]]
    invented = {n for text in texts for n in numbers_not_in(text, printed)}
    assert not invented, f"{lesson}: numbers the notebook does not print: {sorted(invented)}"
    assert numbers_not_in("a made-up figure: 0.12345 and 98,765", printed) == ["0.12345", "98,765"]


# --------------------------------------------------------------------------------------------------------------
# Each check catches its breakage (one broken input per check).

def lesson_04(notes, outlines):
    name = "04_masking_and_decoders.ipynb"
    if name not in outlines:
        pytest.skip(f"notebooks/{name} is not written yet")
    return name, copy.deepcopy(notes[name]), outlines[name]


def test_a_section_that_is_not_in_the_notebook_is_flagged(notes, outlines):
    name, entry, _ = lesson_04(notes, outlines)
    entry["answers"][0]["section"] = "2. The casual mask"
    entry["budget"]["9. Beam search"] = 0
    problems = guide_data.check_notes({**notes, name: entry}, outlines)
    assert any("answers points at a section that does not exist: '2. The casual mask'" in p for p in problems)
    assert any("budget points at a section that does not exist: '9. Beam search'" in p for p in problems)
    assert any("no entry" in p for p in guide_data.check_notes({k: v for k, v in notes.items() if k != name}, outlines))


def test_a_budget_that_misses_a_section_or_the_session_length_is_flagged(notes, outlines):
    name, entry, outline = lesson_04(notes, outlines)
    first = outline["sections"][0]
    missing = copy.deepcopy(entry)
    del missing["budget"][first]
    assert any(f"no minutes to the section {first!r}" in p for p in guide_data.check_budget(name, missing, outline))
    longer = copy.deepcopy(entry)
    longer["budget"][first] += 1
    assert any("add up to" in p for p in guide_data.check_budget(name, longer, outline))
    zero = copy.deepcopy(entry)
    zero["budget"]["Summary"] += zero["budget"][first]
    zero["budget"][first] = 0
    assert any(f"0 minutes to the section {first!r}" in p for p in guide_data.check_budget(name, zero, outline))
    words = dict(entry, session="90 minutes")
    assert guide_data.check_budget(name, words, outline) == [
        f"{name}: session must be a number of minutes, got '90 minutes'"]
    greedy = copy.deepcopy(entry)
    greedy["cuts"][0]["saves"] = greedy["budget"][greedy["cuts"][0]["section"]] + 1
    problems = guide_data.check_budget(name, greedy, outline)
    assert any("save" in p and greedy["cuts"][0]["section"] in p for p in problems)
    no_exercises = {key: value for key, value in entry.items() if key != "exercises_in_class"}
    assert any("exercises_in_class" in p for p in guide_data.check_budget(name, no_exercises, outline))
    too_long = copy.deepcopy(entry)
    too_long["session"] += 200
    too_long["budget"][first] += 200
    assert any("more than 1 class(es) of 90 minutes" in p for p in guide_data.check_budget(name, too_long, outline))
    assert not [p for p in guide_data.check_budget(name, dict(too_long, slots=4), outline) if "class(es)" in p]


def test_live_kernel_steps_are_marked_and_a_wrong_mark_is_flagged(plans, outlines):
    live = [step["section"] for step in plans["one_lecture"] if step.get("live")]
    assert live == ["6. Looking at attention", "8. An instruct model: the chat template"]
    wrong = copy.deepcopy(plans)
    wrong["one_lecture"][0]["live"] = "yes"
    assert any("`live` is true or false" in p for p in guide_data.check_plans(wrong, outlines))


def test_an_unanswered_question_and_a_misquoted_one_are_flagged(notes, outlines):
    name, entry, outline = lesson_04(notes, outlines)
    section, question = guide_data.reader_questions(outline)[0]
    def answers_it(key) -> bool:
        asks = guide_data.plain_text(key["asks"])
        return key["section"] == section and (asks in question or question in asks)

    unanswered = dict(entry, answers=[key for key in entry["answers"] if not answers_it(key)])
    assert any(f"no answer key for {question!r}" in p for p in guide_data.check_answers(name, unanswered, outline))
    misquoted = copy.deepcopy(entry)
    misquoted["answers"][0]["asks"] = "Why is the sky blue?"
    assert any("does not ask 'Why is the sky blue?'" in p for p in guide_data.check_answers(name, misquoted, outline))
    empty = copy.deepcopy(entry)
    empty["answers"][0]["answer"] = " "
    assert any("needs `asks` and `answer`" in p for p in guide_data.check_answers(name, empty, outline))


def test_a_lecture_that_is_not_90_minutes_and_a_term_that_skips_a_lesson_are_flagged(plans, outlines):
    longer = copy.deepcopy(plans)
    longer["one_lecture"][0]["minutes"] += 5
    assert "one_lecture: adds up to 95 minutes, not 90" in guide_data.check_plans(longer, outlines)
    elsewhere = copy.deepcopy(plans)
    elsewhere["one_lecture"][0]["section"] = "12. Beam search"
    assert any("has no section '12. Beam search'" in p for p in guide_data.check_plans(elsewhere, outlines))
    skipped = copy.deepcopy(plans)
    dropped = skipped["term"].pop()["lesson"]
    assert f"term: {dropped} is planned 0 times, not once" in guide_data.check_plans(skipped, outlines)
    twice = copy.deepcopy(plans)
    twice["term"].append(twice["term"][0])
    assert f"term: {twice['term'][0]['lesson']} is planned 2 times, not once" in guide_data.check_plans(twice, outlines)
    foreign = copy.deepcopy(plans)
    other = next(name for name in outlines[foreign["term"][-1]["lesson"]]["exercises"])
    foreign["term"][0]["assign"].append(other)
    problems = guide_data.check_plans(foreign, outlines)
    assert f"term: {foreign['term'][0]['lesson']} has no exercise {other!r}" in problems


# --------------------------------------------------------------------------------------------------------------
# What the guide reads from a notebook, on a small notebook made here.

def small_notebook(path: Path) -> Path:
    def markdown(source, tags=()):
        return {"cell_type": "markdown", "metadata": {"tags": list(tags)}, "source": source}

    def code(source, tags=(), outputs=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": list(outputs),
                "execution_count": None}

    verdict = {"output_type": "stream", "name": "stdout",
               "text": "[passed] 09.double (double a number): all 3 cases match the reference.\n"}
    cells = [
        markdown("# 09 · Small\n\n**What you will learn**\n\n- one thing;\n- another\n  thing."),
        markdown("## 1. Start\n\nWhy does this work? Look for the shapes.\n\n### A part\n\nIt just does."),
        code("x = 1  # why? this is code, not prose"),
        markdown("Ask the room: what would you predict?", tags=["speaker-notes"]),
        markdown("## 2. Exercise\n\nDouble it.\n\n```python\nwhat about this?\n```"),
        code("def double(x):\n    raise NotImplementedError('Exercise 09.double: times two')", tags=["exercise"]),
        code("def double(x):\n    return 2 * x", tags=["solution"]),
        code("check('09.double', double)", tags=["check"], outputs=[verdict]),
        markdown("## Further reading\n\n- A. Author (2020), *Is attention all you need?*"),
    ]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_outline_reads_sections_exercises_and_leaves_speaker_notes_out(tmp_path):
    outline = guide_data.notebook_outline(small_notebook(tmp_path / "09_small.ipynb"))
    assert outline["title"] == "09 · Small"
    assert outline["objectives"] == ["one thing;", "another thing."]
    assert outline["sections"] == ["1. Start", "2. Exercise", "Further reading"]
    assert outline["headings"] == ["09 · Small", "1. Start", "A part", "2. Exercise", "Further reading"]
    assert outline["exercises"] == ["09.double"]
    assert outline["exercise_sections"] == {"09.double": "2. Exercise"}
    assert outline["exercise_titles"] == {"09.double": "double a number"}
    assert "Ask the room" not in " ".join(outline["text"].values())


def test_reader_questions_come_from_prose_not_code_notes_headings_or_further_reading(tmp_path):
    outline = guide_data.notebook_outline(small_notebook(tmp_path / "09_small.ipynb"))
    assert guide_data.reader_questions(outline) == [("1. Start", "Why does this work?"),
                                             ("1. Start", "Look for the shapes.")]


def test_website_drops_speaker_notes_and_gives_each_solution_cell_its_exercise(tmp_path):
    notebook = json.loads(small_notebook(tmp_path / "09_small.ipynb").read_text())
    assert ext.drop_speaker_notes(notebook) == 1
    assert not any("speaker-notes" in cell["metadata"]["tags"] for cell in notebook["cells"])
    assert ext.mark_solutions(notebook) == 1
    solution = next(cell for cell in notebook["cells"] if "solution" in cell["metadata"]["tags"])
    assert solution["metadata"]["course_exercise"] == "09.double"
    assert guide_data.solution_anchor("09.double") == "solution-09-double"


# --------------------------------------------------------------------------------------------------------------
# The guide pages of the real website (built once per test session, see conftest.book_build).

def soup(path: Path) -> BeautifulSoup:
    """The parsed page, parsed once per version of the file (a lesson's page is megabytes; tests only read it)."""
    path = Path(path).resolve()
    return _parsed(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, _version: int) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def guide_pages(site: Path) -> list[Path]:
    return [site / "book" / "guide" / f"{Path(name).stem}.html" for name in LESSONS] + \
        [site / "book" / "guide" / "plans.html"]


def internal_links(page: Path) -> list[str]:
    """The links of a page's article that stay on the site (not http(s), not mailto)."""
    article = soup(page).select_one("article")
    return [a["href"] for a in article.select("a[href]")
            if not urlsplit(a["href"]).scheme and not a["href"].startswith("//")]


def broken_links(page: Path) -> list[str]:
    """The internal links of a built page that lead to no page, or to a page without the anchor they name."""
    broken = []
    for href in internal_links(page):
        path, _, anchor = href.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.is_file() or (anchor and soup(target).find(id=anchor) is None):
            broken.append(href)
    return broken


def test_broken_links_finds_a_missing_page_and_a_missing_anchor(tmp_path):
    (tmp_path / "lesson.html").write_text('<article><h2 id="masks">Masks</h2></article>', encoding="utf-8")
    page = tmp_path / "guide.html"
    page.write_text('<article><a href="lesson.html#masks">ok</a> <a href="lesson.html#causal">gone</a> '
                    '<a href="nowhere.html">none</a> <a href="https://example.org/x">web</a></article>',
                    encoding="utf-8")
    assert broken_links(page) == ["lesson.html#causal", "nowhere.html"]


@pytest.mark.slow
def test_guide_pages_exist_and_the_instructors_page_links_each(site):
    index = soup(site / "book" / "instructors.html")
    linked = {a["href"] for a in index.select("a.guide-link")}
    for page in guide_pages(site):
        assert page.is_file(), f"{page.relative_to(site)} was not built"
        assert f"guide/{page.name}" in linked, f"the instructors page does not link {page.name}"


@pytest.mark.slow
def test_every_internal_link_of_the_guide_lands_on_a_page_and_an_anchor(site):
    pages = guide_pages(site)
    assert {page.name: broken_links(page) for page in pages} == {page.name: [] for page in pages}
    assert sum(len(internal_links(page)) for page in pages) > 20 * len(LESSONS)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS)
def test_guide_page_shows_the_minutes_cuts_answers_and_links_every_solution(site, notes, outlines, lesson):
    page = soup(site / "book" / "guide" / f"{Path(lesson).stem}.html")
    entry, outline = notes[lesson], outlines[lesson]
    budget_rows = page.select("table.guide-budget tbody tr")
    assert len(budget_rows) == len(outline["sections"]) + 2  # one row per section, the exercises, then the total
    assert budget_rows[-2].get_text(" ", strip=True).endswith(str(entry["exercises_in_class"]))
    assert budget_rows[-1].get_text(" ", strip=True) == f"Total {entry['session']}"
    assert len(page.select("table.guide-cuts tbody tr")) == len(entry["cuts"])
    assert len(page.select("ul.guide-answers > li")) == len(entry["answers"])
    solutions = [a["href"].rpartition("#")[2] for a in page.select("a.guide-solution-link")]
    assert solutions == [guide_data.solution_anchor(name) for name in outline["exercises"]]
    heading = page.find(lambda tag: tag.name == "p" and tag.get_text().startswith("Learning objectives"))
    shown = [plain(li.get_text(" ", strip=True)) for li in heading.find_next_sibling("ul").find_all("li")]
    assert shown == [plain(item) for item in outline["objectives"]], "the objectives are not the notebook's"


def plain(text: str) -> str:
    """Text without Markdown and math markers, typographic quotes and ellipses, or spaces: what a line of a
    notebook and the same line on a built page have in common."""
    for fancy, simple in (("’", "'"), ("‘", "'"), ("“", '"'), ("”", '"'), ("…", "..."), ("\\(", ""), ("\\)", "")):
        text = text.replace(fancy, simple)
    return "".join(re.sub(r"[`*$\\]", "", text).split())


@pytest.mark.slow
def test_plans_page_shows_the_90_minute_lecture_and_a_week_per_lesson(site, plans):
    page = soup(site / "book" / "guide" / "plans.html")
    lecture = page.select("table.guide-lecture tbody tr")
    assert len(lecture) == len(plans["one_lecture"]) + 1 and lecture[-1].get_text(" ", strip=True) == "Total 90"
    weeks = page.select("table.guide-term tbody tr")
    assert [row.find("td").get_text(strip=True) for row in weeks] == [str(i) for i in range(1, len(LESSONS) + 1)]


@pytest.mark.slow
def test_lesson_pages_leave_the_speaker_notes_out(site):
    import nbformat

    found = 0
    for name in LESSONS:
        cells = nbformat.read(ROOT / "notebooks" / name, as_version=4).cells
        page = plain(soup(site / "notebooks" / f"{Path(name).stem}.html").select_one("article").get_text(" "))
        for before, cell in zip(cells, cells[1:]):
            if "speaker-notes" in cell.metadata.get("tags", []):
                kept = [line for line in before.source.splitlines() if line.startswith("#")] or [before.source]
                assert plain(kept[0].lstrip("#"))[:60] in page, f"{name}: the cell before the notes is not on the page"
                assert plain(cell.source)[:60] not in page, \
                    f"{name}: speaker notes on the website: {cell.source[:60]!r}"
                found += 1
    if not found:
        pytest.skip("no lesson has speaker notes yet")
