"""Exercises of lesson 02 (attention from scratch): embedding lookup, scaled dot-product attention, and the
reshapes of multi-head attention (split into heads, merge them back)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.checks import Case, Exercise, Mistake, register


def _shape(value) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def _random(*shape: int, seed: int) -> Tensor:
    """Reproducible standard-normal test inputs, without touching the global random state."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


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


register(Exercise(
    name="02.embedding_lookup",
    title="an embedding lookup as one-hot x matrix",
    reference=embedding_lookup,
    cases=[
        Case((torch.tensor([2, 0, 4, 4]), _random(5, 5, seed=1)), label="a toy vocabulary of 5 tokens, 5-dim vectors"),
        Case((torch.tensor([7, 1, 3]), _random(10, 4, seed=2)), label="3 token ids, vocabulary 10, dim 4"),
        Case((torch.tensor([[5, 0, 9], [2, 2, 8]]), _random(12, 3, seed=3)),
             label="a batch of 2 texts x 3 tokens, vocabulary 12 (the largest id 11 is not used)"),
        Case((torch.tensor([101, 7592, 102]), _random(30522, 8, seed=4)),
             label="[CLS] hello [SEP] with MiniLM's vocabulary of 30,522"),
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
def scaled_dot_product(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d)) V for (..., T, d) queries and (..., S, d) keys; returns (output, weights)."""
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor) or tensor.dim() < 2 or not tensor.is_floating_point():
            raise ValueError(f"expected a float {name} of shape (..., tokens, dim), got {_shape(tensor)}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"query (..., T, d), key (..., S, d) and value (..., S, d_v) do not fit: got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (..., T, S)
    weights = torch.softmax(scores, dim=-1)  # (..., T, S): each query's row sums to 1
    return weights @ value, weights  # (..., T, d_v), (..., T, S)


def _attend(scores: Tensor, value: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    weights = torch.softmax(scores, dim=dim)
    return weights @ value, weights


def _qk(query, key):
    return query @ key.transpose(-2, -1)


register(Exercise(
    name="02.scaled_dot_product",
    title="scaled dot-product attention",
    reference=scaled_dot_product,
    cases=[
        Case((_random(1, 4, 4, seed=10), _random(1, 4, 4, seed=11), _random(1, 4, 4, seed=12)),
             label="one text: 4 tokens with 4-dim queries, keys and values"),
        Case((_random(2, 5, 8, seed=13), _random(2, 5, 8, seed=14), _random(2, 5, 8, seed=15)),
             label="a batch of 2 texts, 5 tokens, dim 8"),
        Case((_random(2, 3, 16, seed=16), _random(2, 6, 16, seed=17), _random(2, 6, 10, seed=18)),
             label="3 queries attending to 6 keys (values of dim 10)"),
        Case((_random(2, 3, 4, 64, seed=19), _random(2, 3, 4, 64, seed=20), _random(2, 3, 4, 64, seed=21)),
             label="(batch, heads, tokens, dim) = (2, 3, 4, 64)"),
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


register(Exercise(
    name="02.split_heads",
    title="split the model width into heads",
    reference=split_heads,
    cases=[
        Case((_random(1, 3, 4, seed=30), 2), label="3 tokens of width 4, 2 heads"),
        Case((_random(2, 5, 12, seed=31), 3), label="a batch of 2 texts, 5 tokens, width 12, 3 heads"),
        Case((_random(2, 4, 384, seed=32), 12), label="MiniLM's sizes: width 384, 12 heads of 32"),
        Case((_random(1, 2, 6, seed=33), 6), label="6 heads of width 1"),
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


register(Exercise(
    name="02.merge_heads",
    title="merge the heads back into the model width",
    reference=merge_heads,
    cases=[
        Case((_random(1, 2, 3, 2, seed=40),), label="2 heads, 3 tokens, head width 2"),
        Case((_random(2, 3, 5, 4, seed=41),), label="a batch of 2 texts, 3 heads, 5 tokens, head width 4"),
        Case((_random(2, 12, 4, 32, seed=42),), label="MiniLM's sizes: 12 heads of width 32"),
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
