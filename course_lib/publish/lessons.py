"""The lesson notebooks outside a clone, and the setup cell at the top of each.

* :func:`write_lessons` (``course-lib notebooks DIR``) copies the notebooks that the installed course carries into
  a folder. A notebook already there that differs from the course's copy (a student's edits) is kept unless
  ``force=True``; one that is identical is left alone.
* :func:`with_setup_cell` makes :data:`course_lib.runtime.install.SETUP_CELL` the first code cell of a notebook
  (``scripts/insert_setup_cell.py`` applies it to ``notebooks/``).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.runtime.disk import current_umask
from course_lib.runtime.install import SETUP_CELL, course_file

LESSON_PATTERN = "[0-9][0-9]_*.ipynb"
SETUP_CELL_ID = "course-setup"


class LessonsError(RuntimeError):
    """The lessons cannot be written there (the message says why and what to do)."""


@dataclass
class LessonsReport:
    """What :func:`write_lessons` did with each notebook."""

    written: list[Path] = field(default_factory=list)  # new files
    replaced: list[Path] = field(default_factory=list)  # edited files overwritten (force=True only)
    unchanged: list[Path] = field(default_factory=list)  # already identical to the course's copy
    kept: list[Path] = field(default_factory=list)  # edited files left as they are

    def lines(self) -> list[str]:
        """One line per notebook, in course order: what happened to it."""
        labelled = ([(p, f"wrote     {p}") for p in self.written]
                    + [(p, f"replaced  {p} (--force: your edits are overwritten)") for p in self.replaced]
                    + [(p, f"unchanged {p}") for p in self.unchanged]
                    + [(p, f"kept      {p} (it differs from the course's copy: your edits?)") for p in self.kept])
        return [line for _, line in sorted(labelled, key=lambda item: item[0].name)]


def lesson_sources() -> list[Path]:
    """The course's lesson notebooks, in course order."""
    lessons = sorted(course_file("notebooks").glob(LESSON_PATTERN))
    if not lessons:
        raise LessonsError(f"this installation of course_lib carries no lesson notebook "
                           f"({course_file('notebooks')} is empty); reinstall the course.")
    return lessons


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so an interruption never leaves half a notebook."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600; a class's folder needs the umask's modes
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_lessons(target: str | os.PathLike, *, force: bool = False) -> LessonsReport:
    """Copy every lesson notebook into ``target`` (created if needed); never overwrite edits unless ``force``."""
    target = Path(target).expanduser()
    if target.exists() and not target.is_dir():
        raise LessonsError(f"{target} is a file, not a folder: name a folder for the lesson notebooks.")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LessonsError(f"cannot create the folder {target}: {error.strerror or error}.") from None
    sources = lesson_sources()
    in_the_way = [str(target / s.name) for s in sources if (target / s.name).is_dir()]
    if in_the_way:
        raise LessonsError(f"folders stand where lesson notebooks go: {', '.join(in_the_way)}; "
                           "move or rename them, then run this again.")
    report = LessonsReport()
    for source in sources:
        data, destination = source.read_bytes(), target / source.name
        if destination.exists():
            if destination.read_bytes() == data:
                report.unchanged.append(destination)
                continue
            if not force:
                report.kept.append(destination)
                continue
        existed = destination.exists()
        try:
            _write_atomically(destination, data)
        except OSError as error:
            raise LessonsError(f"cannot write {destination}: {error.strerror or error}.") from None
        (report.replaced if existed else report.written).append(destination)
    return report


def _is_setup_cell(cell) -> bool:
    first_line = SETUP_CELL.splitlines()[0]
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    return cell.get("cell_type") == "code" and (cell.get("id") == SETUP_CELL_ID or source.startswith(first_line))


def with_setup_cell(notebook) -> bool:
    """Make the setup cell the first code cell of ``notebook`` (an nbformat 4 notebook, changed in place).

    Idempotent: returns False when the notebook already starts its code with the current setup cell. An older
    setup cell is replaced (its outputs dropped). The cell has no outputs and is left out of the slides.
    """
    cells = notebook["cells"]
    code_positions = [i for i, cell in enumerate(cells) if cell.get("cell_type") == "code"]
    first = cells[code_positions[0]] if code_positions else None
    if first is not None and _is_setup_cell(first):
        source = "".join(first["source"]) if isinstance(first["source"], list) else first["source"]
        others = [i for i in code_positions[1:] if _is_setup_cell(cells[i])]
        if source == SETUP_CELL and first.get("id") == SETUP_CELL_ID and not others:
            return False
    cells[:] = [cell for cell in cells if not _is_setup_cell(cell)]
    position = next((i for i, cell in enumerate(cells) if cell.get("cell_type") == "code"), len(cells))
    cell = {"cell_type": "code", "execution_count": None, "id": SETUP_CELL_ID,
            "metadata": {"slideshow": {"slide_type": "skip"}}, "outputs": [], "source": SETUP_CELL}
    import nbformat  # here: `course-lib notebooks` does not need it, and it takes seconds to import

    cells.insert(position, nbformat.from_dict(cell))  # a NotebookNode, like the cells nbformat.read gives
    return True
