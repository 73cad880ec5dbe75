"""Labelled matplotlib plots for data sets and classifiers: class balance, text lengths, UMAP density, confusion.

Labels are class ids ``0 .. C-1`` with their names (a ``ClassLabel``'s ``names``); each function returns the
``Axes`` (or the ``Figure`` for multi-panel plots) so that a notebook can adjust it before ``plt.show()``.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

CLASS_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")
CLASS_CMAPS = ("Reds", "Blues", "Greens", "Oranges", "Purples", "Greys")
TITLE_SIZE, LABEL_SIZE, TICK_SIZE = 12, 11, 10


def readable(fig, size: float = 16):
    """Every text of ``fig`` (titles, labels, ticks, legends, annotations) at least ``size`` points, so that it
    stays legible when the figure is projected on a slide; returns the figure."""
    for text in fig.findobj(plt.Text):
        text.set_fontsize(max(text.get_fontsize(), size))
    return fig


def _class_ids(labels, label_names: Sequence[str]) -> np.ndarray:
    """Labels as an int array, checked to lie in ``0 .. len(label_names) - 1``."""
    if isinstance(label_names, str) or len(label_names) < 1:
        raise ValueError(f"expected a list of class names, got {label_names!r}")
    ids = np.asarray(labels)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"expected a non-empty 1-D sequence of integer class ids, got shape {ids.shape} "
                         f"and dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= len(label_names):
        raise ValueError(f"class ids must lie in 0..{len(label_names) - 1} ({len(label_names)} names), "
                         f"got values from {ids.min()} to {ids.max()}")
    return ids


def _new_axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_class_balance(labels, label_names: Sequence[str], title: str = "Class balance", ax=None):
    """Horizontal bars: how many texts each class has, with its share of the total."""
    ids = _class_ids(labels, label_names)
    counts = np.bincount(ids, minlength=len(label_names))  # (C,)
    ax = _new_axes(ax, (5, 0.6 * len(label_names) + 1.2))
    positions = np.arange(len(label_names))
    ax.barh(positions, counts, color=[CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in positions])
    for y, count in zip(positions, counts):
        ax.text(count, y, f" {count} ({count / counts.sum():.1%})", va="center", fontsize=TICK_SIZE)
    ax.set_yticks(positions, label_names, fontsize=LABEL_SIZE)
    ax.invert_yaxis()  # first class on top
    ax.set_xlim(0, counts.max() * 1.35)  # room for the annotations
    ax.set_xlabel("number of texts", fontsize=LABEL_SIZE)
    ax.set_title(title, fontsize=TITLE_SIZE)
    return ax


def plot_text_lengths(lengths, labels, label_names: Sequence[str], unit: str = "tokens",
                      title: str = "Text length per class", ax=None):
    """One box plot of text lengths per class (the box holds the middle half, the line is the median)."""
    ids = _class_ids(labels, label_names)
    lengths = np.asarray(lengths)
    if lengths.shape != ids.shape:
        raise ValueError(f"expected one length per label: {ids.shape[0]} labels, got lengths of shape {lengths.shape}")
    ax = _new_axes(ax, (5, 0.6 * len(label_names) + 1.2))
    groups = [lengths[ids == c] for c in range(len(label_names))]
    boxes = ax.boxplot(groups, orientation="horizontal", patch_artist=True, widths=0.6,
                       flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black", "gid": "median"})
    for c, box in enumerate(boxes["boxes"]):
        box.set_facecolor(CLASS_COLOURS[c % len(CLASS_COLOURS)])
        box.set_alpha(0.6)
    ax.set_yticks(np.arange(1, len(label_names) + 1), label_names, fontsize=LABEL_SIZE)
    ax.invert_yaxis()
    ax.set_xlabel(f"{unit} per text", fontsize=LABEL_SIZE)
    ax.set_title(title, fontsize=TITLE_SIZE)
    return ax


def density_extent(coords: np.ndarray, keep: float = 0.99, margin: float = 0.05) -> tuple[float, ...]:
    """(x0, x1, y0, y1) around the central ``keep`` share of the points on each axis, plus a margin.

    A few far-away points would otherwise squeeze the bulk of a UMAP picture into one corner.
    """
    tail = (1 - keep) / 2
    low, high = np.quantile(coords, [tail, 1 - tail], axis=0)  # (2,) each
    pad = margin * (high - low)
    return (low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1])


def plot_umap_density(coords, labels, label_names: Sequence[str], title: str | None = None, gridsize: int = 28):
    """One hexbin density panel per class over the same 2-D extent, so the panels can be compared."""
    ids = _class_ids(labels, label_names)
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != ids.shape[0]:
        raise ValueError(f"expected coords of shape ({ids.shape[0]}, 2), one 2-D point per label, "
                         f"got {coords.shape}")
    extent = density_extent(coords)
    fig, axes = plt.subplots(1, len(label_names), figsize=(3.3 * len(label_names), 3.4), layout="constrained",
                             squeeze=False)
    for c, (ax, name) in enumerate(zip(axes[0], label_names)):
        points = coords[ids == c]  # (n_c, 2)
        inside = ((points[:, 0] >= extent[0]) & (points[:, 0] <= extent[1])
                  & (points[:, 1] >= extent[2]) & (points[:, 1] <= extent[3]))
        ax.hexbin(points[inside, 0], points[inside, 1], gridsize=gridsize, extent=extent, mincnt=1,
                  cmap=CLASS_CMAPS[c % len(CLASS_CMAPS)])
        ax.set_title(f"{name} (n={len(points)})", fontsize=TITLE_SIZE)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1", fontsize=LABEL_SIZE)
    axes[0, 0].set_ylabel("UMAP 2", fontsize=LABEL_SIZE)
    if title:
        fig.suptitle(title, fontsize=TITLE_SIZE + 1)
    return fig


def plot_confusion_matrix(y_true, y_pred, label_names: Sequence[str], normalize: bool = True,
                          title: str = "Confusion matrix", ax=None):
    """Rows are the true classes, columns the predicted ones; with ``normalize`` each row sums to 1."""
    from sklearn.metrics import confusion_matrix

    true_ids = _class_ids(y_true, label_names)
    pred_ids = _class_ids(y_pred, label_names)
    if true_ids.shape != pred_ids.shape:
        raise ValueError(f"expected as many predictions as true labels, got {pred_ids.shape[0]} and "
                         f"{true_ids.shape[0]}")
    counts = confusion_matrix(true_ids, pred_ids, labels=np.arange(len(label_names)))  # (C, C)
    totals = counts.sum(axis=1, keepdims=True)  # (C, 1)
    shown = counts / np.maximum(totals, 1) if normalize else counts
    size = 1.1 * len(label_names) + 2.2
    ax = _new_axes(ax, (size + 0.8, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else counts.max())
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            text = f"{shown[i, j]:.2f}\n({counts[i, j]})" if normalize else f"{counts[i, j]}"
            dark = shown[i, j] > 0.6 * (1 if normalize else counts.max())
            ax.text(j, i, text, ha="center", va="center", fontsize=TICK_SIZE, color="white" if dark else "black")
    ticks = np.arange(len(label_names))
    ax.set_xticks(ticks, label_names, fontsize=LABEL_SIZE)
    ax.set_yticks(ticks, label_names, fontsize=LABEL_SIZE)
    ax.set_xlabel("predicted class", fontsize=LABEL_SIZE)
    ax.set_ylabel("true class", fontsize=LABEL_SIZE)
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                       label="share of the true class" if normalize else "texts")
    return ax
