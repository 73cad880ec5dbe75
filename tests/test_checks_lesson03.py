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


# ------------------------------------------------------------------ the core exercise: a whole encoder layer
def _layer_with_modules(x, attention_mask, weights, num_heads):
    """Right, with PyTorch modules: nn.MultiheadAttention for the attention, nn.LayerNorm, nn.Sequential."""
    D = x.shape[-1]
    mha = nn.MultiheadAttention(D, num_heads, batch_first=True).eval()
    mha.load_state_dict({
        "in_proj_weight": torch.cat([weights[f"attention.self.{n}.weight"] for n in ("query", "key", "value")]),
        "in_proj_bias": torch.cat([weights[f"attention.self.{n}.bias"] for n in ("query", "key", "value")]),
        "out_proj.weight": weights["attention.output.dense.weight"], "out_proj.bias": weights["attention.output.dense.bias"]})
    norms = []
    for prefix in ("attention.output.LayerNorm", "output.LayerNorm"):
        norm = nn.LayerNorm(D, eps=1e-12)
        norm.load_state_dict({"weight": weights[f"{prefix}.weight"], "bias": weights[f"{prefix}.bias"]})
        norms.append(norm)
    inner = weights["intermediate.dense.weight"].shape[0]
    ffn = nn.Sequential(nn.Linear(D, inner), nn.GELU(), nn.Linear(inner, D))
    ffn.load_state_dict({"0.weight": weights["intermediate.dense.weight"], "0.bias": weights["intermediate.dense.bias"],
                         "2.weight": weights["output.dense.weight"], "2.bias": weights["output.dense.bias"]})
    with torch.no_grad():
        attended, _ = mha(x, x, x, key_padding_mask=attention_mask == 0, need_weights=False)
        h = norms[0](x + attended)
        return norms[1](h + ffn(h))


def _layer_by_hand(x, attention_mask, w, num_heads, act=None, eps=1e-12, mask_value=None, norm_over=-1,
                   residual_scale=1.0, skip_output_projection=False):
    """Right by default, with einsum and a LayerNorm written out; one argument changes one thing, as a student might."""
    B, T, D = x.shape
    d = D // num_heads

    def ln(t, prefix):
        mean, var = t.mean(norm_over, keepdim=True), t.var(norm_over, keepdim=True, unbiased=False)
        return (t - mean) / torch.sqrt(var + eps) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    q, k, v = (torch.einsum("btd,ed->bte", x, w[f"attention.self.{n}.weight"]) + w[f"attention.self.{n}.bias"]
               for n in ("query", "key", "value"))
    q, k, v = (t.view(B, T, num_heads, d) for t in (q, k, v))
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    fill = torch.finfo(x.dtype).min if mask_value is None else mask_value
    scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, fill)
    merged = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, T, D)
    attended = merged if skip_output_projection else \
        merged @ w["attention.output.dense.weight"].T + w["attention.output.dense.bias"]
    h = ln(residual_scale * x + attended, "attention.output.LayerNorm")
    inner = h @ w["intermediate.dense.weight"].T + w["intermediate.dense.bias"]
    inner = act(inner) if act else 0.5 * inner * (1 + torch.erf(inner / math.sqrt(2)))  # exact GELU
    return ln(residual_scale * h + inner @ w["output.dense.weight"].T + w["output.dense.bias"], "output.LayerNorm")


def test_encoder_layer_written_two_other_ways_passes():
    for answer in (_layer_with_modules, _layer_by_hand):
        result = check("03.encoder_layer", answer)
        assert result.passed, result.message


def test_pre_ln_layer_written_with_modules_passes():
    def pre_ln(x, attention_mask, w, num_heads):
        D = x.shape[-1]
        ln1, ln2 = (lambda t, p=p: F.layer_norm(t, (D,), w[f"{p}.weight"], w[f"{p}.bias"], 1e-12)
                    for p in ("attention.output.LayerNorm", "output.LayerNorm"))
        mha = nn.MultiheadAttention(D, num_heads, batch_first=True).eval()
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([w[f"attention.self.{n}.weight"] for n in ("query", "key", "value")]))
            mha.in_proj_bias.copy_(torch.cat([w[f"attention.self.{n}.bias"] for n in ("query", "key", "value")]))
            mha.out_proj.weight.copy_(w["attention.output.dense.weight"])
            mha.out_proj.bias.copy_(w["attention.output.dense.bias"])
            y = ln1(x)
            h = x + mha(y, y, y, key_padding_mask=attention_mask == 0)[0]
            ffn = F.linear(F.gelu(F.linear(ln2(h), w["intermediate.dense.weight"], w["intermediate.dense.bias"])),
                           w["output.dense.weight"], w["output.dense.bias"])
        return h + ffn
    result = check("03.pre_ln_layer", pre_ln)
    assert result.passed, result.message


def test_encoder_layer_reference_is_the_real_encoders_next_hidden_state(tokenizer, hf_encoder):
    from course_lib.checks.lesson03 import bert_layer
    batch = tokenizer(["A warm, funny and beautifully acted film.", "The jokes never land."], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        states = hf_encoder(**batch, output_hidden_states=True).hidden_states
    for k in (0, 4):
        got = bert_layer(states[k], batch["attention_mask"], hf_encoder.encoder.layer[k].state_dict(), 12)
        torch.testing.assert_close(got, states[k + 1], atol=1e-5, rtol=1e-4)


WRONG += [
    # the sigmoid approximation of GELU, x * sigmoid(1.702 x)
    pytest.param("03.encoder_layer", lambda *a: _layer_by_hand(*a, act=lambda t: t * torch.sigmoid(1.702 * t)),
                 "the output of text 0, token 0 (a real token), feature", id="sigmoid-gelu"),
    # LayerNorm statistics over the tokens instead of the features
    pytest.param("03.encoder_layer", lambda *a: _layer_by_hand(*a, norm_over=1), "differs: expected",
                 id="norm-over-tokens"),
    # a weak finite penalty instead of blocking the padded keys
    pytest.param("03.encoder_layer", lambda *a: _layer_by_hand(*a, mask_value=-2.0),
                 "second padded with 8 [PAD]: the output of text 1", id="weak-mask"),
    # the residual doubled (x added twice: once in the sum, once by a helper)
    pytest.param("03.encoder_layer", lambda *a: _layer_by_hand(*a, residual_scale=2.0), "differs: expected",
                 id="residual-twice"),
    # the attention's output projection left out
    pytest.param("03.encoder_layer", lambda *a: _layer_by_hand(*a, skip_output_projection=True), "differs: expected",
                 id="no-output-projection"),
    # stretch: the residuals left out altogether (each block just normalises its sub-layer's output)
    pytest.param("03.pre_ln_layer", lambda x, m, w, h: _layer_by_hand(x, m, w, h, residual_scale=0.0),
                 "differs: expected", id="pre-ln-no-residual"),
    # stretch: the input normalised once up front, then the layer's changes added to the raw input
    pytest.param("03.pre_ln_layer", lambda x, m, w, h: (lambda y: x + (_layer_by_hand(y, m, w, h) - y))(
        F.layer_norm(x, x.shape[-1:], w["attention.output.LayerNorm.weight"], w["attention.output.LayerNorm.bias"],
                     1e-12)), "differs: expected", id="pre-ln-odd"),
]
