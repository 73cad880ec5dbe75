"""Pooling: one vector per text from the token vectors of an encoder.

Shapes: ``B`` batch, ``T`` tokens, ``D`` hidden width. ``attention_mask`` is the tokenizer's ``(B, T)`` mask,
1 (or True) for a real token and 0 (or False) for padding.

A text with no real token at all (a row of the mask that is all 0) has no mean: :func:`masked_mean` raises a
``ValueError`` that names the rows, instead of returning NaN (0 / 0) or a silent zero vector.
"""
from __future__ import annotations

from torch import Tensor

POOLINGS = ("cls", "mean")


def _check(hidden: Tensor, attention_mask: Tensor | None) -> None:
    if not isinstance(hidden, Tensor) or hidden.dim() != 3 or not hidden.is_floating_point():
        shape = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise ValueError(f"expected float hidden states of shape (batch, tokens, hidden), got {shape}")
    if attention_mask is None:
        return
    if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"expected an attention_mask of shape (batch, tokens) = {tuple(hidden.shape[:2])}, "
                         f"got {shape}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        raise TypeError(f"attention_mask must hold integers or booleans (1 = token, 0 = padding), "
                        f"got dtype {attention_mask.dtype}")


def cls_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The first token's vector (``[CLS]`` for BERT-style encoders): (B, T, D) -> (B, D)."""
    _check(hidden, attention_mask)
    return hidden[:, 0]  # (B, D)


def masked_mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of each text's real token vectors, so that padding is ignored: (B, T, D), (B, T) -> (B, D).

    Raises ``ValueError`` for a text whose mask has no real token.
    """
    _check(hidden, attention_mask)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1): 1 = real token, 0 = padding
    counts = weights.sum(dim=1)  # (B, 1): real tokens per text
    if (counts == 0).any():
        empty = (counts[:, 0] == 0).nonzero().flatten().tolist()
        raise ValueError(f"attention_mask rows {empty} have no real token (all 0): there is nothing to average")
    return (hidden * weights).sum(dim=1) / counts  # (B, D)


POOLING_FUNCTIONS = {"cls": cls_pool, "mean": masked_mean}
