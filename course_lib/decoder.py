"""What every decoder-only language model of the course shares: positions, input checks and the next-token loss.

The GPT of lesson 04 (:mod:`course_lib.gpt`) and the Llama-style model of lesson 05 (:mod:`course_lib.llama`)
have one interface: ``model(input_ids, targets=None, attention_mask=None, cache=None, output_attentions=False)``
returns ``(logits, loss)``, or ``(logits, loss, attentions)`` when asked, and ``model.config`` has
``vocab_size``, ``context_length`` and ``num_layers``. :mod:`course_lib.generation` relies on nothing else.
The masks (causal, padding, both) and the key/value cache are :mod:`course_lib.attention`'s.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` key/value tokens (cached + new), ``V`` vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.attention import KVCache
from course_lib.runtime.errors import CourseInputError

__all__ = ["position_ids", "check_cache", "check_position_ids", "check_inputs", "language_model_loss"]


def position_ids(num_queries: int, past: int, attention_mask: Tensor | None = None, device=None) -> Tensor:
    """Positions of the new tokens: ``(1, T)``, or ``(B, T)`` counted over real tokens only (left padding)."""
    if attention_mask is None:
        return torch.arange(past, past + num_queries, device=device)[None]  # (1, T)
    positions = attention_mask.long().cumsum(-1) - 1  # (B, S)
    return positions.clamp(min=0)[:, -num_queries:]  # (B, T)


def check_cache(cache, num_layers: int) -> int:
    """How many tokens ``cache`` holds (0 for ``None``), after checking it was made for ``num_layers`` layers."""
    if cache is None:
        return 0
    if not isinstance(cache, KVCache):
        raise CourseInputError(f"cache must be a KVCache (or None), got {type(cache).__name__}")
    if len(cache.keys) != num_layers:
        raise CourseInputError(f"this KVCache holds {len(cache.keys)} layers, the model has {num_layers}: "
                               f"make it with KVCache(model.config.num_layers)")
    return cache.length


def check_position_ids(position_ids, batch: int, tokens: int, context_length: int) -> Tensor:
    """Positions given by the caller: ``(B or 1, T)`` integers in ``[0, context_length)``."""
    if not isinstance(position_ids, Tensor) or position_ids.dtype not in (torch.long, torch.int):
        raise CourseInputError(f"position_ids must be an integer tensor of shape (batch, tokens), got "
                               f"{getattr(position_ids, 'dtype', type(position_ids).__name__)}")
    if position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch) or position_ids.shape[1] != tokens:
        raise CourseInputError(f"expected position_ids of shape ({batch}, {tokens}) or (1, {tokens}), got "
                               f"{tuple(position_ids.shape)}")
    if position_ids.numel() and (position_ids.min() < 0 or position_ids.max() >= context_length):
        raise CourseInputError(f"position_ids must lie in [0, {context_length}), got {int(position_ids.min())} to "
                               f"{int(position_ids.max())}")
    return position_ids.long()


def check_inputs(input_ids, vocab_size: int, targets, attention_mask, past: int, context_length: int) -> None:
    """Refuse, with a message that says what was expected, ids and masks that a decoder cannot use."""
    if not isinstance(input_ids, Tensor):
        raise CourseInputError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype != torch.long:
        raise CourseInputError(f"input_ids must have dtype torch.long (token ids), got {input_ids.dtype}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise CourseInputError(
            f"expected input_ids of shape (batch, tokens) with tokens >= 1, got {tuple(input_ids.shape)}")
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        raise CourseInputError(
            f"token ids must lie in [0, {vocab_size}) for this vocabulary, got ids from "
            f"{int(input_ids.min())} to {int(input_ids.max())}"
        )
    if past + input_ids.shape[1] > context_length:
        raise CourseInputError(
            f"the model sees at most {context_length} tokens, got {past + input_ids.shape[1]} "
            f"({past} cached + {input_ids.shape[1]} new)"
        )
    if targets is not None and (not isinstance(targets, Tensor) or targets.shape != input_ids.shape):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise CourseInputError(
            f"targets must be a tensor of the same shape as input_ids {tuple(input_ids.shape)}, got {shape}"
        )
    if attention_mask is not None:
        expected = (input_ids.shape[0], past + input_ids.shape[1])
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != expected:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
            raise CourseInputError(
                f"expected attention_mask of shape (batch, cached + new tokens) = {expected}, got {shape}"
            )


def language_model_loss(logits: Tensor, targets: Tensor | None) -> Tensor | None:
    """Mean cross-entropy of ``(B, T, V)`` logits against ``(B, T)`` next-token targets (``-100`` is ignored)."""
    if targets is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
