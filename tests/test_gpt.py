"""The course GPT and the encoder-decoder block against their peers: GPT-2 in ``transformers`` and torch's
decoder layer; causality, the KV cache, left padding and the language-model training loop."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.attention import KVCache, copy_weights_from_torch
from course_lib.gpt import GPT, DecoderBlockWithCrossAttention, GPTConfig
from course_lib.training import train_language_model

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations


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
            for linear, conv in ((block.attn.out_proj, layer.attn.c_proj), (block.mlp.linear1, layer.mlp.c_fc),
                                 (block.mlp.linear2, layer.mlp.c_proj)):
                linear.weight.copy_(conv.weight.T)
                linear.bias.copy_(conv.bias)
        ours.ln_f.load_state_dict(source.ln_f.state_dict())


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
def test_decoder_block_with_cross_attention_matches_torch_decoder_layer():
    D, H, FF, T, S = 32, 4, 64, 6, 9
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True).eval()
    block = DecoderBlockWithCrossAttention(D, H, FF).eval()
    with torch.no_grad():
        copy_weights_from_torch(layer.self_attn, block.self_attn)
        copy_weights_from_torch(layer.multihead_attn, block.cross_attn)
        for ours, theirs in ((block.ln1, layer.norm1), (block.ln2, layer.norm2), (block.ln3, layer.norm3),
                             (block.mlp.linear1, layer.linear1), (block.mlp.linear2, layer.linear2)):
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
