"""Scaled dot-product attention, heads and masks, written to be read.

Shapes: ``B`` batch, ``H`` heads, ``T`` query tokens, ``S`` key/value tokens, ``D`` model width,
``d`` head width. Masks follow PyTorch's convention: a boolean mask is ``True`` where attention is
*allowed*; a floating mask is *added* to the scores (``0`` to keep, ``-inf`` to block).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_mask(mask: Tensor, scores: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor (boolean or floating), got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"mask must be boolean (True = attend) or floating (added to the scores), got dtype {mask.dtype}"
        )
    try:
        torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"of shape {tuple(scores.shape)} (..., query tokens, key tokens)"
        ) from None
    return mask


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d) + mask) V. Returns ``(output, weights)``.

    query: (..., T, d)   key: (..., S, d)   value: (..., S, d_v)   mask: broadcastable to (..., T, S)
    output: (..., T, d_v)   weights: (..., T, S), each row sums to 1 over the allowed keys.
    """
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() < 2:
            raise ValueError(f"expected {name} of shape (..., tokens, dim), got {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {tensor.dtype}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key need the same last dimension, got {query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value need the same number of tokens, got {key.shape[-2]} and {value.shape[-2]}")

    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale  # (..., T, S)
    if mask is not None:
        mask = _check_mask(mask, scores)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    return weights @ value, weights  # (..., T, d_v), (..., T, S)
