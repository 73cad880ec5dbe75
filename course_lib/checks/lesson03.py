"""Exercises of lesson 03 (the encoder): feed-forward, LayerNorm, the post-LN residual block, sinusoidal positions."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.checks import Case, Exercise, Mistake, randn, register
from course_lib.checks.lesson02 import additive_key_mask, at_real_tokens, bert_module, compare_token_outputs, \
    minilm_layer_cases
from course_lib.encoder import sinusoidal_positions


def _check_float(name: str, tensor, min_dim: int = 1) -> None:
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.dim() < min_dim:
        given = f"{tensor.dtype} tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor) \
            else type(tensor).__name__
        raise TypeError(f"expected {name} as a floating tensor with at least {min_dim} dimension(s), got {given}")


# ----------------------------------------------------------------------------------------------- 03.feed_forward
def feed_forward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """BERT's position-wise feed-forward with weights in ``nn.Linear`` layout: w1 (I, D), b1 (I,), w2 (D, I), b2 (D,).

    x: (..., D) -> GELU(x W1^T + b1) W2^T + b2: (..., D); every token is transformed on its own.
    """
    _check_float("x", x)
    if w1.dim() != 2 or w1.shape[1] != x.shape[-1] or b1.shape != (w1.shape[0],):
        raise ValueError(f"expected w1 of shape (I, {x.shape[-1]}) and b1 of shape (I,), "
                         f"got {tuple(w1.shape)} and {tuple(b1.shape)}")
    if w2.shape != (w1.shape[1], w1.shape[0]) or b2.shape != (w1.shape[1],):
        raise ValueError(f"expected w2 of shape {(w1.shape[1], w1.shape[0])} and b2 of shape ({w1.shape[1]},), "
                         f"got {tuple(w2.shape)} and {tuple(b2.shape)}")
    hidden = F.gelu(x @ w1.T + b1)  # (..., I): exact (erf) GELU, as in BERT
    return hidden @ w2.T + b2  # (..., D)


def _ffn_case(tokens: tuple[int, ...], dim: int, inner: int, seed: int) -> tuple:
    x = randn(*tokens, dim, seed=seed, scale=1.5)  # (..., D)
    w1 = randn(inner, dim, seed=seed + 1, scale=1 / math.sqrt(dim))  # (I, D)
    w2 = randn(dim, inner, seed=seed + 2, scale=1 / math.sqrt(inner))  # (D, I)
    return x, w1, randn(inner, seed=seed + 3, scale=0.5), w2, randn(dim, seed=seed + 4, scale=0.5)


register(Exercise("03.feed_forward", "the position-wise feed-forward network", feed_forward, minutes=8, cases=[
        Case(_ffn_case((2, 5), 8, 32, seed=0), label="a batch of 2 texts x 5 tokens, D=8, I=32"),
        Case(_ffn_case((3,), 4, 16, seed=10), label="3 tokens without a batch dimension, D=4, I=16"),
        Case(_ffn_case((1, 7), 6, 24, seed=20), label="a single text of 7 tokens, D=6, I=24"),
        Case(_ffn_case((), 5, 20, seed=30), label="one token vector of shape (5,), no token dimension"),
    ],
    mistakes=[
        Mistake(lambda x, w1, b1, w2, b2: F.relu(x @ w1.T + b1) @ w2.T + b2,
                "BERT uses GELU, not ReLU: GELU lets small negative values through (x * Phi(x)); use F.gelu."),
        Mistake(lambda x, w1, b1, w2, b2: F.gelu(x @ w1.T + b1, approximate="tanh") @ w2.T + b2,
                "that is GELU's tanh approximation (as in GPT-2); BERT's config says hidden_act='gelu', the exact "
                "erf form: F.gelu(h) without approximate='tanh'."),
        Mistake(lambda x, w1, b1, w2, b2: F.gelu(F.gelu(x @ w1.T + b1) @ w2.T + b2),
                "the activation goes only between the two linear layers; the second layer's output stays linear "
                "(it is added to the residual stream)."),
        Mistake(lambda x, w1, b1, w2, b2: (x @ w1.T + b1) @ w2.T + b2,
                "without an activation between them, the two linear layers collapse into one linear map; apply "
                "F.gelu to the (..., I) hidden values."),
    ],
))


# ----------------------------------------------------------------------------------------------- 03.layer_norm
def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance.

    x: (..., D); weight, bias: (D,) -> (..., D). Each token vector is normalised on its own.
    """
    _check_float("x", x)
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(f"expected weight and bias of shape ({x.shape[-1]},) (the last dimension of x), "
                         f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # (..., 1): divide by D, not D - 1
    return (x - mean) / torch.sqrt(var + eps) * weight + bias  # (..., D)


def _ln_case(shape: tuple[int, ...], seed: int, label: str, scale: float = 2.0, shift: float = 1.0,
             eps: float | None = None) -> Case:
    x = randn(*shape, seed=seed, scale=scale) + shift  # (..., D)
    D = shape[-1]
    weight, bias = 1.0 + randn(D, seed=seed + 1, scale=0.3), randn(D, seed=seed + 2, scale=0.3)  # (D,), (D,)
    return Case((x, weight, bias), {} if eps is None else {"eps": eps}, label)


def _ln_over(dim: int, unbiased: bool = False, eps_inside: bool = True, affine: bool = True):
    def wrong(x, weight, bias, eps=1e-5):
        mean = x.mean(dim=dim, keepdim=True)
        var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
        out = (x - mean) / torch.sqrt(var + eps if eps_inside else var)
        return out * weight + bias if affine else out
    return wrong


register(Exercise("03.layer_norm", "LayerNorm by hand", layer_norm, minutes=10,
    hints=("One mean and one variance per token, over the last dimension; the biased variance; eps inside the root.",
           "var = x.var(dim=-1, keepdim=True, unbiased=False)"), cases=[
        _ln_case((2, 4, 8), seed=0, label="a batch of 2 texts x 4 tokens, D=8"),
        _ln_case((3, 6), seed=5, scale=0.5, shift=-2.0, label="3 token vectors of size 6, no batch dimension"),
        _ln_case((1, 3, 5), seed=9, eps=1e-12, label="a single text, BERT's eps=1e-12"),
        _ln_case((2, 3, 4), seed=13, scale=1e-3, shift=0.5, label="nearly constant vectors (variance 1e-6 < eps)"),
        _ln_case((2, 5), seed=17, scale=0.2, eps=0.1, label="2 vectors of size 5 with eps=0.1 (use the eps given)"),
        _ln_case((1, 6), seed=21, scale=0.0, shift=3.0, label="a constant vector (variance 0): the output is bias"),
    ],
    mistakes=[
        Mistake(_ln_over(0),
                "normalise each token vector over its features (dim=-1), not over the batch (dim=0): that would "
                "be batch normalisation, and it would make one text depend on the others in the batch."),
        Mistake(_ln_over(-1, unbiased=True),
                "LayerNorm uses the biased variance, dividing by D: x.var(dim=-1, unbiased=False) (torch's "
                "x.var() divides by D - 1 by default)."),
        Mistake(_ln_over(-1, eps_inside=False),
                "add eps to the variance inside the square root: sqrt(var + eps). Without it, nearly constant "
                "vectors are blown up (and a constant vector divides by zero)."),
        Mistake(_ln_over(-1, affine=False),
                "after normalising, scale by weight (gamma) and add bias (beta): those are LayerNorm's trained "
                "parameters, one per feature."),
    ],
))


# ----------------------------------------------------------------------------------------------- 03.post_ln_block
def post_ln_block(x: Tensor, sublayer: Callable[[Tensor], Tensor], norm: Callable[[Tensor], Tensor]) -> Tensor:
    """One post-LN residual block, as in BERT: ``norm(x + sublayer(x))``. x: (B, T, D) -> (B, T, D)."""
    _check_float("x", x)
    update = sublayer(x)  # (B, T, D)
    if not isinstance(update, Tensor) or update.shape != x.shape:
        shape = tuple(update.shape) if isinstance(update, Tensor) else type(update).__name__
        raise ValueError(f"the sublayer must return a tensor of the input's shape {tuple(x.shape)}, got {shape}")
    return norm(x + update)  # (B, T, D)


class _Doubled(nn.Module):
    """A sublayer whose output is easy to read: 2x + 0.5 (a residual branch that is not small)."""

    def forward(self, x: Tensor) -> Tensor:
        return 2.0 * x + 0.5


@torch.random.fork_rng(devices=[])  # seeded here, the global random state left as it was
def _block_modules() -> dict[str, nn.Module]:
    """Sublayers and norms with fixed, non-trivial weights (built once, in eval mode)."""
    torch.manual_seed(3)
    ffn = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))  # a BERT-style feed-forward, D=8
    modules = {"linear": nn.Linear(6, 6), "ffn": ffn, "doubled": _Doubled()}
    for dim in (6, 8):
        norm = nn.LayerNorm(dim, eps=1e-12)
        with torch.no_grad():
            norm.weight.copy_(1.0 + 0.3 * torch.randn(dim))
            norm.bias.copy_(0.3 * torch.randn(dim))
        modules[f"norm{dim}"] = norm
    return {name: module.eval() for name, module in modules.items()}


_B = _block_modules()

register(Exercise("03.post_ln_block", "a residual connection with post-LN", post_ln_block, minutes=3, cases=[
        Case((randn(2, 3, 6, seed=30), _B["linear"], _B["norm6"]), label="a linear sublayer, D=6"),
        Case((randn(1, 4, 8, seed=31, scale=2.0), _B["ffn"], _B["norm8"]), label="a feed-forward sublayer, D=8"),
        Case((randn(2, 2, 6, seed=32), _B["doubled"], _B["norm6"]), label="the sublayer 2x + 0.5"),
        Case((randn(1, 1, 8, seed=33), _B["ffn"], _B["norm8"]), label="a single token, D=8"),
    ],
    mistakes=[
        Mistake(lambda x, sublayer, norm: x + sublayer(norm(x)),
                "that is pre-LN (GPT-2, Llama): x + sublayer(norm(x)). BERT is post-LN: add the sublayer's output "
                "to its input first, then normalise the sum: norm(x + sublayer(x))."),
        Mistake(lambda x, sublayer, norm: norm(sublayer(x)),
                "the residual connection is missing: add the input x to the sublayer's output before the norm, "
                "so that the block only has to learn a change to x."),
        Mistake(lambda x, sublayer, norm: x + norm(sublayer(x)),
                "normalise the sum x + sublayer(x), not the sublayer's output alone: in post-LN the norm comes "
                "after the residual addition."),
    ],
))


# ----------------------------------------------------------------------------------------------- 03.sinusoidal
# The reference is the encoder's own table, course_lib.encoder.sinusoidal_positions.
def _sinusoidal_wrong(layout: str = "interleaved", exponent: str = "2i/d", first: str = "sin"):
    def wrong(num_positions, dim, base=10000.0):
        position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
        i = torch.arange(dim // 2, dtype=torch.float64)  # (dim/2,)
        power = 2 * i / dim if exponent == "2i/d" else i / dim
        angle = position / base ** power  # (P, dim/2)
        pair = [angle.sin(), angle.cos()] if first == "sin" else [angle.cos(), angle.sin()]
        if layout == "halves":
            return torch.cat(pair, dim=-1).float()
        return torch.stack(pair, dim=-1).flatten(1).float()
    return wrong


register(Exercise("03.sinusoidal", "sinusoidal position encodings", sinusoidal_positions, minutes=12,
    hints=("Angles p / base^(2i/dim) for every position p and pair i, a (P, dim/2) table; sin in even columns.",
           "table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)"), cases=[
        Case((6, 8), label="6 positions, dim 8"),
        Case((50, 16), label="50 positions, dim 16"),
        Case((12, 6), {"base": 100.0}, label="12 positions, dim 6, base 100"),
        Case((1, 4), label="a single position (position 0)"),
        Case((3, 2), label="dim 2: a single sin/cos pair"),
    ],
    mistakes=[
        Mistake(_sinusoidal_wrong(layout="halves"),
                "sin and cos alternate column by column (sin, cos, sin, cos, ...): PE[:, 0::2] = sin, "
                "PE[:, 1::2] = cos. Putting all sines in the first half and all cosines in the second is another "
                "layout (some libraries use it), not this one."),
        Mistake(_sinusoidal_wrong(exponent="i/d"),
                "the exponent is 2i/dim, where 2i is the index of the even column: for pair i the frequency is "
                "1 / base^(2i/dim), so the wavelengths span 2*pi up to base*2*pi. With i/dim they stop half way."),
        Mistake(_sinusoidal_wrong(first="cos"),
                "even columns hold the sine and odd columns the cosine; at position 0 the row is "
                "0, 1, 0, 1, ..."),
    ],
))


# ----------------------------------------------------------------------------------------------- 03.encoder_layer
# The core exercise: one whole BERT layer from a real MiniLM layer's state dict, compared with transformers' own
# BertLayer (eager) at the real tokens of padded batches (the cases and helpers are lesson 02's).
def bert_layer(x: Tensor, attention_mask: Tensor, weights: dict, num_heads: int) -> Tensor:
    """The reference: transformers' BertLayer holding ``weights``, on x (B, T, D) with the (B, T) 0/1 mask."""
    with torch.no_grad():
        out = bert_module("layer", weights, num_heads)(x, attention_mask=additive_key_mask(attention_mask))
    return out[0] if isinstance(out, tuple) else out  # (B, T, D)


def _layer_variant(order="post", residuals=(True, True), act="gelu", eps=1e-12, second_residual="h", mask=True,
                   final_norm=False, swap_norms=False):
    """A by-hand encoder layer with one thing changed; every wrong answer below is one of these."""
    def layer(x, attention_mask, w, num_heads):
        def linear(name, t):
            return t @ w[f"{name}.weight"].T + w[f"{name}.bias"]

        def norm(name, t):
            return F.layer_norm(t, t.shape[-1:], w[f"{name}.LayerNorm.weight"], w[f"{name}.LayerNorm.bias"], eps)
        norm1, norm2 = ("output", "attention.output") if swap_norms else ("attention.output", "output")

        def attend(t):  # (B, T, D) -> (B, T, D), output projection included
            B, T, D = t.shape
            q, k, v = (linear(f"attention.self.{n}", t).view(B, T, num_heads, -1).transpose(1, 2)
                       for n in ("query", "key", "value"))
            keep = attention_mask.bool()[:, None, None, :] if mask else None
            merged = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(B, T, D)
            return linear("attention.output.dense", merged)

        def ffn(t):
            inner = linear("intermediate.dense", t)
            inner = F.relu(inner) if act == "relu" else F.gelu(inner, approximate="tanh" if act == "tanh" else "none")
            return linear("output.dense", inner)
        if order == "pre":
            h = x + attend(norm(norm1, x))
            out = h + ffn(norm(norm2, h))
            return norm(norm2, out) if final_norm else out
        h = norm(norm1, (x if residuals[0] else 0) + attend(x))
        base = h if second_residual == "h" else x
        return norm(norm2, (base if residuals[1] else 0) + ffn(h))
    return layer


register(Exercise(
    "03.encoder_layer", "one whole encoder layer on a real MiniLM layer", bert_layer, cases=minilm_layer_cases,
    adapt=at_real_tokens, compare=lambda got, expected: compare_token_outputs(got, expected, heads=False),
    level="core", minutes=40,
    hints=("Two post-LN blocks in a row: h = LayerNorm1(x + W_O(attention(x))), then out = LayerNorm2(h + "
           "FFN(h)), FFN = dense 384 -> 1536, exact GELU, dense 1536 -> 384; eps 1e-12, the padded keys masked.",
           "h = F.layer_norm(x + attended, (D,), weights['attention.output.LayerNorm.weight'], "
           "weights['attention.output.LayerNorm.bias'], eps=1e-12)"),
    mistakes=[
        Mistake(_layer_variant(order="pre"),
                "that is pre-LN, x + sublayer(norm(x)); BERT is post-LN: add the sublayer's output to its input, "
                "then normalise the sum, norm(x + sublayer(x)), for the attention and for the feed-forward."),
        Mistake(_layer_variant(residuals=(False, True)),
                "the first residual is missing: LayerNorm1 gets x + the attention's projected output, not the "
                "attention output alone."),
        Mistake(_layer_variant(residuals=(True, False)),
                "the second residual is missing: LayerNorm2 gets h + FFN(h), where h is the first block's output."),
        Mistake(_layer_variant(second_residual="x"),
                "the second residual adds the first block's *output* h, not the layer's input x: "
                "out = norm2(h + FFN(h))."),
        Mistake(_layer_variant(act="relu"),
                "BERT's feed-forward uses GELU (hidden_act='gelu'), not ReLU: F.gelu between the two dense layers."),
        Mistake(_layer_variant(act="tanh"),
                "that is GELU's tanh approximation; BERT's 'gelu' is the exact erf form: F.gelu(h) as it is."),
        Mistake(_layer_variant(eps=1e-5),
                "BERT's LayerNorms use eps = 1e-12 (config.layer_norm_eps); F.layer_norm's usual 1e-5 changes the "
                "output where a token's variance is small."),
        Mistake(_layer_variant(mask=False),
                "the real tokens attend to the padding: block the padded keys (attention_mask == 0) in the scores "
                "before the softmax, (B, T) -> (B, 1, 1, T)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 03.pre_ln_layer
# Stretch: the same weights in a pre-LN layer. The reference is PyTorch's nn.TransformerEncoderLayer(norm_first=True)
# holding them (its in_proj stacks query, key, value; its norm1/norm2 are BERT's two LayerNorms, now before each
# sub-layer).
def torch_pre_ln_layer(x: Tensor, attention_mask: Tensor, weights: dict, num_heads: int) -> Tensor:
    D, inner = x.shape[-1], weights["intermediate.dense.weight"].shape[0]
    layer = nn.TransformerEncoderLayer(D, num_heads, inner, dropout=0.0, activation="gelu", layer_norm_eps=1e-12,
                                       batch_first=True, norm_first=True).eval()
    names = {"self_attn.in_proj_weight": [f"attention.self.{n}.weight" for n in ("query", "key", "value")],
             "self_attn.in_proj_bias": [f"attention.self.{n}.bias" for n in ("query", "key", "value")],
             "self_attn.out_proj.weight": ["attention.output.dense.weight"],
             "self_attn.out_proj.bias": ["attention.output.dense.bias"],
             "linear1.weight": ["intermediate.dense.weight"], "linear1.bias": ["intermediate.dense.bias"],
             "linear2.weight": ["output.dense.weight"], "linear2.bias": ["output.dense.bias"],
             "norm1.weight": ["attention.output.LayerNorm.weight"], "norm1.bias": ["attention.output.LayerNorm.bias"],
             "norm2.weight": ["output.LayerNorm.weight"], "norm2.bias": ["output.LayerNorm.bias"]}
    layer.load_state_dict({ours: torch.cat([weights[n] for n in theirs]) for ours, theirs in names.items()})
    with torch.no_grad():  # (B, T, D); src_key_padding_mask is True where a key is padding
        return layer(x, src_key_padding_mask=attention_mask == 0)


register(Exercise(
    "03.pre_ln_layer", "the same layer, pre-LN", torch_pre_ln_layer, cases=minilm_layer_cases,
    adapt=at_real_tokens, compare=lambda got, expected: compare_token_outputs(got, expected, heads=False),
    level="stretch", minutes=15,
    hints=("Move each LayerNorm in front of its sub-layer and leave the residual path alone.",
           "h = x + attend(norm1(x)); return h + ffn(norm2(h))"),
    mistakes=[
        Mistake(bert_layer, "that is the post-LN layer of the core exercise; pre-LN normalises each sub-layer's "
                            "input: h = x + attention(norm1(x)), out = h + FFN(norm2(h))."),
        Mistake(_layer_variant(order="pre", final_norm=True),
                "no LayerNorm after the second residual: in pre-LN a single final norm comes after the last layer "
                "of the stack, not inside each layer."),
        Mistake(_layer_variant(order="pre", swap_norms=True),
                "the attention's LayerNorm (attention.output.LayerNorm) goes before the attention and the "
                "feed-forward's (output.LayerNorm) before the feed-forward."),
    ],
))
