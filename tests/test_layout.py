"""The package's layout rules (docs/package_layout.md): teaching, running and publishing code apart, modules short
enough to read, no sys.path edits, and a map from every lesson to the modules it teaches."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_lib"
MAX_LINES = 400


def _tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.split()]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_module_of_the_package_or_the_book_extension_is_over_400_lines():
    modules = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "book" / "_ext").rglob("*.py"))
    assert len(modules) > 40
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_python_file_edits_sys_path():
    edit = re.compile(r"sys\.path\s*(\.(insert|append|extend)\(|\[[^\]]*\]\s*=|\s*[+]?=)")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in _tracked("*.py") if p != Path(__file__).resolve()
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if edit.search(line)]
    assert not offenders, f"sys.path edited at {offenders}"
    assert edit.search("sys.path.insert(0, str(ROOT))") and edit.search("sys.path[:0] = [x]")  # the pattern bites


def test_teaching_and_running_code_never_import_the_publishing_code():
    publish = PACKAGE / "publish"
    for path in PACKAGE.rglob("*.py"):
        if publish in path.parents or path == PACKAGE / "runtime" / "cli.py":  # the command line reaches all three
            continue
        wrong = sorted(name for name in _imports(path) if name.startswith("course_lib.publish"))
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_the_three_kinds_of_code_live_in_their_folders():
    running = {"offline", "cache", "disk", "doctor", "install", "errors", "validate", "commands", "cli"}
    publishing = {"editions", "slides", "slide_layout", "lessons"}
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert not top & (running | publishing), f"running or publishing modules at the top: {top & (running | publishing)}"
    assert running <= {p.stem for p in (PACKAGE / "runtime").glob("*.py")}
    assert publishing <= {p.stem for p in (PACKAGE / "publish").glob("*.py")}


def test_lessons_import_only_teaching_modules():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        used = set(re.findall(r"course_lib\.(runtime|publish)\b", code))
        assert not used, f"{path.name} imports course_lib.{used}"


def test_the_layout_doc_maps_every_lesson_and_names_only_modules_that_exist():
    doc = (ROOT / "docs" / "package_layout.md").read_text()
    lessons = sorted(p.stem[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = dict(re.findall(r"^\| (\d\d) [^|]+\| (.+) \|$", doc, flags=re.M))
    assert sorted(rows) == lessons
    modules = {p.stem for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    named = {name for row in rows.values() for name in re.findall(r"`([a-z_]+)`", row)}
    assert named <= modules, f"the map names modules that do not exist: {named - modules}"
    teaching = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert teaching <= named, f"modules at the top of course_lib that no lesson row names: {teaching - named}"
