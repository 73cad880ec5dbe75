"""Lesson 02 exercises: references agree with torch / transformers, and the checker explains each mistake."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import scaled_dot_product_attention as scaled_dot_product
from course_lib.checks import check
from course_lib.checks.lesson02 import embedding_lookup, merge_heads, split_heads


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_correct_answers_written_differently_also_pass():
    assert check("02.embedding_lookup", lambda ids, weight: weight[ids]).passed
    assert check("02.embedding_lookup", lambda ids, weight: F.embedding(ids, weight)).passed
    assert check("02.scaled_dot_product", lambda q, k, v: (
        lambda w: (torch.einsum("...ts,...sd->...td", w, v), w))(
        torch.softmax(torch.einsum("...td,...sd->...ts", q, k) * q.shape[-1] ** -0.5, dim=-1))).passed
    assert check("02.split_heads", lambda x, h: x.reshape(*x.shape[:2], h, -1).permute(0, 2, 1, 3)).passed
    assert check("02.split_heads", lambda x, h: torch.stack(x.chunk(h, dim=-1), dim=1)).passed
    assert check("02.merge_heads", lambda x: torch.cat(x.unbind(dim=1), dim=-1)).passed


def _attention(scale, softmax_dim=-1, transpose=lambda k: k.transpose(-2, -1)):
    """Attention with a pluggable scale (a function of q, k, v), softmax axis and key transpose."""
    def attend(q, k, v):
        weights = torch.softmax(q @ transpose(k) * scale(q, k, v), dim=softmax_dim)
        return weights @ v, weights
    return attend


def _split_through_batch(x, num_heads):  # batch and tokens folded together, then unfolded in the wrong order
    B, T, D = x.shape
    return x.reshape(B * T, num_heads, D // num_heads).transpose(0, 1).reshape(B, num_heads, T, D // num_heads)


def _merge_through_batch(x):
    B, H, T, d = x.shape
    return x.reshape(B * H, T, d).transpose(0, 1).reshape(B, T, H * d)


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # the ids used as 1-based positions
    pytest.param("02.embedding_lookup", lambda ids, weight: weight[ids - 1], "values differ", id="one-based"),
    # columns picked instead of rows
    pytest.param("02.embedding_lookup", lambda ids, weight: weight[:, ids].T, "values differ", id="columns"),
    # one_hot without num_classes: as wide as the largest id in the text
    pytest.param("02.embedding_lookup", lambda ids, weight: F.one_hot(ids).to(weight.dtype) @ weight,
                 "raised", id="one-hot-without-num-classes"),
    # the one-hot cast to float32 whatever the weight's dtype
    pytest.param("02.embedding_lookup", lambda ids, weight: F.one_hot(ids, weight.shape[0]).float() @ weight,
                 "a float64 weight", id="float32-one-hot"),
    # a bag of words: the vectors summed over the tokens
    pytest.param("02.embedding_lookup", lambda ids, weight: (F.one_hot(ids, weight.shape[0]).to(weight.dtype)
                                                             @ weight).sum(dim=-2), "expected shape", id="summed"),
    # scaled by the number of keys instead of the query width
    pytest.param("02.scaled_dot_product", _attention(lambda q, k, v: k.shape[-2] ** -0.5), "a batch of 2 texts",
                 id="scale-by-keys"),
    # scaled by the value width
    pytest.param("02.scaled_dot_product", _attention(lambda q, k, v: v.shape[-1] ** -0.5), "values of dim 10",
                 id="scale-by-value-width"),
    # the softmax over a fixed axis 1, the keys' axis only for 2-D inputs
    pytest.param("02.scaled_dot_product", _attention(lambda q, k, v: q.shape[-1] ** -0.5, softmax_dim=1),
                 "on one text", id="softmax-dim-1"),
    # keys transposed with fixed axes (1, 2): wrong for 2-D and 4-D inputs
    pytest.param("02.scaled_dot_product", _attention(lambda q, k, v: q.shape[-1] ** -0.5,
                                                     transpose=lambda k: k.transpose(1, 2)), "raised",
                 id="transpose-1-2"),
    # only the output, not the weights
    pytest.param("02.scaled_dot_product", lambda q, k, v: scaled_dot_product(q, k, v)[0],
                 "expected a tuple, got a torch.float32 tensor", id="output-only"),
    # (weights, output) in the other order
    pytest.param("02.scaled_dot_product", lambda q, k, v: scaled_dot_product(q, k, v)[::-1], "item 0:",
                 id="swapped"),
    # view (B, T, H, d) without moving the heads in front of the tokens
    pytest.param("02.split_heads", lambda x, h: x.view(*x.shape[:2], h, -1), "expected shape", id="no-transpose"),
    # batch and tokens folded together before splitting
    pytest.param("02.split_heads", _split_through_batch, "a batch of 2 texts", id="through-batch"),
    # chunks stacked after the tokens
    pytest.param("02.split_heads", lambda x, h: torch.stack(x.chunk(h, dim=-1), dim=2), "expected shape",
                 id="stacked-on-dim-2"),
    # the heads averaged instead of put side by side
    pytest.param("02.merge_heads", lambda x: x.mean(dim=1), "expected shape", id="mean-of-heads"),
    # the heads concatenated along the tokens
    pytest.param("02.merge_heads", lambda x: torch.cat(x.unbind(dim=1), dim=1), "expected shape", id="cat-tokens"),
    # batch and heads folded together
    pytest.param("02.merge_heads", _merge_through_batch, "a batch of 2 texts", id="through-batch"),
    # view on the transposed (non-contiguous) tensor
    pytest.param("02.merge_heads", lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1),
                 "raised RuntimeError", id="view-not-reshape"),
]



# ------------------------------------------------------------------ references against the real libraries
def test_embedding_lookup_equals_the_encoders_nn_embedding(tokenizer, hf_encoder):
    table = hf_encoder.embeddings.word_embeddings  # nn.Embedding(30522, 384)
    ids = tokenizer(["The cat sat on the mat.", "It was tired."], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = table(ids)  # (2, T, 384)
        got = embedding_lookup(ids, table.weight)
    assert got.shape == expected.shape == (2, ids.shape[1], 384)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)  # a product with a one-hot row is exact


def test_scaled_dot_product_gives_the_encoders_attention_weights_from_its_own_projections(tokenizer, hf_encoder):
    batch = tokenizer("The cat sat on the mat because it was tired.", return_tensors="pt")
    attention = hf_encoder.encoder.layer[0].attention.self
    heads, head_dim = hf_encoder.config.num_attention_heads, 384 // hf_encoder.config.num_attention_heads
    with torch.no_grad():
        out = hf_encoder(**batch, output_hidden_states=True, output_attentions=True)
        x = out.hidden_states[0]  # (1, T, 384): the input of layer 0
        q, k, v = (split_heads(layer(x), heads) for layer in (attention.query, attention.key, attention.value))
        context, weights = scaled_dot_product(q, k, v)  # (1, H, T, d), (1, H, T, T)
        expected_context, _ = attention(x)  # (1, T, 384)
    assert q.shape == (1, heads, x.shape[1], head_dim)
    torch.testing.assert_close(weights, out.attentions[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(merge_heads(context), expected_context, atol=1e-6, rtol=1e-5)


def test_split_attend_merge_with_copied_weights_equals_nn_multiheadattention():
    torch.manual_seed(0)
    D, H = 24, 4
    mha = nn.MultiheadAttention(D, H, batch_first=True).eval()
    x = _randn(2, 6, D, seed=4)
    with torch.no_grad():
        expected, expected_weights = mha(x, x, x, average_attn_weights=False)  # (B, T, D), (B, H, T, T)
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)  # 3 x (B, T, D)
        context, weights = scaled_dot_product(split_heads(q, H), split_heads(k, H), split_heads(v, H))
        output = mha.out_proj(merge_heads(context))
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(output, expected)


def test_split_heads_gives_head_h_the_features_of_its_own_slice_and_merge_undoes_it():
    x = _randn(2, 5, 12, seed=5)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    for h in range(3):
        assert torch.equal(heads[:, h], x[..., 4 * h: 4 * (h + 1)])
    assert torch.equal(merge_heads(heads), x)


def test_unscaled_scores_saturate_the_softmax_and_scaling_keeps_it_soft():
    q, k, v = _randn(1, 200, 1024, seed=6), _randn(1, 16, 1024, seed=7), _randn(1, 16, 4, seed=8)
    _, scaled = scaled_dot_product(q, k, v)
    unscaled = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    assert unscaled.max(dim=-1).values.mean() > 0.9  # nearly one-hot rows
    assert scaled.max(dim=-1).values.mean() < 0.4
    torch.testing.assert_close(scaled, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(1024), dim=-1))


# ------------------------------------------------------------------ clear errors on bad input
def test_bad_inputs_get_errors_that_name_what_was_expected():
    with pytest.raises(TypeError, match=r"integer token ids .* got torch.float32"):
        embedding_lookup(torch.tensor([1.0, 2.0]), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\) .* from 1 to 9"):
        embedding_lookup(torch.tensor([1, 9]), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"weight of shape \(vocabulary, dim\), got \(4,\)"):
        embedding_lookup(torch.tensor([1]), torch.zeros(4))
    with pytest.raises(ValueError, match="dim 10 must be divisible by num_heads, got num_heads=3"):
        split_heads(torch.zeros(1, 2, 10), 3)
    with pytest.raises(ValueError, match=r"\(batch, tokens, dim\), got \(2, 10\)"):
        split_heads(torch.zeros(2, 10), 2)
    with pytest.raises(ValueError, match=r"\(batch, heads, tokens, head_dim\), got \(2, 3, 4\)"):
        merge_heads(torch.zeros(2, 3, 4))


# ------------------------------------------------------------------ the core exercise: masked multi-head attention
def _mha_by_hand(x, attention_mask, weights, num_heads):  # einsum, the most negative float32 on padded keys
    B, T, D = x.shape
    d = D // num_heads
    q, k, v = (torch.einsum("btd,ed->bte", x, weights[f"attention.self.{n}.weight"])
               + weights[f"attention.self.{n}.bias"] for n in ("query", "key", "value"))
    q, k, v = (t.reshape(B, T, num_heads, d) for t in (q, k, v))  # (B, T, H, d)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / d ** 0.5  # (B, H, T, T)
    scores = scores + (attention_mask[:, None, None, :] == 0) * torch.finfo(scores.dtype).min
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, T, D)


def _mha_sdpa(x, attention_mask, weights, num_heads):  # PyTorch's fused kernel with a boolean key mask
    B, T, D = x.shape
    q, k, v = (F.linear(x, weights[f"attention.self.{n}.weight"], weights[f"attention.self.{n}.bias"])
               .view(B, T, num_heads, -1).transpose(1, 2) for n in ("query", "key", "value"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask.bool()[:, None, None, :])
    return out.transpose(1, 2).flatten(2)


def _mha_old_bert(x, attention_mask, weights, num_heads):  # the -10000 of the first BERT code, per head in a loop
    d = x.shape[-1] // num_heads
    outputs = []
    for h in range(num_heads):
        rows = slice(h * d, (h + 1) * d)
        q, k, v = (x @ weights[f"attention.self.{n}.weight"][rows].T + weights[f"attention.self.{n}.bias"][rows]
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(1, 2) / math.sqrt(d) + (1.0 - attention_mask[:, None, :].float()) * -10000.0
        outputs.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(outputs, dim=-1)


def test_masked_attention_written_three_other_ways_passes():
    for answer in (_mha_by_hand, _mha_sdpa, _mha_old_bert):
        result = check("02.masked_attention", answer)
        assert result.passed, result.message


def _mha_student(scale=None, mask_value=None, invert=False, softmax_dim=-1, value_name="value", merge="transpose",
                 bias=True):
    """Masked attention with one thing written differently, as a student might."""
    def attend(x, attention_mask, weights, num_heads):
        B, T, D = x.shape
        d = D // num_heads
        def proj(n):
            y = x @ weights[f"attention.self.{n}.weight"].T
            return (y + weights[f"attention.self.{n}.bias"] if bias else y).view(B, T, num_heads, d).transpose(1, 2)
        q, k, v = proj("query"), proj("key"), proj(value_name)
        scores = q @ k.transpose(-2, -1) * (scale(T, d) if scale else d ** -0.5)
        blocked = (attention_mask == 1) if invert else (attention_mask == 0)
        scores = scores.masked_fill(blocked[:, None, None, :], float("-inf") if mask_value is None else mask_value)
        out = torch.softmax(scores, dim=softmax_dim) @ v  # (B, H, T, d)
        return out.reshape(B, T, D) if merge == "reshape" else out.transpose(1, 2).reshape(B, T, D)
    return attend


WRONG += [
    # scaled by the number of tokens instead of the head width
    pytest.param("02.masked_attention", _mha_student(scale=lambda T, d: T ** -0.5),
                 "text 0, token 0 (a real token), feature 0 (head 0) differs", id="scale-by-tokens"),
    # the mask the wrong way round: the real tokens blocked, the padding kept
    pytest.param("02.masked_attention", _mha_student(invert=True), "got nan", id="inverted-mask"),
    # a finite penalty that is far too small to block anything
    pytest.param("02.masked_attention", _mha_student(mask_value=-1.0),
                 "second padded with 8 [PAD]: the output of text 1", id="weak-penalty"),
    # the softmax over the queries
    pytest.param("02.masked_attention", _mha_student(softmax_dim=-2), "differs: expected", id="softmax-over-queries"),
    # the keys' projection used for the values too
    pytest.param("02.masked_attention", _mha_student(value_name="key"), "differs: expected", id="keys-as-values"),
    # heads merged by reshaping (B, H, T, d) directly
    pytest.param("02.masked_attention", _mha_student(merge="reshape"), "feature 32 (head 1) differs",
                 id="merge-no-transpose"),
    # the projections' biases left out
    pytest.param("02.masked_attention", _mha_student(bias=False), "differs: expected", id="no-bias"),
    # stretch: the squared distance instead of the distance
    pytest.param("02.distance_bias", lambda q, k, v, s: F.scaled_dot_product_attention(
        q, k, v, attn_mask=-s[:, None, None] * (torch.arange(q.shape[-2])[None] - torch.arange(q.shape[-2])[:, None])
        .to(q.dtype) ** 2), "values differ", id="squared-distance"),
    # stretch: the scores multiplied by the penalty instead of shifted by it
    pytest.param("02.distance_bias", lambda q, k, v, s: torch.softmax(
        q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) * (1 + s[:, None, None] * (
            torch.arange(q.shape[-2])[None] - torch.arange(q.shape[-2])[:, None]).abs()), dim=-1) @ v,
        "values differ", id="multiplied"),
]


def test_distance_bias_by_hand_with_einsum_passes():
    def by_hand(q, k, v, slopes):
        T = q.shape[-2]
        i = torch.arange(T)
        scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
        scores = scores - slopes.view(-1, 1, 1) * (i.view(1, -1) - i.view(-1, 1)).abs()
        return torch.einsum("bhts,bhsd->bhtd", scores.softmax(dim=-1), v)
    assert check("02.distance_bias", by_hand).passed


def test_masked_attention_reference_ignores_what_the_padding_holds():
    from course_lib.checks.lesson02 import bert_self_attention, minilm_layer_cases
    x, mask, weights, heads = minilm_layer_cases()[0].args
    noisy = torch.where(mask.bool()[..., None], x, _randn(*x.shape, seed=9) * 5)  # garbage at the [PAD] positions
    real = mask.bool()
    torch.testing.assert_close(bert_self_attention(noisy, mask, weights, heads)[real],
                               bert_self_attention(x, mask, weights, heads)[real])
    unmasked = bert_self_attention(noisy, torch.ones_like(mask), weights, heads)[real]
    assert (unmasked - bert_self_attention(x, mask, weights, heads)[real]).abs().max() > 1e-2
