"""Profiles, device choice and seeding."""
import os
import random
import re

import numpy as np
import pytest
import torch

from course_lib import settings
from course_lib.runtime.errors import CourseInputError


def test_default_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert settings.profile_name() == ("full" if torch.cuda.is_available() else "quick")


@pytest.mark.parametrize("value,expected", [("quick", "quick"), ("FULL", "full"), (" quick ", "quick")])
def test_profile_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_PROFILE", value)
    assert settings.get_profile().name == expected


@pytest.mark.parametrize("bad", ["fast", "qiuck", "gpu"])
def test_unknown_profile_is_rejected_with_the_valid_names(monkeypatch, bad):
    monkeypatch.setenv("COURSE_PROFILE", bad)
    with pytest.raises(settings.ProfileError) as caught:
        settings.get_profile()
    assert repr(bad) in str(caught.value) and "quick" in str(caught.value) and "full" in str(caught.value)


def test_quick_profile_caps_each_split_and_full_keeps_every_row():
    quick, full = settings.get_profile("quick"), settings.get_profile("full")
    assert quick.rows("train", 10_000) == 3000 and quick.rows("test", 200) == 200
    assert full.rows("train", 10_000) == 10_000
    with pytest.raises(ValueError, match="no size for a split named 'dev'"):
        quick.rows("dev", 100)


def test_seed_everything_makes_python_numpy_and_torch_repeat():
    def draw():
        settings.seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(3)

    a, b = draw(), draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_asking_for_cuda_without_it_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        settings.get_device("cuda")
    assert settings.get_device().type == "cpu"


# ----------------------------------------------------------------------------------------------- bad inputs
def _rng_state():
    return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state(), os.environ.get(
        "PYTHONHASHSEED")


@pytest.mark.parametrize("value", ["gpu", "cuda:99", " ", "meta", "cpu:0", "cuda:-1", "CUDA:x"])
def test_an_unknown_course_device_names_the_variable_the_value_and_the_choices(monkeypatch, value):
    monkeypatch.setenv("COURSE_DEVICE", value)
    before = dict(os.environ)
    with pytest.raises(CourseInputError, match=rf"^COURSE_DEVICE={re.escape(repr(value))} .*: set it to a device "
                                                r"this machine has \(cpu[^)]*\) .*cpu, cuda, cuda:N .*mps"):
        settings.get_device()
    assert dict(os.environ) == before


@pytest.mark.parametrize("prefer", [0, 1.5, ["cuda"], "gpu", torch.device("meta")])
def test_a_bad_prefer_argument_is_refused_by_name(prefer):
    with pytest.raises(CourseInputError, match=r"^prefer"):
        settings.get_device(prefer)


@pytest.mark.parametrize("value,expected", [("cpu", "cpu"), (" CPU ", "cpu"), ("", None)])
def test_good_device_names_still_work(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_DEVICE", value)
    assert settings.get_device().type == (expected or ("cuda" if torch.cuda.is_available() else "cpu"))
    assert settings.get_device(torch.device("cpu")).type == "cpu"


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", None, True, float("nan")])
def test_seed_everything_refuses_a_seed_numpy_cannot_take_and_seeds_nothing(seed):
    before = _rng_state()
    with pytest.raises(CourseInputError, match=r"^seed must be (a number in \[0, 4294967295\]|an integer >= 0)"):
        settings.seed_everything(seed)
    after = _rng_state()
    assert after[:2] == before[:2] and torch.equal(after[2], before[2]) and after[3] == before[3]


@pytest.mark.parametrize("value", [3, ["quick"], b"quick"])
def test_a_profile_that_is_not_a_name_is_a_profile_error(value):
    with pytest.raises(settings.ProfileError, match=r"must be a name \(quick, full\) or None"):
        settings.get_profile(value)
    assert issubclass(settings.ProfileError, CourseInputError) and issubclass(settings.ProfileError, ValueError)


@pytest.mark.parametrize("available", [-1, 2.5, "100", None])
def test_profile_rows_needs_a_row_count(available):
    for profile in ("quick", "full"):
        with pytest.raises(CourseInputError, match=r"^available must be an integer >= 0"):
            settings.get_profile(profile).rows("train", available)


def test_on_a_machine_with_two_gpus_the_message_lists_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("COURSE_DEVICE", "cuda:1")
    assert settings.get_device() == torch.device("cuda:1")
    monkeypatch.setenv("COURSE_DEVICE", "cuda:2")
    with pytest.raises(CourseInputError, match=r"^COURSE_DEVICE='cuda:2' asks for a GPU this machine lacks \(it has 2\)"
                                               r": set it to a device this machine has \(cpu, cuda, cuda:0, cuda:1"):
        settings.get_device()
