"""Decoders, written to be read: a GPT-style model trained from scratch, a decoder block with cross-attention,
and a Llama-style model that loads the SmolLM2 weights and matches ``transformers``.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` key/value tokens (cached + new), ``D`` model width, ``H`` query
heads, ``G`` key/value heads, ``d`` head width, ``V`` vocabulary. Masks are boolean, ``True`` = may attend.
Both models share one interface: ``model(input_ids, targets=None, attention_mask=None, cache=None,
output_attentions=False)`` returns ``(logits, loss)``, or ``(logits, loss, attentions)`` when asked.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import scaled_dot_product_attention

__all__ = [
    "KVCache", "causal_mask", "decoder_mask", "position_ids",
    "GPTConfig", "MultiHeadAttention", "FeedForward", "GPTBlock", "GPT",
    "DecoderBlockWithCrossAttention",
    "LlamaConfig", "RMSNorm", "rotary_cos_sin", "rotate_half", "apply_rotary", "GroupedQueryAttention", "SwiGLU",
    "LlamaBlock", "LlamaForCausalLM", "hf_llama_name_map", "load_pretrained_decoder",
    "language_model_loss", "train_language_model",
]


# ----------------------------------------------------------------------------------------------- cache and masks
class KVCache:
    """Keys and values of every layer for the tokens seen so far; each forward pass appends the new ones."""

    def __init__(self, num_layers: int):
        self.keys: list[Tensor | None] = [None] * num_layers  # each (B, G, S, d)
        self.values: list[Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """How many tokens the cache holds (read it before a forward pass: layer 0 appends first)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[-2]

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's ``(B, G, T, d)`` keys/values to ``layer`` and return all of them ``(B, G, S, d)``."""
        if self.keys[layer] is not None:
            key = torch.cat([self.keys[layer], key], dim=-2)
            value = torch.cat([self.values[layer], value], dim=-2)
        self.keys[layer], self.values[layer] = key, value
        return key, value

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.keys)}, tokens={self.length})"


def causal_mask(num_queries: int, num_keys: int, device=None) -> Tensor:
    """``(T, S)`` boolean: the last ``T`` of ``S`` tokens each see themselves and every earlier token."""
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(diagonal=num_keys - num_queries)


def decoder_mask(num_queries: int, past: int, attention_mask: Tensor | None = None, device=None) -> Tensor:
    """Causal mask combined with a key padding mask: ``(1, 1, T, S)`` or ``(B, 1, T, S)`` boolean.

    A padding position still sees itself, so no row of the softmax is empty (its output is never used).
    """
    mask = causal_mask(num_queries, past + num_queries, device)  # (T, S)
    if attention_mask is None:
        return mask[None, None]  # (1, 1, T, S)
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    itself = torch.zeros_like(mask)
    rows = torch.arange(num_queries, device=device)
    itself[rows, past + rows] = True  # (T, S)
    return (mask & keep) | itself  # (B, 1, T, S)


def position_ids(num_queries: int, past: int, attention_mask: Tensor | None = None, device=None) -> Tensor:
    """Positions of the new tokens: ``(1, T)``, or ``(B, T)`` counted over real tokens only (left padding)."""
    if attention_mask is None:
        return torch.arange(past, past + num_queries, device=device)[None]  # (1, T)
    positions = attention_mask.long().cumsum(-1) - 1  # (B, S)
    return positions.clamp(min=0)[:, -num_queries:]  # (B, T)


def _check_inputs(input_ids, vocab_size: int, targets, attention_mask, past: int, context_length: int) -> None:
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype != torch.long:
        raise TypeError(f"input_ids must have dtype torch.long (token ids), got {input_ids.dtype}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"expected input_ids of shape (batch, tokens) with tokens >= 1, got {tuple(input_ids.shape)}")
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}) for this vocabulary, got ids from "
            f"{int(input_ids.min())} to {int(input_ids.max())}"
        )
    if past + input_ids.shape[1] > context_length:
        raise ValueError(
            f"the model sees at most {context_length} tokens, got {past + input_ids.shape[1]} "
            f"({past} cached + {input_ids.shape[1]} new)"
        )
    if targets is not None and (not isinstance(targets, Tensor) or targets.shape != input_ids.shape):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(
            f"targets must be a tensor of the same shape as input_ids {tuple(input_ids.shape)}, got {shape}"
        )
    if attention_mask is not None:
        expected = (input_ids.shape[0], past + input_ids.shape[1])
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != expected:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
            raise ValueError(
                f"expected attention_mask of shape (batch, cached + new tokens) = {expected}, got {shape}"
            )


def language_model_loss(logits: Tensor, targets: Tensor | None) -> Tensor | None:
    """Mean cross-entropy of ``(B, T, V)`` logits against ``(B, T)`` next-token targets (``-100`` is ignored)."""
    if targets is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


# ----------------------------------------------------------------------------------------------- GPT
@dataclass
class GPTConfig:
    """Size of a GPT-style model; ``context_length`` is the number of learned positions."""

    vocab_size: int
    context_length: int = 128
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int | None = None  # feed-forward width, 4 * dim by default
    dropout: float = 0.0
    tie_weights: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "dim", "num_layers", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        self.hidden_dim = self.hidden_dim or 4 * self.dim


class MultiHeadAttention(nn.Module):
    """Multi-head attention: queries from ``x``; keys and values from ``context`` (cross-attention) or ``x``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, layer_index: int = 0):
        super().__init__()
        self.num_heads, self.head_dim, self.layer_index = num_heads, dim // num_heads, layer_index
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                cache: KVCache | None = None) -> tuple[Tensor, Tensor]:
        context = x if context is None else context  # (B, S, D)
        q = self.split_heads(self.query(x))  # (B, H, T, d)
        k = self.split_heads(self.key(context))  # (B, H, S, d)
        v = self.split_heads(self.value(context))  # (B, H, S, d)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, H, S_past + S, d)
        y, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, d), (B, H, T, S)
        y = y.transpose(1, 2).reshape(x.shape)  # (B, T, D)
        return self.dropout(self.out(y)), weights


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))  # (B, T, D)


class GPTBlock(nn.Module):
    """Pre-LN decoder block: x + attention(LN(x)), then x + feed-forward(LN(x))."""

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim)
        self.attn = MultiHeadAttention(config.dim, config.num_heads, config.dropout, layer_index)
        self.ln2 = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.hidden_dim, config.dropout)

    def forward(self, x: Tensor, mask: Tensor, cache: KVCache | None = None) -> tuple[Tensor, Tensor]:
        attended, weights = self.attn(self.ln1(x), mask=mask, cache=cache)
        x = x + attended  # (B, T, D)
        x = x + self.mlp(self.ln2(x))  # (B, T, D)
        return x, weights


class GPT(nn.Module):
    """GPT-style language model: token + learned position embeddings, pre-LN blocks, final LayerNorm, LM head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.position_embedding = nn.Embedding(config.context_length, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(config, i) for i in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.dim)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_weights:
            self.lm_head.weight = self.token_embedding.weight  # one (V, D) matrix reads and writes tokens
        for block in self.blocks:  # keep the residual stream's variance steady as layers add up
            for layer in (block.attn.out, block.mlp.down):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix is counted once

    def forward(self, input_ids: Tensor, targets: Tensor | None = None, attention_mask: Tensor | None = None,
                cache: KVCache | None = None, output_attentions: bool = False):
        """``(B, T)`` ids -> ``(logits (B, T, V), loss or None)``, plus per-layer ``(B, H, T, S)`` weights if asked."""
        past = cache.length if cache is not None else 0
        _check_inputs(input_ids, self.config.vocab_size, targets, attention_mask, past, self.config.context_length)
        T = input_ids.shape[1]
        positions = position_ids(T, past, attention_mask, input_ids.device)  # (B or 1, T)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, T, D)
        x = self.dropout(x)
        mask = decoder_mask(T, past, attention_mask, input_ids.device)  # (B or 1, 1, T, S)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, mask, cache)  # (B, T, D), (B, H, T, S)
            attentions.append(weights)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = language_model_loss(logits, targets)
        return (logits, loss, tuple(attentions)) if output_attentions else (logits, loss)


# ----------------------------------------------------------------------------------------------- encoder-decoder
class DecoderBlockWithCrossAttention(nn.Module):
    """Decoder block of an encoder-decoder model (pre-LN): masked self-attention, cross-attention, feed-forward."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.ln1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.ln3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, hidden_dim or 4 * dim, dropout)

    def forward(self, x: Tensor, encoder_states: Tensor, encoder_mask: Tensor | None = None,
                attention_mask: Tensor | None = None, output_attentions: bool = False):
        """x ``(B, T, D)``, encoder_states ``(B, S, D)``, masks ``(B, S)`` / ``(B, T)`` with 1 = real token.

        Returns ``(B, T, D)``, or with ``output_attentions`` also (self ``(B, H, T, T)``, cross ``(B, H, T, S)``).
        """
        D = self.ln1.normalized_shape[0]
        for name, tensor in (("x", x), ("encoder_states", encoder_states)):
            if not isinstance(tensor, Tensor) or tensor.dim() != 3 or tensor.shape[-1] != D:
                shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(f"expected {name} of shape (batch, tokens, {D}), got {shape}")
        (B, T, _), S = x.shape, encoder_states.shape[1]
        if encoder_states.shape[0] != B:
            raise ValueError(f"x and encoder_states need the same batch size, got {B} and {encoder_states.shape[0]}")
        if encoder_mask is not None and tuple(encoder_mask.shape) != (B, S):
            raise ValueError(f"expected encoder_mask of shape {(B, S)}, got {tuple(encoder_mask.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"expected attention_mask of shape {(B, T)}, got {tuple(attention_mask.shape)}")
        self_mask = decoder_mask(T, 0, attention_mask, x.device)  # (B or 1, 1, T, T)
        cross_mask = None if encoder_mask is None else encoder_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        attended, self_weights = self.self_attn(self.ln1(x), mask=self_mask)
        x = x + attended  # (B, T, D)
        attended, cross_weights = self.cross_attn(self.ln2(x), context=encoder_states, mask=cross_mask)
        x = x + attended  # (B, T, D): each target token reads the source sentence
        x = x + self.mlp(self.ln3(x))  # (B, T, D)
        return (x, self_weights, cross_weights) if output_attentions else x


# ----------------------------------------------------------------------------------------------- Llama
@dataclass
class LlamaConfig:
    """Size of a Llama-style model; the defaults are SmolLM2-135M's."""

    vocab_size: int = 49152
    context_length: int = 8192
    dim: int = 576
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    hidden_dim: int = 1536
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    tie_weights: bool = True

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {self.head_dim}")

    @classmethod
    def from_hf_config(cls, config: dict) -> LlamaConfig:
        """Read a ``transformers`` Llama ``config.json`` (as a dict)."""
        if config.get("model_type") != "llama":
            raise ValueError(f"expected a Llama config (model_type 'llama'), got {config.get('model_type')!r}")
        for key, supported in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
            if config.get(key, supported) != supported:
                raise ValueError(f"this model implements {key}={supported!r}, the config has {config[key]!r}")
        rope = config.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"only the default rotary embedding is implemented, got rope_type {rope['rope_type']!r}")
        return cls(
            vocab_size=config["vocab_size"],
            context_length=config["max_position_embeddings"],
            dim=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            head_dim=config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
            hidden_dim=config["intermediate_size"],
            rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
            norm_eps=config["rms_norm_eps"],
            tie_weights=config.get("tie_word_embeddings", False),
        )


class RMSNorm(nn.Module):
    """Root-mean-square norm: x / sqrt(mean(x^2) + eps) * weight (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # (B, T, D)
        return self.weight * normed.to(x.dtype)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotation angles ``position * theta^(-2i/d)``: each ``(B, T, d)``.

    Half-rotation layout: feature ``i`` is paired with feature ``i + d/2``, so the angles are repeated twice.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim)
    angles = positions[..., None].float() * inv_freq  # (B, T, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, T, d)
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (i, i + d/2) feature pair of ``x`` ``(B, H, T, d)`` by its position's angle."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d)
    return x * cos + rotate_half(x) * sin


class GroupedQueryAttention(nn.Module):
    """Causal attention with rotary positions where each key/value head serves ``H / G`` query heads."""

    def __init__(self, config: LlamaConfig, layer_index: int = 0):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.layer_index = layer_index
        self.query = nn.Linear(config.dim, config.num_heads * config.head_dim, bias=False)
        self.key = nn.Linear(config.dim, config.num_kv_heads * config.head_dim, bias=False)
        self.value = nn.Linear(config.dim, config.num_kv_heads * config.head_dim, bias=False)
        self.out = nn.Linear(config.num_heads * config.head_dim, config.dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
                cache: KVCache | None = None) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = self.key(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, T, d)
        v = self.value(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, T, d)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # positions enter here, not in the embeddings
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, G, S, d)
        group = self.num_heads // self.num_kv_heads
        k = k.repeat_interleave(group, dim=1)  # (B, H, S, d): query heads 0..group-1 share key head 0, ...
        v = v.repeat_interleave(group, dim=1)  # (B, H, S, d)
        y, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, d), (B, H, T, S)
        y = y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, H*d)
        return self.out(y), weights  # (B, T, D)


class SwiGLU(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden_dim, bias=False)
        self.up = nn.Linear(dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, D)


class LlamaBlock(nn.Module):
    """Pre-norm Llama block: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, config: LlamaConfig, layer_index: int = 0):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = GroupedQueryAttention(config, layer_index)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.hidden_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
                cache: KVCache | None = None) -> tuple[Tensor, Tensor]:
        attended, weights = self.attn(self.attn_norm(x), cos, sin, mask, cache)
        x = x + attended  # (B, T, D)
        x = x + self.mlp(self.mlp_norm(x))  # (B, T, D)
        return x, weights


class LlamaForCausalLM(nn.Module):
    """Llama-style language model: token embeddings, rotary-position blocks, final RMSNorm, LM head."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(LlamaBlock(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        if config.tie_weights:
            self.lm_head.weight = self.embed.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: Tensor, targets: Tensor | None = None, attention_mask: Tensor | None = None,
                cache: KVCache | None = None, output_attentions: bool = False):
        """``(B, T)`` ids -> ``(logits (B, T, V), loss or None)``, plus per-layer ``(B, H, T, S)`` weights if asked.

        With left padding, pass ``attention_mask`` (1 = real token): positions then count real tokens only.
        """
        past = cache.length if cache is not None else 0
        _check_inputs(input_ids, self.config.vocab_size, targets, attention_mask, past, self.config.context_length)
        T = input_ids.shape[1]
        positions = position_ids(T, past, attention_mask, input_ids.device)  # (B or 1, T)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)  # (B or 1, T, d)
        mask = decoder_mask(T, past, attention_mask, input_ids.device)  # (B or 1, 1, T, S)
        x = self.embed(input_ids)  # (B, T, D)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, cos.to(x.dtype), sin.to(x.dtype), mask, cache)  # (B, T, D), (B, H, T, S)
            attentions.append(weights)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = language_model_loss(logits, targets)
        return (logits, loss, tuple(attentions)) if output_attentions else (logits, loss)


def hf_llama_name_map(num_layers: int) -> dict[str, str]:
    """Parameter names of a ``transformers`` Llama checkpoint -> names in :class:`LlamaForCausalLM`."""
    names = {"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "lm_head.weight"}
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn.query.weight",
        "self_attn.k_proj.weight": "attn.key.weight",
        "self_attn.v_proj.weight": "attn.value.weight",
        "self_attn.o_proj.weight": "attn.out.weight",
        "post_attention_layernorm.weight": "mlp_norm.weight",
        "mlp.gate_proj.weight": "mlp.gate.weight",
        "mlp.up_proj.weight": "mlp.up.weight",
        "mlp.down_proj.weight": "mlp.down.weight",
    }
    for i in range(num_layers):
        names.update({f"model.layers.{i}.{hf}": f"blocks.{i}.{ours}" for hf, ours in per_layer.items()})
    return names


def load_pretrained_decoder(path: str | Path | None = None, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """The course's Llama-style model with SmolLM2-135M's weights, in eval mode.

    ``path``: a folder with a transformers Llama ``config.json`` and ``model.safetensors`` (default: the course's).
    """
    from safetensors.torch import load_file

    if path is None:
        from course_lib.assets import decoder_path

        path = decoder_path()
    path = Path(path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).exists():
            raise FileNotFoundError(f"expected {name} in the decoder folder {path}")
    config = LlamaConfig.from_hf_config(json.loads((path / "config.json").read_text()))
    checkpoint = load_file(str(path / "model.safetensors"))
    names = hf_llama_name_map(config.num_layers)
    unknown = sorted(set(checkpoint) - set(names))
    if unknown:
        raise ValueError(f"the checkpoint has parameters this model does not know: {unknown[:5]}")
    state = {names[key]: tensor.to(dtype) for key, tensor in checkpoint.items()}
    if config.tie_weights:  # a tied checkpoint may store the shared matrix under either name
        shared = state.get("embed.weight", state.get("lm_head.weight"))
        state["embed.weight"] = state["lm_head.weight"] = shared
    model = LlamaForCausalLM(config).to(dtype)
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------- training
def _batch(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).to(data.device)  # (B,)
    offsets = torch.arange(block_size, device=data.device)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T): the next token at every position
    return x, y


def train_language_model(
    model: nn.Module,
    token_ids: Tensor,
    steps: int,
    batch_size: int = 32,
    block_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    eval_every: int = 100,
    eval_batches: int = 8,
    val_fraction: float = 0.1,
    weight_decay: float = 0.01,
    log: Callable[[str], None] | None = None,
) -> list[tuple[int, float, float]]:
    """Train a language model on next-token prediction over a token stream; returns ``(step, train, val)`` losses.

    The last ``val_fraction`` of the stream is held out. Losses are averaged over ``eval_batches`` fixed batches
    at step 0, every ``eval_every`` steps and at the end. Batches and dropout are seeded, so runs repeat exactly.
    """
    if not isinstance(token_ids, Tensor) or token_ids.dtype != torch.long or token_ids.dim() != 1:
        got = f"{token_ids.dtype} tensor of shape {tuple(token_ids.shape)}" if isinstance(token_ids, Tensor) \
            else type(token_ids).__name__
        raise TypeError(f"token_ids must be a 1-D torch.long tensor (a token stream), got {got}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("block_size", block_size),
                        ("eval_every", eval_every), ("eval_batches", eval_batches)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    context = getattr(getattr(model, "config", None), "context_length", None)
    if context is not None and block_size > context:
        raise ValueError(f"block_size {block_size} is longer than the model's context_length {context}")
    split = int(len(token_ids) * (1 - val_fraction))
    train_data, val_data = token_ids[:split], token_ids[split:]
    if len(val_data) <= block_size or len(train_data) <= block_size:
        raise ValueError(
            f"a token stream of {len(token_ids)} ids is too short for block_size {block_size} with "
            f"val_fraction {val_fraction}: each split needs more than block_size + 1 ids"
        )
    device = next(model.parameters()).device
    train_data, val_data = train_data.to(device), val_data.to(device)

    @torch.no_grad()
    def estimate(data: Tensor, which: int) -> float:
        model.eval()
        generator = torch.Generator().manual_seed(seed + 1000 + which)  # the same batches at every evaluation
        losses = [model(*_batch(data, batch_size, block_size, generator))[1].item() for _ in range(eval_batches)]
        model.train()
        return sum(losses) / len(losses)

    history = []

    def evaluate(step: int) -> None:
        train_loss, val_loss = estimate(train_data, 0), estimate(val_data, 1)
        history.append((step, train_loss, val_loss))
        if log is not None:
            log(f"step {step:5d}   train loss {train_loss:.4f}   val loss {val_loss:.4f}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout
        model.train()
        evaluate(0)
        for step in range(1, steps + 1):
            x, y = _batch(train_data, batch_size, block_size, generator)  # (B, T), (B, T)
            _, loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % eval_every == 0 or step == steps:
                evaluate(step)
        model.eval()
    return history
