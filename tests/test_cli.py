"""The doctor/prepare command as an instructor runs it before class."""
import os
import subprocess
import sys

import pytest

from course_lib import assets


def _run(*args, **env):
    return subprocess.run([sys.executable, "-m", "course_lib", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


@pytest.mark.slow
def test_doctor_lists_every_asset_as_found():
    result = _run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("encoder", "decoder (GGUF)", "decoder (cache)", "gpt2 ranks", "movie reviews", "hamlet",
                 "tweets", "sentiment model"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(name))
        assert "  ok  " in line, line
    assert "8/8 assets ok" in result.stdout


def test_doctor_reports_missing_caches_and_exits_nonzero(tmp_path):
    result = _run("doctor", COURSE_CACHE_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "make prepare" in result.stdout
    assert "encoder " in result.stdout


def test_a_wrong_profile_name_stops_the_command_with_the_valid_names():
    result = _run("doctor", COURSE_PROFILE="turbo")
    assert result.returncode == 2
    assert "'turbo'" in result.stderr and "quick, full" in result.stderr


@pytest.mark.parametrize("steps", ["0", "-1", "two"])
def test_sentiment_steps_must_be_a_positive_whole_number(steps):
    result = _run("prepare", "--sentiment-steps", steps)
    assert result.returncode == 2
    assert "--sentiment-steps" in result.stderr and "positive whole number" in result.stderr
