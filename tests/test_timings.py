"""The timing table is generated, never hand-edited: docs/timings.md and the table in README.md match
docs/timings.json, and a README without the markers is refused with a message naming them."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

import timings
from kernel_env import course_notebooks
from timings import load_timings


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
