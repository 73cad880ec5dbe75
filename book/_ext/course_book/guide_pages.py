"""The instructor guide's pages: the directives ``instructor-notes`` (the lesson index), ``instructor-guide`` (one
lesson's guide) and ``teaching-plans`` (a lecture and a term), rendered from :mod:`.guide_data`.
"""
from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from .guide_data import (
    LECTURE_MINUTES,
    LESSON_GLOB,
    NOTES_FILE,
    PLANS_FILE,
    PLANS_PAGE,
    TIMINGS_FILE,
    check_notes,
    check_plans,
    clock_range,
    guide_docname,
    is_minutes,
    lesson_timing,
    load_guide_data,
    quick_run_time,
    section_anchor,
    solution_anchor,
)

logger = logging.getLogger(__name__)


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
                                     "profile, as recorded in the timings above. The whole course in one 90-minute "
                                     "lecture, and a term with one lesson a week: ")
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
        exercises = entry.get("exercises_in_class") or 0
        if exercises:
            from course_lib.checks import exercises as registered

            core = [name for name in outline["exercises"] if getattr(registered().get(name), "level", "") == "core"]
            rows.append([clock_range(start, exercises), nodes.paragraph(
                "", "Exercises in class: " + (", ".join(core) if core else "the lesson's exercises")
                + " (started together, finished as homework)"), f"{exercises:g}"])
            start += exercises
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
        from course_lib.checks import exercises as registered

        known = registered()
        section = self.section(f"Exercises ({len(outline['exercises'])})", "exercises")
        section.extend(self.markdown("Each exercise has a stub, a check that gives feedback, and a solution cell, "
                                     "which is its answer key: folded under *Show solution* on the lesson page, in "
                                     "place in the instructor edition (`make editions`). Levels: *warm-up* (a few "
                                     "lines that prepare the lesson's piece), *core* (the piece the lesson is "
                                     "about, written whole: assign these), *stretch* (beyond the lesson). A "
                                     "student stuck on a core exercise climbs its hint ladder with "
                                     "`hint(\"NN.name\")`, then `hint(\"NN.name\", 2)`; the solution is the last "
                                     "rung."))
        rows = []
        for exercise in outline["exercises"]:
            where = outline["exercise_sections"].get(exercise)
            solution = nodes.reference("", "", refuri=self.uri(lesson, solution_anchor(exercise)),
                                       classes=["guide-solution-link"])
            solution += nodes.Text("solution\u00a0→")
            entry = known.get(exercise)
            rows.append([nodes.literal(text=exercise), entry.level if entry else "", f"{entry.minutes}" if entry else "",
                         outline["exercise_titles"].get(exercise, ""),
                         self.link(lesson, where, re.sub(r"[`*]", "", where)) if where else "", solution])
        section += self.table(["Exercise", "Level", "Minutes", "What it asks", "Section", "Solution"], rows,
                              [16, 9, 8, 31, 24, 12], ["guide-exercises"])
        minutes = {level: sum(known[e].minutes for e in outline["exercises"] if e in known and known[e].level == level)
                   for level in ("warm-up", "core", "stretch")}
        section += nodes.paragraph("", "Student time: " + ", ".join(f"{level} {value} min" for level, value
                                                                    in minutes.items() if value) + ".")
        section += nodes.paragraph("", "", nodes.strong(text="The misconception behind each hint."),
                                   nodes.Text(" When an answer matches a known wrong answer, the check shows that "
                                              "hint; these are the beliefs they correct."))
        bullets = nodes.bullet_list(classes=["guide-exercise-hints"])
        for exercise in outline["exercises"]:
            if exercise not in known or not known[exercise].mistakes:
                continue
            item = nodes.list_item()
            item += nodes.paragraph("", "", nodes.literal(text=exercise), nodes.Text(f" ({known[exercise].level})"))
            inner = nodes.bullet_list()
            for mistake in known[exercise].mistakes:
                inner += nodes.list_item("", nodes.paragraph(text=mistake.hint))
            item += inner
            bullets += item
        section += bullets
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
                             f"{step['minutes']:g}",
                             self.markdown(("**Live kernel.** " if step.get("live") else "") + step["do"])])
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
