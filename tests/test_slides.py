"""Lecture slides, built by nbconvert from small notebooks made here: the structure the preprocessors choose
(## slides, ### sub-slides, code as fragments after its explanation, packing by height), folded code, dropped
noise, replaced views, exercises whose solution comes after its stub and check, speaker notes, per-cell tags,
and the pacing timer. The browser test (test_slides_browser.py) checks the real decks on screen."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.publish import editions, slide_layout, slides

LONG_CODE = "\n".join(f"value_{i} = {i}  # line {i}" for i in range(30))
PLOT_CODE = "\n".join(["xs = list(range(10))", "ys = [x * x for x in xs]", "fig, ax = plt.subplots()",
                       "ax.plot(xs, ys)"] + [f"ax.set_title('t{i}')" for i in range(6)]
                      + ["ax.set_xlabel('x')", "ax.set_ylabel('y')", "ax.legend()", "plt.show()"])


def stream(text, name="stdout"):
    return new_output("stream", name=name, text=text)


def lesson_cells():
    return [
        new_markdown_cell("# 09 · Demo lesson\n\nWhat this is about.\n\n**What you will learn**\n\n- one\n- two"),
        new_markdown_cell("**Setup.** `import course_lib` comes first."),
        new_code_cell("import course_lib  # first\nimport torch", outputs=[stream("profile: quick\n")]),
        new_markdown_cell("## 1. First section\n\nLook at the shape."),
        new_markdown_cell("Remember to ask the room first.", metadata={"tags": ["speaker-notes"]}),
        new_code_cell("x = torch.zeros(2, 3)\nprint(x.shape)", outputs=[
            stream("torch.Size([2, 3])\n"),
            stream("UserWarning: something harmless\n", name="stderr"),
            stream("Map: 100%|##########| 3/3 [00:00<00:00, 120.5 examples/s]\n")]),
        new_markdown_cell("### A sub-topic\n\nMore text."),
        new_code_cell(LONG_CODE, outputs=[stream("".join(f"row {i}\n" for i in range(40)))]),
        new_markdown_cell("## 2. Second section\n\nA view and an exercise."),
        new_markdown_cell("Say that the view needs a live kernel.", metadata={"tags": ["speaker-notes"]}),
        new_code_cell("head_view(model)", outputs=[new_output("display_data", data={
            "text/html": "<div class='course-viz'>" + "x" * 60_000 + "</div><script>draw()</script>",
            "text/plain": "<Attention head view of 14 tokens; shows in Jupyter>"})]),
        new_code_cell("progress()", outputs=[new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2, "version_minor": 0},
            "text/plain": "Map: 100%|##########| 3/3"})]),
        new_markdown_cell("**Exercise 09.double.** Write `double(x)`."),
        new_code_cell('def double(x):\n    raise NotImplementedError("Exercise 09.double: multiply by 2")',
                      metadata={"tags": ["exercise"]}),
        new_code_cell("def double(x):\n    return 2 * x  # the answer", metadata={"tags": ["solution"]}),
        new_code_cell('check("09.double", double)', metadata={"tags": ["check"]},
                      outputs=[stream("[passed] 09.double: all 3 cases match the reference.\n")]),
        new_markdown_cell("## Summary\n\n- one thing\n- another thing"),
    ]


def write_lesson(folder: Path, cells=None, name="09_demo") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(new_notebook(cells=cells if cells is not None else lesson_cells()), path)
    return path


def build(tmp_path, cells=None, **kwargs) -> BeautifulSoup:
    path = write_lesson(tmp_path / "nb", cells)
    written = editions.write_slides([path], tmp_path / "slides", mathjax_dir=None, **kwargs)
    return BeautifulSoup(written[0].read_text(encoding="utf-8"), "html.parser")


def columns(deck: BeautifulSoup) -> list:
    """The horizontal slides (one per # or ## section), each a list of its sub-slides."""
    top = deck.select_one("div.reveal > div.slides").find_all("section", recursive=False)
    return [column.find_all("section", recursive=False) or [column] for column in top]


def text(node) -> str:
    return " ".join(node.get_text(" ", strip=True).split())


def raw(node) -> str:
    """The text of highlighted code as written (no spaces added between the highlighter's spans)."""
    return node.get_text()


def visible_text(node) -> str:
    """The text a slide shows (speaker notes left out)."""
    clone = BeautifulSoup(str(node), "html.parser")
    for aside in clone.select("aside.notes"):
        aside.decompose()
    return text(clone)


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    return build(tmp_path_factory.mktemp("deck"))


def test_title_and_level_two_headings_start_slides_and_level_three_a_sub_slide(deck):
    stacks = columns(deck)
    firsts = [visible_text(stack[0]) for stack in stacks]
    assert firsts[0].startswith("09 · Demo lesson")
    assert [f.split(" ")[0] for f in firsts[1:]] == ["1.", "2.", "Summary"]
    section_one = stacks[1]
    assert len(section_one) >= 2 and visible_text(section_one[1]).startswith("A sub-topic")


def test_setup_cells_are_left_out_and_hand_set_slide_metadata_is_ignored(tmp_path):
    cells = lesson_cells()
    cells[3].metadata["slideshow"] = {"slide_type": "skip"}  # a stale hand-set type on a section heading
    page = text(build(tmp_path, cells))
    assert "import course_lib" not in page and "Setup." not in page
    assert "1. First section" in page


def test_code_appears_as_a_fragment_after_its_explanation(deck):
    first = columns(deck)[1][0]
    explanation = first.find(string=re.compile("Look at the shape"))
    assert explanation is not None and explanation.find_parent(class_="fragment") is None
    code = next(c for c in first.select("div.jp-CodeCell") if "torch.zeros" in raw(c))
    assert code.find_parent(class_="fragment") is not None


def test_stderr_progress_bars_and_widgets_are_dropped_and_stdout_kept(deck):
    page = text(deck)
    assert "torch.Size([2, 3])" in page
    assert "UserWarning" not in page and "100%|" not in page and "examples/s" not in page


def test_heavy_view_becomes_a_note_without_its_script(deck, tmp_path_factory):
    page = str(deck)
    assert "x" * 1000 not in page and "draw()" not in page
    note = deck.select_one(".slides-view-note")
    assert note is not None and "Attention head view of 14 tokens" in text(note)
    assert "shows in Jupyter" not in text(note)


def test_long_code_shows_at_most_twelve_lines_and_keeps_the_whole_cell_in_a_fold(deck):
    cell = next(c for c in deck.select("div.jp-CodeCell") if "value_0" in raw(c))
    shown = cell.select_one("div.jp-InputArea-editor > div.cm-editor").get_text()
    lines = [line for line in shown.strip("\n").split("\n") if line.strip()]
    assert len(lines) <= 12 and "value_10" in shown and "value_29" not in shown
    assert re.search(r"⋯ \d+ more lines", shown)
    fold = cell.select_one("details.slides-fold")
    assert fold is not None and "value_29" in fold.get_text() and "30 lines" in fold.summary.get_text()


def test_plot_styling_is_folded_before_the_lines_that_compute(tmp_path):
    cells = [new_markdown_cell("## 1. A plot"), new_code_cell(PLOT_CODE)]
    deck = build(tmp_path, cells)
    shown = deck.select_one("div.jp-InputArea-editor > div.cm-editor").get_text()
    assert "ys = [x * x for x in xs]" in shown and "ax.plot(xs, ys)" in shown
    assert "set_title" not in shown and "⋯ 10 more lines" in shown


def test_long_text_output_is_cut_with_a_marker(deck):
    output = next(o for o in deck.select("div.jp-OutputArea-output") if "row 0" in text(o))
    assert "row 9" in text(output) and "row 10" not in text(output) and "row 39" not in text(output)
    assert "more lines" in text(output)


def test_solution_comes_on_a_later_sub_slide_than_its_stub_and_check_call(deck):
    stack = columns(deck)[2]
    where = {}
    for number, subslide in enumerate(stack):
        for cell in subslide.select("div.jp-Cell"):
            classes = set(cell.get("class", []))
            for tag in ("exercise", "solution", "check"):
                if f"celltag_{tag}" in classes:
                    where.setdefault(tag, []).append((number, raw(cell)))
    (stub_at, _), = where["exercise"]
    (solution_at, solution), = where["solution"]
    call, result = where["check"]  # the call without output, then the output without the call
    assert "the answer" in solution and stub_at < solution_at
    assert call[0] == stub_at and "check(" in call[1] and "[passed]" not in call[1]
    assert result[0] == solution_at and "[passed]" in result[1] and "check(" not in result[1]
    assert "Solution · 09.double" in visible_text(stack[solution_at])


def test_speaker_notes_become_reveal_notes_of_their_section(deck):
    for stack, note in ((columns(deck)[1], "ask the room"), (columns(deck)[2], "live kernel")):
        asides = stack[0].select("aside.notes")
        assert any(note in text(a) for a in asides), f"notes missing in {visible_text(stack[0])[:40]}"
        assert note not in visible_text(stack[0])
        assert all(a.find_parent(class_="fragment") is None for a in asides)


def test_tags_skip_keep_and_break(tmp_path):
    cells = lesson_cells()
    cells[2].metadata["tags"] = ["slide-keep"]  # the setup cell, kept
    cells[5].metadata["tags"] = ["slide-skip"]
    cells[7].metadata["tags"] = ["slide-keep"]  # the long cell, whole
    cells[16].metadata["tags"] = ["slide-break"]
    deck = build(tmp_path, cells)
    page = text(deck)
    assert "import course_lib" in page and "torch.zeros" not in page
    long_cell = next(c for c in deck.select("div.jp-CodeCell") if "value_0" in raw(c))
    assert "value_29" in raw(long_cell.select_one("div.jp-InputArea-editor")) and not long_cell.select("details")
    assert "row 39" in raw(long_cell)
    summary = columns(deck)[-1]
    assert len(summary) == 1  # a break on a heading cell changes nothing: it opens a slide anyway
    cells = lesson_cells()
    cells[14] = new_markdown_cell("A remark on its own sub-slide.", metadata={"tags": ["slide-break"]})
    stack = columns(build(tmp_path / "again", cells))[2]
    assert any(visible_text(sub).startswith("A remark on its own sub-slide") for sub in stack)


def laid_out(cells) -> list:
    """The cells after the course's slide preprocessors, with their slide types."""
    nb, resources = new_notebook(cells=cells), {"course_slides": {"geometry": slides.Geometry()}}
    steps = (slides.SlideOutputsPreprocessor, slides.SlideExercisesPreprocessor, slide_layout.SlideLayoutPreprocessor)
    for step in steps:
        nb, resources = step().preprocess(nb, resources)
    return nb.cells


def test_content_too_tall_for_one_slide_is_spread_over_sub_slides_that_each_fit(tmp_path):
    g = slides.Geometry()
    paragraphs = "\n\n".join(f"Paragraph {i}: " + "words of explanation " * 30 for i in range(12))
    items = "\n".join(f"- item {i}: " + "a long item of a long list " * 6 for i in range(40))
    outputs = [new_output("display_data", data={"text/html": "<table>" + "<tr><td>1</td></tr>" * 15 + "</table>",
                                                "text/plain": "table"}) for _ in range(4)]
    cells = [new_markdown_cell("## 1. Long\n\n" + paragraphs), new_markdown_cell("A list:\n\n" + items),
             new_code_cell("show()", outputs=outputs)]
    assert sum(slide_layout.cell_height(c, g) for c in cells) > 5 * g.budget
    groups = []
    for cell in laid_out(cells):
        if cell.metadata["slideshow"]["slide_type"] in ("slide", "subslide"):
            groups.append([])
        groups[-1].append(cell)
    assert len(groups) >= 6
    for group in groups:
        assert sum(slide_layout.cell_height(c, g) for c in group) <= g.budget
    shown = " ".join(c.source for group in groups for c in group)
    assert all(f"Paragraph {i}:" in shown for i in range(12)) and all(f"item {i}:" in shown for i in range(40))
    assert sum(len(c.outputs) for group in groups for c in group if c.cell_type == "code") == 4


def test_section_minutes_become_data_timing_for_the_speaker_view(tmp_path):
    minutes = {"1. First section": 10, "2. Second section": 6, "Summary": 2}
    deck = build(tmp_path, timings={"09_demo": minutes})
    stacks = columns(deck)
    title_seconds = [int(sub["data-timing"]) for sub in stacks[0]]
    for stack, (section, budget) in zip(stacks[1:], minutes.items()):
        seconds = [int(sub["data-timing"]) for sub in stack]
        if section == "1. First section":  # the title's slides share the first section's minutes
            seconds += title_seconds
        assert abs(sum(seconds) - 60 * budget) <= len(seconds), (section, seconds)
    assert "defaultTiming: 0" in str(deck)
    assert "data-timing" not in str(build(tmp_path / "plain"))


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(editions.EditionError, match="no such notebook: .*nowhere.ipynb"):
        editions.write_slides([tmp_path / "nowhere.ipynb"], tmp_path / "slides", mathjax_dir=None)


def test_section_budgets_are_read_from_the_instructor_notes(tmp_path):
    notes = tmp_path / "notes.yml"
    notes.write_text("09_demo.ipynb:\n  session: 20\n  budget:\n    '1. First section': 12\n    Summary: 8\n"
                     "10_other.ipynb:\n  session: 30\n", encoding="utf-8")
    assert editions.section_budgets(notes) == {"09_demo": {"1. First section": 12, "Summary": 8}}
    notes.write_text("09_demo.ipynb: [unclosed", encoding="utf-8")
    with pytest.raises(editions.EditionError, match="not valid YAML"):
        editions.section_budgets(notes)


# ----------------------------------------------------------------------------------------- read from a lecture hall
def png(width: int, height: int) -> str:
    """A valid grey PNG of the given size, base64-encoded as notebooks store it."""
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")).decode()


def sub_slides(deck: BeautifulSoup) -> list:
    return [sub for stack in columns(deck) for sub in stack]


def notes_of(node) -> str:
    return " ".join(text(a) for a in node.select("aside.notes"))


def test_code_and_outputs_are_22_px_and_long_lines_wrap():
    css = slides.css_variables(slides.Geometry())
    assert "--slides-code: 22px" in css and "--slides-output: 22px" in css
    assert "pre-wrap" in css and "overflow-wrap: anywhere" in css


def test_a_check_cell_shows_its_verdict_and_its_asserts_go_to_the_notes(tmp_path):
    verdict = "checked: the loss falls below 2.5"
    cells = [new_markdown_cell("## 1. Training"),
             new_code_cell("loss = 2.1\nprint(loss)\nassert loss < 2.5  # the claim", outputs=[stream("2.1\n")]),
             new_markdown_cell("The claim, checked."),
             new_code_cell(f"assert loss < 2.5\nprint({verdict!r})", metadata={"tags": ["check"]},
                           outputs=[stream(verdict + "\n")])]
    deck = build(tmp_path, cells)
    shown = " ".join(visible_text(sub) for sub in sub_slides(deck))
    assert "assert" not in shown and "loss = 2.1" in shown and verdict in shown
    said = " ".join(notes_of(sub) for sub in sub_slides(deck))
    assert "assert loss < 2.5 # the claim" in said and "The check behind this verdict" in said
    cell = deck.select_one(".celltag_slide-verdict")
    assert cell is not None and not cell.select(".jp-InputArea") and verdict in text(cell)


def test_exercise_check_calls_keep_their_code(deck):
    assert any("check(" in raw(c) for c in deck.select(".celltag_check .jp-InputArea"))


def test_long_prose_shows_about_100_words_and_the_rest_is_in_the_speaker_notes(tmp_path):
    paragraphs = [f"Paragraph {i} says " + "something worth saying aloud " * 9 + "." for i in range(6)]
    cells = [new_markdown_cell("## 1. Prose\n\n" + "\n\n".join(paragraphs)),
             new_markdown_cell("A list to show:\n\n" + "\n".join(f"- point {i} " + "with words " * 8
                                                              for i in range(12)))]
    deck = build(tmp_path, cells)
    for sub in sub_slides(deck):
        assert len(visible_text(sub).split()) <= 125, visible_text(sub)[:80]
    first = sub_slides(deck)[0]
    assert "Paragraph 0" in visible_text(first) and "Paragraph 5" not in visible_text(first)
    assert "Paragraph 5" in notes_of(first)  # said on the slide whose prose it continues
    shown = " ".join(visible_text(sub) for sub in sub_slides(deck))
    assert all(f"point {i} " in shown for i in range(12))  # a list stays on the slides, over several
    assert "A list to show:" in shown


def test_a_long_sentence_is_cut_at_a_sentence_or_semicolon(tmp_path):
    sentence = "; ".join(f"clause {i} " + "runs on and on " * 5 for i in range(10)) + "."
    deck = build(tmp_path, [new_markdown_cell("## 1. One sentence\n\n" + sentence)])
    first = sub_slides(deck)[0]
    assert "clause 0" in visible_text(first) and "clause 9" not in visible_text(first)
    assert "clause 9" in notes_of(first)


def test_a_heading_is_never_alone_on_its_slide(tmp_path):
    tall = "\n".join(f"row_{i} = {i}" for i in range(11))
    cells = [new_markdown_cell("## 1. Section"), new_markdown_cell("### Part A"),
             new_code_cell(tall, outputs=[stream("".join(f"out {i}\n" for i in range(10)))]),
             new_markdown_cell("## 2. Next"), new_code_cell("x = 1", outputs=[stream("1\n")])]
    for sub in sub_slides(build(tmp_path, cells)):
        words = visible_text(sub).split()
        heads = " ".join(h.get_text(" ", strip=True) for h in sub.select("h1, h2, h3"))
        assert len(words) > len(heads.split()), f"a slide with only {heads!r}"


def test_full_output_tag_shows_the_whole_output_over_sub_slides(tmp_path):
    sample = "".join(f"sample line {i}\n" for i in range(50))
    cells = [new_markdown_cell("## 1. Samples"),
             new_code_cell("print(generate())", metadata={"tags": ["slide-full-output"]}, outputs=[stream(sample)]),
             new_markdown_cell("## 2. Cut"), new_code_cell("print(generate())", outputs=[stream(sample)])]
    stacks = columns(build(tmp_path, cells))
    whole = " ".join(visible_text(sub) for sub in stacks[0])
    assert all(f"sample line {i} " in whole + " " for i in range(50)) and "more lines" not in whole
    g = slides.Geometry()
    rows = int(g.budget / (g.output_px * g.output_line))  # lines of output one sub-slide holds at most
    shown = [visible_text(sub).count("sample line") for sub in stacks[0]]
    assert len(shown) == 3 and max(shown) <= rows, shown  # 50 lines of 22 px: three sub-slides
    assert min(shown) >= 50 // 3 - 1, f"the lines are not shared evenly: {shown}"  # no sub-slide with a lone line
    assert "more lines" in " ".join(visible_text(sub) for sub in stacks[1])


def test_a_figure_grows_into_the_free_height_of_its_slide(tmp_path):
    g = slides.Geometry()
    figure = new_output("display_data", data={"image/png": png(800, 400), "text/plain": "<Figure>"})
    cells = [new_markdown_cell("## 1. A plot\n\nLook."), new_code_cell("plot()", outputs=[figure])]
    img = build(tmp_path, cells).select_one(".jp-OutputArea-output img")
    height = int(re.search(r"height: (\d+)px", img["style"]).group(1))
    assert g.image_min_px < height <= g.content_width * 400 / 800  # grown, no wider than the slide
    assert img["src"].startswith("data:image/png;base64,")


def test_table_words_break_only_between_words_and_a_table_too_wide_for_the_slide_gets_a_smaller_font():
    g = slides.Geometry()
    narrow = '<table class="dataframe"><tr><th>vocabulary (GPT-2)</th><th>tokens</th></tr><tr><td>50257</td><td>9</td></tr></table>'
    fitted = slides.fit_table(narrow, g)
    assert "GPT\u20112" in fitted and "font-size" not in fitted  # fits at the output size: unchanged but the hyphen
    wide = ("<table class='t'><tr>" + "".join(f"<th>attention_mask_{i}</th>" for i in range(12)) + "</tr><tr>"
            + "<td>&lt;|im_end|&gt;</td>" * 12 + "</tr></table>")
    px = int(re.search(r"font-size: (\d+)px", slides.fit_table(wide, g)).group(1))
    assert slides.TABLE_MIN_PX <= px < g.output_px and "slides-wide-table t" in slides.fit_table(wide, g)
    css = slides.css_variables(g)
    assert "overflow-wrap: normal; word-break: normal; hyphens: none" in css and "anywhere; line-height" not in css


def sub_slides_of(deck) -> list:
    return [sub for stack in columns(deck) for sub in stack]


def test_a_code_slide_without_its_explanation_gets_the_explanation_as_speaker_notes(tmp_path):
    explanation = "Watch the loss fall: " + "each step lowers it a little " * 10 + "."
    tall = "\n".join(f"loss_{i} = {i}" for i in range(11))
    cells = [new_markdown_cell("## 1. Training\n\n" + explanation),
             new_code_cell(tall, outputs=[stream("".join(f"step {i}\n" for i in range(10)))]),
             new_markdown_cell("A short one: the next cell prints the shape."),
             new_code_cell("print(x.shape)", outputs=[stream("torch.Size([2, 3])\n")])]
    subs = sub_slides_of(build(tmp_path, cells))
    code = next(sub for sub in subs if "loss_0" in visible_text(sub))
    assert "Watch the loss fall" not in visible_text(code)  # no room under the explanation: a sub-slide of its own
    assert "Watch the loss fall" in notes_of(code)
    shown_with = [sub for sub in subs if "the next cell prints the shape" in visible_text(sub)]
    assert shown_with and "the next cell prints the shape" not in notes_of(shown_with[0])  # on the slide: not said
    opener = next(sub for sub in subs if "Watch the loss fall" in visible_text(sub))
    assert "Watch the loss fall" not in notes_of(opener)


def test_the_guide_s_answer_keys_misconceptions_and_live_coding_go_to_the_speaker_notes(tmp_path):
    guide = {"09_demo": {
        "answers": [{"section": "1. First section", "asks": "Look at the shape.", "answer": "It is (2, 3)."}],
        "misconceptions": [{"section": "2. Second section", "belief": "Views print.", "truth": "They need a kernel."}],
        "live_coding": [{"section": "2. Second section", "point": "Type double(x) with the room."}]}}
    subs = sub_slides_of(build(tmp_path, guide=guide))
    asked = next(sub for sub in subs if "Look at the shape." in visible_text(sub))
    assert "Answer key" in notes_of(asked) and "It is (2, 3)." in notes_of(asked)
    second = next(sub for sub in subs if "2. Second section" in visible_text(sub))
    assert "Views print. In fact: They need a kernel." in notes_of(second)
    assert "Type double(x) with the room." in notes_of(second)
    assert sum(notes_of(sub).count("It is (2, 3).") for sub in subs) == 1
