"""The course's Llama-style decoder against ``transformers``' Llama: each part (RMSNorm, rotary embedding,
key/value repetition), a tiny random model, and the real SmolLM2-135M weights (logits, attention weights,
padding, KV cache, greedy generation)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.attention import KVCache
from course_lib.generation import generate
from course_lib.llama import (
    LlamaConfig,
    LlamaForCausalLM,
    RMSNorm,
    apply_rotary,
    hf_llama_name_map,
    load_pretrained_decoder,
    repeat_kv,
    rotary_cos_sin,
)

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def add(a, b):"]


@pytest.fixture(scope="module")
def decoder():
    """The course's Llama-style model with the SmolLM2-135M weights."""
    return load_pretrained_decoder()


@pytest.fixture(scope="module")
def tiny_llama_pair(tmp_path_factory):
    """A small random transformers Llama (untied head, 4 query heads sharing 2 KV heads), reloaded by the course."""
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM as HFLlamaForCausalLM

    config = HFLlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                           rope_theta=500.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = HFLlamaForCausalLM._from_config(config, attn_implementation="eager").eval()
    folder = tmp_path_factory.mktemp("tiny-llama")
    hf.save_pretrained(folder)
    return hf, load_pretrained_decoder(folder)


# ----------------------------------------------------------------------------------------------- Llama parts
def test_rms_norm_matches_torch_and_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = torch.randn(2, 5, 24)
    ours, hf, reference = RMSNorm(24, eps=1e-6), LlamaRMSNorm(24, eps=1e-6), nn.RMSNorm(24, eps=1e-6)
    with torch.no_grad():
        for norm in (ours, hf, reference):
            norm.weight.copy_(torch.linspace(0.5, 1.5, 24))
    torch.testing.assert_close(ours(x), hf(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=0)


def test_rotary_embedding_matches_transformers_and_keeps_lengths():
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = HFLlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16, rope_theta=500.0)
    q, k = torch.randn(2, 4, 7, 16), torch.randn(2, 4, 7, 16)
    positions = torch.arange(3, 10)[None].expand(2, 7)
    hf_cos, hf_sin = LlamaRotaryEmbedding(config)(q, positions)
    cos, sin = rotary_cos_sin(positions, 16, 500.0)
    torch.testing.assert_close(cos, hf_cos, atol=1e-6, rtol=0)
    expected_q, expected_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rotary(q, cos, sin), expected_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply_rotary(k, cos, sin), expected_k, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply_rotary(q, cos, sin).norm(dim=-1), q.norm(dim=-1))  # a rotation


def test_rotary_scores_depend_only_on_the_distance_between_positions():
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(query_position: int, key_position: int) -> torch.Tensor:
        cos_q, sin_q = rotary_cos_sin(torch.tensor([[query_position]]), 16, 10000.0)
        cos_k, sin_k = rotary_cos_sin(torch.tensor([[key_position]]), 16, 10000.0)
        return (apply_rotary(q, cos_q, sin_q) * apply_rotary(k, cos_k, sin_k)).sum()

    torch.testing.assert_close(score(5, 2), score(105, 102), atol=1e-4, rtol=0)
    assert (score(5, 2) - score(5, 4)).abs() > 1e-3


def test_llama_name_map_covers_every_transformers_parameter(tiny_llama_pair):
    hf, ours = tiny_llama_pair
    names = hf_llama_name_map(2)
    assert set(hf.state_dict()) <= set(names)
    assert {names[name] for name in hf.state_dict()} == set(ours.state_dict())


def test_tiny_llama_matches_transformers_with_random_weights(tiny_llama_pair):
    hf, ours = tiny_llama_pair
    assert ours.lm_head.weight is not ours.embed.weight  # untied head loaded on its own
    ids = torch.randint(0, 97, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids, output_attentions=True)
        logits, _, attentions = ours(ids, output_attentions=True)
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=0)
    for ours_layer, hf_layer in zip(attentions, expected.attentions):
        torch.testing.assert_close(ours_layer, hf_layer, atol=1e-6, rtol=0)


def test_tiny_llama_loss_matches_transformers_labels(tiny_llama_pair):
    hf, ours = tiny_llama_pair
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids, labels=ids).loss
        _, loss = ours(ids[:, :-1], targets=ids[:, 1:])
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)


def test_tiny_llama_cached_and_uncached_generation_agree(tiny_llama_pair):
    _, ours = tiny_llama_pair
    prompt = torch.tensor([[5, 17, 3, 88]])
    for settings in ({"strategy": "greedy"}, {"strategy": "sample", "top_k": 20, "seed": 7}):
        cached = generate(ours, prompt, 25, use_cache=True, **settings)
        uncached = generate(ours, prompt, 25, use_cache=False, **settings)
        assert cached.shape == (1, 29)
        assert torch.equal(cached, uncached)


def test_llama_config_refuses_a_config_it_does_not_implement():
    base = {"model_type": "llama", "vocab_size": 10, "max_position_embeddings": 8, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "rms_norm_eps": 1e-5}
    assert LlamaConfig.from_hf_config(base).head_dim == 4
    with pytest.raises(ValueError, match="model_type 'llama'"):
        LlamaConfig.from_hf_config({**base, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="hidden_act='silu'"):
        LlamaConfig.from_hf_config({**base, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="rotary scaling 'dynamic' is not implemented"):
        LlamaConfig.from_hf_config({**base, "rope_parameters": {"rope_type": "dynamic", "rope_theta": 1.0}})
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        LlamaConfig(num_heads=9, num_kv_heads=2)


def test_load_pretrained_decoder_names_the_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained_decoder(tmp_path)

def test_repeat_kv_matches_transformers_and_serves_each_query_group_its_own_head():
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    keys = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))  # (B, G, S, d)
    repeated = repeat_kv(keys, 3)  # (B, 9, S, d)
    torch.testing.assert_close(repeated, hf_repeat_kv(keys, 3), rtol=0, atol=0)
    assert all(torch.equal(repeated[:, h], keys[:, h // 3]) for h in range(9))


# ----------------------------------------------------------------------------------------------- SmolLM2-135M
def test_pretrained_decoder_has_smollm2_shape(decoder, hf_decoder):
    config = decoder.config
    sizes = (config.num_layers, config.dim, config.num_heads, config.num_kv_heads, config.head_dim)
    assert sizes == (30, 576, 9, 3, 64)
    assert config.rope_theta == 100000.0 and config.tie_weights
    assert decoder.lm_head.weight is decoder.embed.weight
    assert decoder.num_parameters() == hf_decoder.num_parameters()  # about 135M, the tied matrix counted once


@pytest.mark.slow
def test_pretrained_decoder_logits_and_attentions_match_transformers(decoder, hf_decoder, decoder_tokenizer):
    for prompt in PROMPTS:
        ids = decoder_tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = hf_decoder(ids, output_attentions=True)
            logits, _, attentions = decoder(ids, output_attentions=True)
        torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=0)
        assert len(attentions) == len(expected.attentions) == 30
        for ours_layer, hf_layer in zip(attentions, expected.attentions):
            torch.testing.assert_close(ours_layer, hf_layer, atol=1e-5, rtol=0)


def test_pretrained_decoder_left_padded_batch_matches_transformers(decoder, hf_decoder, decoder_tokenizer):
    batch = decoder_tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    real = batch.attention_mask.bool()
    assert not real.all()  # the prompts have different lengths
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate passes
    with torch.no_grad():
        expected = hf_decoder(**batch, position_ids=positions, output_attentions=True)
        logits, _, attentions = decoder(batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
        alone = decoder(decoder_tokenizer(PROMPTS[0], return_tensors="pt").input_ids)[0]
    torch.testing.assert_close(logits[real], expected.logits[real], atol=1e-4, rtol=0)
    between_real = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, T, T)
    for ours_layer, hf_layer in zip(attentions, expected.attentions):
        torch.testing.assert_close(ours_layer * between_real, hf_layer * between_real, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[0][real[0]], alone[0], atol=1e-4, rtol=0)  # padding changes nothing


def test_pretrained_decoder_kv_cache_offsets_rotary_positions(decoder, decoder_tokenizer):
    ids = decoder_tokenizer(PROMPTS[1], return_tensors="pt").input_ids  # (1, 10)
    cache = KVCache(decoder.config.num_layers)
    with torch.no_grad():
        full = decoder(ids)[0]
        steps = [decoder(ids[:, :6], cache=cache)[0]] + [decoder(ids[:, t:t + 1], cache=cache)[0]
                                                         for t in range(6, ids.shape[1])]
    assert cache.length == ids.shape[1] and cache.keys[0].shape == (1, 3, ids.shape[1], 64)  # 3 KV heads cached
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=0)


def test_fused_attention_path_equals_the_written_out_one(tiny_llama_pair):
    """Without attention weights asked for, each layer calls PyTorch's fused kernel (key/value heads shared by
    enable_gqa instead of repeated): the same logits as the written-out attention, and as transformers."""
    hf, ours = tiny_llama_pair
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    with torch.no_grad():
        fused = ours(ids, attention_mask=mask)[0]
        written, _, weights = ours(ids, attention_mask=mask, output_attentions=True)
        expected = hf(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert len(weights) == 2 and weights[0].shape == (2, 4, 11, 11)
    real = mask.bool()
    torch.testing.assert_close(fused[real], written[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused[real], expected[real], atol=1e-5, rtol=0)


def test_reserved_cache_writes_in_place_and_equals_the_growing_cache(tiny_llama_pair):
    _, ours = tiny_llama_pair
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(4))
    runs = {}
    for capacity in (None, 12, 8):  # grows by concatenation; reserved for all 12 tokens; reserved for too few
        cache, logits, storage = KVCache(ours.config.num_layers, capacity=capacity), [], set()
        with torch.no_grad():
            logits.append(ours(ids[:, :5], cache=cache)[0])
            for t in range(5, 12):
                logits.append(ours(ids[:, t:t + 1], cache=cache)[0])
                storage.add(cache.keys[1].untyped_storage().data_ptr())
        assert cache.length == 12 and cache.keys[1].shape == (2, 2, 12, 16)
        runs[capacity] = torch.cat(logits, dim=1), len(storage)
    assert runs[12][1] == 1  # one storage for all seven steps: written in place
    assert runs[None][1] == 7  # a new tensor at every step
    for capacity in (12, 8):
        torch.testing.assert_close(runs[capacity][0], runs[None][0], atol=1e-6, rtol=0)
    with torch.no_grad():
        full = ours(ids)[0]
    torch.testing.assert_close(runs[12][0], full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"KVCache\(capacity\) must be an integer >= 1, got 0"):
        KVCache(2, capacity=0)


@pytest.mark.slow
def test_greedy_generation_matches_transformers_generate(decoder, hf_decoder, decoder_tokenizer):
    for prompt in PROMPTS:
        ids = decoder_tokenizer(prompt, return_tensors="pt").input_ids
        expected = hf_decoder.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                                       do_sample=False, pad_token_id=2)
        ours = generate(decoder, ids, max_new_tokens=20, eos_token_id=hf_decoder.generation_config.eos_token_id)
        assert torch.equal(ours, expected), decoder_tokenizer.decode(ours[0])


@pytest.mark.slow
def test_greedy_generation_of_a_left_padded_batch_matches_transformers(decoder, hf_decoder, decoder_tokenizer):
    batch = decoder_tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    expected = hf_decoder.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=2)
    ours = generate(decoder, batch.input_ids, max_new_tokens=12, attention_mask=batch.attention_mask, eos_token_id=2)
    assert torch.equal(ours, expected)


@pytest.mark.slow
def test_chat_answer_stops_at_end_of_sequence_like_transformers(decoder, hf_decoder, decoder_tokenizer):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    ids = decoder_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    eos = decoder_tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = hf_decoder.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=60, do_sample=False,
                                   eos_token_id=eos, pad_token_id=eos)
    ours = generate(decoder, ids, max_new_tokens=60, eos_token_id=eos)
    assert ours.shape[1] < ids.shape[1] + 60 and ours[0, -1] == eos  # stopped early, at the end-of-turn token
    assert torch.equal(ours, expected)


@pytest.mark.slow
def test_pretrained_decoder_cached_generation_equals_uncached(decoder, decoder_tokenizer):
    ids = decoder_tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    for settings in ({"strategy": "greedy"}, {"strategy": "sample", "temperature": 0.8, "top_p": 0.9, "seed": 1}):
        cached = generate(decoder, ids, max_new_tokens=10, **settings)
        uncached = generate(decoder, ids, max_new_tokens=10, use_cache=False, **settings)
        assert torch.equal(cached, uncached), settings
