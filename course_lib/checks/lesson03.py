"""Exercises of lesson 03 (the encoder): feed-forward, LayerNorm, the post-LN residual block, sinusoidal positions."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.checks import Case, Exercise, Mistake, randn, register
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


register(Exercise("03.feed_forward", "the position-wise feed-forward network", feed_forward, cases=[
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


register(Exercise("03.layer_norm", "LayerNorm by hand", layer_norm, cases=[
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

register(Exercise("03.post_ln_block", "a residual connection with post-LN", post_ln_block, cases=[
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


register(Exercise("03.sinusoidal", "sinusoidal position encodings", sinusoidal_positions, cases=[
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
