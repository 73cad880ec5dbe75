"""A Llama-style decoder, the architecture of SmolLM2, written part by part (lesson 05).

What changes against the GPT of lesson 04: RMSNorm instead of LayerNorm, rotary position embeddings applied to
queries and keys instead of learned position vectors, grouped-query attention (``G`` key/value heads shared by
``H`` query heads), a gated SwiGLU feed-forward network, and no biases. :func:`load_pretrained_decoder` loads
SmolLM2-135M-Instruct's checkpoint (or any Llama checkpoint) through a table of parameter names, and the result
matches ``transformers``.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` key/value tokens (cached + new), ``D`` model width, ``H`` query
heads, ``G`` key/value heads, ``d`` head width, ``V`` vocabulary.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.assets import DECODER_CACHE, decoder_path
from course_lib.attention import KVCache, decoder_mask, scaled_dot_product_attention
from course_lib.checkpoints import read_checkpoint
from course_lib.decoder import check_cache, check_inputs, check_position_ids, language_model_loss
from course_lib.decoder import position_ids as default_positions
from course_lib.runtime import cache
from course_lib.runtime.errors import CourseInputError
from course_lib.runtime.validate import number, positive_int

__all__ = [
    "LlamaConfig", "ROPE_SCALINGS", "RMSNorm", "rotary_inverse_frequencies", "rotary_cos_sin", "rotate_half",
    "apply_rotary", "repeat_kv", "GroupedQueryAttention", "SwiGLU", "LlamaBlock", "LlamaForCausalLM",
    "hf_llama_name_map", "load_pretrained_decoder",
]


ROPE_SCALINGS = ("linear", "llama3", "yarn")  # implemented here, equal to transformers; others are refused


@dataclass
class LlamaConfig:
    """Size of a Llama-style model; the defaults are SmolLM2-135M's.

    ``rope_scaling`` stretches rotary positions past the training length: ``None`` (plain rotary), or a dict with
    ``rope_type`` one of :data:`ROPE_SCALINGS` and that type's keys (``factor``; ``llama3``: ``low_freq_factor``,
    ``high_freq_factor``, ``original_max_position_embeddings``; ``yarn``: ``original_max_position_embeddings``
    and optionally ``beta_fast``, ``beta_slow``, ``attention_factor``, ``mscale``, ``mscale_all_dim``, ``truncate``).
    """

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
    rope_scaling: dict | None = None

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "dim", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "hidden_dim"):
            positive_int(f"LlamaConfig.{name}", getattr(self, name))
        number("LlamaConfig.rope_theta", self.rope_theta, 0, low_open=True)
        number("LlamaConfig.norm_eps", self.norm_eps, 0)
        if self.num_heads % self.num_kv_heads:
            raise CourseInputError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                                   f"({self.num_kv_heads})")
        if self.head_dim % 2:
            raise CourseInputError(f"rotary positions need an even head_dim, got {self.head_dim}")
        if self.rope_scaling is not None:
            self.rope_scaling = _check_rope_scaling(dict(self.rope_scaling), self.context_length)

    @classmethod
    def from_hf_config(cls, config: dict) -> LlamaConfig:
        """Read a ``transformers`` Llama ``config.json`` (as a dict), in either layout of the rotary settings:
        ``rope_parameters`` (transformers 5) or the older top-level ``rope_theta`` and ``rope_scaling``."""
        if config.get("model_type") != "llama":
            raise CourseInputError(f"expected a Llama config (model_type 'llama'), got {config.get('model_type')!r}")
        for key, supported in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False),
                               ("pretraining_tp", 1)):
            if config.get(key, supported) not in (supported, None):
                raise CourseInputError(f"this model implements {key}={supported!r}, the config has {config[key]!r}")
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        theta = rope.pop("rope_theta", config.get("rope_theta", 10000.0))
        if rope.pop("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) != 1.0:
            raise CourseInputError("partial rotary embeddings (partial_rotary_factor < 1) are not implemented here")
        if rope_type in ("llama3", "yarn"):
            rope.setdefault("original_max_position_embeddings",
                            config.get("original_max_position_embeddings", config["max_position_embeddings"]))
        return cls(
            vocab_size=config["vocab_size"],
            context_length=config["max_position_embeddings"],
            dim=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            head_dim=config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
            hidden_dim=config["intermediate_size"],
            rope_theta=theta,
            norm_eps=config["rms_norm_eps"],
            tie_weights=config.get("tie_word_embeddings", False),
            rope_scaling=None if rope_type == "default" else {"rope_type": rope_type, **rope},
        )


_ROPE_KEYS = {  # rope_type -> (required keys, optional keys)
    "linear": ({"factor"}, set()),
    "llama3": ({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}, set()),
    "yarn": ({"factor", "original_max_position_embeddings"},
             {"beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"}),
}


def _check_rope_scaling(scaling: dict, context_length: int) -> dict:
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type not in ROPE_SCALINGS:
        raise CourseInputError(
            f"rotary scaling {rope_type!r} is not implemented by the course's Llama (it implements "
            f"{', '.join(ROPE_SCALINGS)}); load this model with transformers' AutoModelForCausalLM instead")
    scaling = {"rope_type": rope_type, **{k: v for k, v in scaling.items() if k not in ("rope_type", "type")}}
    required, optional = _ROPE_KEYS[rope_type]
    missing, unknown = required - set(scaling), set(scaling) - required - optional - {"rope_type"}
    if missing or unknown:
        raise CourseInputError(f"rope_scaling of type {rope_type!r} needs the keys {sorted(required)}"
                               f"{f' and may have {sorted(optional)}' if optional else ''}; "
                               f"missing {sorted(missing) or 'none'}, unknown {sorted(unknown) or 'none'}")
    number(f"rope_scaling['factor'] ({rope_type})", scaling["factor"], 0, low_open=True)
    return scaling


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


def rotary_inverse_frequencies(head_dim: int, theta: float, scaling: dict | None = None,
                                device=None) -> tuple[Tensor, float]:
    """The ``(d/2,)`` rotation speeds ``theta^(-2i/d)`` of the feature pairs, and a factor for cos and sin.

    A scaling slows some pairs down so that longer texts stay within the angles seen in training: ``linear``
    divides every speed by ``factor``; ``llama3`` divides only the slow pairs (wavelength above
    ``original / low_freq_factor``), keeps the fast ones (below ``original / high_freq_factor``) and blends in
    between; ``yarn`` blends the same way by how many turns a pair makes over the original length, and scales
    cos and sin by ``0.1 ln(factor) + 1`` (sharper attention for the longer texts).
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim)  # (d/2,)
    kind = None if scaling is None else scaling["rope_type"]
    if kind is None:
        return inv_freq, 1.0
    factor = scaling["factor"]
    if kind == "linear":
        return inv_freq / factor, 1.0
    original = scaling["original_max_position_embeddings"]
    if kind == "llama3":
        wavelength = 2 * math.pi / inv_freq  # (d/2,) tokens per full turn
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        blend = ((original / wavelength - low) / (high - low)).clamp(0, 1)  # 0: slow pair, 1: fast pair
        return (1 - blend) * inv_freq / factor + blend * inv_freq, 1.0
    # yarn: pair i turns original * inv_freq[i] / (2 pi) times over the original length
    def pair_index(turns: float) -> float:  # which pair turns `turns` times over the original length
        return head_dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low, high = pair_index(scaling.get("beta_fast") or 32), pair_index(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    high = high + 0.001 if low == high else high
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float, device=device) - low) / (high - low)).clamp(0, 1)
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)  # (d/2,): fast pairs kept, slow ones slowed

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = scaling.get("attention_factor")
    if attention is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    return inv_freq, float(attention)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float,
                   scaling: dict | None = None) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotation angles ``position * theta^(-2i/d)``: each ``(B, T, d)``.

    Half-rotation layout: feature ``i`` is paired with feature ``i + d/2``, so the angles are repeated twice.
    ``scaling``: a config's ``rope_scaling`` (see :func:`rotary_inverse_frequencies`).
    """
    inv_freq, attention = rotary_inverse_frequencies(head_dim, theta, scaling, positions.device)  # (d/2,)
    angles = positions[..., None].float() * inv_freq  # (B, T, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, T, d)
    return angles.cos() * attention, angles.sin() * attention


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (i, i + d/2) feature pair of ``x`` ``(B, H, T, d)`` by its position's angle."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d)
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: Tensor, group: int) -> Tensor:
    """``(B, G, S, d)`` -> ``(B, G * group, S, d)``: each key/value head repeated for the ``group`` query heads
    that share it (query heads ``0..group-1`` read key/value head 0, and so on)."""
    return x.repeat_interleave(group, dim=1)


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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache: KVCache | None = None,
                need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """``need_weights=False`` calls PyTorch's fused kernel, which shares each key/value head among its query
        heads itself (``enable_gqa``), and returns ``None`` weights."""
        B, T, _ = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = self.key(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, T, d)
        v = self.value(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, T, d)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # positions enter here, not in the embeddings
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, G, S, d)
        if need_weights:
            group = self.num_heads // self.num_kv_heads
            k, v = repeat_kv(k, group), repeat_kv(v, group)  # (B, H, S, d) each
            y, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, d), (B, H, T, S)
        else:
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True), None  # (B, H, T, d)
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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache: KVCache | None = None,
                need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attn(self.attn_norm(x), cos, sin, mask, cache, need_weights=need_weights)
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
                cache: KVCache | None = None, output_attentions: bool = False, position_ids: Tensor | None = None):
        """``(B, T)`` ids -> ``(logits (B, T, V), loss or None)``, plus per-layer ``(B, H, T, S)`` weights if asked.

        With left padding, pass ``attention_mask`` (1 = real token): positions then count real tokens only.
        """
        past = check_cache(cache, self.config.num_layers)
        check_inputs(input_ids, self.config.vocab_size, targets, attention_mask, past, self.config.context_length)
        (B, T), context = input_ids.shape, self.config.context_length
        positions = default_positions(T, past, attention_mask, input_ids.device) if position_ids is None else \
            check_position_ids(position_ids, B, T, context)  # (B or 1, T)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta,
                                  self.config.rope_scaling)  # (B or 1, T, d) each
        mask = decoder_mask(T, past, attention_mask, input_ids.device)  # (B or 1, 1, T, S)
        x = self.embed(input_ids)  # (B, T, D)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, cos.to(x.dtype), sin.to(x.dtype), mask, cache,
                               need_weights=output_attentions)  # (B, T, D), (B, H, T, S) or None
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


def load_pretrained_decoder(source=None, dtype: torch.dtype = torch.float32, *,
                            config: dict | None = None) -> LlamaForCausalLM:
    """The course's Llama-style model with a Llama checkpoint's weights (default: SmolLM2-135M), in eval mode.

    ``source``: a folder with a transformers Llama ``config.json`` and ``model.safetensors`` (default: the
    course's cache, checked; a damaged cache raises an error that names the folder and the command that repairs
    it), a ``transformers`` Llama model in memory, or a state dict with ``config`` (see
    :func:`~course_lib.checkpoints.read_checkpoint`).
    """
    course_cache = source is None
    source = decoder_path() if course_cache else source
    with cache.explain_load_failure(Path(source), DECODER_CACHE) if course_cache else contextlib.nullcontext():
        settings, checkpoint = read_checkpoint(source, config)
    config = LlamaConfig.from_hf_config(settings)
    names = hf_llama_name_map(config.num_layers)
    unknown = sorted(set(checkpoint) - set(names))
    if unknown:
        raise CourseInputError(f"the checkpoint has parameters this model does not know: {unknown[:5]}")
    state = {names[key]: tensor.to(dtype) for key, tensor in checkpoint.items()}
    if config.tie_weights:  # a tied checkpoint may store the shared matrix under either name
        shared = state.get("embed.weight", state.get("lm_head.weight"))
        state["embed.weight"] = state["lm_head.weight"] = shared
    with torch.device("meta"):  # no random initialisation: every weight comes from the checkpoint
        model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_weights:
        model.lm_head.weight = model.embed.weight  # one parameter again, as in the model's own constructor
    return model.eval()
