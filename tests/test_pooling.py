"""Pooling: one vector per text, padding ignored, and one clear error for a text with no real token."""
from __future__ import annotations

import pytest
import torch

from course_lib.pooling import cls_pool, masked_mean

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations


def test_mean_pool_ignores_whatever_sits_in_the_padding():
    hidden = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))  # (B, T, D)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    noisy = hidden.clone()
    noisy[1, 2:] = 1e6  # padding positions: any value must be ignored
    torch.testing.assert_close(masked_mean(noisy, mask), masked_mean(hidden, mask))
    torch.testing.assert_close(masked_mean(hidden, mask)[1], hidden[1, :2].mean(dim=0))


def test_cls_pool_is_the_first_token_of_every_text():
    hidden = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cls_pool(hidden), hidden[:, 0])


def test_pooling_rejects_bad_shapes_and_empty_masks():
    hidden = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"\(batch, tokens, hidden\), got \(4, 3\)"):
        masked_mean(torch.zeros(4, 3), torch.ones(4))
    with pytest.raises(ValueError, match=r"attention_mask of shape \(batch, tokens\) = \(2, 4\), got \(2, 5\)"):
        masked_mean(hidden, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        masked_mean(hidden, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))


def test_masked_mean_refuses_a_float_mask_instead_of_weighting_by_it():
    hidden = torch.ones(1, 3, 2)
    with pytest.raises(TypeError, match="integers or booleans"):
        masked_mean(hidden, torch.tensor([[1.0, 0.5, 0.0]]))


def test_boolean_and_integer_masks_give_the_same_mean():
    hidden = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    torch.testing.assert_close(masked_mean(hidden, mask.bool()), masked_mean(hidden, mask))
    torch.testing.assert_close(masked_mean(hidden, mask)[0], hidden[0, 0])
