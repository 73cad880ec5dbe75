"""Lesson 03 exercises: references agree with torch / transformers, and the checker explains each mistake."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check
from course_lib.checks.lesson03 import feed_forward, layer_norm, post_ln_block
from course_lib.encoder import sinusoidal_positions


def test_correct_answers_written_differently_also_pass():
    assert check("03.layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, eps)).passed
    assert check("03.feed_forward", lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)).passed
    assert check("03.post_ln_block", lambda x, sublayer, norm: norm(sublayer(x) + x)).passed

    def sinusoidal_with_loops(num_positions, dim, base=10000.0):
        table = torch.zeros(num_positions, dim)
        for p in range(num_positions):
            for i in range(0, dim, 2):
                table[p, i] = math.sin(p / base ** (i / dim))
                table[p, i + 1] = math.cos(p / base ** (i / dim))
        return table

    assert check("03.sinusoidal", sinusoidal_with_loops).passed


def _layer_norm_eps_on_std(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / (x.std(dim=-1, keepdim=True, unbiased=False) + eps) * weight + bias


def _layer_norm_in_place(x, weight, bias, eps=1e-5):
    x -= x.mean(dim=-1, keepdim=True)  # centres the caller's tensor
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight + bias


def _post_ln_in_place(x, sublayer, norm):
    x += sublayer(x)  # adds into the caller's tensor
    return norm(x)


def _sinusoidal(position_start=0, base=None, column_exponent=False):
    """A sinusoidal table with a chosen first position, a base fixed in the code, or exponents per column."""
    def table(num_positions, dim, base_given=10000.0):
        position = torch.arange(position_start, position_start + num_positions, dtype=torch.float64)[:, None]
        column = torch.arange(dim, dtype=torch.float64)  # (dim,)
        exponent = column / dim if column_exponent else (column - column % 2) / dim
        angle = position / (base or base_given) ** exponent  # (P, dim)
        return torch.where(column % 2 == 0, angle.sin(), angle.cos()).float()
    return table


def _ffn(activation=F.gelu, bias_after=False, layout_swapped=False, with_b2=True):
    """The feed-forward with one thing changed: the activation, where b1 goes, the weights' layout, or b2."""
    def ffn(x, w1, b1, w2, b2):
        first, second = (w2, w1) if layout_swapped else (w1.T, w2.T)  # swapped: x @ w2 happens to fit (D, I)
        hidden = activation(x @ first) + b1 if bias_after else activation(x @ first + b1)
        return hidden @ second + (b2 if with_b2 else 0)
    return ffn


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # b1 added after the activation
    pytest.param("03.feed_forward", _ffn(bias_after=True), "values differ", id="bias-after-gelu"),
    # x @ w2 and @ w1: the shapes fit, the layout is wrong
    pytest.param("03.feed_forward", _ffn(layout_swapped=True), "values differ", id="weights-swapped"),
    # the output bias forgotten
    pytest.param("03.feed_forward", _ffn(with_b2=False), "values differ", id="no-b2"),
    # GELU approximated by x * sigmoid(1.702 x)
    pytest.param("03.feed_forward", _ffn(activation=lambda h: h * torch.sigmoid(1.702 * h)), "values differ",
                 id="sigmoid-gelu"),
    # the residual added inside the feed-forward
    pytest.param("03.feed_forward", lambda x, *weights: x + feed_forward(x, *weights), "values differ",
                 id="residual-inside"),
    # written for (batch, tokens, dim) only
    pytest.param("03.feed_forward", lambda x, w1, b1, w2, b2: torch.einsum(
        "bti,di->btd", F.gelu(torch.einsum("btd,id->bti", x, w1) + b1), w2) + b2, "raised", id="einsum-3d-only"),
    # eps added to the standard deviation instead of the variance
    pytest.param("03.layer_norm", _layer_norm_eps_on_std, "nearly constant", id="eps-on-std"),
    # the eps argument ignored (F.layer_norm's default 1e-5)
    pytest.param("03.layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b), "eps=0.1",
                 id="eps-ignored"),
    # the caller's x centred in place
    pytest.param("03.layer_norm", _layer_norm_in_place, "changed its input x in place", id="in-place"),
    # weight and bias swapped
    pytest.param("03.layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], b, w, eps),
                 "values differ", id="weight-bias-swapped"),
    # normalised over the tokens and the features together
    pytest.param("03.layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-2:], eps=eps) * w + b,
                 "values differ", id="two-dims"),
    # the input normalised, the sublayer's output added afterwards
    pytest.param("03.post_ln_block", lambda x, sublayer, norm: norm(x) + sublayer(x), "values differ",
                 id="norm-then-add"),
    # a second residual after the norm
    pytest.param("03.post_ln_block", lambda x, sublayer, norm: norm(x + sublayer(x)) + x, "values differ",
                 id="extra-residual"),
    # the sum written into the caller's x
    pytest.param("03.post_ln_block", _post_ln_in_place, "changed its input x in place", id="in-place"),
    # pre-LN and post-LN mixed
    pytest.param("03.post_ln_block", lambda x, sublayer, norm: norm(x + sublayer(norm(x))), "values differ",
                 id="sandwich"),
    # the sublayer's output returned as well
    pytest.param("03.post_ln_block", lambda x, sublayer, norm: (norm(x + sublayer(x)), sublayer(x)),
                 "expected a torch.Tensor, got tuple", id="tuple"),
    # positions counted from 1
    pytest.param("03.sinusoidal", _sinusoidal(position_start=1), "values differ", id="from-position-1"),
    # the base written into the code
    pytest.param("03.sinusoidal", _sinusoidal(base=10000.0), "base 100", id="base-ignored"),
    # each column its own exponent j/dim: the cosine columns get (2i+1)/dim
    pytest.param("03.sinusoidal", _sinusoidal(column_exponent=True), "values differ", id="column-exponent"),
    # the angle multiplied by the frequency term instead of divided
    pytest.param("03.sinusoidal", lambda n, dim, base=10000.0: sinusoidal_positions(n, dim, 1 / base),
                 "values differ", id="multiplied"),
    # one column per position
    pytest.param("03.sinusoidal", lambda n, dim, base=10000.0: sinusoidal_positions(n, dim, base).T,
                 "expected shape", id="transposed"),
]



# ------------------------------------------------------------------ references against the real libraries
def test_layer_norm_equals_torch_layer_norm_on_random_and_real_hidden_states(hf_encoder, tokenizer):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=generator) * 3 + 1
    torch_norm = nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        torch_norm.weight.normal_(1.0, 0.2, generator=generator)
        torch_norm.bias.normal_(0.0, 0.2, generator=generator)
    torch.testing.assert_close(layer_norm(x, torch_norm.weight, torch_norm.bias, eps=1e-5), torch_norm(x))

    batch = tokenizer(["A warm, funny film.", "The plot is a mess."], padding=True, return_tensors="pt")
    embeddings = hf_encoder.embeddings
    with torch.no_grad():
        summed = (embeddings.word_embeddings(batch["input_ids"]) + embeddings.token_type_embeddings(
            batch["token_type_ids"]) + embeddings.position_embeddings.weight[: batch["input_ids"].shape[1]])
        ours = layer_norm(summed, embeddings.LayerNorm.weight, embeddings.LayerNorm.bias,
                          eps=embeddings.LayerNorm.eps)
        theirs = embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_feed_forward_equals_the_first_bert_layer_intermediate_and_output_dense(hf_encoder):
    layer = hf_encoder.encoder.layer[0]
    x = torch.randn(2, 7, hf_encoder.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = layer.output.dense(layer.intermediate(x))  # (2, 7, 384), without the residual and LayerNorm
        ours = feed_forward(x, layer.intermediate.dense.weight, layer.intermediate.dense.bias,
                            layer.output.dense.weight, layer.output.dense.bias)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_feed_forward_transforms_each_token_on_its_own():
    generator = torch.Generator().manual_seed(2)
    ffn = nn.Sequential(nn.Linear(6, 24), nn.GELU(), nn.Linear(24, 6))
    x = torch.randn(2, 5, 6, generator=generator)
    weights = (ffn[0].weight, ffn[0].bias, ffn[2].weight, ffn[2].bias)
    with torch.no_grad():
        whole = feed_forward(x, *weights)
        one_token = feed_forward(x[1, 3], *weights)  # (6,): a single position, no batch or token axis
        torch.testing.assert_close(whole, ffn(x))
    torch.testing.assert_close(whole[1, 3], one_token)


def test_two_post_ln_blocks_reproduce_a_whole_bert_layer(hf_encoder):
    layer = hf_encoder.encoder.layer[2]
    x = torch.randn(2, 6, hf_encoder.config.hidden_size, generator=torch.Generator().manual_seed(3))

    def self_attention(h):  # (B, T, D) -> (B, T, D): attention and its output projection, no residual
        return layer.attention.output.dense(layer.attention.self(h)[0])

    def feed_forward_sublayer(h):
        return layer.output.dense(layer.intermediate(h))

    with torch.no_grad():
        h = post_ln_block(x, self_attention, layer.attention.output.LayerNorm)
        ours = post_ln_block(h, feed_forward_sublayer, layer.output.LayerNorm)
        theirs = layer(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_post_ln_block_equals_torch_transformer_layer_halves():
    torch.manual_seed(4)
    torch_layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                             norm_first=False).eval()
    x = torch.randn(2, 5, 8)

    def attention(h):
        return torch_layer.self_attn(h, h, h, need_weights=False)[0]

    def mlp(h):
        return torch_layer.linear2(torch.relu(torch_layer.linear1(h)))

    with torch.no_grad():
        ours = post_ln_block(post_ln_block(x, attention, torch_layer.norm1), mlp, torch_layer.norm2)
        torch.testing.assert_close(ours, torch_layer(x), atol=1e-5, rtol=1e-5)


def test_sinusoidal_similarity_depends_only_on_the_offset_between_positions():
    table = sinusoidal_positions(100, 64).double()
    gram = table @ table.T  # (P, P): sum_i cos(w_i (p - q)), a function of p - q alone
    for offset in (1, 5, 30):
        diagonal = torch.diagonal(gram, offset=offset)
        torch.testing.assert_close(diagonal, torch.full_like(diagonal, diagonal[0].item()), atol=1e-4, rtol=0)
    assert torch.allclose(torch.diagonal(gram), torch.full((100,), 32.0, dtype=torch.float64))  # sin^2 + cos^2


# ------------------------------------------------------------------ clear errors on bad input
def test_bad_inputs_get_errors_that_name_what_was_expected():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"weight and bias of shape \(4,\).*got \(5,\) and \(4,\)"):
        layer_norm(x, torch.ones(5), torch.zeros(4))
    with pytest.raises(TypeError, match="floating tensor"):
        layer_norm(torch.ones(2, 4, dtype=torch.long), torch.ones(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"w1 of shape \(I, 4\)"):
        feed_forward(x, torch.ones(4, 16), torch.ones(16), torch.ones(4, 16), torch.ones(4))
    with pytest.raises(ValueError, match=r"w2 of shape \(4, 16\)"):
        feed_forward(x, torch.ones(16, 4), torch.ones(16), torch.ones(16, 4), torch.ones(4))
    with pytest.raises(ValueError, match=r"input's shape \(2, 3, 4\), got \(2, 3, 8\)"):
        post_ln_block(x, nn.Linear(4, 8), nn.LayerNorm(4))
