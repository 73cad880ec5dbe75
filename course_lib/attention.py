"""Scaled dot-product attention, heads, masks and the key/value cache, written to be read.

Shapes: ``B`` batch, ``H`` heads, ``T`` query tokens, ``S`` key/value tokens, ``D`` model width,
``d`` head width. Masks follow PyTorch's convention: a boolean mask is ``True`` where attention is
*allowed*; a floating mask is *added* to the scores (``0`` to keep, ``-inf`` to block). In a decoder, ``G``
is the number of key/value heads (``G = H`` except with grouped-query attention).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.runtime.errors import CourseInputError
from course_lib.runtime.validate import positive_int, token_mask


# ----------------------------------------------------------------------------------------------- masks
def padding_mask(attention_mask: Tensor) -> Tensor:
    """A tokenizer's (B, S) 0/1 ``attention_mask`` as a boolean (B, 1, 1, S) mask: True = a real token."""
    attention_mask = token_mask("attention_mask", attention_mask)  # (B, S) of 0/1 or True/False
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S): the same for every head and query


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean (T, S) mask, True on and below the diagonal: query ``i`` sees keys up to its own position.

    With ``S > T`` (``S - T`` earlier tokens, e.g. from a KV cache) the diagonal is aligned to the end, so
    query ``i`` sits at position ``S - T + i``; this is PyTorch's ``causal_lower_right``.
    """
    S = T if S is None else S
    for name, value in (("T", T), ("S", S)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CourseInputError(f"causal_mask needs a positive integer {name}, got {value!r}")
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)  # (T, S)


def decoder_mask(num_queries: int, past: int, attention_mask: Tensor | None = None, device=None) -> Tensor:
    """Causal mask combined with a key padding mask: ``(1, 1, T, S)`` or ``(B, 1, T, S)`` boolean.

    A padding position still sees itself, so no row of the softmax is empty (its output is never used).
    """
    mask = causal_mask(num_queries, past + num_queries, device)  # (T, S)
    if attention_mask is None:
        return mask[None, None]  # (1, 1, T, S)
    keep = padding_mask(attention_mask)  # (B, 1, 1, S)
    itself = torch.zeros_like(mask)
    rows = torch.arange(num_queries, device=device)
    itself[rows, past + rows] = True  # (T, S)
    return (mask & keep) | itself  # (B, 1, T, S)


def to_additive_mask(bool_mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A boolean mask as the additive form: 0.0 where True (attend), -inf where False (blocked)."""
    if not isinstance(bool_mask, Tensor) or bool_mask.dtype != torch.bool:
        given = bool_mask.dtype if isinstance(bool_mask, Tensor) else type(bool_mask).__name__
        raise CourseInputError(f"to_additive_mask expects a boolean mask (True = attend), got {given}; "
                        "for a 0/1 attention_mask call padding_mask(attention_mask) first")
    if not dtype.is_floating_point:
        raise CourseInputError(f"an additive mask needs a floating dtype, got {dtype}")
    zeros = torch.zeros(bool_mask.shape, dtype=dtype, device=bool_mask.device)
    return zeros.masked_fill(~bool_mask, float("-inf"))


def _check_mask(mask: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """``mask`` checked against attention scores of ``shape`` (..., T, S) and ``dtype``."""
    if not isinstance(mask, Tensor):
        raise CourseInputError(f"mask must be a torch.Tensor (boolean or floating), got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise CourseInputError(
            f"mask must be boolean (True = attend) or floating (added to the scores), got dtype {mask.dtype}; "
            "for a tokenizer's 0/1 attention_mask use padding_mask(attention_mask)"
        )
    if mask.is_floating_point() and mask.dtype != dtype:
        raise CourseInputError(f"an additive mask must have the scores' dtype {dtype}, got {mask.dtype}; "
                        f"use to_additive_mask(bool_mask, {dtype})")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:  # a mask may not add dimensions either: that would change the output shape
        raise CourseInputError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"of shape {tuple(shape)} (..., query tokens, key tokens)"
        )
    return mask


def _check_qkv(query: Tensor, key: Tensor, value: Tensor) -> None:
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor):
            raise CourseInputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() < 2:
            raise CourseInputError(f"expected {name} of shape (..., tokens, dim), got {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise CourseInputError(f"{name} must be a floating tensor, got dtype {tensor.dtype}")
    if not query.dtype == key.dtype == value.dtype:
        raise CourseInputError(f"query, key and value need one dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if query.shape[-1] != key.shape[-1]:
        raise CourseInputError(f"query and key need the same last dimension, got {query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise CourseInputError(
            f"key and value need the same number of tokens, got {key.shape[-2]} and {value.shape[-2]}")


# ----------------------------------------------------------------------------------------------- KV cache
class KVCache:
    """Keys and values of every layer for the tokens seen so far; each forward pass appends the new ones.

    ``capacity``: tokens to reserve up front (``generate`` knows how many it will need). The new keys and values
    are then written into that storage instead of being concatenated to a new tensor at every step; past the
    capacity (or without one) the cache grows by concatenation. ``keys[layer]`` is always the filled part.
    """

    def __init__(self, num_layers: int, capacity: int | None = None):
        positive_int("KVCache(num_layers)", num_layers)
        if capacity is not None:
            positive_int("KVCache(capacity)", capacity)
        self.capacity = capacity
        self.keys: list[Tensor | None] = [None] * num_layers  # each (B, G, S, d)
        self.values: list[Tensor | None] = [None] * num_layers
        self._storage: list[tuple[Tensor, Tensor] | None] = [None] * num_layers  # each (B, G, capacity, d) x 2

    @property
    def length(self) -> int:
        """How many tokens the cache holds (read it before a forward pass: layer 0 appends first)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[-2]

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's ``(B, G, T, d)`` keys/values to ``layer`` and return all of them ``(B, G, S, d)``."""
        if not 0 <= layer < len(self.keys):
            raise CourseInputError(f"layer {layer} is outside this cache of {len(self.keys)} layers: make the cache "
                                   "with KVCache(model.config.num_layers)")
        held = self.keys[layer]
        if held is not None and (held.shape[:2] != key.shape[:2] or held.shape[-1] != key.shape[-1]):
            raise CourseInputError(f"layer {layer} caches keys of shape {tuple(held.shape)} (batch, heads, tokens, "
                                   f"head_dim); this step's are {tuple(key.shape)}: use a new KVCache per batch")
        start = 0 if held is None else held.shape[-2]
        end = start + key.shape[-2]
        if held is None and self.capacity is not None and end <= self.capacity:
            B, G, _, d = key.shape
            self._storage[layer] = (key.new_empty(B, G, self.capacity, d), value.new_empty(B, G, self.capacity, d))
        storage = self._storage[layer]
        if storage is not None and end <= self.capacity:
            storage[0][:, :, start:end] = key  # written in place: no new tensor per step
            storage[1][:, :, start:end] = value
            key, value = storage[0][:, :, :end], storage[1][:, :, :end]  # (B, G, S, d) views
        elif held is not None:
            self._storage[layer] = None  # past the reserved tokens: grow by concatenation from here on
            key = torch.cat([held, key], dim=-2)
            value = torch.cat([self.values[layer], value], dim=-2)
        self.keys[layer], self.values[layer] = key, value
        return key, value

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.keys)}, tokens={self.length})"


# ----------------------------------------------------------------------------------------------- attention
def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None, scale: float | None = None,
    *, dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d) + mask) V. Returns ``(output, weights)``.

    query: (..., T, d)   key: (..., S, d)   value: (..., S, d_v)   mask: broadcastable to (..., T, S)
    output: (..., T, d_v)   weights: (..., T, S), each row sums to 1 over the allowed keys (a row with no
    allowed key gets weights 0, as in ``torch.nn.functional.scaled_dot_product_attention``).
    """
    _check_qkv(query, key, value)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale  # (..., T, S)
    if mask is not None:
        mask = _check_mask(mask, scores.shape, scores.dtype)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if mask is not None:  # softmax of an all -inf row is NaN; such a row attends to nothing
        weights = weights.masked_fill((scores == float("-inf")).all(dim=-1, keepdim=True), 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ value, weights  # (..., T, d_v), (..., T, S)


def _check_inputs(x: Tensor, context: Tensor | None, embed_dim: int) -> None:
    """x: (B, T, D) and the optional context: (B, S, D), floating."""
    for name, t in (("x", x), ("context", context)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise CourseInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3 or t.shape[-1] != embed_dim:
            raise CourseInputError(f"expected {name} of shape (batch, tokens, {embed_dim}), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise CourseInputError(f"{name} must be a floating tensor, got dtype {t.dtype}")
    if context is not None and context.shape[0] != x.shape[0]:
        raise CourseInputError(f"x and context need the same batch size, got {x.shape[0]} and {context.shape[0]}")


class AttentionHead(nn.Module):
    """One attention head: its own query/key/value projections from ``embed_dim`` down to ``head_dim``."""

    def __init__(self, embed_dim: int, head_dim: int, bias: bool = True):
        super().__init__()
        self.embed_dim, self.head_dim = embed_dim, head_dim
        self.query = nn.Linear(embed_dim, head_dim, bias=bias)
        self.key = nn.Linear(embed_dim, head_dim, bias=bias)
        self.value = nn.Linear(embed_dim, head_dim, bias=bias)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, D); context (keys/values, default x): (B, S, D); mask: (B, T, S)-broadcastable, or
        (B, 1, T, S) as built for multi-head attention. Returns (B, T, d) and weights (B, T, S)."""
        _check_inputs(x, context, self.embed_dim)
        context = x if context is None else context
        if isinstance(mask, Tensor) and mask.dim() == 4 and mask.shape[1] == 1:
            mask = mask.squeeze(1)  # the multi-head layout, (B, 1, T, S) -> (B, T, S)
        q, k, v = self.query(x), self.key(context), self.value(context)  # (B, T, d), (B, S, d), (B, S, d)
        return scaled_dot_product_attention(q, k, v, mask)


def _check_heads(embed_dim: int, num_heads: int) -> int:
    if num_heads < 1 or embed_dim % num_heads != 0:
        raise CourseInputError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
    return embed_dim // num_heads


class MultiHeadAttentionList(nn.Module):
    """Multi-head attention as it is explained: a list of independent heads, concatenated, then projected."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = _check_heads(embed_dim, num_heads)
        self.heads = nn.ModuleList(AttentionHead(embed_dim, self.head_dim, bias) for _ in range(num_heads))
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) -> output (B, T, D), weights (B, H, T, S); mask broadcastable to (B, 1, T, S)."""
        outputs, weights = zip(*(head(x, context, mask) for head in self.heads))  # H x (B, T, d), H x (B, T, S)
        output = self.out_proj(torch.cat(outputs, dim=-1))  # (B, T, H*d) -> (B, T, D)
        return output, torch.stack(weights, dim=1)  # (B, T, D), (B, H, T, S)


class MultiHeadAttention(nn.Module):
    """Multi-head attention as it is computed: one projection for all heads, then a reshape to (B, H, T, d).

    ``fused_qkv=True`` uses a single (D -> 3D) projection instead of three; ``dropout`` acts on the weights
    in training mode. ``need_weights=False`` calls PyTorch's fused kernel and returns ``None`` weights.
    In a decoder, a :class:`KVCache` passed to ``forward`` keeps the keys and values of earlier tokens, stored
    under ``layer_index``.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, fused_qkv: bool = False,
                 dropout: float = 0.0, layer_index: int = 0):
        super().__init__()
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.layer_index = layer_index
        self.head_dim = _check_heads(embed_dim, num_heads)
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        else:
            self.query = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.key = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.value = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if not self.fused_qkv:
            context = x if context is None else context
            return self.query(x), self.key(context), self.value(context)
        if context is None:
            return self.qkv(x).chunk(3, dim=-1)  # 3 x (B, T, D)
        D, bias = self.embed_dim, self.qkv.bias  # cross-attention: queries from x, keys/values from context
        q = F.linear(x, self.qkv.weight[:D], None if bias is None else bias[:D])
        k, v = F.linear(context, self.qkv.weight[D:], None if bias is None else bias[D:]).chunk(2, dim=-1)
        return q, k, v

    def split_heads(self, t: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, d)."""
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                need_weights: bool = True, cache: KVCache | None = None) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) -> output (B, T, D), weights (B, H, T, S) or None; mask broadcastable to (B, H, T, S).

        With ``cache``, ``S`` counts the cached tokens too: this step's keys and values are appended first.
        """
        _check_inputs(x, context, self.embed_dim)
        B, T, D = x.shape
        q, k, v = (self.split_heads(t) for t in self._project(x, context))  # (B, H, T, d), (B, H, S, d) x 2
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, H, S_cached + S, d)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p)  # (B, H, T, d)
        else:
            if mask is not None:
                _check_mask(mask, torch.Size((B, self.num_heads, T, k.shape[-2])), q.dtype)
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, H, T, d) -> (B, T, H, d) -> (B, T, D)
        return self.out_proj(out), weights


# ----------------------------------------------------------------------------------------------- weights
@torch.no_grad()
def copy_weights_from_torch(source: nn.MultiheadAttention, target: MultiHeadAttention | MultiHeadAttentionList):
    """Copy ``nn.MultiheadAttention``'s ``in_proj_weight``/``in_proj_bias`` (rows: Q, K, V) and ``out_proj``
    into either course form, so that both compute the same function. Returns ``target``."""
    if not isinstance(source, nn.MultiheadAttention):
        raise CourseInputError(f"source must be torch.nn.MultiheadAttention, got {type(source).__name__}")
    if not isinstance(target, (MultiHeadAttention, MultiHeadAttentionList)):
        raise CourseInputError(
            f"target must be MultiHeadAttention or MultiHeadAttentionList, got {type(target).__name__}")
    if source.in_proj_weight is None or source.bias_k is not None:
        raise CourseInputError("source must use one in_proj_weight (kdim == vdim == embed_dim) and no bias_k/bias_v")
    if (source.embed_dim, source.num_heads) != (target.embed_dim, target.num_heads):
        raise CourseInputError(f"source has embed_dim={source.embed_dim}, num_heads={source.num_heads}; target has "
                         f"embed_dim={target.embed_dim}, num_heads={target.num_heads}")
    if (source.in_proj_bias is None) != (target.out_proj.bias is None):
        raise CourseInputError("source and target must both have biases or both have none")
    D, d = target.embed_dim, target.head_dim
    weight = source.in_proj_weight  # (3D, D): rows of Q, then K, then V; head h owns rows h*d:(h+1)*d of each
    bias = source.in_proj_bias  # (3D,) or None
    target.out_proj.weight.copy_(source.out_proj.weight)
    if bias is not None:
        target.out_proj.bias.copy_(source.out_proj.bias)
    if isinstance(target, MultiHeadAttention) and target.fused_qkv:
        target.qkv.weight.copy_(weight)
        if bias is not None:
            target.qkv.bias.copy_(bias)
        return target
    for i, name in enumerate(("query", "key", "value")):
        rows = slice(i * D, (i + 1) * D)
        if isinstance(target, MultiHeadAttention):
            layers, parts = [getattr(target, name)], [rows]
        else:  # one head at a time
            layers = [getattr(head, name) for head in target.heads]
            parts = [slice(i * D + h * d, i * D + (h + 1) * d) for h in range(target.num_heads)]
        for layer, part in zip(layers, parts):
            layer.weight.copy_(weight[part])
            if bias is not None:
                layer.bias.copy_(bias[part])
    return target
