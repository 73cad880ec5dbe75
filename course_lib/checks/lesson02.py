"""Exercises of lesson 02 (attention from scratch): embedding lookup, scaled dot-product attention, and the
reshapes of multi-head attention (split into heads, merge them back).

``02.scaled_dot_product`` is checked against the course's own attention
(:func:`course_lib.attention.scaled_dot_product_attention`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.attention import scaled_dot_product_attention
from course_lib.checks import Case, Exercise, Mistake, randn, register


def _shape(value) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


# ----------------------------------------------------------------------------------------------- 02.embedding_lookup
def embedding_lookup(ids: Tensor, weight: Tensor) -> Tensor:
    """What ``nn.Embedding`` computes, as a matrix product: one-hot rows (..., V) times the (V, D) weight."""
    if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.dtype == torch.bool or ids.dim() == 0:
        raise TypeError(f"expected integer token ids of shape (tokens,) or (batch, tokens), got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {_shape(ids)}")
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"expected a float weight of shape (vocabulary, dim), got {_shape(weight)}")
    vocab = weight.shape[0]
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}) for a vocabulary of {vocab}, "
                         f"got ids from {ids.min().item()} to {ids.max().item()}")
    one_hot = F.one_hot(ids, num_classes=vocab).to(weight.dtype)  # (..., V): a single 1 per row
    return one_hot @ weight  # (..., V) @ (V, D) -> (..., D): row ``id`` of the weight


def _lookup_transposed(ids, weight):  # (D, V) @ (..., V, T) -> (..., D, T)
    return weight.T @ F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype).transpose(-2, -1)


def _lookup_linear_convention(ids, weight):  # the (out, in) layout of nn.Linear; runs only when V == D
    return F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype) @ weight.T


register(Exercise("02.embedding_lookup", "an embedding lookup as one-hot x matrix", embedding_lookup, cases=[
        Case((torch.tensor([2, 0, 4, 4]), randn(5, 5, seed=1)), label="a toy vocabulary of 5 tokens, 5-dim vectors"),
        Case((torch.tensor([7, 1, 3]), randn(10, 4, seed=2)), label="3 token ids, vocabulary 10, dim 4"),
        Case((torch.tensor([[5, 0, 9], [2, 2, 8]]), randn(12, 3, seed=3)),
             label="a batch of 2 texts x 3 tokens, vocabulary 12 (the largest id 11 is not used)"),
        Case((torch.tensor([101, 7592, 102]), randn(30522, 8, seed=4)),
             label="[CLS] hello [SEP] with MiniLM's vocabulary of 30,522"),
        Case((torch.tensor([[3]]), randn(4, 6, seed=5)), label="one text of one token, the last id of the vocabulary"),
        Case((torch.tensor([1, 0, 2]), randn(3, 2, seed=6).double()), label="a float64 weight (keep its dtype)"),
    ],
    mistakes=[
        Mistake(_lookup_transposed,
                "one_hot @ weight multiplies (tokens, V) by (V, D) and gives one row per token, (tokens, D); "
                "weight.T @ one_hot.T gives the transpose, (D, tokens)."),
        Mistake(_lookup_linear_convention,
                "do not transpose the weight: nn.Embedding stores one row per token, (num_embeddings, "
                "embedding_dim), unlike nn.Linear, which stores (out_features, in_features) and computes x @ W.T."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.scaled_dot_product
# The reference is the course's attention, course_lib.attention.scaled_dot_product_attention, without a mask.
def _attend(scores: Tensor, value: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    weights = torch.softmax(scores, dim=dim)
    return weights @ value, weights


def _qk(query, key):
    return query @ key.transpose(-2, -1)


register(Exercise("02.scaled_dot_product", "scaled dot-product attention", scaled_dot_product_attention, cases=[
        Case((randn(1, 4, 4, seed=10), randn(1, 4, 4, seed=11), randn(1, 4, 4, seed=12)),
             label="one text: 4 tokens with 4-dim queries, keys and values"),
        Case((randn(2, 5, 8, seed=13), randn(2, 5, 8, seed=14), randn(2, 5, 8, seed=15)),
             label="a batch of 2 texts, 5 tokens, dim 8"),
        Case((randn(2, 3, 16, seed=16), randn(2, 6, 16, seed=17), randn(2, 6, 10, seed=18)),
             label="3 queries attending to 6 keys (values of dim 10)"),
        Case((randn(2, 3, 4, 64, seed=19), randn(2, 3, 4, 64, seed=20), randn(2, 3, 4, 64, seed=21)),
             label="(batch, heads, tokens, dim) = (2, 3, 4, 64)"),
        Case((randn(5, 8, seed=22), randn(7, 8, seed=23), randn(7, 3, seed=24)),
             label="no batch dimension: 5 queries (5, 8) attending to 7 keys (7, 8)"),
        Case((randn(1, 1, 4, seed=25), randn(1, 1, 4, seed=26), randn(1, 1, 2, seed=27)),
             label="a single query and a single key: its weight is 1"),
    ],
    mistakes=[
        Mistake(lambda q, k, v: _attend(_qk(q, k) / math.sqrt(q.shape[-1]), v, dim=-2),
                "take the softmax over the keys (dim=-1): each query's row of weights must sum to 1; dim=-2 makes "
                "each key's column sum to 1 instead."),
        Mistake(lambda q, k, v: _attend(_qk(q, k), v),
                "divide the scores by sqrt(d) (d = query.shape[-1]) before the softmax; without it the scores grow "
                "with d and the softmax saturates."),
        Mistake(lambda q, k, v: _attend(_qk(q, k) / q.shape[-1], v),
                "scale by the square root of d, math.sqrt(q.shape[-1]), not by d itself: a dot product of d "
                "unit-variance terms has variance d, so its standard deviation is sqrt(d)."),
        Mistake(lambda q, k, v: _attend(q @ k / math.sqrt(q.shape[-1]), v),
                "transpose the keys: the scores are query @ key.transpose(-2, -1), (T, d) @ (d, S) -> (T, S); "
                "query @ key only ran because this case is square."),
        Mistake(lambda q, k, v: (lambda w: (w @ v, w))(torch.softmax(_qk(q, k), dim=-1) / math.sqrt(q.shape[-1])),
                "scale the scores before the softmax, not the weights after it: divided afterwards, a row of "
                "weights sums to 1/sqrt(d) instead of 1."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.split_heads
def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, D) -> (B, H, T, d) with d = D / H; head ``h`` gets the features ``h*d:(h+1)*d``."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"expected x of shape (batch, tokens, dim), got {_shape(x)}")
    if not isinstance(num_heads, int) or num_heads < 1 or x.shape[-1] % num_heads:
        raise ValueError(f"dim {x.shape[-1]} must be divisible by num_heads, got num_heads={num_heads!r}")
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, T, H, d) -> (B, H, T, d)


def _split_by_view_only(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, num_heads, T, D // num_heads)


def _split_swapping_last_dims(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, num_heads, D // num_heads).transpose(-2, -1)  # (B, T, d, H)


def _split_interleaved(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, D // num_heads, num_heads).permute(0, 3, 1, 2)  # head h gets every H-th feature


register(Exercise("02.split_heads", "split the model width into heads", split_heads, cases=[
        Case((randn(1, 3, 4, seed=30), 2), label="3 tokens of width 4, 2 heads"),
        Case((randn(2, 5, 12, seed=31), 3), label="a batch of 2 texts, 5 tokens, width 12, 3 heads"),
        Case((randn(2, 4, 384, seed=32), 12), label="MiniLM's sizes: width 384, 12 heads of 32"),
        Case((randn(1, 2, 6, seed=33), 6), label="6 heads of width 1"),
        Case((randn(3, 1, 8, seed=34), 1), label="a single head: (3, 1, 8) -> (3, 1, 1, 8)"),
    ],
    mistakes=[
        Mistake(_split_by_view_only,
                "view(B, H, T, d) directly cuts the flat memory in the wrong order and mixes tokens into one head; "
                "first view(B, T, H, d), then transpose(1, 2) to (B, H, T, d)."),
        Mistake(_split_swapping_last_dims,
                "after view(B, T, H, d), swap the tokens and heads dims, transpose(1, 2), to get (B, H, T, d); "
                "transpose(-2, -1) swaps the heads with the head width."),
        Mistake(_split_interleaved,
                "head h owns the consecutive features h*d:(h+1)*d, so view the width as (H, d), not (d, H): "
                "view(B, T, d, H) gives each head every H-th feature."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.merge_heads
def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H*d): the heads' outputs side by side, head 0's features first."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"expected x of shape (batch, heads, tokens, head_dim), got {_shape(x)}")
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)  # (B, H, T, d) -> (B, T, H, d) -> (B, T, D)


def _merge_without_transpose(x):
    B, H, T, d = x.shape
    return x.reshape(B, T, H * d)


def _merge_interleaved(x):
    B, H, T, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * d)  # (B, T, d, H): features of the heads interleaved


def _merge_not_flattened(x):
    return x.transpose(1, 2)  # (B, T, H, d)


register(Exercise("02.merge_heads", "merge the heads back into the model width", merge_heads, cases=[
        Case((randn(1, 2, 3, 2, seed=40),), label="2 heads, 3 tokens, head width 2"),
        Case((randn(2, 3, 5, 4, seed=41),), label="a batch of 2 texts, 3 heads, 5 tokens, head width 4"),
        Case((randn(2, 12, 4, 32, seed=42),), label="MiniLM's sizes: 12 heads of width 32"),
        Case((randn(3, 2, 1, 5, seed=43),), label="a batch of 3 texts of a single token, 2 heads of width 5"),
    ],
    mistakes=[
        Mistake(_merge_without_transpose,
                "bring the tokens next to the batch first, transpose(1, 2) to (B, T, H, d), then reshape to "
                "(B, T, H*d); reshaping (B, H, T, d) directly mixes tokens of different heads."),
        Mistake(_merge_interleaved,
                "keep each head's d features together, head 0 first: transpose(1, 2) gives (B, T, H, d); "
                "permute(0, 2, 3, 1) gives (B, T, d, H) and interleaves the heads."),
        Mistake(_merge_not_flattened,
                "(B, T, H, d) still keeps the heads apart: reshape it to (B, T, H*d) (reshape, not view: the "
                "transposed tensor is not contiguous)."),
    ],
))
