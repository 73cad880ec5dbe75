"""Counting training FLOPs of a BERT-style encoder classifier, and measuring the machine's peak matmul rate.

Model FLOP utilisation (MFU) = achieved model FLOP/s / peak matmul FLOP/s, both on the same machine in the same
run. "Model FLOPs" are the multiply-adds a step needs by the model's arithmetic, counted from the batch shapes,
not read from a profiler; ops that are not matrix products (softmax, LayerNorm, GELU, dropout, the optimiser)
are left out, as MFU usually does.

Forward FLOPs of one sequence of ``T`` tokens, hidden width ``d``, feed-forward width ``f``, ``L`` layers
(a multiply-add counts as 2 FLOPs):

* per layer: query, key, value and output projections ``4 x 2 T d d``; feed-forward ``2 x 2 T d f``;
  attention scores ``Q K^T`` ``2 T T d`` and the weighted sum of values ``2 T T d`` (all heads together);
* once: the pooler ``2 d d`` and the classifier ``2 d C`` on the first token (C classes).

Training = 3 x forward: the backward pass multiplies each product's output gradient by both of its inputs,
two products of the same size. With ``f = 4d`` this is the familiar ``6 x N x tokens`` for the ``N = 12 L d^2``
weights of the layers (embeddings are looked up, not multiplied), plus ``12 L T d`` per token for attention.
"""
from __future__ import annotations

import time

import torch

import common


def forward_flops(tokens: int, hidden: int, intermediate: int, layers: int, classes: int = 2) -> int:
    """Matmul FLOPs of one forward pass over one sequence of ``tokens`` tokens."""
    if tokens < 0 or min(hidden, intermediate, layers, classes) < 1:
        raise ValueError(f"need tokens >= 0 and positive sizes, got tokens={tokens}, hidden={hidden}, "
                         f"intermediate={intermediate}, layers={layers}, classes={classes}")
    t, d, f = tokens, hidden, intermediate
    projections = 4 * 2 * t * d * d  # query, key, value, output: (T, d) @ (d, d) each
    feed_forward = 2 * 2 * t * d * f  # (T, d) @ (d, f), then (T, f) @ (f, d)
    attention = 2 * 2 * t * t * d  # scores (T, d/h) @ (d/h, T) and weights @ values (T, T) @ (T, d/h), h heads
    head = 2 * d * d + 2 * d * classes  # pooler and classifier, on the first token only
    return layers * (projections + feed_forward + attention) + head


def training_flops(shapes, config) -> int:
    """Matmul FLOPs of the training steps that saw batches of these ``(batch, tokens)`` shapes (3 x forward)."""
    sizes = dict(hidden=config.hidden_size, intermediate=config.intermediate_size,
                 layers=config.num_hidden_layers, classes=getattr(config, "num_labels", 2))
    return sum(3 * batch * forward_flops(tokens, **sizes) for batch, tokens in shapes)


def useful_training_flops(lengths, config) -> int:
    """The same count over each sequence's real tokens only: the work padding adds is left out."""
    sizes = dict(hidden=config.hidden_size, intermediate=config.intermediate_size,
                 layers=config.num_hidden_layers, classes=getattr(config, "num_labels", 2))
    return sum(3 * forward_flops(length, **sizes) for length in lengths)


def peak_matmul(dtype: torch.dtype, device: torch.device, sizes=(2048, 4096), repeats: int = 3) -> dict:
    """The best FLOP/s of ``torch.matmul`` on square ``dtype`` matrices of each size (after one warm-up)."""
    if repeats < 1 or not sizes:
        raise ValueError(f"need repeats >= 1 and at least one size, got {repeats} and {sizes!r}")
    generator = torch.Generator(device="cpu").manual_seed(0)
    rates = {}
    for n in sizes:
        a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)  # (n, n)
        b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)  # (n, n)
        torch.matmul(a, b)  # warm-up: kernel choice, page faults
        seconds = [common.time_call(lambda: torch.matmul(a, b), device)[0] for _ in range(repeats)]
        rates[n] = 2 * n ** 3 / min(seconds)
    best = max(rates, key=rates.get)
    return {"dtype": str(dtype).removeprefix("torch."), "flops_per_second": rates[best], "size": best,
            "by_size": {str(n): rate for n, rate in rates.items()}, "repeats": repeats}


def measure_peaks(device: torch.device, dtypes, quick: bool = False) -> dict:
    """Peak matmul FLOP/s for each dtype name ("float32", "bfloat16"), measured now, one after the other."""
    if quick:
        sizes, repeats = (512,), 2
    else:  # a GPU needs larger matrices to approach its peak
        sizes, repeats = ((4096, 8192) if device.type == "cuda" else (2048, 4096)), 3
    start = time.perf_counter()
    peaks = {name: peak_matmul(getattr(torch, name), device, sizes, repeats) for name in dtypes}
    return {"peaks": peaks, "seconds": time.perf_counter() - start}
