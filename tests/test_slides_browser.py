"""Every lesson's lecture deck in a real browser (Debian's Chromium, headless, one browser for all decks) at
1280x720, with every request outside the deck's folder aborted: reveal.js starts and shows the lesson's title;
no slide's content is taller than the slide once reveal.js has laid it out and MathJax has typeset it; the room
can read every slide (code and outputs at 22 px or more, no more than about 120 words of prose, no `assert` code,
no slide holding only a heading, no line running past the right edge, no word of a table broken inside it (a
table too wide for the slide at 22 px is shrunk, to 16 px at the least), figures as tall as their slide allows
(those drawn for the slide with their text at 16 px or more), check cells shown as their verdict with the check
in the speaker notes, outputs tagged slide-full-output never cut); every slide of code or output without its explanation has speaker notes, and the guide's answer keys,
misconceptions and live-coding moments are in them; no solution is on screen before its exercise's stub and
check; every ## section of a lesson whose notes are written (teaching_status.py) has speaker notes; the arrow keys
move through the deck to its last slide; nothing is fetched from the web and no script error happens. Each deck
is measured slide by slide once (AUDIT_SLIDES), and the tests read that one measurement."""
from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import nbformat
import pytest
from teaching_status import LESSONS_WITH_TEACHING_NOTES

from course_lib.publish.editions import (
    exercise_names, installed_mathjax, section_budgets, speaker_guide, write_slides,
)
from course_lib.publish.slides import TABLE_MIN_PX, Geometry

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "book" / "instructor_notes.yml"
LESSONS = sorted(path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VIEWPORT = {"width": 1280, "height": 720}
TIMEOUT_MS = 60_000
MAX_KEY_PRESSES = 600
MATH = re.compile(r"\$\$|(?<!\\)\$[^\s$][^$\n]*\$")  # display math, or inline $...$ (code spans taken out first)

MIN_MONO_PX = 22  # code and outputs
PLOT_TEXT_MIN_PX = 16  # text drawn inside a figure, as the slide shows it
# Figures drawn for the slide's size, by (lesson, cell id): their smallest text is the smallest `fontsize=` their cell
# gives (attention_heatmap draws the token labels at it, axis labels and title a point larger).
SLIDE_SIZED_FIGURES = [("02_attention", "9c730417"), ("03_encoder", "191c6bd1"), ("03_encoder", "4a026240"),
                       ("04_masking_and_decoders", "curve"), ("04_masking_and_decoders", "c102c818"),
                       ("06_features_and_umap", "3bacfb1a"), ("06_features_and_umap", "28a137ad"),
                       ("06_features_and_umap", "826dfbef"), ("06_features_and_umap", "ae35439a")]
MAX_WORDS = 125  # prose (markdown) on one slide: "about 120"
FREE_BELOW_FIGURE_PX = 240  # a figure narrower than the slide leaves no more than this empty below it

# Every leaf slide, shown with all its fragments: its content height, the font sizes of its code and outputs, its words
# of prose, the `assert` lines its code shows, the blocks that run past its right edge (and how many of their lines),
# the outputs cut with "more lines", whether it holds only headings, its figures, its verdicts and its speaker notes.
AUDIT_SLIDES = """() => {
  const out = [];
  const canvas = document.createElement('canvas').getContext('2d');
  const words = (s) => (s.match(/[A-Za-z0-9][\\w'’.-]*/g) || []).length;
  const visible = (el) => el.offsetParent !== null && !el.closest('aside.notes') && !el.closest('details:not([open])');
  Reveal.getHorizontalSlides().forEach((column, h) => {
    const stack = column.querySelectorAll(':scope > section');
    for (let v = 0; v < Math.max(stack.length, 1); v++) {
      Reveal.slide(h, v, 10000);
      const slide = Reveal.getCurrentSlide();
      const box = slide.getBoundingClientRect();
      const scale = box.width / slide.offsetWidth || 1;
      const mono = [...slide.querySelectorAll('.jp-InputArea-editor pre, .jp-OutputArea-output pre, .jp-OutputArea-output table')]
        .filter(visible).filter((el) => !el.classList.contains('slides-wide-table'));
      const wideTables = [...slide.querySelectorAll('table.slides-wide-table')].filter(visible)
        .map((el) => parseFloat(getComputedStyle(el).fontSize));
      const brokenWords = [];  // words of a table drawn over two lines: broken inside the word
      [...slide.querySelectorAll('table')].filter(visible).forEach((table) => table.querySelectorAll('th, td').forEach((cell) => {
        const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          for (const m of node.data.matchAll(/\S+/g)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            if (new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1) brokenWords.push(`${cell.tagName}: ${m[0]}`);
          }
        }
      }));
      const sizes = mono.map((el) => parseFloat(getComputedStyle(el).fontSize));
      let prose = 0;
      slide.querySelectorAll('.jp-RenderedMarkdown').forEach((md) => { if (visible(md)) prose += words(md.innerText); });
      const code = mono.filter((el) => el.closest('.jp-InputArea-editor')).map((el) => el.innerText).join('\\n');
      const asserts = code.split('\\n').filter((line) => /^\\s*assert\\b/.test(line)).length;
      let clippedLines = 0;
      const clipped = [];
      [...slide.querySelectorAll('pre, table, .jp-RenderedMarkdown p, .jp-RenderedMarkdown li')].filter(visible).forEach((el) => {
        const r = el.getBoundingClientRect();
        const past = r.right > box.right + 2;
        if (!past && !(/^(PRE|TABLE)$/.test(el.tagName) && el.scrollWidth > el.clientWidth + 1)) return;
        const style = getComputedStyle(el);
        canvas.font = `${style.fontSize} ${style.fontFamily}`;
        const room = Math.min(el.clientWidth, (box.right - r.left) / scale);
        const lines = el.innerText.split('\\n').filter((line) => canvas.measureText(line).width > room + 1);
        clippedLines += Math.max(1, lines.length);
        clipped.push((lines[0] || el.innerText).slice(0, 60));
      });
      const more = [...slide.querySelectorAll('.jp-OutputArea-output')].filter(visible)
        .filter((el) => /⋯ \\d+ more lines/.test(el.innerText));
      const clone = slide.cloneNode(true);
      clone.querySelectorAll('aside.notes, h1, h2, h3, h4, h5, h6, section').forEach((el) => el.remove());
      const headingOnly = clone.textContent.replace(/¶/g, '').trim() === '' && !slide.querySelector('img, mjx-container')
        && !!slide.querySelector('h1, h2, h3, h4');
      const images = [...slide.querySelectorAll('.jp-OutputArea-output img')].filter(visible)
        .map((img) => ({height: img.offsetHeight, width: img.offsetWidth, room: img.closest('.jp-OutputArea-output').clientWidth}));
      const notes = [...slide.querySelectorAll(':scope > aside.notes')].map((a) => a.textContent.trim()).join(' ');
      const showsCode = [...slide.querySelectorAll('.jp-CodeCell')].some(visible);
      const explained = [...slide.querySelectorAll('.jp-RenderedMarkdown')].filter(visible).some((md) => {
        const copy = md.cloneNode(true);
        copy.querySelectorAll('h1, h2, h3, h4, h5, h6').forEach((el) => el.remove());
        return copy.textContent.replace(/¶/g, '').trim() !== '';
      });
      out.push({h, v, height: slide.scrollHeight, mono: sizes, prose, asserts, clippedLines, clipped,
                more: more.length, fullCut: more.filter((el) => el.closest('.celltag_slide-full-output')).length,
                headingOnly, images, verdicts: slide.querySelectorAll('.celltag_slide-verdict').length, notes, wideTables, brokenWords,
                codeWithoutProse: showsCode && !explained,
                start: slide.innerText.trim().slice(0, 60)});
    }
  });
  return {height: Reveal.getConfig().height, width: Reveal.getConfig().width, slides: out};
}"""

# Walk the deck step by step, every slide and every fragment of it in order, as a presenter does with the space
# bar, and record which exercise stubs, check calls and solutions are on screen at each step.
WALK_DECK = """() => {
  const shown = (el) => el.closest('section') === Reveal.getCurrentSlide() && !el.closest('.fragment:not(.visible)');
  const names = (selector, pattern, nameOf) => [...Reveal.getCurrentSlide().querySelectorAll(selector)]
      .filter(shown).map(nameOf || ((el) => (el.textContent.match(pattern) || [])[1])).filter(Boolean);
  const steps = [];
  Reveal.getHorizontalSlides().forEach((column, h) => {
    const stack = column.querySelectorAll(':scope > section');
    for (let v = 0; v < Math.max(stack.length, 1); v++) {
      const slide = stack.length ? stack[v] : column;
      const fragments = new Set([...slide.querySelectorAll('.fragment')].map((f) => f.dataset.fragmentIndex));
      for (let f = -1; f < fragments.size; f++) {
        Reveal.slide(h, v, f);
        steps.push({
          at: [h, v, f],
          stubs: names('.celltag_exercise', /Exercise\\s+(\\d\\d\\.[\\w-]+)/),
          calls: names('.celltag_check .jp-InputArea', /check\\(\\s*["'](\\d\\d\\.[\\w-]+)/),
          solutions: names('.celltag_solution', null, (el) => {
            const title = el.closest('section').querySelector('h3');
            return title ? (title.textContent.match(/(\\d\\d\\.[\\w-]+)/) || [])[1] : 'untitled';
          }),
        });
      }
    }
  });
  return steps;
}"""

# For each column that opens a ## section: its heading and the length of the speaker notes in the column.
SECTION_NOTES = """() => Reveal.getHorizontalSlides().map((column) => {
  const heading = column.querySelector('h2');
  const notes = [...column.querySelectorAll('aside.notes')].map((a) => a.textContent.trim()).join(' ');
  return heading ? {heading: heading.textContent.replace(/¶/g, '').trim(), notes: notes.length} : null;
}).filter(Boolean)"""


def notebook(lesson: str):
    return nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)


def section_headings(lesson: str) -> list[str]:
    return [line[3:].strip() for cell in notebook(lesson).cells if cell.cell_type == "markdown"
            for line in cell.source.splitlines() if line.startswith("## ")]


def plain(markdown: str) -> str:
    return re.sub(r"[`*]", "", markdown)


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    budgets = section_budgets(ROOT / "book" / "instructor_notes.yml")
    written = write_slides([ROOT / "notebooks" / f"{name}.ipynb" for name in LESSONS], out, timings=budgets,
                           guide=speaker_guide(GUIDE))
    return {path.name.removesuffix(".slides.html"): path for path in written}


class OpenDeck:
    """One deck in its own tab, with what it tried to fetch from elsewhere and every script error it logged."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.problems: list[str] = []
        self.page.on("console", lambda message: self.problems.append(f"console {message.type}: {message.text}")
                     if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.route("**/*", self._guard)
        self.page.goto(path.as_uri(), timeout=TIMEOUT_MS)
        self.page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=TIMEOUT_MS)
        self.page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")
        self.page.evaluate("() => Reveal.configure({transition: 'none', backgroundTransition: 'none'})")
        # fragments fade in over 0.2 s, and a fading element has no innerText yet: measure them shown at once
        self.page.add_style_tag(content=".reveal .slides section .fragment { transition: none !important; }")

    def _guard(self, route):
        if route.request.url.startswith("file://"):
            return route.continue_()
        self.problems.append(f"blocked request: {route.request.url}")
        return route.abort()

    def indices(self) -> tuple[int, int, int]:
        i = self.page.evaluate("() => Reveal.getIndices()")
        return i["h"], i["v"], -1 if i.get("f") is None else i["f"]


@pytest.fixture(scope="module")
def opened(browser, decks):
    pages: dict[str, OpenDeck] = {}

    def open_deck(lesson: str) -> OpenDeck:
        if lesson not in pages:
            pages[lesson] = OpenDeck(browser, decks[lesson])
        return pages[lesson]

    yield open_deck
    for deck in pages.values():
        deck.page.close()


@pytest.fixture(scope="module")
def audit(opened):
    """Each deck's AUDIT_SLIDES, measured once: ``audit(lesson)`` is ``(slide height, [slide, ...])``."""
    done: dict[str, tuple[int, list[dict]]] = {}

    def measure(lesson: str):
        if lesson not in done:
            result = opened(lesson).page.evaluate(AUDIT_SLIDES)
            done[lesson] = result["height"], result["slides"]
        return done[lesson]

    return measure


def where(slide: dict) -> str:
    return f"slide {slide['h']}/{slide['v']} ({slide['start'][:40]!r})"


def test_deck_folder_carries_reveal_and_mathjax_and_names_no_web_address(decks):
    assert sorted(decks) == LESSONS
    folder = next(iter(decks.values())).parent
    assert (folder / "reveal.js" / "dist" / "reveal.js").is_file()
    assert (folder / "reveal.js" / "plugin" / "notes" / "notes.js").is_file()
    assert installed_mathjax() is not None and (folder / "mathjax" / "tex-chtml.js").is_file()
    for path in decks.values():
        html = path.read_text(encoding="utf-8")
        assert 'src="reveal.js/dist/reveal.js"' in html and 'src="mathjax/tex-chtml.js"' in html
        for cdn in ("cdnjs", "unpkg", "jsdelivr", "cdn.mathjax", "require.js"):
            assert cdn not in html, f"{path.name} names {cdn}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_deck_opens_on_its_title_and_typesets_the_math(opened, lesson):
    deck = opened(lesson)
    deck.page.evaluate("() => Reveal.slide(0, 0, -1)")
    title = notebook(lesson).cells[0].source.splitlines()[0].removeprefix("# ").strip()
    first = deck.page.locator(".reveal .slides section.present").last
    assert title in first.inner_text()
    if any(MATH.search(re.sub(r"`[^`]*`", "", c.source)) for c in notebook(lesson).cells if c.cell_type == "markdown"):
        assert deck.page.locator(".reveal mjx-container").count() > 0, "MathJax typeset nothing"
    assert deck.page.locator(".reveal mjx-merror").count() == 0, "a formula failed to typeset"


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_slide_is_taller_than_the_screen(audit, lesson):
    height, slides = audit(lesson)
    assert len(slides) >= 8, f"{lesson}: only {len(slides)} slides"
    too_tall = [s for s in slides if s["height"] > height]
    assert not too_tall, "\n".join(f"{where(s)}: {s['height']} px > {height} px" for s in too_tall)


@pytest.mark.parametrize("lesson", LESSONS)
def test_code_and_outputs_are_large_enough_to_read_in_a_lecture_hall(audit, lesson):
    _, slides = audit(lesson)
    small = [f"{where(s)}: {min(s['mono'])} px" for s in slides if s["mono"] and min(s["mono"]) < MIN_MONO_PX]
    assert not small, "\n".join(small)
    assert any(s["mono"] for s in slides), f"{lesson}: no code on the slides"


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_slide_shows_more_than_about_120_words_of_prose(audit, lesson):
    _, slides = audit(lesson)
    wordy = [f"{where(s)}: {s['prose']} words" for s in slides if s["prose"] > MAX_WORDS]
    assert not wordy, "\n".join(wordy)


@pytest.mark.parametrize("lesson", LESSONS)
def test_checks_show_their_verdict_and_no_assert_is_on_screen(audit, lesson):
    _, slides = audit(lesson)
    shown = [f"{where(s)}: {s['asserts']} assert lines" for s in slides if s["asserts"]]
    assert not shown, "\n".join(shown)
    unsaid = [where(s) for s in slides if s["verdicts"] and "The check behind this verdict" not in s["notes"]]
    assert not unsaid, f"verdicts whose check is not in the speaker notes: {unsaid}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_slide_holds_only_a_heading(audit, lesson):
    _, slides = audit(lesson)
    bare = [where(s) for s in slides if s["headingOnly"]]
    assert not bare, bare


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_line_runs_past_the_right_edge(audit, lesson):
    _, slides = audit(lesson)
    cut = [f"{where(s)}: {s['clippedLines']} lines, e.g. {s['clipped'][0]!r}" for s in slides if s["clippedLines"]]
    assert not cut, "\n".join(cut)


@pytest.mark.parametrize("lesson", LESSONS)
def test_table_headers_and_cells_break_between_words_never_inside_one(audit, lesson):
    _, slides = audit(lesson)
    broken = [f"{where(s)}: {s['brokenWords'][:4]}" for s in slides if s["brokenWords"]]
    assert not broken, "\n".join(broken)
    small = [f"{where(s)}: {min(s['wideTables'])} px" for s in slides if s["wideTables"] and min(s["wideTables"]) < TABLE_MIN_PX]
    assert not small, f"tables too wide for the slide, shrunk below {TABLE_MIN_PX} px: {small}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_outputs_tagged_full_output_are_never_cut(audit, lesson):
    _, slides = audit(lesson)
    cut = [where(s) for s in slides if s["fullCut"]]
    assert not cut, f"outputs tagged slide-full-output cut with 'more lines': {cut}"


def png_dpi(data: bytes) -> float:
    """The resolution matplotlib writes into a PNG (its pHYs chunk), in dots per inch."""
    position = 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"pHYs":
            return struct.unpack(">I", data[position + 8:position + 12])[0] * 0.0254
        position += 12 + length
    raise AssertionError("the PNG states no resolution")


@pytest.mark.parametrize("lesson, cell_id", SLIDE_SIZED_FIGURES)
def test_text_inside_a_figure_drawn_for_the_slide_is_16_px_or_more_on_it(opened, lesson, cell_id):
    cell = next(c for c in notebook(lesson).cells if c.get("id") == cell_id)
    # the smallest size the cell asks for: `fontsize=N` on a text, or `readable(fig, size=N)` on the whole figure
    points = min(float(size) for size in re.findall(r"\b(?:fontsize|size)=(\d+(?:\.\d+)?)", cell.source))
    shown = opened(lesson).page.evaluate("""(id) => {
      // a cell whose output moved to a slide of its own carries the id `<cell>-output<k>` there
      const img = document.querySelector(`img.slides-figure[data-cell="${id}"], img.slides-figure[data-cell^="${id}-output"]`);
      const at = Reveal.getIndices(img.closest('section'));
      Reveal.slide(at.h, at.v, 10000);
      return {width: img.offsetWidth, natural: img.naturalWidth, src: img.src};
    }""", cell_id)
    dpi = png_dpi(base64.b64decode(shown["src"].split(",", 1)[1]))
    px = points * dpi / 72 * shown["width"] / shown["natural"]
    assert px >= PLOT_TEXT_MIN_PX, (f"{lesson} cell {cell_id}: {points} pt at {dpi:.0f} dpi, drawn {shown['natural']} px "
                                    f"wide and shown {shown['width']} px wide: {px:.1f} px on the slide")


@pytest.mark.parametrize("lesson", LESSONS)
def test_figures_fill_the_height_their_slide_leaves(audit, lesson):
    height, slides = audit(lesson)
    for s in slides:
        for image in s["images"]:
            full_width = image["width"] >= Geometry().content_width - 20  # as wide as the slide: it can grow no more
            assert full_width or height - s["height"] <= FREE_BELOW_FIGURE_PX, (
                f"{where(s)}: a figure {image['width']}x{image['height']} px leaves {height - s['height']} px empty")


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_solution_is_on_screen_before_its_stub_and_check(opened, lesson):
    steps = opened(lesson).page.evaluate(WALK_DECK)
    exercises = exercise_names(notebook(lesson))

    def first_step(kind: str, name: str) -> int | None:
        return next((i for i, step in enumerate(steps) if name in step[kind]), None)

    shown_solutions = {name for step in steps for name in step["solutions"]}
    assert shown_solutions == set(exercises), f"solutions on the slides: {shown_solutions}, exercises: {exercises}"
    for name in exercises:
        stub, call, solution = first_step("stubs", name), first_step("calls", name), first_step("solutions", name)
        assert stub is not None and call is not None, f"{name}: its stub or its check call is not on the slides"
        assert solution > max(stub, call), f"{name}: solution at step {solution}, stub {stub}, check {call}"
        together = [i for i, step in enumerate(steps) if name in step["stubs"] and name in step["solutions"]]
        assert not together, f"{name}: solution and stub on screen together at steps {together}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_section_is_a_column_with_speaker_notes_where_they_are_written(opened, lesson):
    columns = opened(lesson).page.evaluate(SECTION_NOTES)
    assert [c["heading"] for c in columns] == [plain(h) for h in section_headings(lesson)]
    if lesson in LESSONS_WITH_TEACHING_NOTES:
        missing = [c["heading"] for c in columns if c["notes"] < 40]
        assert not missing, f"{lesson}: sections without speaker notes: {missing}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_slide_of_code_or_output_without_its_explanation_has_speaker_notes(audit, lesson):
    _, slides = audit(lesson)
    unsaid = [where(s) for s in slides if s["codeWithoutProse"] and not s["notes"]]
    assert not unsaid, f"{lesson}: code or output shown without a word for the presenter: {unsaid}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_each_answer_key_misconception_and_live_coding_moment_of_the_guide_is_in_the_speaker_notes(audit, lesson):
    _, slides = audit(lesson)
    notes = " ".join(s["notes"] for s in slides)
    guide = speaker_guide(GUIDE).get(lesson, {})
    for label, key in (("Answer key", "answers"), ("Misconception", "misconceptions"), ("Live coding", "live_coding")):
        assert notes.count(f"{label} (instructor guide)") == len(guide.get(key, [])), f"{lesson}: {key}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_arrow_keys_move_through_the_deck_to_its_last_slide(opened, lesson):
    deck = opened(lesson)
    page = deck.page
    page.evaluate("() => Reveal.slide(0, 0, -1)")
    page.locator(".reveal").click(position={"x": 400, "y": 300})  # focus, as a presenter's first click does
    page.evaluate("() => Reveal.slide(0, 0, -1)")
    start = deck.indices()
    page.keyboard.press("ArrowRight")
    assert deck.indices() != start, "ArrowRight did not move"
    columns = page.evaluate("() => Reveal.getHorizontalSlides().length")
    for key in ("ArrowRight", "ArrowDown"):  # to the last column, then down to its last sub-slide
        for _ in range(MAX_KEY_PRESSES):
            before = deck.indices()
            page.keyboard.press(key)
            if deck.indices() == before:
                break
    h, v, _ = deck.indices()
    assert h == columns - 1 and page.evaluate("() => Reveal.isLastSlide()"), f"stopped at {h}/{v} of {columns}"
    stack_sizes = page.evaluate("() => Reveal.getHorizontalSlides().map(c => c.querySelectorAll(':scope > section').length)")
    column = next(i for i, size in enumerate(stack_sizes) if size > 1)
    page.evaluate(f"() => Reveal.slide({column}, 0, 10000)")
    page.keyboard.press("ArrowDown")
    assert deck.indices()[:2] == (column, 1), "ArrowDown did not open the next sub-slide"
    assert not deck.problems, deck.problems


@pytest.mark.parametrize("lesson", LESSONS)
def test_nothing_was_fetched_from_the_web_and_no_script_failed(opened, lesson):
    deck = opened(lesson)
    deck.page.evaluate(WALK_DECK)  # every slide and fragment once
    assert not deck.problems, deck.problems
