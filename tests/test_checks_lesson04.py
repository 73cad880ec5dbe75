"""Lesson 04 exercises: references agree with torch / transformers, and the checker explains each mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check
from course_lib.checks.lesson04 import causal_mask, masked_mean, top_k_filter, top_p_filter

INF = float("-inf")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_correct_answers_written_differently_also_pass():
    assert check("04.causal_mask", lambda T: torch.arange(T)[None, :] <= torch.arange(T)[:, None]).passed
    assert check("04.causal_mask", lambda T: torch.tril(torch.ones(T, T))).passed  # 0/1 floats read as booleans
    assert check("04.masked_mean", lambda h, m: torch.einsum("btd,bt->bd", h, m.float()) / m.sum(1, keepdim=True)
                 ).passed
    assert check("04.masked_mean", lambda h, m: torch.stack([row[keep.bool()].mean(0) for row, keep in zip(h, m)])
                 ).passed
    assert check("04.top_k_filter", lambda x, k: torch.where(
        x >= x.sort(dim=-1, descending=True).values[..., min(k, x.shape[-1]) - 1:min(k, x.shape[-1])], x, INF)
    ).passed


def test_wrong_answer_outside_the_known_mistakes_fails_without_a_hint():
    result = check("04.top_p_filter", lambda logits, p: logits)  # never filters anything
    assert not result.passed and result.hint is None and "p = 0.6" in result.message


def test_a_function_that_crashes_gets_a_message_not_an_exception():
    # torch.topk refuses a k larger than the row: the case with k = 10 over 6 tokens says so
    result = check("04.top_k_filter", lambda x, k: x.masked_fill(x < torch.topk(x, k).values[..., -1:], INF))
    assert not result.passed and "raised RuntimeError" in result.message and "k = 10" in result.message


# ------------------------------------------------------------------ references against the real libraries
def test_causal_mask_equals_torch_square_subsequent_mask_and_gives_is_causal_attention():
    for T in (1, 2, 5, 9):
        blocked = torch.nn.Transformer.generate_square_subsequent_mask(T) == INF  # True = may not attend
        assert torch.equal(causal_mask(T), ~blocked)
    q, k, v = _randn(2, 3, 6, 8, seed=1), _randn(2, 3, 6, 8, seed=2), _randn(2, 3, 6, 8, seed=3)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6)),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_masked_mean_of_a_padded_batch_equals_the_mean_of_the_sentence_alone(tokenizer, hf_encoder):
    sentence = "The jokes never land."
    alone = tokenizer(sentence, return_tensors="pt")
    batch = tokenizer([sentence, "A warm, funny and beautifully acted film with a great cast."], padding=True,
                      return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the sentence is padded
    with torch.no_grad():
        alone_hidden = hf_encoder(**alone).last_hidden_state  # (1, T0, D)
        batch_hidden = hf_encoder(**batch).last_hidden_state  # (2, T, D)
    pooled = masked_mean(batch_hidden, batch["attention_mask"])
    torch.testing.assert_close(pooled[0], alone_hidden[0].mean(0), atol=1e-5, rtol=0)
    assert (batch_hidden[0].mean(0) - alone_hidden[0].mean(0)).abs().max() > 1e-2  # the naive mean is off
    from course_lib.encoder import masked_mean as course_masked_mean

    torch.testing.assert_close(pooled, course_masked_mean(batch_hidden, batch["attention_mask"]))


@pytest.mark.parametrize("k", [1, 4, 17, 60])
def test_top_k_filter_matches_transformers_warper(k):
    from transformers.generation.logits_process import TopKLogitsWarper

    logits = _randn(5, 60, seed=k)
    expected = TopKLogitsWarper(top_k=k)(torch.zeros(5, 1, dtype=torch.long), logits.clone())
    assert torch.equal(top_k_filter(logits, k), expected)


@pytest.mark.parametrize("p", [0.02, 0.5, 0.8, 0.95])
def test_top_p_filter_matches_transformers_warper(p):
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = _randn(5, 60, seed=int(p * 100)) * 3
    expected = TopPLogitsWarper(top_p=p)(torch.zeros(5, 1, dtype=torch.long), logits.clone())
    assert torch.equal(top_p_filter(logits, p), expected)


def test_filters_equal_the_course_generation_module():
    from course_lib import generation

    logits = _randn(4, 3, 30, seed=7) * 2
    assert torch.equal(top_k_filter(logits, 6), generation.top_k_filter(logits, 6))
    assert torch.equal(top_p_filter(logits, 0.7), generation.top_p_filter(logits, 0.7))


# ------------------------------------------------------------------ clear errors on bad input
def test_bad_inputs_get_errors_that_name_what_was_expected():
    with pytest.raises(ValueError, match="T must be a positive integer .* got 0"):
        causal_mask(0)
    with pytest.raises(ValueError, match=r"hidden states of shape \(batch, tokens, dim\), got \(3, 4\)"):
        masked_mean(torch.zeros(3, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"attention_mask of shape \(2, 5\) .* got \(2, 4\)"):
        masked_mean(torch.zeros(2, 5, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        top_k_filter(torch.zeros(5), 0)
    with pytest.raises(ValueError, match=r"p must be a number in \(0, 1\], got 1.5"):
        top_p_filter(torch.zeros(5), 1.5)
    with pytest.raises(ValueError, match=r"float logits of shape \(\.\.\., vocab\), got \(3,\)"):
        top_k_filter(torch.tensor([1, 2, 3]), 2)
