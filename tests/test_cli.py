"""The doctor/prepare command as an instructor runs it before class."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.runtime import cli, doctor
from course_lib.runtime.errors import CourseInputError


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


# ----------------------------------------------------------------------------------------------- bad inputs
def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("variable,value,message", [
    ("COURSE_DEVICE", "gpu", r"COURSE_DEVICE='gpu' is not a device name"),
    ("COURSE_DEVICE", "cuda:99", r"COURSE_DEVICE='cuda:99' asks for (CUDA|a GPU this machine lacks)"),
    ("COURSE_DEVICE", " ", r"COURSE_DEVICE=' ' is not a device name"),
    ("COURSE_PROFILE", "turbo", r"Unknown course profile 'turbo': use one of quick, full"),
])
@pytest.mark.parametrize("command", ["doctor", "prepare"])
def test_a_bad_environment_stops_doctor_and_prepare_in_one_line_before_any_work(tmp_path, command, variable, value,
                                                                                message):
    result = _run(command, COURSE_CACHE_DIR=str(tmp_path / "cache"), **{variable: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.fullmatch(rf"error: {message}.*\n", result.stderr), result.stderr
    if variable == "COURSE_DEVICE":
        assert re.search(r"set it to a device this machine has \(cpu[^)]*\) .*cpu, cuda, cuda:N .*mps", result.stderr)
    assert result.stdout == ""  # not even the environment line: nothing was loaded, built or checked
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("args,message", [
    (["editions", "--source", "{tmp}", "--out", "{file}"], r"--out '\S+/file' is a file: name a folder"),
    (["editions", "--source", "{file}"], r"--source '\S+/file' is a file: name the folder of the lesson notebooks "
                                         r"with --source DIR; this clone's lessons are in \S+/notebooks$"),
    (["editions", "--source", "{tmp}/missing", "--out", "{tmp}/out"], r"--source '\S+/missing' does not exist"),
    (["slides", "--out", "{file}"], r"--out '\S+/file' is a file: name a folder"),
    (["slides", "--mathjax", "{tmp}/missing", "--out", "{tmp}/out"], r"--mathjax '\S+/missing' does not exist"),
    (["slides", "--mathjax", "{tmp}", "--out", "{tmp}/out"], r"--mathjax '\S+' holds no tex-chtml\.js"),
    (["notebooks", ""], r"the notebooks' folder is an empty name: name one"),
    (["notebooks", "  "], r"the notebooks' folder is an empty name: name one"),
])
def test_bad_folders_stop_the_writing_commands_with_status_2_and_write_nothing(tmp_path, args, message):
    (tmp_path / "file").write_text("mine")
    argv = [arg.format(file=tmp_path / "file", tmp=tmp_path) for arg in args]
    result = subprocess.run([sys.executable, "-m", "course_lib", *argv], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and re.search(message, result.stderr), result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("course-lib: error: ")
    assert files_in(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "mine"


def test_main_needs_a_list_of_strings():
    with pytest.raises(CourseInputError, match=r"^argv must be a list of strings"):
        cli.main("doctor")


@pytest.fixture
def no_checks(monkeypatch):
    """Fail the test if the doctor starts checking assets."""
    def refuse(*args, **kwargs):
        raise AssertionError("an asset check started")

    monkeypatch.setattr(doctor, "check_asset", refuse)


@pytest.mark.parametrize("arguments,message", [
    (dict(build_caches="yes"), r"^build_caches must be one of True, False; got 'yes'$"),
    (dict(build_caches=None), r"^build_caches must be one of True, False; got None$"),
    (dict(sentiment_steps=0), r"^sentiment_steps must be an integer >= 1, got 0$"),
    (dict(sentiment_steps=-3), r"^sentiment_steps must be an integer >= 1, got -3$"),
    (dict(sentiment_steps="5"), r"^sentiment_steps must be an integer >= 1, got '5'$"),
])
def test_doctor_reports_checks_its_arguments_before_any_work(no_checks, arguments, message):
    with pytest.raises(CourseInputError, match=message):
        doctor.doctor_reports(**arguments)


@pytest.mark.parametrize("arguments,message", [
    (("", "pkg", Path, print), r"^name and package must be strings"),
    ((None, "pkg", Path, print), r"^name and package must be strings"),
    (("asset", 3, Path, print), r"^name and package must be strings"),
    (("asset", "pkg", "/some/path", print), r"^locate and load must be functions"),
    (("asset", "pkg", Path, None), r"^locate and load must be functions"),
])
def test_check_asset_needs_names_and_functions(arguments, message):
    with pytest.raises(CourseInputError, match=message):
        doctor.check_asset(*arguments)


@pytest.mark.parametrize("reports", [None, "encoder ok", [1, 2], (doctor.AssetReport("a", "p", "-", None, None, "ok"),
                                                                 "x")])
def test_print_table_needs_reports(capsys, reports):
    with pytest.raises(CourseInputError, match=r"^reports must be a list of AssetReport"):
        doctor.print_table(reports)
    assert capsys.readouterr().out == ""
