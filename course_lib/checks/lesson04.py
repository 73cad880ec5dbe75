"""Exercises of lesson 04 (masking and decoders), the warm-ups: the causal mask, mean pooling that ignores padding,
and the top-k and top-p (nucleus) filters used when sampling from a language model. The core exercises (the
training step, the sampling loop) and the stretch one are in :mod:`course_lib.checks.lesson04_decoder`.

The references are the course's tested functions: :func:`course_lib.attention.causal_mask`,
:func:`course_lib.pooling.masked_mean`, :func:`course_lib.generation.top_k_filter` and ``top_p_filter``."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from course_lib.attention import causal_mask
from course_lib.checks import Case, Exercise, Mistake, randn, register
from course_lib.generation import top_k_filter, top_p_filter
from course_lib.pooling import masked_mean

INF = float("-inf")


# ----------------------------------------------------------------------------------------------- 04.causal_mask
def _upper_triangle(T):
    return torch.ones(T, T, dtype=torch.bool).triu()


def _without_diagonal(T):
    return torch.ones(T, T, dtype=torch.bool).tril(diagonal=-1)


def _additive(T):
    return torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), INF)


def _blocked_positions(T):
    return ~torch.ones(T, T, dtype=torch.bool).tril()


register(Exercise("04.causal_mask", "the causal mask", causal_mask, cases=[
        Case((4,), label="T = 4 tokens"),
        Case((1,), label="a single token (T = 1)"),
        Case((2,), label="T = 2 tokens"),
        Case((7,), label="T = 7 tokens"),
        Case((3,), label="T = 3 tokens"),
    ],
    mistakes=[
        Mistake(_upper_triangle,
                "use the lower triangle, torch.tril: row i is query i, and it may see the keys 0..i (columns on "
                "and left of the diagonal); torch.triu lets every token see the tokens after it."),
        Mistake(_without_diagonal,
                "keep the diagonal: each token may attend to itself (tril with its default diagonal=0). With "
                "diagonal=-1 the first token sees nothing, and its softmax row becomes NaN."),
        Mistake(_additive,
                "return the boolean mask (True = may attend), not the additive one: the 0 / -inf form is what "
                "masked_fill makes of it in the next step."),
        Mistake(_blocked_positions,
                "the mask is True where attention is *allowed* (PyTorch's boolean convention); you returned the "
                "blocked positions. Drop the ~, or build it with tril."),
    ],
    level="warm-up", minutes=3,
))


# ----------------------------------------------------------------------------------------------- 04.masked_mean
def _mean_with_padding(hidden, mask):
    return hidden.mean(dim=1)


def _divided_by_length(hidden, mask):
    return (hidden * mask.to(hidden.dtype).unsqueeze(-1)).sum(dim=1) / hidden.shape[1]


def _padding_in_the_sum(hidden, mask):
    return hidden.sum(dim=1) / mask.to(hidden.dtype).sum(dim=1, keepdim=True)


def _over_features(hidden, mask):
    return (hidden * mask.to(hidden.dtype).unsqueeze(-1)).mean(dim=-1)


def _padded_batch(seed: int, lengths: list[int], T: int, D: int, as_bool: bool = False,
                  left: bool = False) -> tuple[Tensor, Tensor]:
    """Random token vectors (B, T, D), padding included, and the mask of texts of ``lengths`` padded to T."""
    hidden = randn(len(lengths), T, D, seed=seed)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T), padding on the right
    mask = mask.flip(dims=[1]) if left else mask  # padding on the left, as decoders pad
    return hidden, (mask if as_bool else mask.long())


register(Exercise("04.masked_mean", "mean pooling that ignores padding", masked_mean, cases=[
        Case(_padded_batch(1, [5, 3], T=5, D=4), label="2 texts of 5 and 3 tokens, padded to 5, dim 4"),
        Case(_padded_batch(2, [3], T=3, D=2), label="one text, no padding"),
        Case(_padded_batch(3, [6, 1, 4], T=6, D=8, as_bool=True),
             label="3 texts of 6, 1 and 4 tokens with a boolean mask"),
        Case(_padded_batch(4, [7, 2], T=7, D=384), label="MiniLM's width 384, texts of 7 and 2 tokens"),
        Case(_padded_batch(5, [2, 5, 4], T=5, D=3, left=True),
             label="3 texts padded on the LEFT (as decoders pad): the real tokens are the last ones"),
    ],
    mistakes=[
        Mistake(_mean_with_padding,
                "hidden.mean(dim=1) averages the [PAD] vectors too: multiply by the mask, unsqueezed to (B, T, 1), "
                "before summing, and divide by the number of real tokens."),
        Mistake(_divided_by_length,
                "divide by the number of real tokens of each text, mask.sum(dim=1, keepdim=True), not by the "
                "padded length T: a short text would get a smaller vector just for being short."),
        Mistake(_padding_in_the_sum,
                "zero the padding vectors before summing, (hidden * mask.unsqueeze(-1)).sum(dim=1): your count "
                "is right, but the sum still includes the [PAD] positions."),
        Mistake(_over_features,
                "pool over the tokens (dim=1), so that one (B, D) vector per text remains; dim=-1 averages the "
                "features of each token instead."),
    ],
    level="warm-up", minutes=5,
))


# ----------------------------------------------------------------------------------------------- 04.top_k_filter
def _top_k_zeroed(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def _top_k_smallest(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1, largest=False).values[..., -1:]
    return logits.masked_fill(logits > kth, INF)


def _top_k_drops_the_kth(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, INF)


def _top_k_probabilities(logits, k):
    probs = torch.softmax(logits, dim=-1)
    kth = torch.topk(probs, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return probs.masked_fill(probs < kth, 0.0)


def _with_minus_inf(seed: int) -> Tensor:
    logits = randn(1, 7, seed=seed)
    logits[0, [1, 4]] = INF  # two tokens already removed by an earlier filter
    return logits


register(Exercise("04.top_k_filter", "the top-k filter", top_k_filter, cases=[
        Case((torch.tensor([1.0, 3.0, -0.5, 2.0, 0.0, 2.5, -2.0, 1.5]), 3), label="8 logits, k = 3"),
        Case((randn(2, 10, seed=20), 1), label="a batch of 2 rows, k = 1 (greedy)"),
        Case((randn(3, 6, seed=21), 10), label="k = 10 is more than the 6 tokens of the vocabulary"),
        Case((_with_minus_inf(22), 2), label="logits where two tokens are already -inf, k = 2"),
        Case((randn(2, 3, 50, seed=23) * 3, 5), label="logits of shape (2, 3, 50), k = 5"),
        Case((torch.tensor([[1.0, 2.0, 0.5, 2.0, 2.0], [3.0, 1.0, 1.0, 0.0, 1.0]]), 2),
             label="ties with the k-th largest logit, k = 2: every tied token stays"),
        Case((randn(2, 4, seed=24), 4), label="k = 4 equal to the vocabulary of 4: nothing is dropped"),
    ],
    mistakes=[
        Mistake(_top_k_zeroed,
                "set the dropped logits to float('-inf'), not 0: a logit of 0 still gets a probability "
                "exp(0) / Z after the softmax; only -inf gives exactly 0."),
        Mistake(_top_k_smallest,
                "keep the k *largest* logits (torch.topk's default, largest=True); you kept the k least likely "
                "tokens."),
        Mistake(_top_k_drops_the_kth,
                "compare with <, not <=: the k-th largest logit itself is one of the k tokens to keep (you kept "
                "k - 1)."),
        Mistake(_top_k_probabilities,
                "return filtered *logits* (-inf for dropped tokens), not probabilities: the softmax comes after "
                "the filter, so that the kept tokens' probabilities sum to 1."),
    ],
    level="warm-up", minutes=5,
))


# ----------------------------------------------------------------------------------------------- 04.top_p_filter
def _sorted_mass(logits):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return sorted_logits, order, probs, probs.cumsum(dim=-1)


def _top_p_without_the_crossing_token(logits, p):
    _, order, _, cumulative = _sorted_mass(logits)
    drop = cumulative >= p
    return logits.masked_fill(drop.scatter(-1, order, drop), INF)


def _top_p_unsorted(logits, p):
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs.cumsum(dim=-1) - probs >= p, INF)


def _top_p_left_sorted(logits, p):
    sorted_logits, _, probs, cumulative = _sorted_mass(logits)
    return sorted_logits.masked_fill(cumulative - probs >= p, INF)


def _top_p_probabilities(logits, p):
    probs = torch.softmax(logits, dim=-1)
    return probs.masked_fill(top_p_filter(logits, p) == INF, 0.0)


def _logits_of(*probs: float) -> Tensor:
    return torch.tensor([math.log(q) for q in probs]) + 1.5  # softmax of these logits gives back ``probs``


_FIVE = _logits_of(0.15, 0.5, 0.05, 0.2, 0.1)  # sorted: 0.5, 0.2, 0.15, 0.1, 0.05

register(Exercise("04.top_p_filter", "the top-p (nucleus) filter", top_p_filter, cases=[
        Case((_FIVE, 0.6), label="probabilities (0.15, 0.5, 0.05, 0.2, 0.1), p = 0.6: keep 0.5 and 0.2"),
        Case((_FIVE, 0.9), label="the same 5 tokens, p = 0.9"),
        Case((_FIVE, 0.01), label="a tiny p = 0.01: only the most likely token stays"),
        Case((_FIVE, 1.0), label="p = 1.0: every token stays"),
        Case((randn(3, 20, seed=30) * 2, 0.8), label="a batch of 3 rows of 20 logits, p = 0.8"),
        Case((_with_minus_inf(31), 0.7), label="logits where two tokens are already -inf, p = 0.7"),
        Case((torch.tensor([[0.0, 0.0, 0.0, 0.0, 3.0]]), 0.5), label="the most likely token is the LAST one, p = 0.5"),
        Case((torch.tensor([2.5]), 0.3), label="a vocabulary of one token: it always stays"),
    ],
    mistakes=[
        Mistake(_top_p_without_the_crossing_token,
                "keep the token that crosses p: a token stays while the probability of the tokens *before* it is "
                "below p, (cumsum - probs) < p. With cumsum < p the token that reaches p is dropped, and a small p "
                "drops every token."),
        Mistake(_top_p_unsorted,
                "sort the tokens by probability first, torch.sort(logits, descending=True): the nucleus is the "
                "*most likely* tokens, and a cumulative sum in vocabulary order adds them up in an arbitrary order."),
        Mistake(_top_p_left_sorted,
                "put the result back in vocabulary order: you returned the sorted logits. Scatter the drop mask "
                "back with the sort indices, drop.scatter(-1, order, drop), and fill the original logits."),
        Mistake(_top_p_probabilities,
                "return filtered *logits* (-inf for dropped tokens), not probabilities: the softmax comes after "
                "the filter, so that the kept tokens' probabilities sum to 1."),
    ],
    level="warm-up", minutes=10,
))
