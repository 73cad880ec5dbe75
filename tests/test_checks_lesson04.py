"""Lesson 04 exercises: correct answers in other forms pass, wrong ones of many kinds fail for their reason.

The references are course_lib's causal_mask, masked_mean, top_k_filter and top_p_filter, which test_attention,
test_pooling and test_generation compare with PyTorch and transformers."""
from __future__ import annotations

import pytest
import torch

from course_lib.checks import check
from course_lib.generation import top_p_filter
from course_lib.pooling import masked_mean

INF = float("-inf")


def test_correct_answers_written_differently_also_pass():
    assert check("04.causal_mask", lambda T: torch.arange(T)[None, :] <= torch.arange(T)[:, None]).passed
    assert check("04.causal_mask", lambda T: torch.tril(torch.ones(T, T)).bool()).passed
    assert check("04.masked_mean", lambda h, m: torch.einsum("btd,bt->bd", h, m.float()) / m.sum(1, keepdim=True)
                 ).passed
    assert check("04.masked_mean", lambda h, m: torch.stack([row[keep.bool()].mean(0) for row, keep in zip(h, m)])
                 ).passed
    assert check("04.top_k_filter", lambda x, k: torch.where(
        x >= x.sort(dim=-1, descending=True).values[..., min(k, x.shape[-1]) - 1:min(k, x.shape[-1])], x, INF)
    ).passed

    def top_p_ascending(logits, p):  # the transformers way: drop the low tail whose mass stays within 1 - p
        sorted_logits, order = torch.sort(logits, dim=-1)
        drop_sorted = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1) <= 1 - p
        drop_sorted[..., -1] = False  # the most likely token always stays
        return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), INF)

    assert check("04.top_p_filter", top_p_ascending).passed


def test_wrong_answer_outside_the_known_mistakes_fails_without_a_hint():
    result = check("04.top_p_filter", lambda logits, p: logits)  # never filters anything
    assert not result.passed and result.hint is None and "p = 0.6" in result.message


def _mean_of_the_first_tokens(hidden, mask):
    lengths = mask.long().sum(dim=1).tolist()  # assumes the real tokens come first
    return torch.stack([row[:length].mean(dim=0) for row, length in zip(hidden, lengths)])


def _mean_in_place(hidden, mask):
    hidden *= mask.unsqueeze(-1)  # zeroes the caller's padding vectors
    return hidden.sum(dim=1) / mask.sum(dim=1, keepdim=True)


def _top_k_exactly_k(logits, k):
    k = min(k, logits.shape[-1])
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, torch.topk(logits, k).indices, True)
    return logits.masked_fill(~keep, INF)  # exactly k tokens: a tie with the k-th is dropped


def _top_k_in_place(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[..., -1:]
    logits[logits < kth] = INF  # fills the caller's logits
    return logits


def _top_p(probabilities=lambda sorted_logits: torch.softmax(sorted_logits, dim=-1), unsort="scatter"):
    """The nucleus filter with a pluggable probability step and way back to vocabulary order."""
    def top_p(logits, p):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = probabilities(sorted_logits)
        drop_sorted = probs.cumsum(dim=-1) - probs >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted) if unsort == "scatter" else drop_sorted.gather(-1, order)
        return logits.masked_fill(drop, INF)
    return top_p


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # 0/1 floats from torch.ones(T, T).tril()
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T).tril(), "expected a torch.bool tensor, got "
                 "torch.float32", id="float-tril"),
    # 0/1 integers
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T, dtype=torch.long).tril(), "expected a torch.bool "
                 "tensor, got torch.int64", id="long-tril"),
    # one token ahead visible (diagonal=1)
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T, dtype=torch.bool).tril(diagonal=1), "values differ",
                 id="one-ahead"),
    # each token sees only itself
    pytest.param("04.causal_mask", lambda T: torch.eye(T, dtype=torch.bool), "values differ", id="identity"),
    # a batch and head dimension added
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T, dtype=torch.bool).tril()[None, None],
                 "expected shape", id="extra-dims"),
    # the first `length` vectors averaged: right only when the padding is at the end
    pytest.param("04.masked_mean", _mean_of_the_first_tokens, "padded on the LEFT", id="lengths-slice"),
    # the caller's hidden states multiplied in place
    pytest.param("04.masked_mean", _mean_in_place, "changed its input hidden in place", id="in-place"),
    # the [CLS] vector instead of the mean
    pytest.param("04.masked_mean", lambda hidden, mask: hidden[:, 0], "values differ", id="cls"),
    # the padding masked to -inf and the maximum taken
    pytest.param("04.masked_mean", lambda hidden, mask: hidden.masked_fill(~mask.bool()[..., None], INF).amax(1),
                 "values differ", id="max-pool"),
    # the sum over the real tokens, not the mean
    pytest.param("04.masked_mean", lambda hidden, mask: (hidden * mask[..., None]).sum(dim=1), "values differ",
                 id="sum"),
    # exactly k tokens kept: a tie with the k-th logit is dropped
    pytest.param("04.top_k_filter", _top_k_exactly_k, "ties with the k-th largest", id="exactly-k"),
    # the caller's logits overwritten
    pytest.param("04.top_k_filter", _top_k_in_place, "changed its input logits in place", id="in-place"),
    # only the k kept values, not a full row
    pytest.param("04.top_k_filter", lambda logits, k: torch.topk(logits, min(k, logits.shape[-1])).values,
                 "expected shape", id="values-only"),
    # the threshold at index k of the sorted row: k + 1 tokens, and a crash when k is the vocabulary size
    pytest.param("04.top_k_filter", lambda logits, k: logits.masked_fill(logits < logits.sort(
        dim=-1, descending=True).values[..., k:k + 1], INF), "8 logits, k = 3", id="index-k"),
    # one k-th value for the whole batch
    pytest.param("04.top_k_filter", lambda logits, k: logits.masked_fill(logits < torch.topk(
        logits.flatten(), min(k, logits.numel())).values[-1], INF), "a batch of 2 rows", id="global-threshold"),
    # the cumulative sum of the logits themselves, no softmax
    pytest.param("04.top_p_filter", _top_p(probabilities=lambda sorted_logits: sorted_logits), "values differ",
                 id="no-softmax"),
    # back to vocabulary order with gather (the inverse permutation needs scatter)
    pytest.param("04.top_p_filter", _top_p(unsort="gather"), "values differ", id="gather"),
    # a threshold on each probability instead of on the cumulative sum
    pytest.param("04.top_p_filter", lambda logits, p: logits.masked_fill(torch.softmax(logits, dim=-1) < 1 - p, INF),
                 "values differ", id="probability-threshold"),
    # the caller's logits filled in place
    pytest.param("04.top_p_filter", lambda logits, p: logits.masked_fill_(top_p_filter(logits.clone(), p) == INF, INF),
                 "changed its input logits in place", id="in-place"),
    # the filter and the mask returned together
    pytest.param("04.top_p_filter", lambda logits, p: (top_p_filter(logits, p), top_p_filter(logits, p) == INF),
                 "expected a torch.Tensor, got tuple", id="tuple"),
]



def test_a_function_that_crashes_gets_a_message_not_an_exception():
    # torch.topk refuses a k larger than the row: the case with k = 10 over 6 tokens says so
    result = check("04.top_k_filter", lambda x, k: x.masked_fill(x < torch.topk(x, k).values[..., -1:], INF))
    assert not result.passed and "raised RuntimeError" in result.message and "k = 10" in result.message


# ------------------------------------------------------------------ references against the real libraries
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
