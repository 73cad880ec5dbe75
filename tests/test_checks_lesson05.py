"""Lesson 05 exercises: correct answers in other forms pass, wrong ones of many kinds fail for their reason, and
the references agree with transformers' Llama on every case the checks try.

tests/test_checks.py runs the general contract (reference passes, each listed mistake gets its own hint, a stub
is told it is not done yet); tests/test_llama.py compares the references with transformers on other inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import KVCache
from course_lib.checks import check, get_exercise
from course_lib.checks.lesson05 import TINY_LLAMA
from course_lib.generation import generate
from course_lib.llama import hf_llama_name_map


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


# ------------------------------------------------------------------ correct answers written differently
def test_rms_norm_written_differently_passes():
    assert check("05.rms_norm", lambda x, weight, eps: x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight
                 ).passed
    assert check("05.rms_norm", lambda x, w, eps: w * x * (x.square().mean(dim=-1, keepdim=True) + eps) ** -0.5
                 ).passed
    assert check("05.rms_norm", lambda x, weight, eps: F.rms_norm(x, x.shape[-1:], weight, eps)).passed

    def upcast_like_transformers(x, weight, eps):
        x32 = x.to(torch.float32)
        variance = x32.pow(2).mean(-1, keepdim=True)
        return weight * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)

    assert check("05.rms_norm", upcast_like_transformers).passed


def test_apply_rotary_written_differently_passes():
    def by_halves(x, cos, sin):  # each half written out: (x1 cos - x2 sin, x2 cos + x1 sin)
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos[:, None, :, :half], sin[:, None, :, :half]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def as_complex_numbers(x, cos, sin):  # the pair (x_i, x_{i+d/2}) as x_i + i x_{i+d/2}, turned by e^{i angle}
        half = x.shape[-1] // 2
        z = torch.complex(x[..., :half], x[..., half:])  # (B, H, T, d/2)
        turn = torch.complex(cos[..., :half], sin[..., :half]).unsqueeze(1)  # (B, 1, T, d/2)
        turned = z * turn
        return torch.cat([turned.real, turned.imag], dim=-1)

    def with_einsum_rotation(x, cos, sin):
        d = x.shape[-1]
        turn = torch.zeros(d, d)
        turn[torch.arange(d // 2) + d // 2, torch.arange(d // 2)] = -1.0  # rotate_half as a (d, d) matrix
        turn[torch.arange(d // 2), torch.arange(d // 2) + d // 2] = 1.0
        return x * cos.unsqueeze(1) + torch.einsum("bhtd,de->bhte", x, turn) * sin.unsqueeze(1)

    for answer in (by_halves, as_complex_numbers, with_einsum_rotation):
        result = check("05.apply_rotary", answer)
        assert result.passed, (answer.__name__, result.message)


def test_repeat_kv_written_differently_passes():
    def like_transformers(x, group):
        B, G, S, d = x.shape
        return x[:, :, None].expand(B, G, group, S, d).reshape(B, G * group, S, d)

    def by_index(x, group):
        return x[:, torch.arange(x.shape[1] * group) // group]

    def by_concatenation(x, group):
        return torch.cat([x[:, g:g + 1] for g in range(x.shape[1]) for _ in range(group)], dim=1)

    for answer in (like_transformers, by_index, by_concatenation):
        result = check("05.repeat_kv", answer)
        assert result.passed, (answer.__name__, result.message)


def test_greedy_with_cache_written_differently_passes():
    @torch.no_grad()
    def prompt_token_by_token(model, input_ids, max_new_tokens):  # slower for the prompt, but one token per pass
        cache = KVCache(model.config.num_layers)
        for t in range(input_ids.shape[1]):
            logits, _ = model(input_ids=input_ids[:, t:t + 1], cache=cache)
        ids = input_ids
        while ids.shape[1] < input_ids.shape[1] + max_new_tokens:
            next_id = logits[:, -1:].argmax(dim=-1)  # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
            logits, _ = model(input_ids=next_id, cache=cache)  # one pass more than needed, harmless
        return ids

    result = check("05.greedy_with_cache", prompt_token_by_token)
    assert result.passed, result.message
    assert check("05.greedy_with_cache", lambda model, ids, n: generate(model, ids, n, strategy="greedy",
                                                                           use_cache=True)).passed


# ------------------------------------------------------------------ wrong answers as other students would write them
def _rms_in_float64(x, weight, eps):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def _rms_in_place(x, weight, eps):
    x.mul_(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))  # scales the caller's tensor
    return x * weight


def _rotary_in_place(x, cos, sin):
    turned = _rotate_half(x) * sin[:, None]
    x.mul_(cos[:, None])  # the caller's queries are overwritten
    return x + turned


def _greedy(step):
    """A cached greedy loop whose choice of the next token is ``step(logits)``."""
    @torch.no_grad()
    def answer(model, input_ids, max_new_tokens):
        cache, ids, new = KVCache(model.config.num_layers), input_ids, input_ids
        for _ in range(max_new_tokens):
            logits, _ = model(new, cache=cache)
            new = step(logits)
            ids = torch.cat([ids, new], dim=1)
        return ids
    return answer


@torch.no_grad()
def _greedy_new_tokens_only(model, input_ids, max_new_tokens):
    return _greedy(lambda logits: logits[:, -1].argmax(-1, keepdim=True))(model, input_ids,
                                                                         max_new_tokens)[:, input_ids.shape[1]:]


@torch.no_grad()
def _greedy_fresh_cache_each_step(model, input_ids, max_new_tokens):
    ids, new = input_ids, input_ids
    for _ in range(max_new_tokens):
        logits, _ = model(new, cache=KVCache(model.config.num_layers))  # a new, empty cache every time
        new = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, new], dim=1)
    return ids


@torch.no_grad()
def _greedy_one_token_short(model, input_ids, max_new_tokens):
    return _greedy(lambda logits: logits[:, -1].argmax(-1, keepdim=True))(model, input_ids, max_new_tokens - 1)


# None of these is a listed mistake (or, where it computes the same numbers as one, it is written another way);
# each must fail, and for the reason it models: the fragment must be in the message.
WRONG = [
    # RMSNorm computed and returned in float64: not converted into agreement
    pytest.param("05.rms_norm", _rms_in_float64, "expected a torch.float32 tensor (the dtype of the inputs), got "
                 "torch.float64", id="rms-float64"),
    # the standard deviation (mean subtracted, unbiased) in place of the root mean square
    pytest.param("05.rms_norm", lambda x, weight, eps: x / (x.std(-1, keepdim=True) + eps) * weight,
                 "values differ", id="rms-std"),
    # one root mean square for the whole tensor instead of one per token
    pytest.param("05.rms_norm", lambda x, weight, eps: x * torch.rsqrt(x.pow(2).mean() + eps) * weight,
                 "values differ", id="rms-global"),
    # the mean absolute value instead of the root mean square
    pytest.param("05.rms_norm", lambda x, weight, eps: x / (x.abs().mean(-1, keepdim=True) + eps) * weight,
                 "values differ", id="rms-abs"),
    # eps fixed at 1e-5 whatever the argument says
    pytest.param("05.rms_norm", lambda x, weight, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
                 * weight, "as small as eps = 1e-6", id="rms-fixed-eps"),
    # the caller's tensor scaled in place
    pytest.param("05.rms_norm", _rms_in_place, "changed its input x in place", id="rms-in-place"),
    # the cos term only: the turned copy is forgotten
    pytest.param("05.apply_rotary", lambda x, cos, sin: x * cos[:, None], "positions 0-4", id="rotary-cos-only"),
    # the halves swapped without the minus sign
    pytest.param("05.apply_rotary", lambda x, cos, sin: x * cos[:, None] + x.roll(x.shape[-1] // 2, -1)
                 * sin[:, None], "positions 0-4", id="rotary-no-minus"),
    # computed in float64 (cos and sin upcast) and returned so
    pytest.param("05.apply_rotary", lambda x, cos, sin: x.double() * cos[:, None].double()
                 + _rotate_half(x).double() * sin[:, None].double(), "got torch.float64", id="rotary-float64"),
    # the result in (B, T, H, d), the layout before the heads were moved forward
    pytest.param("05.apply_rotary", lambda x, cos, sin: (x * cos[:, None] + _rotate_half(x) * sin[:, None])
                 .transpose(1, 2), "expected shape", id="rotary-transposed"),
    # the caller's queries overwritten
    pytest.param("05.apply_rotary", _rotary_in_place, "changed its input x in place", id="rotary-in-place"),
    # the heads as a list, one tensor per query head
    pytest.param("05.repeat_kv", lambda x, group: [x[:, h // group] for h in range(x.shape[1] * group)],
                 "expected a torch.Tensor, got list", id="kv-list"),
    # the number of query heads used as the repeat count
    pytest.param("05.repeat_kv", lambda x, group: x.repeat_interleave(x.shape[1] * group, dim=1),
                 "expected shape (1, 9, 2, 2), got (1, 27, 2, 2)", id="kv-query-heads-count"),
    # the features repeated instead of the heads
    pytest.param("05.repeat_kv", lambda x, group: x.repeat_interleave(group, dim=-1), "expected shape",
                 id="kv-features"),
    # expand over a new leading axis: the stack is tiled (0, 1, 2, 0, 1, 2, ...)
    pytest.param("05.repeat_kv", lambda x, group: x[:, None].expand(-1, group, -1, -1, -1).reshape(
        x.shape[0], -1, *x.shape[2:]), "values differ", id="kv-expand-wrong-axis"),
    # the group ignored
    pytest.param("05.repeat_kv", lambda x, group: x, "expected shape", id="kv-unchanged"),
    # only the new tokens returned
    pytest.param("05.greedy_with_cache", _greedy_new_tokens_only, "expected shape (1, 10), got (1, 6)",
                 id="greedy-new-only"),
    # a seeded draw from the distribution instead of the most likely token
    pytest.param("05.greedy_with_cache", _greedy(lambda logits: torch.multinomial(
        torch.softmax(logits[:, -1], dim=-1), 1, generator=torch.Generator().manual_seed(0))), "values differ",
        id="greedy-sampled"),
    # the next token of shape (B,): torch.cat cannot append it
    pytest.param("05.greedy_with_cache", _greedy(lambda logits: logits[:, -1].argmax(-1)), "raised",
                 id="greedy-flat-token"),
    # a new, empty cache at every step
    pytest.param("05.greedy_with_cache", _greedy_fresh_cache_each_step, "values differ", id="greedy-fresh-cache"),
    # one token short
    pytest.param("05.greedy_with_cache", _greedy_one_token_short, "expected shape (1, 10), got (1, 9)",
                 id="greedy-one-short"),
    # the ids as a nested list of ints
    pytest.param("05.greedy_with_cache", lambda model, ids, n: generate(model, ids, n).tolist(),
                 "expected a torch.Tensor, got list", id="greedy-list"),
]



def test_an_uncached_loop_gets_the_tokens_right_and_is_still_told_to_use_the_cache():
    @torch.no_grad()
    def uncached(model, input_ids, max_new_tokens):
        ids = input_ids
        for _ in range(max_new_tokens):
            ids = torch.cat([ids, model(ids)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
        return ids

    result = check("05.greedy_with_cache", uncached)
    assert not result.passed and "forward passes over [4, 5, 6, 7, 8, 9] tokens" in result.message
    assert "KVCache" in result.hint


# ------------------------------------------------------------------ the references against transformers, case by case
def test_rms_norm_reference_equals_transformers_and_torch_on_every_case():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    exercise = get_exercise("05.rms_norm")
    for case in exercise.cases:
        x, weight, eps = case.args
        hf = LlamaRMSNorm(x.shape[-1], eps=eps)
        with torch.no_grad():
            hf.weight.copy_(weight)
            expected = hf(x)
        got = exercise.reference(*case.args)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6, msg=case.label)
        torch.testing.assert_close(got, F.rms_norm(x, x.shape[-1:], weight, eps), atol=1e-6, rtol=1e-6)


def test_apply_rotary_reference_equals_transformers_on_every_case():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    exercise = get_exercise("05.apply_rotary")
    for case in exercise.cases:
        x, cos, sin = case.args
        expected, _ = apply_rotary_pos_emb(x, x, cos, sin)
        torch.testing.assert_close(exercise.reference(*case.args), expected, atol=1e-6, rtol=0, msg=case.label)


def test_repeat_kv_reference_equals_transformers_on_every_case():
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    exercise = get_exercise("05.repeat_kv")
    for case in exercise.cases:
        assert torch.equal(exercise.reference(*case.args), hf_repeat_kv(*case.args)), case.label


def test_greedy_reference_equals_transformers_generate_on_every_case_model():
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM as HFLlamaForCausalLM

    c = TINY_LLAMA
    config = HFLlamaConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim,
                           num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                           num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                           max_position_embeddings=c.context_length, rope_theta=c.rope_theta, rms_norm_eps=c.norm_eps,
                           tie_word_embeddings=c.tie_weights, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    names = {ours: hf for hf, ours in hf_llama_name_map(c.num_layers).items()}
    exercise = get_exercise("05.greedy_with_cache")
    for case in exercise.cases:
        model, ids, n = case.args
        hf = HFLlamaForCausalLM(config).eval()
        hf.load_state_dict({names[k]: v for k, v in model.state_dict().items()}, strict=True)
        expected = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
        assert torch.equal(exercise.reference(*case.args), expected), case.label
