"""Student and instructor editions and lecture slides, generated from the one set of notebooks in ``notebooks/``.

Exercise cells follow one convention (see CONTRIBUTING in docs): a stub cell tagged ``exercise`` whose function
raises ``NotImplementedError("Exercise NN.slug: ...")``, a cell tagged ``solution`` that redefines it, and a cell
tagged ``check`` that calls ``course_lib.checks.check``. Markdown cells tagged ``speaker-notes`` are remarks for
whoever teaches the lesson (they become the speaker notes of the slides).

* The **student edition** keeps the questions and drops the answer keys: nbconvert's ``TagRemovePreprocessor``
  removes the solution and speaker-notes cells and clears the outputs of exercise and check cells; everything
  else is kept as it is.
* The **instructor edition** keeps every cell: solutions, speaker notes, outputs.
* The **slides** (:func:`write_slides`) are reveal.js decks; :mod:`course_lib.publish.slides` and
  :mod:`course_lib.publish.slide_layout` choose their structure.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat

MARKER = ".course-edition.json"
EXERCISE_NAME = re.compile(r"NotImplementedError\(\s*[\"']Exercise\s+(\d\d\.[\w-]+)")
SOLUTION_TAG, NOTES_TAG = "solution", "speaker-notes"
EDITIONS = ("student", "instructor")


class EditionError(RuntimeError):
    """The edition cannot be written safely (the message says why and what to do)."""


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def exercise_names(nb) -> list[str]:
    """Names of the exercises in a notebook, from their stub cells, in order."""
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "exercise" in _tags(cell):
            match = EXERCISE_NAME.search(cell.source)
            if not match:
                raise EditionError(f"exercise cell without `raise NotImplementedError(\"Exercise NN.name: ...\")`:"
                                   f"\n{cell.source[:200]}")
            names.append(match.group(1))
    return names


def _check_solutions_follow_stubs(nb) -> None:
    stub_seen = False
    for cell in nb.cells:
        tags = _tags(cell)
        if SOLUTION_TAG in tags and not stub_seen:
            raise EditionError("a solution cell must follow its exercise stub cell (tag 'exercise')")
        stub_seen = stub_seen or "exercise" in tags


def student_notebook(nb):
    """A copy of ``nb`` without solution and speaker-notes cells; exercise and check cells keep their code and
    lose their outputs."""
    from nbconvert.preprocessors import TagRemovePreprocessor

    _check_solutions_follow_stubs(nb)
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy: the source notebook stays as it is
    remover = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG, NOTES_TAG},
                                    remove_all_outputs_tags={"exercise", "check"})
    nb, _ = remover.preprocess(nb, {})
    nb.metadata["course_edition"] = "student"
    return nb


def instructor_notebook(nb):
    """A copy of ``nb`` with everything in it: solutions, speaker notes, outputs."""
    _check_solutions_follow_stubs(nb)
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.metadata["course_edition"] = "instructor"
    return nb


EDITION_BUILDERS = {"student": student_notebook, "instructor": instructor_notebook}


def _check_target(out_dir: Path, source_dir: Path) -> dict:
    out_dir, source_dir = out_dir.resolve(), source_dir.resolve()
    if out_dir == source_dir or source_dir in out_dir.parents or out_dir in source_dir.parents:
        raise EditionError(f"refusing to write the edition into {out_dir}: it overlaps the source notebooks "
                           f"in {source_dir}. Choose another folder, e.g. editions/student.")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return {"files": []}
    marker = out_dir / MARKER
    if not marker.exists():
        raise EditionError(f"refusing to write into {out_dir}: it holds files this command did not create. "
                           "Choose an empty or new folder.")
    manifest = json.loads(marker.read_text())
    ours = set(manifest.get("files", [])) | {MARKER}
    strangers = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                       if p.is_file() and str(p.relative_to(out_dir)) not in ours)
    if strangers:
        raise EditionError(f"refusing to write into {out_dir}: these files were not made by this command "
                           f"and would be mixed with the edition: {', '.join(strangers[:5])}. Move them first.")
    return manifest


def _lesson_notebooks(source_dir: Path) -> list[Path]:
    notebooks = sorted(source_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise EditionError(f"no lesson notebooks (NN_name.ipynb) found in {source_dir}")
    return notebooks


def write_edition(edition: str, source_dir: str | Path = "notebooks",
                  out_dir: str | Path | None = None) -> list[Path]:
    """Write the ``edition`` ("student" or "instructor") of every notebook in ``source_dir`` into ``out_dir``
    (default ``editions/<edition>``); returns the files written."""
    if edition not in EDITION_BUILDERS:
        raise EditionError(f"unknown edition {edition!r}: choose one of {', '.join(EDITIONS)}")
    source_dir = Path(source_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path("editions") / edition
    notebooks = _lesson_notebooks(source_dir)
    manifest = _check_target(out_dir, source_dir)
    converted = []
    for path in notebooks:  # everything is converted before anything is written
        nb = nbformat.read(path, as_version=4)
        exercise_names(nb)  # validates the stubs
        converted.append((path.name, EDITION_BUILDERS[edition](nb)))
    for old in manifest["files"]:  # only what an earlier run of this command wrote
        (out_dir / old).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in converted:
        nbformat.write(nb, out_dir / name)
        written.append(out_dir / name)
    (out_dir / MARKER).write_text(json.dumps(
        {"edition": edition, "source": str(source_dir), "files": [p.name for p in written]}, indent=1))
    return written


def write_student_edition(source_dir: str | Path = "notebooks", out_dir: str | Path = "editions/student") -> list[Path]:
    """Write the student edition of every notebook in ``source_dir`` into ``out_dir``; returns the files."""
    return write_edition("student", source_dir, out_dir)


def write_editions(source_dir: str | Path = "notebooks", out_root: str | Path = "editions") -> dict[str, list[Path]]:
    """Both editions: ``out_root/student`` and ``out_root/instructor``."""
    out_root = Path(out_root)
    for edition in EDITIONS:  # check both folders before writing either
        _check_target(out_root / edition, Path(source_dir))
    return {edition: write_edition(edition, source_dir, out_root / edition) for edition in EDITIONS}


# ----------------------------------------------------------------------------------------------- slides
def _reveal_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("sphinx_revealjs")
    if spec is None:
        from course_lib.runtime.commands import clone_root, fix_command
        from course_lib.runtime.install import requirement

        pin = requirement("sphinx-revealjs")
        fix = fix_command("setup") if clone_root() else f"`python -m pip install {pin}`"
        raise EditionError(f"reveal.js comes from the package {pin}, which is not installed; run {fix}.")
    return Path(next(iter(spec.submodule_search_locations))) / "_static" / "revealjs"


# MathJax 3 comes from the PyPI package that also serves it to the course website; these are the parts the
# TeX-input, HTML-output component loads (the rest of the package is not needed).
MATHJAX_DIST, MATHJAX_DIR_IN_DIST = "sphinx-mathjax-offline", "sphinx-mathjax-offline/static/mathjax"
MATHJAX_PARTS = ["tex-chtml.js", "input", "output/chtml.js", "output/chtml", "ui", "a11y", "sre", "adaptors"]


def installed_mathjax() -> Path | None:
    """The folder of the installed MathJax 3 (with ``tex-chtml.js``), or None when the package is missing."""
    from importlib import metadata

    try:
        folder = Path(metadata.distribution(MATHJAX_DIST).locate_file(MATHJAX_DIR_IN_DIST))
    except metadata.PackageNotFoundError:
        return None
    return folder if (folder / "tex-chtml.js").is_file() else None


def copy_mathjax_parts(source: Path, target: Path) -> None:
    """Copy the parts of the MathJax 3 distribution in ``source`` that TeX-to-HTML pages load into ``target``."""
    if not (source / "tex-chtml.js").is_file():
        raise EditionError(f"{source} holds no tex-chtml.js: pass the folder of a MathJax 3 distribution")
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        elif (source / part).is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def write_slides(notebooks: list[str | Path], out_dir: str | Path = "slides",
                 mathjax_dir: str | Path | None = "installed", theme: str = "white",
                 geometry=None, timings: dict[str, dict[str, float]] | None = None,
                 guide: dict[str, dict] | None = None) -> list[Path]:
    """reveal.js decks of ``notebooks`` in ``out_dir``, with reveal.js and MathJax copied in (nothing is loaded
    from the web).

    ``mathjax_dir``: "installed" (the project's MathJax package; decks show raw TeX if it is missing), a folder
    holding a MathJax 3 distribution, or None for no math rendering. ``geometry``: a
    :class:`course_lib.publish.slides.Geometry` (default: a 1280x720 slide). ``timings``: minutes per ``##`` section for
    each lesson (``{"02_attention": {"3. Scaled dot-product attention, step by step": 20, ...}}``), shown by the
    pacing timer of the speaker view (press ``s``). ``guide``: each lesson's answer keys, misconceptions and live-coding
    moments (:func:`speaker_guide`), added to the speaker notes (:mod:`course_lib.publish.slide_notes`).
    """
    from importlib.resources import files

    from nbconvert import SlidesExporter
    from traitlets.config import Config

    from course_lib.publish.slides import NOTES_TAG, SKIP_TAG, Geometry, css_variables

    paths = [Path(p) for p in notebooks]
    if not paths:
        raise EditionError("no notebooks to make slides of: name at least one (e.g. the lessons NN_name.ipynb)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EditionError(f"no such notebook: {', '.join(missing)}")
    geometry = geometry or Geometry()
    reveal = _reveal_folder()  # before anything is written: a missing package stops it here
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(reveal, out_dir / "reveal.js", dirs_exist_ok=True)
    mathjax_url = ""
    if mathjax_dir == "installed":
        mathjax_dir = installed_mathjax()
    if mathjax_dir is not None:
        copy_mathjax_parts(Path(mathjax_dir), out_dir / "mathjax")
        mathjax_url = "mathjax/tex-chtml.js"
    template_dir = Path(str(files("course_lib").joinpath("resources")))
    config = Config({
        "TagRemovePreprocessor": {"enabled": True, "remove_cell_tags": {SKIP_TAG}},
        "RegexRemovePreprocessor": {"enabled": True, "patterns": [r"\s*\Z"]},  # empty cells
        "CoalesceStreamsPreprocessor": {"enabled": True},  # one stream per cell; \r-overwritten text dropped
    })
    exporter = SlidesExporter(
        config=config, extra_template_basedirs=[str(template_dir)], template_name="slides_template",
        reveal_url_prefix="reveal.js", reveal_theme=theme, reveal_number="c/t",
        reveal_width=str(geometry.width), reveal_height=str(geometry.height),
        require_js_url="", mathjax_url=mathjax_url, font_awesome_url="",
        exclude_input_prompt=True, exclude_output_prompt=True,
    )
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        resources = {"metadata": {"name": path.stem},
                     "course_slides": {"geometry": geometry, "css": css_variables(geometry),
                                       "notes_tag": NOTES_TAG,
                                       "timings": (timings or {}).get(path.stem, {}),
                                       "guide": (guide or {}).get(path.stem, {})}}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        target = out_dir / f"{path.stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written


def _instructor_notes(guide: str | Path) -> dict:
    """The instructor notes YAML as a dict; a clear error for a missing file or invalid YAML."""
    import yaml

    path = Path(guide)
    if not path.is_file():
        raise EditionError(f"no instructor notes at {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise EditionError(f"{path} is not valid YAML: {error}") from None


def section_budgets(guide: str | Path) -> dict[str, dict[str, float]]:
    """Minutes per ``##`` section of each lesson, from the instructor notes (``budget:`` of each lesson entry,
    keyed by notebook file name): ``{"02_attention": {"1. A sentence and the encoder": 5, ...}}``."""
    notes = _instructor_notes(guide)
    return {Path(name).stem: dict(entry["budget"]) for name, entry in notes.items()
            if isinstance(entry, dict) and isinstance(entry.get("budget"), dict)}


def speaker_guide(guide: str | Path) -> dict[str, dict[str, list]]:
    """What the speaker notes take from the instructor notes, per lesson (keyed by notebook file name): its
    ``answers``, ``misconceptions`` and ``live_coding`` entries."""
    notes = _instructor_notes(guide)
    return {Path(name).stem: {key: list(entry.get(key) or []) for key in ("answers", "misconceptions", "live_coding")}
            for name, entry in notes.items() if isinstance(entry, dict)}
