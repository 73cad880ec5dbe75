"""Generation controls: top-k / top-p filters against hand-worked examples and transformers' warpers, the
seeded sampler, end-of-sequence, the KV cache, and clear errors for bad settings."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.gpt import GPT, GPTConfig
from course_lib.generation import generate, next_token, next_token_distribution, top_k_filter, top_p_filter

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations

INF = float("-inf")


def tiny_gpt(context_length: int = 64) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=30, context_length=context_length, dim=32, num_layers=2, num_heads=4)).eval()


def probabilities_as_logits(*probs: float) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs])


# ----------------------------------------------------------------------------------------------- top-k
def test_top_k_keeps_the_k_largest_logits():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0, -1.0])
    assert torch.equal(top_k_filter(logits, 2), torch.tensor([INF, 3.0, 2.0, INF, INF]))
    assert torch.equal(top_k_filter(logits, 1), torch.tensor([INF, 3.0, INF, INF, INF]))


def test_top_k_keeps_ties_with_the_kth_logit_and_everything_when_k_exceeds_the_vocabulary():
    logits = torch.tensor([[2.0, 5.0, 2.0, 1.0]])
    assert torch.equal(top_k_filter(logits, 2), torch.tensor([[2.0, 5.0, 2.0, INF]]))
    assert torch.equal(top_k_filter(logits, 10), logits)


@pytest.mark.parametrize("k", [1, 3, 10, 49])
def test_top_k_matches_transformers_warper_on_random_logits(k):
    from transformers.generation.logits_process import TopKLogitsWarper

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(k))
    expected = TopKLogitsWarper(top_k=k)(torch.zeros(6, 1, dtype=torch.long), logits.clone())
    assert torch.equal(top_k_filter(logits, k), expected)
    assert (top_k_filter(logits, k) > INF).sum(-1).tolist() == [k] * 6


# ----------------------------------------------------------------------------------------------- top-p
@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.1, [True, False, False, False]),  # the best token alone already passes p
        (0.7, [True, True, False, False]),  # 0.5 < 0.7 <= 0.5 + 0.3
        (0.85, [True, True, True, False]),  # 0.8 < 0.85 <= 0.95
        (0.99, [True, True, True, True]),
        (1.0, [True, True, True, True]),
    ],
)
def test_top_p_keeps_the_smallest_set_of_best_tokens_reaching_p(p, kept):
    logits = probabilities_as_logits(0.15, 0.5, 0.05, 0.3)  # sorted: 0.5, 0.3, 0.15, 0.05
    order = [1, 3, 0, 2]  # vocabulary positions of the sorted probabilities
    filtered = top_p_filter(logits, p)
    assert [bool(filtered[i] > INF) for i in order] == kept
    torch.testing.assert_close(filtered[filtered > INF], logits[filtered > INF], atol=0, rtol=0)


def test_top_p_of_one_keeps_every_token_even_when_the_cumulative_sum_rounds_below_one():
    # 1000 tokens: the float32 cumulative sum of the sorted probabilities ends a little off 1, so without the
    # p == 1 short-circuit the last tokens could be dropped or kept by rounding alone
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 3
    logits[0, :3] = INF  # tokens already removed stay removed, nothing else changes
    assert top_p_filter(logits, 1.0) is logits


def test_top_p_puts_the_decision_back_in_vocabulary_order_whatever_the_order():
    # the best tokens at the end, in the middle, at the start: the kept set is always the two most likely
    for best in ([3, 4], [1, 2], [0, 1]):
        logits = torch.zeros(5)
        logits[best] = torch.tensor([2.0, 1.5])  # probabilities about 0.50 and 0.30: together past p = 0.6
        kept = (top_p_filter(logits, 0.6) > INF).nonzero().flatten().tolist()
        assert kept == sorted(best), (best, kept)


def test_top_p_always_keeps_the_most_likely_token_even_for_a_tiny_p():
    logits = torch.zeros(3, 8)  # uniform: no single token reaches p
    logits[:, 5] = 0.01
    filtered = top_p_filter(logits, 1e-6)
    assert torch.equal(filtered > INF, torch.nn.functional.one_hot(torch.tensor([5, 5, 5]), 8).bool())


@pytest.mark.parametrize("p", [0.05, 0.3, 0.6, 0.9, 0.999])
def test_top_p_matches_transformers_warper_on_random_logits(p):
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(int(p * 1000))) * 3
    expected = TopPLogitsWarper(top_p=p)(torch.zeros(6, 1, dtype=torch.long), logits.clone())
    assert torch.equal(top_p_filter(logits, p), expected)


def test_filtered_distribution_matches_transformers_temperature_top_k_top_p_chain():
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = torch.randn(4, 40, generator=torch.Generator().manual_seed(0)) * 2
    chain = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(12), TopPLogitsWarper(0.8)])
    expected = torch.softmax(chain(torch.zeros(4, 1, dtype=torch.long), logits.clone()), dim=-1)
    probs = next_token_distribution(logits, temperature=0.7, top_k=12, top_p=0.8)
    torch.testing.assert_close(probs, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))


def test_temperature_sharpens_below_one_and_flattens_above():
    logits = torch.tensor([2.0, 1.0, 0.0])
    cold, plain, hot = (next_token_distribution(logits, temperature=t) for t in (0.25, 1.0, 10.0))
    torch.testing.assert_close(plain, torch.softmax(logits, -1))
    assert cold[0] > 0.98 and cold[0] > plain[0] > hot[0]
    assert (hot - 1 / 3).abs().max() < 0.05


# ----------------------------------------------------------------------------------------------- sampling
def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = probabilities_as_logits(0.5, 0.3, 0.15, 0.05).repeat(20000, 1)  # (20000, 4): many draws at once
    generator = torch.Generator().manual_seed(0)
    draws = next_token(logits, "sample", generator=generator)
    frequencies = torch.bincount(draws, minlength=4) / len(draws)
    torch.testing.assert_close(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015, rtol=0)
    nucleus = next_token(logits, "sample", top_p=0.7, generator=generator)
    assert set(nucleus.tolist()) == {0, 1}  # the 0.15 and 0.05 tokens are never drawn
    assert torch.all(next_token(logits, "sample", top_k=1, generator=generator) == 0)


def test_greedy_picks_the_most_likely_token_in_each_row():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert next_token(logits).tolist() == [1, 0]


def test_seeded_sampling_repeats_and_different_seeds_differ():
    model, prompt = tiny_gpt(), torch.tensor([[1, 2, 3]])
    first = generate(model, prompt, 30, strategy="sample", seed=123)
    again = generate(model, prompt, 30, strategy="sample", seed=123)
    with_generator = generate(model, prompt, 30, strategy="sample", generator=torch.Generator().manual_seed(123))
    other = generate(model, prompt, 30, strategy="sample", seed=124)
    assert torch.equal(first, again) and torch.equal(first, with_generator)
    assert not torch.equal(first, other)
    assert torch.equal(first[:, :3], prompt) and first.shape == (1, 33)


def test_seeded_sampling_does_not_touch_the_global_random_state():
    model, prompt = tiny_gpt(), torch.tensor([[1, 2, 3]])
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    generate(model, prompt, 5, strategy="sample", seed=0)
    assert torch.equal(torch.rand(1), expected)


# ----------------------------------------------------------------------------------------------- generate
def test_generation_stops_at_the_end_of_sequence_token():
    model, prompt = tiny_gpt(), torch.tensor([[4, 8, 15]])
    free = generate(model, prompt, 12)
    eos = int(free[0, 3 + 4])  # pretend the 5th new token is the end-of-sequence token
    first = 3 + (free[0, 3:] == eos).nonzero()[0].item()
    stopped = generate(model, prompt, 12, eos_token_id=eos)
    assert torch.equal(stopped, free[:, :first + 1])  # identical up to and including the first EOS, then stops


def test_finished_rows_are_padded_while_the_others_continue():
    model = tiny_gpt()
    prompts = torch.tensor([[4, 8, 15], [16, 23, 7]])
    free = generate(model, prompts, 10)
    eos = next(t for t in free[0, 4:].tolist() if t not in free[1, 3:].tolist())  # only the first row makes it
    first = 3 + (free[0, 3:] == eos).nonzero()[0].item()
    out = generate(model, prompts, 10, eos_token_id=eos, pad_token_id=0)
    assert out.shape == free.shape  # the second row never finishes, so all 10 steps run
    assert torch.equal(out[0, :first + 1], free[0, :first + 1]) and torch.all(out[0, first + 1:] == 0)
    assert torch.equal(out[1], free[1])


def test_cached_and_uncached_generation_agree_for_greedy_and_seeded_sampling():
    model, prompt = tiny_gpt(), torch.tensor([[1, 2, 3, 4], [9, 8, 7, 6]])
    for settings in ({}, {"strategy": "sample", "temperature": 1.3, "top_k": 10, "top_p": 0.9, "seed": 3}):
        cached = generate(model, prompt, 40, use_cache=True, **settings)
        uncached = generate(model, prompt, 40, use_cache=False, **settings)
        assert torch.equal(cached, uncached), settings


def test_generation_past_the_context_length_keeps_the_most_recent_tokens():
    model, prompt = tiny_gpt(context_length=8), torch.tensor([[1, 2, 3, 4, 5]])
    cached = generate(model, prompt, 12)
    assert cached.shape == (1, 17)
    assert torch.equal(cached, generate(model, prompt, 12, use_cache=False))
    with torch.no_grad():  # the last token was predicted from the 8 tokens before it
        expected_last = model(cached[:, -9:-1])[0][0, -1].argmax()
    assert cached[0, -1] == expected_last


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = tiny_gpt()
    alone = generate(model, torch.tensor([[7, 3]]), 6)
    batch = generate(model, torch.tensor([[0, 0, 7, 3], [5, 6, 7, 8]]), 6,
                     attention_mask=torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    assert torch.equal(batch[0, 2:], alone[0])


def test_generate_restores_training_mode_and_zero_new_tokens_returns_the_prompt():
    model = tiny_gpt().train()
    prompt = torch.tensor([[1, 2]])
    assert torch.equal(generate(model, prompt, 0), prompt)
    generate(model, prompt, 3)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_k": 2.5}, "top_k must be an integer >= 1"),
        ({"temperature": 0.0}, "temperature must be a number > 0"),
        ({"temperature": -1.0}, "temperature must be a number > 0"),
        ({"strategy": "beam"}, "strategy must be one of"),
        ({"max_new_tokens": -1}, "max_new_tokens must be an integer >= 0"),
        ({"seed": 1, "generator": torch.Generator()}, "either seed or generator"),
        ({"attention_mask": torch.ones(1, 3)}, "shape of input_ids"),
        ({"input_ids": torch.tensor([1, 2])}, r"shape \(batch, tokens\)"),
        ({"input_ids": torch.tensor([[1.0, 2.0]])}, "torch.long"),
    ],
)
def test_generate_rejects_bad_settings(kwargs, message):
    settings = {"input_ids": torch.tensor([[1, 2]]), "max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(tiny_gpt(), **settings)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: top_k_filter(torch.tensor([1, 2, 3]), 1), TypeError, "floating"),
        (lambda: top_k_filter(torch.randn(5), 0), ValueError, "top_k must be an integer >= 1"),
        (lambda: top_p_filter(torch.randn(5), 0), ValueError, r"top_p must be a number in \(0, 1\]"),
        (lambda: top_p_filter(torch.randn(2, 0), 0.5), ValueError, r"shape \(..., vocab\)"),
        (lambda: top_p_filter([0.1, 0.9], 0.5), TypeError, "torch.Tensor"),
        (lambda: next_token(torch.randn(2, 5), "sample", temperature=0), ValueError, "temperature"),
    ],
)
def test_filters_reject_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
