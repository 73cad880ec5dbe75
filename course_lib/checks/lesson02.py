"""Exercises of lesson 02 (attention from scratch): embedding lookup, scaled dot-product attention, the reshapes of
multi-head attention, the core (masked multi-head attention on a real MiniLM layer) and a distance-bias stretch."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.attention import scaled_dot_product_attention
from course_lib.checks import Case, Exercise, Mistake, compare_outputs, randn, register


def _shape(value) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__

# ----------------------------------------------------------------------------------------------- 02.embedding_lookup
def embedding_lookup(ids: Tensor, weight: Tensor) -> Tensor:
    """What ``nn.Embedding`` computes, as a matrix product: one-hot rows (..., V) times the (V, D) weight."""
    if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.dtype == torch.bool or ids.dim() == 0:
        raise TypeError(f"expected integer token ids of shape (tokens,) or (batch, tokens), got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {_shape(ids)}")
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"expected a float weight of shape (vocabulary, dim), got {_shape(weight)}")
    vocab = weight.shape[0]
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}) for a vocabulary of {vocab}, "
                         f"got ids from {ids.min().item()} to {ids.max().item()}")
    one_hot = F.one_hot(ids, num_classes=vocab).to(weight.dtype)  # (..., V): a single 1 per row
    return one_hot @ weight  # (..., V) @ (V, D) -> (..., D): row ``id`` of the weight


def _lookup_transposed(ids, weight):  # (D, V) @ (..., V, T) -> (..., D, T)
    return weight.T @ F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype).transpose(-2, -1)


def _lookup_linear_convention(ids, weight):  # the (out, in) layout of nn.Linear; runs only when V == D
    return F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype) @ weight.T


register(Exercise("02.embedding_lookup", "an embedding lookup as one-hot x matrix", embedding_lookup, minutes=5, cases=[
        Case((torch.tensor([2, 0, 4, 4]), randn(5, 5, seed=1)), label="a toy vocabulary of 5 tokens, 5-dim vectors"),
        Case((torch.tensor([7, 1, 3]), randn(10, 4, seed=2)), label="3 token ids, vocabulary 10, dim 4"),
        Case((torch.tensor([[5, 0, 9], [2, 2, 8]]), randn(12, 3, seed=3)),
             label="a batch of 2 texts x 3 tokens, vocabulary 12 (the largest id 11 is not used)"),
        Case((torch.tensor([101, 7592, 102]), randn(30522, 8, seed=4)),
             label="[CLS] hello [SEP] with MiniLM's vocabulary of 30,522"),
        Case((torch.tensor([[3]]), randn(4, 6, seed=5)), label="one text of one token, the last id of the vocabulary"),
        Case((torch.tensor([1, 0, 2]), randn(3, 2, seed=6).double()), label="a float64 weight (keep its dtype)"),
    ],
    mistakes=[
        Mistake(_lookup_transposed,
                "one_hot @ weight multiplies (tokens, V) by (V, D) and gives one row per token, (tokens, D); "
                "weight.T @ one_hot.T gives the transpose, (D, tokens)."),
        Mistake(_lookup_linear_convention,
                "do not transpose the weight: nn.Embedding stores one row per token, (num_embeddings, "
                "embedding_dim), unlike nn.Linear, which stores (out_features, in_features) and computes x @ W.T."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.scaled_dot_product
# The reference is the course's attention, course_lib.attention.scaled_dot_product_attention, without a mask.
def _attend(scores: Tensor, value: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    weights = torch.softmax(scores, dim=dim)
    return weights @ value, weights


def _qk(query, key):
    return query @ key.transpose(-2, -1)


register(Exercise("02.scaled_dot_product", "scaled dot-product attention", scaled_dot_product_attention, minutes=10,
    hints=("Four steps: scores query @ key^T, divided by sqrt(d); a softmax over the keys; the weighted sum of values.",
           "scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])"), cases=[
        Case((randn(1, 4, 4, seed=10), randn(1, 4, 4, seed=11), randn(1, 4, 4, seed=12)),
             label="one text: 4 tokens with 4-dim queries, keys and values"),
        Case((randn(2, 5, 8, seed=13), randn(2, 5, 8, seed=14), randn(2, 5, 8, seed=15)),
             label="a batch of 2 texts, 5 tokens, dim 8"),
        Case((randn(2, 3, 16, seed=16), randn(2, 6, 16, seed=17), randn(2, 6, 10, seed=18)),
             label="3 queries attending to 6 keys (values of dim 10)"),
        Case((randn(2, 3, 4, 64, seed=19), randn(2, 3, 4, 64, seed=20), randn(2, 3, 4, 64, seed=21)),
             label="(batch, heads, tokens, dim) = (2, 3, 4, 64)"),
        Case((randn(5, 8, seed=22), randn(7, 8, seed=23), randn(7, 3, seed=24)),
             label="no batch dimension: 5 queries (5, 8) attending to 7 keys (7, 8)"),
        Case((randn(1, 1, 4, seed=25), randn(1, 1, 4, seed=26), randn(1, 1, 2, seed=27)),
             label="a single query and a single key: its weight is 1"),
    ],
    mistakes=[
        Mistake(lambda q, k, v: _attend(_qk(q, k) / math.sqrt(q.shape[-1]), v, dim=-2),
                "take the softmax over the keys (dim=-1): each query's row of weights must sum to 1; dim=-2 makes "
                "each key's column sum to 1 instead."),
        Mistake(lambda q, k, v: _attend(_qk(q, k), v),
                "divide the scores by sqrt(d) (d = query.shape[-1]) before the softmax; without it the scores grow "
                "with d and the softmax saturates."),
        Mistake(lambda q, k, v: _attend(_qk(q, k) / q.shape[-1], v),
                "scale by the square root of d, math.sqrt(q.shape[-1]), not by d itself: a dot product of d "
                "unit-variance terms has variance d, so its standard deviation is sqrt(d)."),
        Mistake(lambda q, k, v: _attend(q @ k / math.sqrt(q.shape[-1]), v),
                "transpose the keys: the scores are query @ key.transpose(-2, -1), (T, d) @ (d, S) -> (T, S); "
                "query @ key only ran because this case is square."),
        Mistake(lambda q, k, v: (lambda w: (w @ v, w))(torch.softmax(_qk(q, k), dim=-1) / math.sqrt(q.shape[-1])),
                "scale the scores before the softmax, not the weights after it: divided afterwards, a row of "
                "weights sums to 1/sqrt(d) instead of 1."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.split_heads
def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, D) -> (B, H, T, d) with d = D / H; head ``h`` gets the features ``h*d:(h+1)*d``."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"expected x of shape (batch, tokens, dim), got {_shape(x)}")
    if not isinstance(num_heads, int) or num_heads < 1 or x.shape[-1] % num_heads:
        raise ValueError(f"dim {x.shape[-1]} must be divisible by num_heads, got num_heads={num_heads!r}")
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, T, H, d) -> (B, H, T, d)


def _split_by_view_only(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, num_heads, T, D // num_heads)


def _split_swapping_last_dims(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, num_heads, D // num_heads).transpose(-2, -1)  # (B, T, d, H)


def _split_interleaved(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, D // num_heads, num_heads).permute(0, 3, 1, 2)  # head h gets every H-th feature


register(Exercise("02.split_heads", "split the model width into heads", split_heads, minutes=8,
    hints=("Cut each token's D features into H groups of d first, then move the heads in front of the tokens.",
           "x.view(B, T, num_heads, D // num_heads).transpose(1, 2)"), cases=[
        Case((randn(1, 3, 4, seed=30), 2), label="3 tokens of width 4, 2 heads"),
        Case((randn(2, 5, 12, seed=31), 3), label="a batch of 2 texts, 5 tokens, width 12, 3 heads"),
        Case((randn(2, 4, 384, seed=32), 12), label="MiniLM's sizes: width 384, 12 heads of 32"),
        Case((randn(1, 2, 6, seed=33), 6), label="6 heads of width 1"),
        Case((randn(3, 1, 8, seed=34), 1), label="a single head: (3, 1, 8) -> (3, 1, 1, 8)"),
    ],
    mistakes=[
        Mistake(_split_by_view_only,
                "view(B, H, T, d) directly cuts the flat memory in the wrong order and mixes tokens into one head; "
                "first view(B, T, H, d), then transpose(1, 2) to (B, H, T, d)."),
        Mistake(_split_swapping_last_dims,
                "after view(B, T, H, d), swap the tokens and heads dims, transpose(1, 2), to get (B, H, T, d); "
                "transpose(-2, -1) swaps the heads with the head width."),
        Mistake(_split_interleaved,
                "head h owns the consecutive features h*d:(h+1)*d, so view the width as (H, d), not (d, H): "
                "view(B, T, d, H) gives each head every H-th feature."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.merge_heads
def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H*d): the heads' outputs side by side, head 0's features first."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"expected x of shape (batch, heads, tokens, head_dim), got {_shape(x)}")
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)  # (B, H, T, d) -> (B, T, H, d) -> (B, T, D)


def _merge_without_transpose(x):
    B, H, T, d = x.shape
    return x.reshape(B, T, H * d)


def _merge_interleaved(x):
    B, H, T, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * d)  # (B, T, d, H): features of the heads interleaved


def _merge_not_flattened(x):
    return x.transpose(1, 2)  # (B, T, H, d)


register(Exercise("02.merge_heads", "merge the heads back into the model width", merge_heads, minutes=5, cases=[
        Case((randn(1, 2, 3, 2, seed=40),), label="2 heads, 3 tokens, head width 2"),
        Case((randn(2, 3, 5, 4, seed=41),), label="a batch of 2 texts, 3 heads, 5 tokens, head width 4"),
        Case((randn(2, 12, 4, 32, seed=42),), label="MiniLM's sizes: 12 heads of width 32"),
        Case((randn(3, 2, 1, 5, seed=43),), label="a batch of 3 texts of a single token, 2 heads of width 5"),
    ],
    mistakes=[
        Mistake(_merge_without_transpose,
                "bring the tokens next to the batch first, transpose(1, 2) to (B, T, H, d), then reshape to "
                "(B, T, H*d); reshaping (B, H, T, d) directly mixes tokens of different heads."),
        Mistake(_merge_interleaved,
                "keep each head's d features together, head 0 first: transpose(1, 2) gives (B, T, H, d); "
                "permute(0, 2, 3, 1) gives (B, T, d, H) and interleaves the heads."),
        Mistake(_merge_not_flattened,
                "(B, T, H, d) still keeps the heads apart: reshape it to (B, T, H*d) (reshape, not view: the "
                "transposed tensor is not contiguous)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.masked_attention
# The core exercise: BERT's multi-head self-attention with a padding mask, on one real MiniLM layer. ``weights``
# is that layer's state dict (BertLayer names: "attention.self.query.weight" (D, D), ... ); the reference is
# transformers' own BertSelfAttention (eager) with those weights. Outputs are compared at the real tokens only.
_SELF = "attention.self."


@functools.lru_cache(maxsize=1)  # built once per process: lessons 02 and 03 share them (checks copy every input)
def minilm_layer_cases() -> list[Case]:
    """Padded batches of short texts through the real MiniLM: (hidden states entering layer k, the 0/1
    attention_mask, layer k's state dict, 12). Shared with lesson 03's encoder-layer exercises."""
    from course_lib.assets import load_encoder, load_tokenizer

    tokenizer, encoder, cases = load_tokenizer(), load_encoder(attn_implementation="eager"), []
    batches = [  # (texts, layer, label)
        (["The cat sat on the mat because it was tired.", "It rained."], 0,
         "layer 0, two texts, the second padded with 8 [PAD]"),
        (["Short.", "A warm, funny and beautifully acted film.", "The jokes never land."], 3,
         "layer 3, three texts, the first and the third padded"),
        (["The plot is a mess.", "Add two cups of flour."], 5, "layer 5, two texts of the same length (no padding)"),
    ]
    with torch.no_grad():
        for texts, layer, label in batches:
            batch = tokenizer(texts, padding=True, return_tensors="pt")
            hidden = encoder(**batch, output_hidden_states=True).hidden_states[layer]  # (B, T, 384)
            state = {k: v.clone() for k, v in encoder.encoder.layer[layer].state_dict().items()}
            cases.append(Case((hidden, batch["attention_mask"], state, encoder.config.num_attention_heads),
                              label=label))
    return tuple(cases)


def bert_module(kind: str, weights: dict, num_heads: int):
    """transformers' BertSelfAttention ("self") or BertLayer ("layer") of MiniLM's sizes holding ``weights``."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer, BertSelfAttention
    D, inner = weights[_SELF + "query.weight"].shape[0], weights["intermediate.dense.weight"].shape[0]
    config = BertConfig(hidden_size=D, num_attention_heads=num_heads, intermediate_size=inner,
                        layer_norm_eps=1e-12, hidden_act="gelu", attn_implementation="eager")
    if kind == "self":
        module = BertSelfAttention(config)
        module.load_state_dict({k[len(_SELF):]: v for k, v in weights.items() if k.startswith(_SELF)})
    else:
        module = BertLayer(config)
        module.load_state_dict(weights)
    return module.eval()


def additive_key_mask(attention_mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, S) of 1/0 -> (B, 1, 1, S): 0 on real keys, the dtype's most negative number on padded keys."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def bert_self_attention(x: Tensor, attention_mask: Tensor, weights: dict, num_heads: int) -> Tensor:
    """The reference: transformers' BertSelfAttention (eager) output, (B, T, D), before the output projection."""
    with torch.no_grad():
        return bert_module("self", weights, num_heads)(x, attention_mask=additive_key_mask(attention_mask))[0]


def at_real_tokens(fn):
    """What is compared: the output at the real tokens; padded query positions are set to 0 (any value there,
    NaN included, is never used)."""
    def run(x, attention_mask, weights, num_heads):
        out = fn(x, attention_mask, weights, num_heads)
        if not isinstance(out, Tensor) or out.shape[:2] != attention_mask.shape:
            return out
        return torch.where(attention_mask.bool()[..., None], out, torch.zeros((), dtype=out.dtype))
    return run


def compare_token_outputs(got, expected, heads: bool = True) -> str | None:
    """Like compare_outputs, naming the first differing text, token and feature (and, with ``heads``, its head)."""
    problem = compare_outputs(got, expected)
    if problem is None or not isinstance(got, Tensor) or got.shape != expected.shape or got.dim() != 3:
        return problem
    differs = ~torch.isclose(got.detach().to(expected.dtype), expected, atol=1e-5, rtol=1e-4, equal_nan=True)
    b, t, f = (int(i) for i in differs.nonzero()[0])
    head = f" (head {f // 32})" if heads and expected.shape[-1] == 384 else ""
    return (f"the output of text {b}, token {t} (a real token), feature {f}{head} differs: expected "
            f"{expected[b, t, f].item():.6g}, got {got[b, t, f].item():.6g}")


def _mha_variant(mask: str = "keys", scale: str = "head_dim", split: str = "view+transpose", out_proj=False):
    """A wrong version of the reference, one step changed."""
    def wrong(x, attention_mask, weights, num_heads):
        B, T, D = x.shape
        d = D // num_heads

        def project(name):  # (B, T, D) -> (B, H, T, d)
            y = x @ weights[f"{_SELF}{name}.weight"].T + weights[f"{_SELF}{name}.bias"]
            return y.view(B, num_heads, T, d) if split == "view" else y.view(B, T, num_heads, d).transpose(1, 2)
        q, k, v = project("query"), project("key"), project("value")
        scores = q @ k.transpose(-2, -1) / {"head_dim": math.sqrt(d), "D": math.sqrt(D), "none": 1.0}[scale]
        pad = attention_mask == 0
        if mask == "keys":
            scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        elif mask == "queries":
            scores = scores.masked_fill(pad[:, None, :, None], float("-inf"))
        elif mask == "zero":
            scores = scores.masked_fill(pad[:, None, None, :], 0.0)
        w = torch.softmax(scores, dim=-1)
        if mask == "after":
            w = w * attention_mask[:, None, None, :].to(w.dtype)
        out = (w @ v).transpose(1, 2).reshape(B, T, D)
        if out_proj:
            out = out @ weights["attention.output.dense.weight"].T + weights["attention.output.dense.bias"]
        return out
    return wrong


register(Exercise(
    "02.masked_attention", "multi-head self-attention with a padding mask, on a real MiniLM layer",
    bert_self_attention, cases=minilm_layer_cases, adapt=at_real_tokens, compare=compare_token_outputs,
    level="core", minutes=35,
    hints=("Four steps, each with a shape: project x three times and split each into heads, (B, T, D) -> "
           "(B, H, T, d); scores (B, H, T, T) scaled by 1/sqrt(d); block the padded keys, the columns where "
           "attention_mask == 0, before the softmax; softmax over the keys, weights @ values, merge the heads.",
           "The mask line: scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, float('-inf')), "
           "(B, T) -> (B, 1, 1, T), which broadcasts over the heads and the queries."),
    mistakes=[
        Mistake(_mha_variant(mask="queries"),
                "the real tokens still attend to the padding: block the padded *keys*, the last axis of the "
                "(B, H, T, S) scores, with attention_mask[:, None, None, :]. A mask on the query rows (or none) "
                "leaves every real token's row open to [PAD]."),
        Mistake(_mha_variant(mask="after"),
                "mask the scores before the softmax: zeroing the padded weights after it leaves each row summing to "
                "less than 1, since the padded scores were in the softmax's denominator."),
        Mistake(_mha_variant(mask="zero"),
                "a score of 0 is not 'blocked': exp(0) = 1 still gives the padded keys weight. Fill them with "
                "float('-inf') (or torch.finfo(scores.dtype).min), which the softmax turns into 0."),
        Mistake(_mha_variant(scale="none"),
                "divide the scores by sqrt(head_dim) before the softmax (head_dim = D // num_heads = 32)."),
        Mistake(_mha_variant(scale="D"),
                "scale by the head's width, 1/sqrt(head_dim) = 1/sqrt(32), not by the model's width sqrt(D): each "
                "head's dot product sums over its own d features only."),
        Mistake(_mha_variant(split="view"),
                "x.view(B, H, T, d) cuts the flat memory into heads in the wrong order and mixes tokens into one "
                "head; view(B, T, H, d), then transpose(1, 2) to (B, H, T, d)."),
        Mistake(_mha_variant(out_proj=True),
                "stop after merging the heads: BertSelfAttention returns the merged heads; the output projection "
                "(attention.output.dense) belongs to the next step of the layer, with the residual and LayerNorm."),
    ],
))


# ----------------------------------------------------------------------------------------------- 02.distance_bias
# Stretch: scores get an additive bias -slope_h * |i - j| per head (ALiBi's penalty, made symmetric for an encoder).
# The reference is PyTorch's fused attention with that bias as its floating attn_mask.
def distance_bias_attention(query: Tensor, key: Tensor, value: Tensor, slopes: Tensor) -> Tensor:
    """query, key, value: (B, H, T, d); slopes: (H,) -> (B, H, T, d)."""
    T = query.shape[-2]
    distance = (torch.arange(T)[None, :] - torch.arange(T)[:, None]).abs().to(query.dtype)  # (T, T): |j - i|
    bias = -slopes[:, None, None] * distance  # (H, T, T)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)


def _biased(sign=-1.0, absolute=True, scaled=False, per="head"):
    def wrong(q, k, v, slopes):
        T = q.shape[-2]
        offset = (torch.arange(T)[None, :] - torch.arange(T)[:, None]).to(q.dtype)  # (T, T): j - i
        s = slopes[:, None, None] if per == "head" else slopes[:, None, None, None]  # (H,1,1) or (B=H,1,1,1)
        bias = sign * s * (offset.abs() if absolute else offset)
        scores = q @ k.transpose(-2, -1)
        scores = (scores + bias) / math.sqrt(q.shape[-1]) if scaled else scores / math.sqrt(q.shape[-1]) + bias
        return torch.softmax(scores, dim=-1) @ v
    return wrong


register(Exercise("02.distance_bias", "attention with a distance penalty per head", distance_bias_attention, cases=[
        Case((randn(1, 2, 5, 8, seed=60), randn(1, 2, 5, 8, seed=61), randn(1, 2, 5, 8, seed=62),
              torch.tensor([0.5, 0.25])), label="1 text, 2 heads, 5 tokens"),
        Case((randn(2, 4, 6, 16, seed=63), randn(2, 4, 6, 16, seed=64), randn(2, 4, 6, 16, seed=65), 2.0 ** -torch.arange(2.0, 9.0, 2.0)),
             label="2 texts, 4 heads with ALiBi's slopes 2^-2 ... 2^-8, 6 tokens"),
        Case((randn(3, 3, 4, 8, seed=66), randn(3, 3, 4, 8, seed=67), randn(3, 3, 4, 8, seed=68),
              torch.tensor([2.0, 0.0, 1.0])), label="3 texts, 3 heads, the middle one without a penalty"),
    ], level="stretch", minutes=20,
    hints=("Build a (T, T) table of distances |j - i| once, turn it into a (H, T, T) bias with one slope per "
           "head, and add it to the scaled scores before the softmax.",
           "bias = -slopes[:, None, None] * (torch.arange(T)[None, :] - torch.arange(T)[:, None]).abs()"),
    mistakes=[
        Mistake(_biased(sign=1.0), "the penalty must lower the scores of distant keys: add -slope * |i - j|."),
        Mistake(_biased(absolute=False),
                "use the distance |j - i|: the signed offset j - i rewards the keys before the query."),
        Mistake(_biased(scaled=True),
                "add the bias after dividing by sqrt(d): (q k^T / sqrt(d)) + bias; dividing it too shrinks the "
                "penalty."),
        Mistake(_biased(per="batch"),
                "one slope per head: slopes[:, None, None] is (H, 1, 1) and lines up with the heads of "
                "(B, H, T, T); with one more None it lines up with the batch."),
    ],
))
