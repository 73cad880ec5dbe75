"""course_lib.attention against PyTorch: F.scaled_dot_product_attention and nn.MultiheadAttention."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from course_lib.attention import (
    AttentionHead,
    MultiHeadAttention,
    MultiHeadAttentionList,
    causal_mask,
    copy_weights_from_torch,
    padding_mask,
    scaled_dot_product_attention,
    to_additive_mask,
)

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
SHAPES = [  # (batch, heads, tokens, head_dim)
    pytest.param((1, 1, 1, 4), id="B1-H1-T1"),
    pytest.param((2, 3, 5, 8), id="B2-H3-T5"),
    pytest.param((4, 12, 17, 32), id="B4-H12-T17"),
]
MASKS = ["none", "padding", "causal", "padding+causal"]


def random_attention_mask(batch: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
    """A tokenizer-style (B, T) 0/1 mask: each row keeps 1..T leading tokens, the first row all of them."""
    lengths = torch.randint(1, tokens + 1, (batch,), generator=generator)
    lengths[0] = tokens
    return (torch.arange(tokens) < lengths[:, None]).long()


def build_mask(kind: str, batch: int, tokens: int, generator: torch.Generator) -> torch.Tensor | None:
    """A boolean mask, True = attend, broadcastable to (B, H, T, T)."""
    if kind == "none":
        return None
    mask = torch.ones(batch, 1, tokens, tokens, dtype=torch.bool)
    if "padding" in kind:
        mask = mask & padding_mask(random_attention_mask(batch, tokens, generator))
    if "causal" in kind:
        mask = mask & causal_mask(tokens)
    return mask


def as_kind(mask: torch.Tensor | None, form: str, dtype: torch.dtype) -> torch.Tensor | None:
    return mask if mask is None or form == "boolean" else to_additive_mask(mask, dtype)


# ----------------------------------------------------------------------------------------------- masks
def test_padding_mask_marks_real_tokens_for_every_head_and_query():
    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    mask = padding_mask(attention_mask)
    assert mask.dtype == torch.bool and mask.shape == (3, 1, 1, 3)
    assert torch.equal(mask[:, 0, 0], attention_mask == 1)
    assert torch.equal(padding_mask(attention_mask.bool()), mask)


@pytest.mark.parametrize("T", [1, 2, 7])
def test_causal_mask_equals_pytorch_is_causal(T):
    generator = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    mask = causal_mask(T)
    assert torch.equal(mask, torch.ones(T, T).tril().bool())
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=0, atol=1e-12)


@pytest.mark.parametrize("T,S", [(1, 5), (3, 7), (4, 4)])
def test_causal_mask_with_more_keys_matches_pytorch_lower_right_alignment(T, S):
    generator = torch.Generator().manual_seed(T * 10 + S)
    q = torch.randn(2, 3, T, 4, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(2, 3, S, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    ours, _ = scaled_dot_product_attention(q, k, v, causal_mask(T, S))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, S))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def test_additive_mask_is_zero_where_allowed_and_minus_infinity_where_blocked():
    mask = torch.tensor([[True, False], [False, True]])
    additive = to_additive_mask(mask, torch.float64)
    assert additive.dtype == torch.float64
    assert torch.equal(additive, torch.tensor([[0.0, float("-inf")], [float("-inf"), 0.0]], dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("form", ["boolean", "additive"])
def test_attention_equals_pytorch_sdpa(dtype, shape, mask_kind, form):
    generator = torch.Generator().manual_seed(sum(shape))
    B, H, T, d = shape
    q, k, v = (torch.randn(B, H, T, d, generator=generator, dtype=dtype) for _ in range(3))
    mask = as_kind(build_mask(mask_kind, B, T, generator), form, dtype)
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, expected, rtol=0, atol=TOLERANCE[dtype])
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T, dtype=dtype), rtol=0, atol=TOLERANCE[dtype])


def test_attention_weights_are_zero_on_blocked_keys_and_scale_is_one_over_sqrt_d():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, generator=generator, dtype=torch.float64) for _ in range(3))
    mask = padding_mask(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))[:, 0]  # (2, 1, 4)
    _, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(weights[1, :, 2:] == 0)
    scores = torch.einsum("btd,bsd->bts", q, k) / 6 ** 0.5
    torch.testing.assert_close(weights[0], torch.softmax(scores[0], dim=-1), rtol=0, atol=1e-12)


def test_row_without_any_allowed_key_attends_to_nothing_like_pytorch():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 3, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=0, atol=1e-12)
    assert torch.all(weights[0, 1] == 0) and not torch.isnan(ours).any()


# ----------------------------------------------------------------------------------------------- modules
def torch_reference(embed_dim: int, num_heads: int, dtype: torch.dtype, seed: int) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    reference = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True).to(dtype).eval()
    with torch.no_grad():  # PyTorch initialises the biases to zero; make them count
        reference.in_proj_bias.normal_()
        reference.out_proj.bias.normal_()
    return reference


COURSE_FORMS = [
    pytest.param(lambda D, H: MultiHeadAttention(D, H), id="fused-3-projections"),
    pytest.param(lambda D, H: MultiHeadAttention(D, H, fused_qkv=True), id="fused-1-qkv-projection"),
    pytest.param(lambda D, H: MultiHeadAttentionList(D, H), id="list-of-heads"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,D,H", [(1, 1, 8, 1), (2, 6, 12, 3), (3, 9, 64, 8)])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("form", ["boolean", "additive"])
@pytest.mark.parametrize("make", COURSE_FORMS)
def test_multi_head_attention_equals_torch_multihead_attention(dtype, B, T, D, H, mask_kind, form, make):
    reference = torch_reference(D, H, dtype, seed=B + T + D)
    ours = copy_weights_from_torch(reference, make(D, H).to(dtype))
    generator = torch.Generator().manual_seed(T)
    x = torch.randn(B, T, D, generator=generator, dtype=dtype)
    mask = build_mask(mask_kind, B, T, generator)  # (B, 1, T, T), True = attend
    # nn.MultiheadAttention: a boolean mask is True where attention is NOT allowed; a float mask is added.
    torch_mask = None if mask is None else (~mask if form == "boolean" else to_additive_mask(mask, dtype))
    if torch_mask is not None:
        torch_mask = torch_mask.expand(B, H, T, T).reshape(B * H, T, T)
    expected, expected_weights = reference(x, x, x, attn_mask=torch_mask, average_attn_weights=False)

    output, weights = ours(x, mask=as_kind(mask, form, dtype))
    torch.testing.assert_close(output, expected, rtol=0, atol=TOLERANCE[dtype])
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=TOLERANCE[dtype])
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T, dtype=dtype), rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fused_qkv", [False, True])
def test_fast_path_without_weights_equals_torch_with_key_padding_mask(dtype, fused_qkv):
    B, T, D, H = 4, 11, 48, 6
    reference = torch_reference(D, H, dtype, seed=7)
    ours = copy_weights_from_torch(reference, MultiHeadAttention(D, H, fused_qkv=fused_qkv).to(dtype))
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, D, generator=generator, dtype=dtype)
    attention_mask = random_attention_mask(B, T, generator)
    expected, _ = reference(x, x, x, key_padding_mask=attention_mask == 0)
    output, weights = ours(x, mask=padding_mask(attention_mask), need_weights=False)
    assert weights is None
    torch.testing.assert_close(output, expected, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("make", COURSE_FORMS)
def test_cross_attention_takes_keys_and_values_from_the_context(make):
    D, H, T, S = 16, 4, 3, 7
    reference = torch_reference(D, H, torch.float64, seed=11)
    ours = copy_weights_from_torch(reference, make(D, H).double())
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, T, D, generator=generator, dtype=torch.float64)
    context = torch.randn(2, S, D, generator=generator, dtype=torch.float64)
    expected, expected_weights = reference(x, context, context, average_attn_weights=False)
    output, weights = ours(x, context)
    assert weights.shape == (2, H, T, S)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=1e-12)


def test_list_of_heads_equals_fused_form_and_each_head_is_a_slice():
    D, H = 24, 4
    reference = torch_reference(D, H, torch.float64, seed=2)
    as_list = copy_weights_from_torch(reference, MultiHeadAttentionList(D, H).double())
    fused = copy_weights_from_torch(reference, MultiHeadAttention(D, H).double())
    x = torch.randn(3, 5, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]))
    (list_out, list_weights), (fused_out, fused_weights) = as_list(x, mask=mask), fused(x, mask=mask)
    torch.testing.assert_close(list_out, fused_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(list_weights, fused_weights, rtol=0, atol=1e-12)
    head_out, head_weights = as_list.heads[2](x, mask=mask)  # head 2 alone: (B, T, d), (B, T, T)
    values = fused.split_heads(fused.value(x))  # (B, H, T, d)
    torch.testing.assert_close(head_weights, fused_weights[:, 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(head_out, fused_weights[:, 2] @ values[:, 2], rtol=0, atol=1e-12)


def test_attention_head_projects_to_head_dim_and_its_weights_rows_sum_to_one():
    head = AttentionHead(embed_dim=10, head_dim=3).double()
    x = torch.randn(2, 4, 10, dtype=torch.float64)
    output, weights = head(x, mask=causal_mask(4))
    assert output.shape == (2, 4, 3) and weights.shape == (2, 4, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.all(weights.triu(diagonal=1) == 0)


def test_attention_dropout_acts_in_training_only():
    attention = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 6, 16)
    attention.eval()
    eval_out, _ = attention(x)
    attention.train()
    torch.manual_seed(0)
    train_out, train_weights = attention(x)
    assert not torch.allclose(train_out, eval_out)
    assert (train_weights == 0).any()


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad,message", [
    (dict(query=torch.ones(2, 3, 4, dtype=torch.long)), "floating"),
    (dict(query=torch.ones(4)), r"\(\.\.\., tokens, dim\), got \(4,\)"),
    (dict(key=torch.ones(2, 3, 5)), "same last dimension"),
    (dict(value=torch.ones(2, 2, 4)), "same number of tokens"),
    (dict(query=[[1.0]]), "torch.Tensor"),
    (dict(mask=torch.ones(3, 3, dtype=torch.long)), "boolean .* or floating"),
    (dict(mask=torch.ones(3, 3, dtype=torch.int32)), "padding_mask"),
    (dict(mask=torch.ones(4, 4, dtype=torch.bool)), r"mask of shape \(4, 4\) does not broadcast"),
    (dict(mask=torch.ones(5, 2, 3, 3, dtype=torch.bool)), "does not broadcast"),
    (dict(mask=torch.zeros(3, 3, dtype=torch.float64)), "scores' dtype torch.float32"),
])
def test_attention_rejects_bad_inputs_with_a_clear_message(bad, message):
    inputs = dict(query=torch.ones(2, 3, 4), key=torch.ones(2, 3, 4), value=torch.ones(2, 3, 4), mask=None) | bad
    with pytest.raises((TypeError, ValueError), match=message):
        scaled_dot_product_attention(**inputs)


@pytest.mark.parametrize("make", [MultiHeadAttention, MultiHeadAttentionList])
def test_embed_dim_not_divisible_by_heads_is_an_error(make):
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(3\)"):
        make(10, 3)


@pytest.mark.parametrize("make", [MultiHeadAttention, MultiHeadAttentionList])
def test_module_rejects_input_of_wrong_width_dtype_or_mask(make):
    attention = make(8, 2)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 8\), got \(2, 3, 6\)"):
        attention(torch.ones(2, 3, 6))
    with pytest.raises(TypeError, match="floating"):
        attention(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="padding_mask"):
        attention(torch.ones(2, 3, 8), mask=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same batch size, got 2 and 3"):
        attention(torch.ones(2, 3, 8), torch.ones(3, 5, 8))


def test_fast_path_checks_the_mask_too():
    with pytest.raises(ValueError, match="does not broadcast"):
        MultiHeadAttention(8, 2)(torch.ones(2, 3, 8), mask=torch.ones(2, 1, 1, 4, dtype=torch.bool),
                                 need_weights=False)


@pytest.mark.parametrize("bad,error,message", [
    (torch.ones(2, 3, 1), ValueError, r"\(batch, tokens\), got \(2, 3, 1\)"),
    (torch.ones(2, 3), TypeError, "integers or booleans"),
    (torch.tensor([[1, 2, 0]]), ValueError, "only 0 and 1"),
])
def test_padding_mask_rejects_bad_attention_masks(bad, error, message):
    with pytest.raises(error, match=message):
        padding_mask(bad)


def test_mask_builders_reject_bad_arguments():
    with pytest.raises(TypeError, match="boolean mask"):
        to_additive_mask(torch.tensor([[1, 0]]), torch.float32)
    with pytest.raises(TypeError, match="floating dtype"):
        to_additive_mask(torch.tensor([[True]]), torch.long)
    with pytest.raises(ValueError, match="positive integer T"):
        causal_mask(0)


def test_copying_weights_needs_matching_sizes():
    with pytest.raises(ValueError, match="num_heads=2"):
        copy_weights_from_torch(nn.MultiheadAttention(8, 2, batch_first=True), MultiHeadAttention(8, 4))
    with pytest.raises(TypeError, match="MultiheadAttention"):
        copy_weights_from_torch(nn.Linear(8, 8), MultiHeadAttention(8, 4))
