"""Student edition: solutions removed, exercise outputs cleared, nothing of the user's overwritten."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.publish import editions

STUB = 'def softmax(x):\n    raise NotImplementedError("Exercise 02.softmax: normalise exp(x) over the last axis")'
SOLUTION = "def softmax(x):\n    return x.softmax(-1)"
CHECK = 'check("02.softmax", softmax)'


def _lesson(tmp_path: Path) -> Path:
    source = tmp_path / "notebooks"
    source.mkdir()
    nb = new_notebook(cells=[
        new_markdown_cell("# 02 · Demo"),
        new_code_cell("x = 1\nprint(x)", outputs=[new_output("stream", name="stdout", text="1\n")], execution_count=1),
        new_markdown_cell("**Exercise**: write softmax."),
        new_code_cell(STUB, metadata={"tags": ["exercise"]}, execution_count=2),
        new_code_cell(SOLUTION, metadata={"tags": ["solution"]}, execution_count=3),
        new_code_cell(CHECK, metadata={"tags": ["check"]}, execution_count=4,
                      outputs=[new_output("execute_result", data={"text/plain": "[passed] ..."}, execution_count=4)]),
    ])
    nbformat.write(nb, source / "02_demo.ipynb")
    return source


def test_student_edition_drops_solutions_and_clears_exercise_outputs(tmp_path):
    source = _lesson(tmp_path)
    written = editions.write_student_edition(source, tmp_path / "student")
    nb = nbformat.read(written[0], as_version=4)
    sources = [c.source for c in nb.cells]
    assert SOLUTION not in sources and STUB in sources and CHECK in sources
    check_cell = next(c for c in nb.cells if c.source == CHECK)
    assert check_cell.outputs == []
    kept = next(c for c in nb.cells if c.source.startswith("x = 1"))
    assert kept.outputs[0]["text"] == "1\n"  # everything else is kept
    assert len(nb.cells) == 5


def test_source_notebooks_are_never_modified(tmp_path):
    source = _lesson(tmp_path)
    before = (source / "02_demo.ipynb").read_bytes()
    editions.write_student_edition(source, tmp_path / "student")
    assert (source / "02_demo.ipynb").read_bytes() == before
    with pytest.raises(editions.EditionError, match="overlaps the source"):
        editions.write_student_edition(source, source)
    with pytest.raises(editions.EditionError, match="overlaps the source"):
        editions.write_student_edition(source, source / "student")


def test_refuses_a_folder_holding_files_it_did_not_create(tmp_path):
    source = _lesson(tmp_path)
    target = tmp_path / "student"
    target.mkdir()
    (target / "my_notes.ipynb").write_text("{}")
    with pytest.raises(editions.EditionError, match="did not create"):
        editions.write_student_edition(source, target)
    assert (target / "my_notes.ipynb").read_text() == "{}"


def test_rewrites_its_own_edition_but_not_a_file_added_later(tmp_path):
    source = _lesson(tmp_path)
    target = tmp_path / "student"
    editions.write_student_edition(source, target)
    editions.write_student_edition(source, target)  # its own files: fine
    (target / "02_demo_my_answers.ipynb").write_text("{}")
    with pytest.raises(editions.EditionError, match="02_demo_my_answers.ipynb"):
        editions.write_student_edition(source, target)
    assert json.loads((target / editions.MARKER).read_text())["files"] == ["02_demo.ipynb"]


def test_a_stub_without_a_named_not_implemented_error_is_rejected(tmp_path):
    source = _lesson(tmp_path)
    nb = nbformat.read(source / "02_demo.ipynb", as_version=4)
    nb.cells[3].source = "def softmax(x):\n    pass"
    nbformat.write(nb, source / "02_demo.ipynb")
    with pytest.raises(editions.EditionError, match="NotImplementedError"):
        editions.write_student_edition(source, tmp_path / "student")


def test_exercise_names_come_from_the_stubs(tmp_path):
    nb = nbformat.read(_lesson(tmp_path) / "02_demo.ipynb", as_version=4)
    assert editions.exercise_names(nb) == ["02.softmax"]


NOTES = "Ask the room what softmax does to a row of equal logits."
QUESTION = "Why does every row sum to 1?"


def _lesson_with_notes(tmp_path: Path) -> Path:
    source = _lesson(tmp_path)
    nb = nbformat.read(source / "02_demo.ipynb", as_version=4)
    nb.cells.insert(1, new_markdown_cell(NOTES, metadata={"tags": ["speaker-notes"]}))
    nb.cells.insert(2, new_markdown_cell(QUESTION))
    nbformat.write(nb, source / "02_demo.ipynb")
    return source


def test_student_edition_keeps_the_questions_and_drops_speaker_notes(tmp_path):
    source = _lesson_with_notes(tmp_path)
    nb = nbformat.read(editions.write_student_edition(source, tmp_path / "student")[0], as_version=4)
    sources = [c.source for c in nb.cells]
    assert QUESTION in sources and NOTES not in sources and SOLUTION not in sources
    assert nb.metadata["course_edition"] == "student"


def test_instructor_edition_keeps_every_cell_and_output(tmp_path):
    source = _lesson_with_notes(tmp_path)
    original = nbformat.read(source / "02_demo.ipynb", as_version=4)
    written = editions.write_edition("instructor", source, tmp_path / "instructor")
    nb = nbformat.read(written[0], as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in original.cells]
    assert [c.get("outputs") for c in nb.cells] == [c.get("outputs") for c in original.cells]
    assert nb.metadata["course_edition"] == "instructor"


def test_make_editions_writes_both_editions_from_one_source(tmp_path):
    from course_lib.runtime.cli import main

    source = _lesson_with_notes(tmp_path)
    assert main(["editions", "--source", str(source), "--out", str(tmp_path / "editions")]) == 0
    student = nbformat.read(tmp_path / "editions" / "student" / "02_demo.ipynb", as_version=4)
    instructor = nbformat.read(tmp_path / "editions" / "instructor" / "02_demo.ipynb", as_version=4)
    assert len(instructor.cells) == len(student.cells) + 2  # the solution and the speaker notes
    assert {c.source for c in instructor.cells} - {c.source for c in student.cells} == {SOLUTION, NOTES}


def test_neither_edition_is_written_when_one_folder_holds_foreign_files(tmp_path):
    source = _lesson(tmp_path)
    (tmp_path / "editions" / "instructor").mkdir(parents=True)
    (tmp_path / "editions" / "instructor" / "mine.ipynb").write_text("{}")
    with pytest.raises(editions.EditionError, match="did not create"):
        editions.write_editions(source, tmp_path / "editions")
    assert not (tmp_path / "editions" / "student").exists()
    with pytest.raises(editions.EditionError, match="unknown edition 'teacher'"):
        editions.write_edition("teacher", source, tmp_path / "teacher")
