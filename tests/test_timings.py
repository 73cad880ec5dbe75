"""The timing table is generated, never hand-edited: docs/timings.md and the table in README.md match
docs/timings.json, and a README without the markers is refused with a message naming them. Each lesson's
run-time line agrees with its measured time, and names no GPU time that was never measured."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import timings
from kernel_env import course_notebooks
from timings import load_timings

ROOT = Path(__file__).resolve().parents[1]
RUN_TIME = re.compile(r"\*\*Run time \(quick profile, 2-core CPU\):\*\* about (\d+) (second|seconds|minute|minutes)\b")


def test_timings_page_matches_the_recorded_timings():
    assert (ROOT / "docs" / "timings.md").read_text() == timings.render(load_timings()), \
        "docs/timings.md is out of date: run `make timings`"


def test_readme_shows_the_current_timing_table_for_every_lesson():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    current = timings.table(timings.render(load_timings()))
    assert timings.readme_with_table(readme, timings.render(load_timings())) == readme, \
        "README.md's timing table is out of date: run `make timings`"
    for notebook in course_notebooks():
        assert f"`{notebook.name}`" in current, f"{notebook.name} has no recorded run time: run `make execute`"


def test_readme_without_markers_is_refused_with_their_names():
    with pytest.raises(ValueError, match="timings:start"):
        timings.readme_with_table("# A README\n", "| a | b |\n")


def stated_quick_seconds(notebook: Path) -> int:
    """The quick-profile run time that the lesson's first cell states, in seconds."""
    first = nbformat.read(notebook, as_version=4).cells[0].source
    found = RUN_TIME.search(first)
    assert found, (f"{notebook.name}: the first cell needs a line '**Run time (quick profile, 2-core CPU):** about "
                   "N seconds|minutes ...' taken from docs/timings.md")
    return int(found.group(1)) * (60 if found.group(2).startswith("minute") else 1)


@pytest.mark.parametrize("notebook", course_notebooks(), ids=lambda path: path.stem)
def test_each_lesson_states_its_measured_run_time(notebook):
    measured = load_timings()["notebooks"].get(notebook.name, {}).get("quick", {}).get("wall_s")
    assert measured is not None, f"{notebook.name} has no recorded quick run: run `make execute`"
    stated = stated_quick_seconds(notebook)
    assert 0.6 * measured <= stated <= 1.6 * measured + 5, \
        f"{notebook.name} says about {stated} s but took {measured:.0f} s (docs/timings.json): update its first cell"


@pytest.mark.parametrize("notebook", course_notebooks(), ids=lambda path: path.stem)
def test_no_lesson_quotes_a_gpu_time_that_was_never_measured(notebook):
    first = nbformat.read(notebook, as_version=4).cells[0].source
    if "full-gpu" not in load_timings()["notebooks"].get(notebook.name, {}):
        assert not re.search(r"GPU[^.]*\b\d+ (s|seconds?|min|minutes?)\b", first), \
            f"{notebook.name} states a GPU run time, but no GPU run was recorded"
