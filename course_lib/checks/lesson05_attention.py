"""Exercises of lesson 05 that run a whole model: the attention of a Llama layer with a KV cache (core), checked
inside the course's Llama against ``transformers``' logits, and rotary context extension (stretch), checked
against ``transformers``' rotary init functions.

05.cached_attention: the student's ``llama_attention(attn, x, cache, offset, theta)`` replaces the attention of
every layer of a :class:`course_lib.llama.LlamaForCausalLM`; the model reads a prompt, then more tokens one step
at a time with a :class:`~course_lib.attention.KVCache`, and the logits of each step are compared with those of
``transformers``' ``LlamaForCausalLM`` holding the same weights (a small random config, and SmolLM2's first two
layers with their real weights). The message names the first step and position whose logits differ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from course_lib.attention import KVCache
from course_lib.checks import Case, Exercise, Mistake, compare_exact_dtype, register
from course_lib.llama import LlamaForCausalLM, hf_llama_name_map, load_pretrained_decoder, rotary_cos_sin
from course_lib.runtime.errors import CourseInputError

ATOL, RTOL = 1e-4, 1e-4  # float32 logits of the same weights, summed in another order


@dataclass(frozen=True)
class Step:
    """The logits ``(B, T, V)`` of one forward pass whose first new token sits at position ``start``."""

    start: int
    logits: Tensor


@dataclass(frozen=True)
class CachedRun:
    """A course Llama, the chunks of token ids fed to it one forward pass at a time (the first one is the
    prompt), and transformers' logits for each pass (same weights)."""

    model: LlamaForCausalLM
    chunks: tuple[Tensor, ...]
    expected: tuple[Step, ...]


def _where(index: int, step: Step) -> str:
    first, count = step.start, step.logits.shape[1]
    span = f"position {first}" if count == 1 else f"positions {first}-{first + count - 1}"
    return "the prompt" if index == 0 else f"step {index} ({count} new token{'s' * (count > 1)} at {span}, " \
                                           f"{first} already cached)"


def compare_steps(got, expected: tuple[Step, ...]) -> str | None:
    """``None`` when every step's logits match, else which step and which position differ first."""
    if not (isinstance(got, tuple) and len(got) == len(expected) and all(isinstance(g, Step) for g in got)):
        return f"expected {len(expected)} forward passes, got {got!r}"
    for index, (g, e) in enumerate(zip(got, expected)):
        where = _where(index, e)
        if g.logits.dtype != e.logits.dtype:
            return f"{where}: expected {e.logits.dtype} logits, got {g.logits.dtype}"
        if g.logits.shape != e.logits.shape:
            return f"{where}: expected logits of shape {tuple(e.logits.shape)}, got {tuple(g.logits.shape)}"
        close = (g.logits - e.logits).abs() <= ATOL + RTOL * e.logits.abs()  # (B, T, V); NaN is not close
        if not close.all():
            t = int((~close).any(dim=(0, 2)).nonzero()[0])
            worst = (g.logits[:, t] - e.logits[:, t]).abs().max().item()
            before = "" if index == 0 else " (the earlier passes match)"
            return (f"{where}: the logits differ from transformers' first at position {e.start + t}, largest "
                    f"difference {worst:.3g} there (tolerance {ATOL:g} + {RTOL:g} x |logit|){before}")
    return None


def _swap_in(fn):
    """``fn`` in the student's form -> a function of a :class:`CachedRun` that returns its :class:`Step` s, with
    ``fn`` as the attention of every layer of the course's Llama."""
    def run(setup: CachedRun) -> tuple[Step, ...]:
        if fn is transformers_peer:
            return setup.expected
        model, theta = setup.model, setup.model.config.rope_theta
        blocks = list(model.blocks)

        def attention_of(attn):
            def forward(x, cos, sin, mask, cache=None, need_weights=True):  # the model's cos, sin, mask unused
                held = cache.keys[attn.layer_index]
                offset = 0 if held is None else held.shape[-2]
                y = fn(attn, x, cache, offset, theta)
                if not isinstance(y, Tensor) or y.shape != x.shape:
                    raise CourseInputError(f"llama_attention must return a tensor of the shape of x, "
                                           f"{tuple(x.shape)}, got {tuple(y.shape) if isinstance(y, Tensor) else y!r}")
                return y, None
            return forward

        for block in blocks:
            block.attn.forward = attention_of(block.attn)
        try:
            cache, steps, start = KVCache(model.config.num_layers), [], 0
            with torch.no_grad():
                for chunk in setup.chunks:
                    logits, _ = model(chunk, cache=cache)  # (B, T, V)
                    steps.append(Step(start, logits))
                    start += chunk.shape[1]
            return tuple(steps)
        finally:
            for block in blocks:
                del block.attn.forward  # the module's own forward again
    return run


def transformers_peer(attn, x, cache, offset, theta):
    """The reference of 05.cached_attention is transformers' ``LlamaForCausalLM`` with the same weights: the
    check returns its logits, computed once per case. Called directly, this is the course's own attention."""
    group = attn.num_heads // attn.num_kv_heads
    B, T, _ = x.shape
    q = attn.query(x).view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, T, d)
    k = attn.key(x).view(B, T, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # (B, G, T, d)
    v = attn.value(x).view(B, T, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # (B, G, T, d)
    q, k = _rotate(q, offset, theta), _rotate(k, offset, theta)
    k, v = cache.update(attn.layer_index, k, v)  # (B, G, S, d)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, S, d)
    S = k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)  # (B, H, T, S)
    allowed = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)  # query t sits at position S - T + t
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return attn.out((weights @ v).transpose(1, 2).reshape(B, T, -1))  # (B, T, D)


# ------------------------------------------------------------------ the known mistakes, one change each
def _rotate(t: Tensor, offset: int, theta: float, interleaved: bool = False) -> Tensor:
    """Half-split rotary of ``t`` (B, heads, T, d) at positions offset..offset+T-1 (or neighbour pairs)."""
    T, d = t.shape[-2], t.shape[-1]
    cos, sin = rotary_cos_sin(torch.arange(offset, offset + T)[None], d, theta)  # (1, T, d) each
    if interleaved:  # pairs (2i, 2i+1) turned by the angle of pair i
        cos, sin = cos[..., : d // 2].repeat_interleave(2, -1), sin[..., : d // 2].repeat_interleave(2, -1)
        turned = torch.stack([-t[..., 1::2], t[..., 0::2]], dim=-1).flatten(-2)
    else:
        t1, t2 = t.chunk(2, dim=-1)
        turned = torch.cat([-t2, t1], dim=-1)
    return t * cos[:, None] + turned * sin[:, None]


def _variant(rotary_offset=True, interleaved=False, tile=False, top_left_mask=False, rotate_after_cache=False,
             model_dim_scale=False):
    def attention(attn, x, cache, offset, theta):
        H, G, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        B, T, D = x.shape
        q = attn.query(x).view(B, T, H, d).transpose(1, 2)
        k = attn.key(x).view(B, T, G, d).transpose(1, 2)
        v = attn.value(x).view(B, T, G, d).transpose(1, 2)
        at = offset if rotary_offset else 0
        q = _rotate(q, at, theta, interleaved)
        if rotate_after_cache:
            k, v = cache.update(attn.layer_index, k, v)
            k = _rotate(k, at, theta, interleaved)  # every cached key turned by the new tokens' angles
        else:
            k = _rotate(k, at, theta, interleaved)
            k, v = cache.update(attn.layer_index, k, v)
        k, v = (k.repeat(1, H // G, 1, 1), v.repeat(1, H // G, 1, 1)) if tile else \
            (k.repeat_interleave(H // G, 1), v.repeat_interleave(H // G, 1))
        S = k.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(D if model_dim_scale else d)
        allowed = torch.ones(T, S, dtype=torch.bool).tril(diagonal=0 if top_left_mask else S - T)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        return attn.out((weights @ v).transpose(1, 2).reshape(B, T, -1))
    return attention


# ------------------------------------------------------------------ the cases: small random configs, SmolLM2
def _hf_config(model: LlamaForCausalLM):
    from transformers import LlamaConfig as HFLlamaConfig

    c = model.config
    config = HFLlamaConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim,
                           num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                           num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                           max_position_embeddings=c.context_length, rms_norm_eps=c.norm_eps,
                           rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
                           tie_word_embeddings=c.tie_weights, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    config._attn_implementation = "eager"
    return config


def cached_run(model: LlamaForCausalLM, chunks: list[Tensor]) -> CachedRun:
    """The case: ``model``, its ``chunks`` (prompt first), and transformers' logits for each forward pass."""
    from transformers import DynamicCache
    from transformers import LlamaForCausalLM as HFLlamaForCausalLM

    names = {ours: hf for hf, ours in hf_llama_name_map(model.config.num_layers).items()}
    hf = HFLlamaForCausalLM(_hf_config(model)).eval()
    hf.load_state_dict({names[k]: v for k, v in model.state_dict().items()}, strict=True)
    cache, expected, start = DynamicCache(config=hf.config), [], 0
    with torch.no_grad():
        for chunk in chunks:
            expected.append(Step(start, hf(input_ids=chunk, cache=cache, use_cache=True).logits))
            start += chunk.shape[1]
    return CachedRun(model.eval(), tuple(chunks), tuple(expected))


def _random_llama(seed: int, **sizes) -> LlamaForCausalLM:
    """A small Llama with weights of std 0.3 (so that every mistake moves the logits clearly)."""
    from course_lib.llama import LlamaConfig

    config = LlamaConfig(vocab_size=48, context_length=64, num_layers=2, hidden_dim=64, rope_theta=10000.0,
                         **sizes)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.ones(p.shape) if name.endswith("norm.weight") else torch.randn(p.shape, generator=generator)
             * 0.3 for name, p in model.named_parameters()}
    state["lm_head.weight"] = state["embed.weight"]  # tied, as in the model's own constructor
    model.load_state_dict(state, assign=True)
    model.lm_head.weight = model.embed.weight
    return model


def _chunks(seed: int, batch: int, sizes: list[int], vocab: int) -> list[Tensor]:
    ids = torch.randint(3, vocab, (batch, sum(sizes)), generator=torch.Generator().manual_seed(seed))
    return list(ids.split(sizes, dim=1))


def smollm2_layers(num_layers: int = 2) -> LlamaForCausalLM:
    """SmolLM2-135M's first ``num_layers`` layers with their real weights (embedding, final norm and head too)."""
    import json

    from safetensors import safe_open

    from course_lib.assets import decoder_path

    folder = decoder_path()
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = num_layers
    names = hf_llama_name_map(num_layers)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as checkpoint:
        state = {key: checkpoint.get_tensor(key) for key in checkpoint.keys() if key in names}
    return load_pretrained_decoder(state, config=config)


def _cases() -> list[Case]:
    smol = smollm2_layers()
    # "Once upon a time, in a small village, there lived" in SmolLM2's tokens
    story = torch.tensor([[6403, 1980, 253, 655, 28, 281, 253, 1165, 6560, 28, 665, 4161]])
    return [
        Case((cached_run(_random_llama(40, dim=32, num_heads=4, num_kv_heads=2, head_dim=8),
                         _chunks(41, 1, [5, 1, 1, 1], 48)),),
             label="a small random Llama (4 query heads sharing 2 key/value heads, head_dim 8): a prompt of 5 tokens, "
                   "then 3 single tokens"),
        Case((cached_run(_random_llama(42, dim=48, num_heads=6, num_kv_heads=2, head_dim=16),
                         _chunks(43, 2, [4, 3, 1, 1], 48)),),
             label="2 texts, 6 query heads in groups of 3, head_dim 16: a prompt of 4 tokens, a chunk of 3 tokens "
                   "(positions 4-6), then 2 single tokens"),
        Case((cached_run(_random_llama(44, dim=32, num_heads=4, num_kv_heads=1, head_dim=16),
                         _chunks(45, 1, [3, 1, 1], 48)),),
             label="multi-query attention (4 query heads, 1 key/value head): a prompt of 3 tokens, then 2 single tokens"),
        Case((cached_run(smol, list(story.split([8, 1, 3], dim=1))),),
             label="SmolLM2's first 2 layers with its real weights (9 query heads, 3 key/value heads, head_dim 64, "
                   "theta 100,000): a prompt of 8 tokens, 1 token, then a chunk of 3"),
    ]


register(Exercise("05.cached_attention", "the attention of a Llama layer with a KV cache", transformers_peer,
    cases=_cases,
    mistakes=[
        Mistake(_variant(rotary_offset=False),
                "the prompt is right, the cached steps are not: rotate the new queries and keys at their real "
                "positions offset, offset + 1, ..., offset + T - 1 (torch.arange(offset, offset + T)), not from 0 "
                "again at every step."),
        Mistake(_variant(interleaved=True),
                "position 0 is right, the rest is not: you paired neighbouring features (2i, 2i + 1). This model "
                "pairs feature i with feature i + d/2 (the half split, rotate_half = cat(-x2, x1)), the layout of "
                "transformers' Llama weights."),
        Mistake(_variant(tile=True),
                "each key/value head serves a block of consecutive query heads (0, 0, 1, 1 for groups of 2): "
                "repeat_interleave(group, dim=1). x.repeat(1, group, 1, 1) tiles the stack (0, 1, 0, 1) and pairs "
                "query heads with the wrong keys and values."),
        Mistake(_variant(top_left_mask=True),
                "the mask must account for the cached tokens: query t of this pass sits at position offset + t and "
                "may see keys 0..offset + t. A causal mask built for T x S from the top-left corner (as is_causal=True "
                "does) lets a new token see only the first keys: use tril(diagonal=S - T), shape (T, S)."),
        Mistake(_variant(rotate_after_cache=True),
                "rotate the keys before appending them to the cache: the cache keeps rotated keys, each turned "
                "by its own position. Rotating what the cache returns turns all the old keys by the new tokens' "
                "angles."),
        Mistake(_variant(model_dim_scale=True),
                "divide the scores by sqrt(head_dim), the width of one head (attn.head_dim), not by the square "
                "root of the model's width."),
    ],
    compare=compare_steps,
    adapt=_swap_in,
    level="core",
    minutes=35,
    hints=(
        "Follow the data: project, turn queries and keys by their positions offset..offset+T-1, append keys and "
        "values to the cache (which returns all S of them), give each query head its key/value head, then causal "
        "attention of the T new queries over the S keys, where query t sits at position offset + t.",
        "cos, sin = llama.rotary_cos_sin(torch.arange(offset, offset + T)[None], d, theta); then "
        "k, v = cache.update(attn.layer_index, k, v); k = k.repeat_interleave(H // G, dim=1); "
        "allowed = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T).",
    ),
))


# ----------------------------------------------------------------------------------------------- 05.rope_scaling
def transformers_inverse_frequencies(head_dim: int, theta: float, scaling: dict) -> Tensor:
    """The ``(d/2,)`` rotation speeds of ``transformers``' rotary init function for ``scaling['rope_type']``."""
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = HFLlamaConfig(hidden_size=head_dim, num_attention_heads=1, head_dim=head_dim,
                           max_position_embeddings=4 * scaling.get("original_max_position_embeddings", 2048),
                           rope_parameters={**scaling, "rope_theta": theta})
    inv_freq, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config, None)
    return inv_freq.float()


def _speeds(head_dim, theta):
    return 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (d/2,)


def _scaling_multiplied(head_dim, theta, scaling):
    return _speeds(head_dim, theta) * scaling["factor"]


def _linear_or(llama3):
    """An answer that gets linear scaling right and llama3 scaling as ``llama3`` does."""
    def answer(head_dim, theta, scaling):
        if scaling["rope_type"] == "linear":
            return _speeds(head_dim, theta) / scaling["factor"]
        return llama3(head_dim, theta, scaling)
    return answer


@_linear_or
def _llama3_as_linear(head_dim, theta, scaling):
    return _speeds(head_dim, theta) / scaling["factor"]


@_linear_or
def _llama3_fast_pairs_slowed(head_dim, theta, scaling):
    speeds = _speeds(head_dim, theta)
    wavelength = 2 * math.pi / speeds
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    blend = 1 - ((scaling["original_max_position_embeddings"] / wavelength - low) / (high - low)).clamp(0, 1)
    return (1 - blend) * speeds / scaling["factor"] + blend * speeds


@_linear_or
def _llama3_without_blend(head_dim, theta, scaling):
    speeds = _speeds(head_dim, theta)
    wavelength = 2 * math.pi / speeds
    slow = wavelength > scaling["original_max_position_embeddings"] / scaling["low_freq_factor"]
    return torch.where(slow, speeds / scaling["factor"], speeds)


_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}

register(Exercise("05.rope_scaling", "rotary context extension (linear and llama3)", transformers_inverse_frequencies, cases=[
        Case((64, 10000.0, {"rope_type": "linear", "factor": 4.0}), label="linear, factor 4, head_dim 64"),
        Case((64, 100000.0, {"rope_type": "linear", "factor": 2.0}), label="linear, factor 2, SmolLM2's head_dim and theta"),
        Case((128, 500000.0, dict(_LLAMA3)), label="llama3 as in Llama 3.1: factor 8, low 1, high 4, original 8192, "
                                                     "theta 500,000, head_dim 128"),
        Case((64, 100000.0, {**_LLAMA3, "factor": 4.0, "original_max_position_embeddings": 2048}),
             label="llama3 on SmolLM2's sizes: factor 4, original 2048 (several pairs in the blended band)"),
    ],
    mistakes=[
        Mistake(_scaling_multiplied,
                "a longer context needs *slower* rotations: divide the speeds by the factor, do not multiply."),
        Mistake(_llama3_as_linear,
                "that is linear scaling: llama3 keeps the fast pairs (wavelength below original / high_freq_factor) "
                "as they are and slows only the slow ones (above original / low_freq_factor), blending in between."),
        Mistake(_llama3_without_blend,
                "between the two thresholds llama3 blends: speed = (1 - s) * speed / factor + s * speed with "
                "s = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)."),
        Mistake(_llama3_fast_pairs_slowed,
                "the blend is the other way round: s = 1 for the fast pairs (kept), s = 0 for the slow ones "
                "(divided by the factor)."),
    ],
    compare=compare_exact_dtype,
    level="stretch",
    minutes=20,
    hints=(
        "Start from the plain speeds theta^(-2i/d); a pair's wavelength is 2 pi / speed tokens per turn. Linear "
        "divides every speed by the factor; llama3 decides per pair by comparing its wavelength with the "
        "original training length.",
        "s = ((original / wavelength - low) / (high - low)).clamp(0, 1); return (1 - s) * speed / factor + s * speed",
    ),
))


__all__ = ["Step", "CachedRun", "compare_steps", "cached_run", "smollm2_layers", "transformers_peer",
           "transformers_inverse_frequencies"]
