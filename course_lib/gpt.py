"""A GPT-style decoder, trained from scratch in lesson 04, and the decoder block of an encoder-decoder model.

Both are built from the course's :class:`~course_lib.attention.MultiHeadAttention` and the encoder's
:class:`~course_lib.encoder.FeedForward`; what makes them decoders is the causal mask. Parameter names follow
GPT-2's layout (``ln1``, ``attn``, ``ln2``, ``mlp``), so GPT-2 weights load by a rename.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` key/value tokens (cached + new), ``D`` model width, ``H`` heads,
``V`` vocabulary. Masks are boolean, ``True`` = may attend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from course_lib.attention import KVCache, MultiHeadAttention, decoder_mask, padding_mask
from course_lib.decoder import check_inputs, language_model_loss, position_ids
from course_lib.encoder import FeedForward

__all__ = ["GPTConfig", "GPTBlock", "GPT", "DecoderBlockWithCrossAttention"]


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


class GPTBlock(nn.Module):
    """Pre-LN decoder block: x + attention(LN(x)), then x + feed-forward(LN(x))."""

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim)
        self.attn = MultiHeadAttention(config.dim, config.num_heads, dropout=config.dropout, layer_index=layer_index)
        self.ln2 = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)  # on each sub-layer's output, before it joins the residual

    def forward(self, x: Tensor, mask: Tensor, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x ``(B, T, D)``, mask ``(B or 1, 1, T, S)`` -> ``(B, T, D)`` and weights ``(B, H, T, S)`` (or None)."""
        attended, weights = self.attn(self.ln1(x), mask=mask, need_weights=need_weights, cache=cache)
        x = x + self.dropout(attended)  # (B, T, D)
        x = x + self.dropout(self.mlp(self.ln2(x)))  # (B, T, D)
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
            for layer in (block.attn.out_proj, block.mlp.linear2):
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
        check_inputs(input_ids, self.config.vocab_size, targets, attention_mask, past, self.config.context_length)
        T = input_ids.shape[1]
        positions = position_ids(T, past, attention_mask, input_ids.device)  # (B or 1, T)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, T, D)
        x = self.dropout(x)
        mask = decoder_mask(T, past, attention_mask, input_ids.device)  # (B or 1, 1, T, S)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, mask, cache, need_weights=output_attentions)  # (B, T, D), (B, H, T, S) or None
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
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.ln3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, hidden_dim or 4 * dim)
        self.dropout = nn.Dropout(dropout)

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
        cross_mask = None if encoder_mask is None else padding_mask(encoder_mask)  # (B, 1, 1, S)
        attended, self_weights = self.self_attn(self.ln1(x), mask=self_mask)
        x = x + self.dropout(attended)  # (B, T, D)
        attended, cross_weights = self.cross_attn(self.ln2(x), context=encoder_states, mask=cross_mask)
        x = x + self.dropout(attended)  # (B, T, D): each target token reads the source sentence
        x = x + self.dropout(self.mlp(self.ln3(x)))  # (B, T, D)
        return (x, self_weights, cross_weights) if output_attentions else x
