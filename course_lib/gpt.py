"""A GPT-style decoder, trained from scratch in lesson 04, and the decoder block of an encoder-decoder model.

Both are built from the course's :class:`~course_lib.attention.MultiHeadAttention` and the encoder's
:class:`~course_lib.encoder.FeedForward`; what makes them decoders is the causal mask. The blocks follow GPT-2's
layout (``ln1``, ``attn``, ``ln2``, ``mlp``), so :func:`load_gpt2` loads GPT-2 weights by a rename (and a
transpose: GPT-2 stores its projections as ``(in, out)`` matrices) into a ``GPTConfig`` read from GPT-2's config.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` key/value tokens (cached + new), ``D`` model width, ``H`` heads,
``V`` vocabulary. Masks are boolean, ``True`` = may attend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from course_lib.attention import KVCache, MultiHeadAttention, decoder_mask, padding_mask
from course_lib.decoder import check_cache, check_inputs, check_position_ids, language_model_loss
from course_lib.decoder import position_ids as default_positions
from course_lib.checkpoints import read_checkpoint, split_prefix
from course_lib.encoder import ACTIVATIONS, FeedForward
from course_lib.runtime.errors import CourseInputError
from course_lib.runtime.validate import one_of

__all__ = ["GPTConfig", "GPTBlock", "GPT", "load_gpt2", "DecoderBlockWithCrossAttention"]


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
    activation: str = "gelu"  # "gelu" (exact) or "gelu_tanh" (GPT-2)
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "dim", "num_layers", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise CourseInputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise CourseInputError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise CourseInputError(f"dropout must lie in [0, 1), got {self.dropout}")
        self.hidden_dim = self.hidden_dim or 4 * self.dim
        one_of("activation", self.activation, ACTIVATIONS)

    @classmethod
    def from_hf_config(cls, config: dict) -> GPTConfig:
        """Read a ``transformers`` GPT-2 ``config.json`` (as a dict); refuse what this model does not implement."""
        if config.get("model_type") != "gpt2":
            raise CourseInputError(f"expected a GPT-2 config (model_type 'gpt2'), got {config.get('model_type')!r}")
        for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if config.get(key):
                raise CourseInputError(f"this model does not implement GPT-2's {key}=True")
        if not config.get("scale_attn_weights", True):
            raise CourseInputError("this model always scales attention scores by 1/sqrt(head_dim)")
        activation = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(
            config.get("activation_function", "gelu_new"))
        if activation is None:
            raise CourseInputError(f"activation_function {config['activation_function']!r} is not implemented "
                                   f"(gelu_new, gelu_pytorch_tanh and gelu are)")
        return cls(vocab_size=config["vocab_size"], context_length=config["n_positions"], dim=config["n_embd"],
                   num_layers=config["n_layer"], num_heads=config["n_head"], hidden_dim=config.get("n_inner"),
                   tie_weights=config.get("tie_word_embeddings", True), activation=activation,
                   norm_eps=config.get("layer_norm_epsilon", 1e-5))


class GPTBlock(nn.Module):
    """Pre-LN decoder block: x + attention(LN(x)), then x + feed-forward(LN(x))."""

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.attn = MultiHeadAttention(config.dim, config.num_heads, dropout=config.dropout, layer_index=layer_index)
        self.ln2 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.mlp = FeedForward(config.dim, config.hidden_dim, config.activation)
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
        self.ln_f = nn.LayerNorm(config.dim, eps=config.norm_eps)
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
                cache: KVCache | None = None, output_attentions: bool = False, position_ids: Tensor | None = None):
        """``(B, T)`` ids -> ``(logits (B, T, V), loss or None)``, plus per-layer ``(B, H, T, S)`` weights if asked."""
        past = check_cache(cache, self.config.num_layers)
        check_inputs(input_ids, self.config.vocab_size, targets, attention_mask, past, self.config.context_length)
        (B, T), context = input_ids.shape, self.config.context_length
        positions = default_positions(T, past, attention_mask, input_ids.device) if position_ids is None else \
            check_position_ids(position_ids, B, T, context)  # (B or 1, T)
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


GPT2_BLOCK_NAMES = {  # inside "h.{i}." -> inside "blocks.{i}."; c_attn is split into query, key and value
    "ln_1.weight": "ln1.weight", "ln_1.bias": "ln1.bias", "ln_2.weight": "ln2.weight", "ln_2.bias": "ln2.bias",
    "attn.c_proj.weight": "attn.out_proj.weight", "attn.c_proj.bias": "attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.linear1.weight", "mlp.c_fc.bias": "mlp.linear1.bias",
    "mlp.c_proj.weight": "mlp.linear2.weight", "mlp.c_proj.bias": "mlp.linear2.bias",
}
GPT2_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask constants that older checkpoints carry


@torch.no_grad()
def load_gpt2(source, *, config: dict | None = None) -> GPT:
    """The course :class:`GPT` (eval mode) with GPT-2's weights: from a folder, a ``transformers`` GPT-2 model in
    memory (``GPT2Model`` or ``GPT2LMHeadModel``), or a state dict with ``config`` (see
    :func:`~course_lib.checkpoints.read_checkpoint`). Any missing or unexpected weight is an error."""
    settings, checkpoint = read_checkpoint(source, config)
    config = GPTConfig.from_hf_config(settings)
    state, head = split_prefix(checkpoint, "transformer.")
    lm_head = head.pop("lm_head.weight", None)  # GPT-2 ties it to the token embeddings
    D, state = config.dim, {k: v for k, v in state.items() if not k.endswith(GPT2_BUFFERS)}
    ours = {"token_embedding.weight": state.pop("wte.weight", None),
            "position_embedding.weight": state.pop("wpe.weight", None),
            "ln_f.weight": state.pop("ln_f.weight", None), "ln_f.bias": state.pop("ln_f.bias", None)}
    for i in range(config.num_layers):
        for theirs, name in GPT2_BLOCK_NAMES.items():
            ours[f"blocks.{i}.{name}"] = _out_in(state.pop(f"h.{i}.{theirs}", None))
        qkv_weight, qkv_bias = state.pop(f"h.{i}.attn.c_attn.weight", None), state.pop(f"h.{i}.attn.c_attn.bias", None)
        for j, name in enumerate(("query", "key", "value")):  # c_attn: (D, 3D) columns of Q, then K, then V
            columns = slice(j * D, (j + 1) * D)
            ours[f"blocks.{i}.attn.{name}.weight"] = None if qkv_weight is None else _out_in(qkv_weight[:, columns])
            ours[f"blocks.{i}.attn.{name}.bias"] = None if qkv_bias is None else qkv_bias[columns]
    ours["lm_head.weight"] = ours["token_embedding.weight"] if config.tie_weights else lm_head
    missing = sorted(name for name, tensor in ours.items() if tensor is None)
    if missing or state or head:
        raise KeyError(f"the checkpoint does not match a {config.num_layers}-layer GPT-2: missing {missing or 'none'}; "
                       f"unexpected {sorted(state) + sorted(head) or 'none'}")
    with torch.device("meta"):  # no random initialisation: every weight comes from the checkpoint
        model = GPT(config)
    model.load_state_dict(ours, strict=True, assign=True)
    if config.tie_weights:
        model.lm_head.weight = model.token_embedding.weight  # one tied parameter, as in the constructor
    return model.eval()


def _out_in(weight: Tensor | None) -> Tensor | None:
    """GPT-2's ``Conv1D`` keeps a projection as ``(in, out)``, ``nn.Linear`` as ``(out, in)``; biases pass."""
    return weight if weight is None or weight.dim() != 2 else weight.t().contiguous()


# ----------------------------------------------------------------------------------------------- encoder-decoder
class DecoderBlockWithCrossAttention(nn.Module):
    """Decoder block of an encoder-decoder model (pre-LN): masked self-attention, cross-attention, feed-forward."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise CourseInputError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
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
                raise CourseInputError(f"expected {name} of shape (batch, tokens, {D}), got {shape}")
        (B, T, _), S = x.shape, encoder_states.shape[1]
        if encoder_states.shape[0] != B:
            raise CourseInputError(
                f"x and encoder_states need the same batch size, got {B} and {encoder_states.shape[0]}")
        if encoder_mask is not None and tuple(encoder_mask.shape) != (B, S):
            raise CourseInputError(f"expected encoder_mask of shape {(B, S)}, got {tuple(encoder_mask.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise CourseInputError(f"expected attention_mask of shape {(B, T)}, got {tuple(attention_mask.shape)}")
        self_mask = decoder_mask(T, 0, attention_mask, x.device)  # (B or 1, 1, T, T)
        cross_mask = None if encoder_mask is None else padding_mask(encoder_mask)  # (B, 1, 1, S)
        attended, self_weights = self.self_attn(self.ln1(x), mask=self_mask)
        x = x + self.dropout(attended)  # (B, T, D)
        attended, cross_weights = self.cross_attn(self.ln2(x), context=encoder_states, mask=cross_mask)
        x = x + self.dropout(attended)  # (B, T, D): each target token reads the source sentence
        x = x + self.dropout(self.mlp(self.ln3(x)))  # (B, T, D)
        return (x, self_weights, cross_weights) if output_attentions else x
