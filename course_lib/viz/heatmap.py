"""A static attention heatmap (matplotlib): the printable, PDF-friendly stand-in for the interactive views."""
from __future__ import annotations

import torch

from course_lib.viz.attention_data import MAX_TOKENS, check_index, display_tokens, run_attention


def _stack(attentions) -> torch.Tensor:
    """Attention weights as one (L, H, T, T) tensor, from a model's tuple of (1, H, T, T) or a tensor."""
    if isinstance(attentions, (list, tuple)):
        if not attentions:
            raise ValueError("attentions is empty: expected one (1, heads, tokens, tokens) tensor per layer")
        layers = [a[0] if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in attentions]
        if not all(isinstance(a, torch.Tensor) and a.dim() == 3 for a in layers):
            shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in attentions]
            raise ValueError(f"expected one (1, heads, tokens, tokens) tensor per layer, got {shapes}")
        attentions = torch.stack(layers)
    if not isinstance(attentions, torch.Tensor):
        raise TypeError(f"attentions must be a tensor or a tuple of tensors, got {type(attentions).__name__}")
    if attentions.dim() == 3:
        attentions = attentions[None]  # one layer: (H, T, T) -> (1, H, T, T)
    if attentions.dim() != 4 or attentions.shape[-1] != attentions.shape[-2]:
        raise ValueError(f"expected attentions of shape (layers, heads, tokens, tokens), got {tuple(attentions.shape)}")
    return attentions.detach().float().cpu()


def attention_heatmap(attentions=None, tokens=None, *, layer: int = 0, head: int = 0, model=None, tokenizer=None,
                      text: str | None = None, text_pair: str | None = None, ax=None, cmap: str = "viridis",
                      max_tokens: int = MAX_TOKENS, fontsize: float | None = None):
    """Heatmap of one head's weights: query tokens down, key tokens across. Returns the matplotlib Axes.

    Give ``attentions`` (a model's ``output.attentions`` or a (L, H, T, T) tensor) with their ``tokens``,
    or ``model``, ``tokenizer`` and ``text`` (and optionally ``text_pair``) to run the model here.
    ``fontsize``: points of the token labels, with the axis labels and the title a point larger (a figure shown on a
    lecture slide needs more); by default 9 points for the tokens and matplotlib's size for the rest.
    """
    import matplotlib.pyplot as plt

    if attentions is None:
        if model is None or tokenizer is None or text is None:
            raise ValueError("give attentions and tokens, or model, tokenizer and text")
        run = run_attention(model, tokenizer, text, text_pair, max_tokens)
        weights, tokens = run.attentions, run.tokens  # (L, H, T, T)
    else:
        if model is not None or text is not None:
            raise ValueError("give either attentions and tokens, or model, tokenizer and text, not both")
        weights = _stack(attentions)
        if tokens is None or len(tokens) != weights.shape[-1]:
            raise ValueError(f"tokens must list the {weights.shape[-1]} tokens of the attention matrix, got "
                             f"{'none' if tokens is None else len(tokens)}")
    layer = check_index("layer", layer, weights.shape[0], "layers")
    head = check_index("head", head, weights.shape[1], "heads")
    matrix = weights[layer, head].numpy()  # (T, T): row = query token, column = key token
    labels = display_tokens(list(tokens))

    if ax is None:
        size = min(12.0, 2.5 + 0.32 * len(labels))
        _, ax = plt.subplots(figsize=(size + 1.2, size), dpi=90)
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=max(float(matrix.max()), 1e-6))
    ticks = {"fontsize": fontsize or 9}
    text = {"fontsize": fontsize + 1} if fontsize else {}
    ax.set_xticks(range(len(labels)), labels, rotation=90, **ticks)
    ax.set_yticks(range(len(labels)), labels, **ticks)
    ax.set_xlabel("key token (attended to)", **text)
    ax.set_ylabel("query token (attending)", **text)
    ax.set_title(f"Attention weights, layer {layer}, head {head}", **text)
    colorbar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("weight", **text)
    if fontsize:
        colorbar.ax.tick_params(labelsize=fontsize)
    return ax
