"""Exercises of lesson 05 (modern decoders): RMSNorm, rotary position embeddings, the key/value repetition of
grouped-query attention, and greedy generation with a KV cache (the cached attention of a whole layer and rotary
context extension are in :mod:`course_lib.checks.lesson05_attention`).

The references are the course's tested functions: :class:`course_lib.llama.RMSNorm`,
:func:`course_lib.llama.apply_rotary`, :func:`course_lib.llama.repeat_kv` and
:func:`course_lib.generation.generate`, which tests/test_llama.py compares with ``transformers``.

A floating answer must keep the reference's dtype here (float32 in, float32 out): a result computed in float64
is not converted into agreement, and the message names both dtypes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import KVCache
from course_lib.checks import Case, Exercise, Mistake, compare_exact_dtype, randn, register
from course_lib.generation import generate
from course_lib.llama import LlamaConfig, LlamaForCausalLM, RMSNorm, apply_rotary, repeat_kv, rotary_cos_sin


# ----------------------------------------------------------------------------------------------- 05.rms_norm
def _reference_rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    norm = RMSNorm(x.shape[-1], eps)
    norm.weight = nn.Parameter(weight, requires_grad=False)
    return norm(x)


def _rms_norm_subtracts_the_mean(x, weight, eps):
    return F.layer_norm(x, x.shape[-1:], weight=weight, eps=eps)


def _rms_norm_eps_outside_the_root(x, weight, eps):
    return x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps) * weight


def _rms_norm_without_eps(x, weight, eps):
    return x / x.pow(2).mean(dim=-1, keepdim=True).sqrt() * weight


def _rms_norm_of_the_sum(x, weight, eps):
    return x / (x.pow(2).sum(dim=-1, keepdim=True) + eps).sqrt() * weight


def _rms_norm_without_weight(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def _rms_norm_over_tokens(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps) * weight


register(Exercise("05.rms_norm", "RMSNorm", _reference_rms_norm, cases=[
        Case((randn(2, 3, 8, seed=1), torch.linspace(0.5, 1.5, 8), 1e-5), label="2 texts x 3 tokens, width 8"),
        Case((randn(1, 1, 576, seed=2, scale=3.0), 1.0 + randn(576, seed=3, scale=0.1), 1e-5),
             label="a single token of SmolLM2's width 576"),
        Case((randn(2, 4, 16, seed=4) + 5.0, torch.ones(16), 1e-5),
             label="token vectors whose features average about 5 (a mean LayerNorm would remove)"),
        Case((randn(1, 3, 8, seed=5, scale=1e-3), torch.linspace(1.0, 2.0, 8), 1e-6),
             label="tiny values whose mean square (about 1e-6) is as small as eps = 1e-6: where eps goes, and "
                   "its value, matter"),
        Case((torch.zeros(1, 2, 8), torch.ones(8), 1e-6), label="an all-zero token vector: its output is 0, not NaN"),
        Case((randn(3, 8, seed=6), torch.linspace(-1.0, 1.0, 8), 1e-6), label="a 2-D input (tokens, width)"),
    ],
    mistakes=[
        Mistake(_rms_norm_subtracts_the_mean,
                "that is LayerNorm: RMSNorm does not subtract the mean (and has no bias). Divide x itself by "
                "sqrt(mean(x**2) + eps)."),
        Mistake(_rms_norm_eps_outside_the_root,
                "put eps inside the square root, sqrt(mean(x**2) + eps), as Llama does: outside it, the result "
                "differs for small vectors whose mean square is close to eps."),
        Mistake(_rms_norm_without_eps,
                "add eps inside the square root: without it an all-zero vector divides 0 by 0 and gives NaN."),
        Mistake(_rms_norm_of_the_sum,
                "use the *mean* of the squares over the features (x.pow(2).mean(dim=-1, keepdim=True)), not their "
                "sum: the sum makes every output sqrt(width) times too small."),
        Mistake(_rms_norm_without_weight,
                "multiply by `weight` at the end: the learned per-feature scale is part of the norm."),
        Mistake(_rms_norm_over_tokens,
                "average over the features of each token (dim=-1), not over the tokens (dim=1): each token vector "
                "is normalised on its own."),
    ],
    compare=compare_exact_dtype,
    level="warm-up",
    minutes=5,
))


# ----------------------------------------------------------------------------------------------- 05.apply_rotary
def _rotary_case(seed: int, heads: int, positions: list[list[int]], head_dim: int, theta: float = 10000.0,
                 label: str = "") -> Case:
    """Queries (B, H, T, d) and the cos/sin (B, T, d) of ``positions`` (B, T), as the model computes them."""
    positions = torch.tensor(positions)  # (B, T)
    cos, sin = rotary_cos_sin(positions, head_dim, theta)  # (B, T, d) each
    x = randn(positions.shape[0], heads, positions.shape[1], head_dim, seed=seed)
    return Case((x, cos, sin), label=label)


def _rotate_neighbours(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): pairs of neighbouring features (the interleaved layout)."""
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


def _halves(x):
    return x.chunk(2, dim=-1)


def _rotary_interleaved(x, cos, sin):
    return x * cos[:, None] + _rotate_neighbours(x) * sin[:, None]


def _rotary_backwards(x, cos, sin):
    x1, x2 = _halves(x)
    return x * cos[:, None] + torch.cat([x2, -x1], dim=-1) * sin[:, None]


def _rotary_cos_sin_swapped(x, cos, sin):
    x1, x2 = _halves(x)
    return x * sin[:, None] + torch.cat([-x2, x1], dim=-1) * cos[:, None]


def _rotary_without_head_axis(x, cos, sin):
    x1, x2 = _halves(x)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin  # (B, T, d) lines up with (H, T, d), not (B, 1, T, d)


register(Exercise("05.apply_rotary", "rotary position embedding", apply_rotary, cases=[
        _rotary_case(10, 2, [[0, 1, 2, 3, 4]], 8, label="1 text, 2 heads, positions 0-4, head_dim 8"),
        _rotary_case(11, 1, [[0]], 8, label="a single token at position 0 (angle 0: nothing turns)"),
        _rotary_case(12, 3, [[8190, 8191]], 64, theta=100000.0,
                     label="the last positions of SmolLM2's context (8190, 8191), head_dim 64, theta 100000"),
        _rotary_case(13, 2, [[0, 1, 2, 3], [0, 0, 1, 2]], 8,
                     label="2 texts and 2 heads (as many heads as texts), the second text left-padded"),
        _rotary_case(14, 2, [[3, 4, 5]], 2, label="head_dim 2: a single pair of features"),
        _rotary_case(15, 9, [[0, 1, 2], [5, 6, 7]], 16, label="2 texts, 9 heads, head_dim 16"),
    ],
    mistakes=[
        Mistake(_rotary_interleaved,
                "pair feature i with feature i + d/2 (the two halves: rotate_half(x) = cat(-x2, x1)), not the "
                "neighbours 2i and 2i+1: cos and sin are laid out for halves, as in transformers' Llama."),
        Mistake(_rotary_backwards,
                "that turns each pair the wrong way (by minus the angle): rotate_half(x) is cat(-x2, x1), with "
                "the minus sign on the second half moved to the front."),
        Mistake(_rotary_cos_sin_swapped,
                "x is multiplied by cos and the turned copy rotate_half(x) by sin; you swapped them (at angle 0 "
                "nothing may change: cos = 1, sin = 0)."),
        Mistake(_rotary_without_head_axis,
                "cos and sin are (B, T, d) and x is (B, H, T, d): insert the head axis, cos[:, None] and "
                "sin[:, None] (or unsqueeze(1)). Without it PyTorch lines the batch up with the heads whenever "
                "B equals H, silently."),
    ],
    compare=compare_exact_dtype,
    level="warm-up",
    minutes=10,
))


# ----------------------------------------------------------------------------------------------- 05.repeat_kv
def _repeat_kv_tiled(x, group):
    return x.repeat(1, group, 1, 1)


def _repeat_kv_over_tokens(x, group):
    return x.repeat_interleave(group, dim=2)


def _repeat_kv_five_dims(x, group):
    return x[:, :, None].expand(-1, -1, group, -1, -1)


def _numbered_heads(B: int, G: int, S: int, d: int) -> Tensor:
    """(B, G, S, d) with every value telling its position: easy to read in a failed check."""
    return torch.arange(B * G * S * d, dtype=torch.float32).reshape(B, G, S, d)


register(Exercise("05.repeat_kv", "key/value heads repeated for grouped-query attention", repeat_kv, cases=[
        Case((_numbered_heads(1, 3, 2, 2), 3), label="3 key/value heads for 9 query heads (group 3, as in SmolLM2)"),
        Case((randn(2, 2, 5, 4, seed=20), 1), label="group 1: one key/value head per query head (multi-head attention)"),
        Case((randn(1, 1, 3, 4, seed=21), 4), label="a single key/value head for 4 query heads (multi-query attention)"),
        Case((randn(2, 4, 1, 8, seed=22), 2), label="2 texts, 4 key/value heads, a single token, group 2"),
        Case((randn(1, 3, 6, 64, seed=23), 3), label="SmolLM2's sizes: 3 key/value heads of 64, 6 tokens, group 3"),
    ],
    mistakes=[
        Mistake(_repeat_kv_tiled,
                "query heads 0..group-1 share key/value head 0, the next group head 1, and so on: repeat each head "
                "in place (repeat_interleave(group, dim=1)). x.repeat tiles the whole stack (0, 1, 2, 0, 1, 2, ...)."),
        Mistake(_repeat_kv_over_tokens,
                "repeat the heads (dim=1), not the tokens (dim=2): the result has group times more heads and the "
                "same number of tokens."),
        Mistake(_repeat_kv_five_dims,
                "expand gives (B, G, group, S, d); reshape it to (B, G * group, S, d) so that it lines up with the "
                "query heads."),
    ],
    compare=compare_exact_dtype,
    level="warm-up",
    minutes=5,
))


# ----------------------------------------------------------------------------------------------- 05.greedy_with_cache
ONE_TOKEN_PER_STEP = "the prompt, then one new token per forward pass"


def _with_call_log(fn):
    """Run ``fn(model, input_ids, max_new_tokens)`` and return its ids and how many tokens each forward pass got."""
    def run(model, input_ids, max_new_tokens):
        widths = []

        def record(module, args, kwargs):
            ids = args[0] if args else kwargs.get("input_ids")
            widths.append(int(ids.shape[-1]) if isinstance(ids, Tensor) else None)

        handle = model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            ids = fn(model, input_ids, max_new_tokens)
        finally:
            handle.remove()
        steps = ONE_TOKEN_PER_STEP if all(w == 1 for w in widths[1:]) else f"forward passes over {widths} tokens"
        return ids, steps
    return run


def _reference_greedy(model, input_ids, max_new_tokens):
    return generate(model, input_ids, max_new_tokens)  # greedy, with a KV cache


@torch.no_grad()
def _greedy(model, input_ids, max_new_tokens, feed: str = "new", cache: bool = True, position: int = -1):
    """Greedy decoding with a pluggable mistake: what goes into the model at each step, and whether a cache does."""
    kv = KVCache(model.config.num_layers) if cache else None
    ids, new = input_ids, input_ids
    for _ in range(max_new_tokens):
        logits, _ = model(ids if feed == "all" else new, cache=kv)  # (B, T, V)
        new = logits[:, position].argmax(dim=-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, new], dim=1)
        position = -1
    return ids


def _greedy_without_cache(model, input_ids, max_new_tokens):
    return _greedy(model, input_ids, max_new_tokens, feed="all", cache=False)


def _greedy_everything_into_the_cache(model, input_ids, max_new_tokens):
    return _greedy(model, input_ids, max_new_tokens, feed="all", cache=True)


def _greedy_new_token_alone(model, input_ids, max_new_tokens):
    return _greedy(model, input_ids, max_new_tokens, feed="new", cache=False)


def _greedy_first_position(model, input_ids, max_new_tokens):
    return _greedy(model, input_ids, max_new_tokens, position=0)


TINY_LLAMA = LlamaConfig(vocab_size=40, context_length=48, dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         head_dim=8, hidden_dim=64, rope_theta=10000.0)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A small random Llama whose greedy choices are clear-cut (weights of std 0.3, seeded, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(TINY_LLAMA)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.endswith("norm.weight"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def _prompt(seed: int, B: int, T: int) -> Tensor:
    return torch.randint(3, TINY_LLAMA.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


register(Exercise("05.greedy_with_cache", "greedy generation with a KV cache", _reference_greedy, cases=[
        Case((tiny_llama(0), _prompt(30, 1, 4), 6), label="a small random Llama, a prompt of 4 tokens, 6 new tokens"),
        Case((tiny_llama(1), _prompt(31, 1, 1), 5), label="a prompt of a single token, 5 new tokens"),
        Case((tiny_llama(2), _prompt(32, 2, 3), 4), label="a batch of 2 prompts of 3 tokens, 4 new tokens"),
        Case((tiny_llama(3), _prompt(33, 1, 5), 1), label="a single new token (no step after the prompt)"),
    ],
    mistakes=[
        Mistake(_greedy_without_cache,
                "the tokens are right, but every step runs the model over the whole text again. Create one "
                "KVCache(model.config.num_layers) before the loop, pass cache=cache, and after the prompt feed "
                "only the new token, shape (B, 1)."),
        Mistake(_greedy_everything_into_the_cache,
                "the cache already holds the keys and values of every earlier token: feed only the new token, "
                "shape (B, 1). Feeding the whole text again stores each token twice, at the wrong positions."),
        Mistake(_greedy_new_token_alone,
                "pass the same cache at every step (cache=cache): without it the model sees the new token alone "
                "and forgets the text before it."),
        Mistake(_greedy_first_position,
                "the next token comes from the logits of the *last* position, logits[:, -1]; position 0 predicts "
                "the second token of the prompt."),
    ],
    compare=compare_exact_dtype,
    adapt=_with_call_log,  # compare the tokens and how many tokens each forward pass received
    level="warm-up",
    minutes=10,
    hints=(
        "One cache for the whole generation: the prompt goes through the model once, then each step feeds only "
        "the token just chosen, and the cache supplies the keys and values of everything before it.",
        "cache = KVCache(model.config.num_layers); in the loop: logits, _ = model(new, cache=cache); "
        "new = logits[:, -1].argmax(dim=-1, keepdim=True); ids = torch.cat([ids, new], dim=1)",
    ),
))
