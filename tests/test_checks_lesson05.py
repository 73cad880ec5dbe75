"""Lesson 05 exercises: correct answers in other forms pass, wrong ones of many kinds fail for their reason, and
the references agree with transformers' Llama on every case the checks try.

tests/test_checks.py runs the general contract (reference passes, each listed mistake gets its own hint, a stub
is told it is not done yet); tests/test_llama.py compares the references with transformers on other inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import KVCache
from course_lib.checks import check, get_exercise
from course_lib.checks.lesson05 import TINY_LLAMA
from course_lib.generation import generate
from course_lib.llama import apply_rotary, hf_llama_name_map, repeat_kv, rotary_cos_sin, rotary_inverse_frequencies


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


def test_cached_attention_written_differently_passes():
    def with_course_parts(attn, x, cache, offset, theta):  # the lesson's own functions
        from course_lib.attention import scaled_dot_product_attention

        B, T, _ = x.shape
        H, G, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        q = attn.query(x).unflatten(-1, (H, d)).transpose(1, 2)
        k = attn.key(x).unflatten(-1, (G, d)).transpose(1, 2)
        v = attn.value(x).unflatten(-1, (G, d)).transpose(1, 2)
        cos, sin = rotary_cos_sin(torch.arange(offset, offset + T)[None], d, theta)
        k, v = cache.update(attn.layer_index, apply_rotary(k, cos, sin), v)
        S = k.shape[-2]
        mask = torch.arange(S)[None, :] <= torch.arange(offset, offset + T)[:, None]  # (T, S)
        y, _ = scaled_dot_product_attention(apply_rotary(q, cos, sin), repeat_kv(k, H // G), repeat_kv(v, H // G),
                                            mask)
        return attn.out(y.transpose(1, 2).flatten(2))

    def with_torch_sdpa_and_complex_rotation(attn, x, cache, offset, theta):
        B, T, _ = x.shape
        H, G, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        speeds = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
        turn = torch.polar(torch.ones(T, d // 2), torch.arange(offset, offset + T).float()[:, None] * speeds)

        def rotate(t):  # (B, n, T, d): the pair (t_i, t_{i+d/2}) as one complex number
            z = torch.complex(t[..., : d // 2], t[..., d // 2:]) * turn
            return torch.cat([z.real, z.imag], dim=-1)

        q = rotate(attn.query(x).view(B, T, H, d).permute(0, 2, 1, 3))
        k = rotate(attn.key(x).view(B, T, G, d).permute(0, 2, 1, 3))
        k, v = cache.update(attn.layer_index, k, attn.value(x).view(B, T, G, d).permute(0, 2, 1, 3))
        allowed = torch.ones(T, k.shape[-2], dtype=torch.bool).tril(k.shape[-2] - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)  # (B, H, T, d)
        return attn.out(y.permute(0, 2, 1, 3).reshape(B, T, H * d))

    for answer in (with_course_parts, with_torch_sdpa_and_complex_rotation):
        result = check("05.cached_attention", answer)
        assert result.passed, (answer.__name__, result.message)


def test_rope_scaling_written_differently_passes():
    assert check("05.rope_scaling", lambda d, theta, scaling: rotary_inverse_frequencies(d, theta, scaling)[0]).passed

    def by_wavelength(head_dim, theta, scaling):
        speed = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        factor = scaling["factor"]
        if scaling["rope_type"] == "linear":
            return speed / factor
        wavelength = 2 * math.pi / speed
        low_wave = scaling["original_max_position_embeddings"] / scaling["low_freq_factor"]
        high_wave = scaling["original_max_position_embeddings"] / scaling["high_freq_factor"]
        smooth = (scaling["original_max_position_embeddings"] / wavelength - scaling["low_freq_factor"]) / (
            scaling["high_freq_factor"] - scaling["low_freq_factor"])
        blended = (1 - smooth) * speed / factor + smooth * speed
        return torch.where(wavelength > low_wave, speed / factor, torch.where(wavelength < high_wave, speed, blended))

    result = check("05.rope_scaling", by_wavelength)
    assert result.passed, result.message


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


def _attention(positions="offset", cache_it=True, mask="right", softmax_dim=-1, project=True):
    """A cached Llama attention written plainly, with one slip chosen by the arguments."""
    def answer(attn, x, cache, offset, theta):
        B, T, _ = x.shape
        H, G, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        q = attn.query(x).view(B, T, H, d).transpose(1, 2)
        k = attn.key(x).view(B, T, G, d).transpose(1, 2)
        v = attn.value(x).view(B, T, G, d).transpose(1, 2)
        start = cache.length if positions == "cache.length" else offset
        cos, sin = rotary_cos_sin(torch.arange(start, start + T)[None], d, theta)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache_it:
            k, v = cache.update(attn.layer_index, k, v)
        k, v = repeat_kv(k, H // G), repeat_kv(v, H // G)
        S = k.shape[-2]
        if mask == "is_causal":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(d)
            if mask == "right":
                scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(S - T), float("-inf"))
            y = scores.softmax(dim=softmax_dim) @ v
        y = y.transpose(1, 2).reshape(B, T, H * d)
        return attn.out(y) if project else y
    return answer


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
    # torch's is_causal=True: its mask starts at the top-left corner, so a new token sees only the first keys
    pytest.param("05.cached_attention", _attention(mask="is_causal"), "step 1 (1 new token at position 5",
                 id="cached-is-causal"),
    # the new keys and values never reach the cache: each step attends to itself only
    pytest.param("05.cached_attention", _attention(cache_it=False), "step 1 (1 new token at position 5",
                 id="cached-not-stored"),
    # cache.length read as the offset: right for layer 0, one pass ahead for every later layer
    pytest.param("05.cached_attention", _attention(positions="cache.length"), "step 1 (1 new token at position 5",
                 id="cached-length-offset"),
    # no mask at all: the prompt's tokens see the future
    pytest.param("05.cached_attention", _attention(mask="none"), "the prompt: the logits differ from transformers' "
                 "first at position 0", id="cached-no-mask"),
    # softmax over the queries instead of the keys
    pytest.param("05.cached_attention", _attention(softmax_dim=-2), "the prompt: the logits differ",
                 id="cached-softmax-queries"),
    # the heads merged but the output projection forgotten
    pytest.param("05.cached_attention", _attention(project=False), "the prompt: the logits differ",
                 id="cached-no-out-projection"),
    # the speeds as theta^(i/d) for every feature: d speeds instead of d/2
    pytest.param("05.rope_scaling", lambda d, theta, scaling: 1.0 / theta ** (torch.arange(d) / d) / scaling["factor"],
                 "expected shape (32,), got (64,)", id="rope-every-feature"),
    # computed in float64
    pytest.param("05.rope_scaling", lambda d, theta, scaling: rotary_inverse_frequencies(d, theta, scaling)[0]
                 .double(), "got torch.float64", id="rope-float64"),
    # the factor applied to theta instead of the speeds
    pytest.param("05.rope_scaling", lambda d, theta, scaling: rotary_inverse_frequencies(d, theta * scaling["factor"])[0],
                 "values differ", id="rope-factor-on-theta"),
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


def test_cached_attention_cases_load_the_real_smollm2_layers_and_transformers_agrees_with_the_course():
    from course_lib.checks.lesson05_attention import compare_steps, transformers_peer

    exercise = get_exercise("05.cached_attention")
    cases = exercise.case_list()
    assert any("real weights" in case.label for case in cases)
    assert any(chunk.shape[1] > 1 for case in cases for chunk in case.args[0].chunks[1:])  # a multi-token step
    for case in cases:  # the course's own model, cache and attention give transformers' logits
        setup = case.args[0]
        cache, start, steps = KVCache(setup.model.config.num_layers), 0, []
        with torch.no_grad():
            for chunk in setup.chunks:
                steps.append(type(setup.expected[0])(start, setup.model(chunk, cache=cache)[0]))
                start += chunk.shape[1]
        assert compare_steps(tuple(steps), setup.expected) is None, case.label
    assert exercise.reference is transformers_peer


def test_rope_scaling_reference_is_transformers_and_the_course_agrees():
    exercise = get_exercise("05.rope_scaling")
    for case in exercise.case_list():
        expected = exercise.reference(*case.args)
        torch.testing.assert_close(rotary_inverse_frequencies(*case.args)[0], expected, atol=0, rtol=1e-6)
