"""The instructor guide's data: what it reuses from the lesson notebooks (outlines: titles, objectives, sections,
exercises, the questions asked to the reader), minutes and clock times, and the checks of book/instructor_notes.yml
and book/teaching_plans.yml against the notebooks (run by the guide's directives and by the tests).

The guide is data (book/instructor_notes.yml per lesson, book/teaching_plans.yml for the course) rendered
together with what the notebooks already say, so nothing is written twice: objectives, sections, exercises
and their titles come from the notebooks, machine run times from docs/timings.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from docutils import nodes

from course_lib.publish.editions import EXERCISE_NAME, NOTES_TAG

NOTES_FILE = "book/instructor_notes.yml"
PLANS_FILE = "book/teaching_plans.yml"
TIMINGS_FILE = "docs/timings.json"
LESSON_GLOB = "notebooks/[0-9][0-9]_*.ipynb"
GUIDE_DIR = "book/guide"  # one page per lesson, book/guide/<notebook stem>.md, holding only the directive
PLANS_PAGE = f"{GUIDE_DIR}/plans"
OBJECTIVES_MARKER = "**What you will learn**"
CHECK_CALL = re.compile(r"""check\(\s*["']([^"']+)["']""")
CHECK_VERDICT = re.compile(r"\[(?:passed|not yet)\] (\d\d\.[\w-]+) \((.+?)\): ")  # a check's printed verdict
SLOT_MINUTES = 90  # one class: every lesson must fit it with its cuts
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
    exercises = entry.get("exercises_in_class")
    if not is_minutes(exercises) or not exercises:
        problems.append(f"{name}: exercises_in_class must give the minutes students work on exercises in class, "
                        f"got {exercises!r}")
        exercises = 0
    total = sum(minutes for minutes in budget.values() if is_minutes(minutes)) + exercises
    if total != session:
        problems.append(f"{name}: the budget and {exercises} minutes of exercises add up to {total} minutes, the "
                        f"session is {session}")
    slots = entry.get("slots", 1)
    shortest = session - sum(cut.get("saves", 0) for cut in entry.get("cuts") or [] if is_minutes(cut.get("saves")))
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        problems.append(f"{name}: slots is the number of {SLOT_MINUTES}-minute classes, got {slots!r}")
    elif shortest > SLOT_MINUTES * slots:
        problems.append(f"{name}: with every cut the session still takes {shortest} minutes, more than "
                        f"{slots} class(es) of {SLOT_MINUTES} minutes")
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
        if not isinstance(step.get("live", False), bool):
            problems.append(f"one_lecture: {section!r}: `live` is true or false, got {step.get('live')!r}")
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
