"""The course decoders against their peers: GPT-2 and the Llama of ``transformers``, torch's decoder layer,
and the real SmolLM2-135M weights (logits, attention weights, padding, KV cache, greedy generation)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.decoder import (
    GPT,
    DecoderBlockWithCrossAttention,
    GPTConfig,
    KVCache,
    LlamaConfig,
    LlamaForCausalLM,
    MultiHeadAttention,
    RMSNorm,
    apply_rotary,
    causal_mask,
    hf_llama_name_map,
    load_pretrained_decoder,
    rotary_cos_sin,
    train_language_model,
)
from course_lib.generation import generate

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def add(a, b):"]


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(vocab_size=23, context_length=16, dim=32, num_layers=2, num_heads=4)
    return GPT(GPTConfig(**{**settings, **overrides})).eval()


def copy_gpt2_weights(ours: GPT, hf) -> None:
    """Load a transformers GPT2LMHeadModel's weights into the course GPT (GPT-2 stores Linear weights transposed)."""
    source = hf.transformer
    with torch.no_grad():
        ours.token_embedding.weight.copy_(source.wte.weight)
        ours.position_embedding.weight.copy_(source.wpe.weight)
        for block, layer in zip(ours.blocks, source.h):
            block.ln1.load_state_dict(layer.ln_1.state_dict())
            block.ln2.load_state_dict(layer.ln_2.state_dict())
            weights = layer.attn.c_attn.weight.T.chunk(3, dim=0)  # 3 x (D, D)
            biases = layer.attn.c_attn.bias.chunk(3)
            for linear, weight, bias in zip((block.attn.query, block.attn.key, block.attn.value), weights, biases):
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
            for linear, conv in ((block.attn.out, layer.attn.c_proj), (block.mlp.up, layer.mlp.c_fc),
                                 (block.mlp.down, layer.mlp.c_proj)):
                linear.weight.copy_(conv.weight.T)
                linear.bias.copy_(conv.bias)
        ours.ln_f.load_state_dict(source.ln_f.state_dict())


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


# ----------------------------------------------------------------------------------------------- masks
def test_causal_mask_equals_torch_square_subsequent_mask():
    blocked = torch.nn.Transformer.generate_square_subsequent_mask(5) == float("-inf")  # True = may not attend
    assert torch.equal(causal_mask(5, 5), ~blocked)


def test_causal_mask_for_new_tokens_after_a_cache_sees_all_cached_tokens():
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)  # 3 cached, 2 new
    assert torch.equal(causal_mask(2, 5), expected)


# ----------------------------------------------------------------------------------------------- GPT
def test_gpt_matches_transformers_gpt2_with_copied_weights():
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(vocab_size=23, n_positions=16, n_embd=32, n_layer=2, n_head=4, activation_function="gelu",
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    torch.manual_seed(1)
    hf = GPT2LMHeadModel._from_config(hf_config, attn_implementation="eager").eval()
    ours = tiny_gpt()
    copy_gpt2_weights(ours, hf)
    ids = torch.randint(0, 23, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids, labels=ids, output_attentions=True)
        logits, _, attentions = ours(ids, output_attentions=True)
        _, loss = ours(ids[:, :-1], targets=ids[:, 1:])
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, expected.loss, atol=1e-5, rtol=0)  # GPT-2 shifts the labels itself
    for ours_layer, hf_layer in zip(attentions, expected.attentions):
        torch.testing.assert_close(ours_layer, hf_layer, atol=1e-6, rtol=0)


def test_gpt_loss_at_initialisation_is_close_to_uniform_guessing():
    model = tiny_gpt(vocab_size=65, context_length=32)
    ids = torch.randint(0, 65, (4, 32), generator=torch.Generator().manual_seed(0))
    _, loss = model(ids[:, :-1], ids[:, 1:])
    assert abs(loss.item() - math.log(65)) < 0.1


def test_gpt_is_causal_changing_a_later_token_leaves_earlier_logits_unchanged():
    model = tiny_gpt()
    ids = torch.randint(0, 23, (2, 10), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 23
    with torch.no_grad():
        before, after = model(ids)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :6], after[:, :6], atol=0, rtol=0)
    assert (before[:, 6:] - after[:, 6:]).abs().max() > 1e-4


def test_gpt_attention_weights_are_causal_and_each_row_sums_to_one():
    model = tiny_gpt()
    ids = torch.randint(0, 23, (2, 7), generator=torch.Generator().manual_seed(0))
    _, loss, attentions = model(ids, output_attentions=True)
    assert loss is None and len(attentions) == 2
    for weights in attentions:
        assert weights.shape == (2, 4, 7, 7)
        assert torch.all(weights.triu(diagonal=1) == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))


def test_gpt_tied_weights_share_one_matrix_and_untied_do_not():
    tied, untied = tiny_gpt(), tiny_gpt(tie_weights=False)
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.lm_head.weight is not untied.token_embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == 23 * 32


def test_gpt_with_kv_cache_gives_the_logits_of_a_full_forward():
    model = tiny_gpt()
    ids = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(0))
    cache = KVCache(model.config.num_layers)
    with torch.no_grad():
        full = model(ids)[0]
        steps = [model(ids[:, :5], cache=cache)[0]] + [model(ids[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    assert cache.length == 12 and cache.keys[1].shape == (2, 4, 12, 8)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_gpt_left_padded_rows_give_the_logits_of_the_unpadded_prompt():
    model = tiny_gpt()
    short = torch.tensor([[5, 9, 2, 7]])
    padded = torch.tensor([[0, 0, 0, 5, 9, 2, 7], [1, 2, 3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        alone, batch = model(short)[0], model(padded, attention_mask=mask)[0]
        full_row = model(padded[1:])[0]
    torch.testing.assert_close(batch[0, 3:], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1], full_row[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(torch.ones(2, 3)), "dtype torch.long"),
        (lambda m: m(torch.ones(5, dtype=torch.long)), r"shape \(batch, tokens\)"),
        (lambda m: m(torch.ones(1, 0, dtype=torch.long)), r"shape \(batch, tokens\)"),
        (lambda m: m(torch.full((1, 3), 23)), r"\[0, 23\)"),
        (lambda m: m(torch.ones(1, 17, dtype=torch.long)), "at most 16 tokens"),
        (lambda m: m(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)), "same shape"),
        (lambda m: m(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4)), r"\(2, 3\)"),
        (lambda m: m([[1, 2]]), "torch.Tensor"),
    ],
)
def test_gpt_rejects_bad_inputs_with_a_clear_message(call, message):
    model = tiny_gpt()
    with pytest.raises((ValueError, TypeError), match=message):
        call(model)


def test_gpt_config_rejects_a_width_that_heads_cannot_share():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        GPTConfig(vocab_size=10, dim=30, num_heads=4)


# ----------------------------------------------------------------------------------------------- training
def repeating_stream() -> torch.Tensor:
    return torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7]).repeat(60)


def test_gpt_learns_a_repeating_sequence_in_50_steps():
    model = tiny_gpt(vocab_size=10, context_length=16, tie_weights=False)
    history = train_language_model(model, repeating_stream(), steps=50, batch_size=16, block_size=16, lr=1e-2,
                                   eval_every=25)
    assert [step for step, _, _ in history] == [0, 25, 50]
    (_, first_train, first_val), (_, last_train, last_val) = history[0], history[-1]
    assert first_train > 2.0 and first_val > 2.0  # about ln(10) = 2.3 before training
    assert last_train < 0.25 * first_train and last_val < 0.25 * first_val


def test_train_language_model_repeats_exactly_with_the_same_seed():
    def run(seed: int):
        model = tiny_gpt(vocab_size=10, dropout=0.1)
        return train_language_model(model, repeating_stream(), steps=6, batch_size=4, block_size=8, seed=seed,
                                    eval_every=3), model

    (first, model_a), (second, model_b), (other, _) = run(0), run(0), run(1)
    assert first == second
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))
    assert other != first


def test_train_language_model_logs_one_line_per_evaluation():
    lines = []
    train_language_model(tiny_gpt(vocab_size=10), repeating_stream(), steps=4, batch_size=2, block_size=8,
                         eval_every=2, log=lines.append)
    assert len(lines) == 3 and lines[-1].startswith("step     4") and "val loss" in lines[-1]


@pytest.mark.parametrize(
    ("tokens", "kwargs", "message"),
    [
        (torch.ones(100), {}, "1-D torch.long"),
        (torch.ones(2, 50, dtype=torch.long), {}, "1-D torch.long"),
        (torch.ones(50, dtype=torch.long), {}, "too short"),
        (torch.ones(1000, dtype=torch.long), {"block_size": 32}, "context_length 16"),
        (torch.ones(1000, dtype=torch.long), {"steps": 0}, "steps must be a positive"),
    ],
)
def test_train_language_model_rejects_bad_arguments(tokens, kwargs, message):
    settings = {"steps": 1, "batch_size": 2, "block_size": 8, **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        train_language_model(tiny_gpt(vocab_size=10), tokens, **settings)


# ----------------------------------------------------------------------------------------------- encoder-decoder
def test_multi_head_attention_matches_torch_with_a_key_padding_mask():
    torch.manual_seed(0)
    torch_attention = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    ours = MultiHeadAttention(32, 4).eval()
    with torch.no_grad():
        for linear, weight, bias in zip((ours.query, ours.key, ours.value), torch_attention.in_proj_weight.chunk(3),
                                        torch_attention.in_proj_bias.chunk(3)):
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        ours.out.load_state_dict(torch_attention.out_proj.state_dict())
    x, context = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()
    expected, expected_weights = torch_attention(x, context, context, key_padding_mask=~keep,
                                                 average_attn_weights=False)
    output, weights = ours(x, context=context, mask=keep[:, None, None, :])
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=0)


def test_decoder_block_with_cross_attention_matches_torch_decoder_layer():
    D, H, FF, T, S = 32, 4, 64, 6, 9
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True).eval()
    block = DecoderBlockWithCrossAttention(D, H, FF).eval()
    with torch.no_grad():
        for ours, theirs in ((block.self_attn, layer.self_attn), (block.cross_attn, layer.multihead_attn)):
            for linear, weight, bias in zip((ours.query, ours.key, ours.value), theirs.in_proj_weight.chunk(3),
                                            theirs.in_proj_bias.chunk(3)):
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
            ours.out.load_state_dict(theirs.out_proj.state_dict())
        for ours, theirs in ((block.ln1, layer.norm1), (block.ln2, layer.norm2), (block.ln3, layer.norm3),
                             (block.mlp.up, layer.linear1), (block.mlp.down, layer.linear2)):
            ours.load_state_dict(theirs.state_dict())
    target, source = torch.randn(3, T, D), torch.randn(3, S, D)
    encoder_mask = torch.ones(3, S, dtype=torch.long)
    encoder_mask[1, 5:] = 0
    encoder_mask[2, 2:] = 0
    with torch.no_grad():
        expected = layer(target, source, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
                         memory_key_padding_mask=~encoder_mask.bool())
        output, self_weights, cross_weights = block(target, source, encoder_mask, output_attentions=True)
    assert output.shape == (3, T, D) and self_weights.shape == (3, H, T, T) and cross_weights.shape == (3, H, T, S)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)
    assert torch.all(cross_weights[1, :, :, 5:] == 0) and torch.all(cross_weights[2, :, :, 2:] == 0)


def test_decoder_block_ignores_whatever_sits_in_padded_encoder_positions():
    torch.manual_seed(0)
    block = DecoderBlockWithCrossAttention(16, 2).eval()
    target, source = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    noisy = source.clone()
    noisy[:, 4:] = torch.randn(1, 2, 16) * 100
    torch.testing.assert_close(block(target, source, mask), block(target, noisy, mask), atol=0, rtol=0)
    assert (block(target, source) - block(target, noisy)).abs().max() > 1e-3  # without the mask they leak in


@pytest.mark.parametrize(
    ("x", "states", "mask", "message"),
    [
        (torch.randn(4, 16), torch.randn(1, 6, 16), None, "x of shape"),
        (torch.randn(1, 4, 8), torch.randn(1, 6, 16), None, "x of shape"),
        (torch.randn(1, 4, 16), torch.randn(1, 6, 12), None, "encoder_states of shape"),
        (torch.randn(2, 4, 16), torch.randn(1, 6, 16), None, "same batch size"),
        (torch.randn(1, 4, 16), torch.randn(1, 6, 16), torch.ones(1, 5), "encoder_mask of shape"),
    ],
)
def test_decoder_block_rejects_bad_shapes(x, states, mask, message):
    with pytest.raises(ValueError, match=message):
        DecoderBlockWithCrossAttention(16, 2)(x, states, mask)


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
    with pytest.raises(ValueError, match="rope_type"):
        LlamaConfig.from_hf_config({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}})
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        LlamaConfig(num_heads=9, num_kv_heads=2)


def test_load_pretrained_decoder_names_the_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained_decoder(tmp_path)


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
