"""Profiles, device choice and seeding."""
import random

import numpy as np
import pytest
import torch

from course_lib import settings


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
