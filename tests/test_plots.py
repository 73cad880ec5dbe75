"""Plots draw the numbers they claim to (counts, medians, densities, confusion shares) and reject bad input."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_lib.plots import (  # noqa: E402
    density_extent,
    plot_class_balance,
    plot_confusion_matrix,
    plot_text_lengths,
    plot_umap_density,
)

NAMES = ["negative", "neutral", "positive"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_class_balance_bars_have_the_class_counts_and_their_names():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    ax = plot_class_balance(labels, NAMES)
    assert [bar.get_width() for bar in ax.patches] == [5, 3, 2]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == NAMES
    assert "5 (50.0%)" in [text.get_text().strip() for text in ax.texts]


def test_class_balance_counts_a_class_that_never_occurs_as_zero():
    ax = plot_class_balance([0, 0, 2], NAMES)
    assert [bar.get_width() for bar in ax.patches] == [2, 0, 1]


def test_text_length_boxes_show_each_class_median():
    lengths = np.array([10, 12, 14, 30, 32, 34, 50, 52, 54])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    ax = plot_text_lengths(lengths, labels, NAMES)
    medians = [line.get_xdata()[0] for line in ax.lines if line.get_gid() == "median"]
    assert medians == [12, 32, 52]
    assert ax.get_xlabel() == "tokens per text"


def test_density_panels_one_per_class_count_every_point_inside_the_shared_extent():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(300, 2))
    labels = rng.integers(0, 3, 300)
    fig = plot_umap_density(coords, labels, NAMES, title="demo")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [f"{n} (n={(labels == c).sum()})" for c, n in enumerate(NAMES)]
    x0, x1, y0, y1 = density_extent(coords)
    inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    for c, ax in enumerate(axes):
        counts = ax.collections[0].get_array()
        assert counts.sum() == (inside & (labels == c)).sum()
        assert ax.get_xlim() == pytest.approx((x0, x1)) and ax.get_ylim() == pytest.approx((y0, y1))


def test_density_extent_ignores_a_far_outlier():
    coords = np.vstack([np.random.default_rng(1).uniform(0, 1, size=(1000, 2)), [[1000.0, -1000.0]]])
    x0, x1, y0, y1 = density_extent(coords)
    assert -0.1 < x0 < 0.1 and 0.9 < x1 < 1.1 and -0.1 < y0 < 0.1 and 0.9 < y1 < 1.1


def test_confusion_matrix_shows_row_shares_equal_to_sklearn_normalised_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(2)
    y_true, y_pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    ax = plot_confusion_matrix(y_true, y_pred, NAMES)
    expected = confusion_matrix(y_true, y_pred, labels=range(3), normalize="true")
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class"
    counts = confusion_matrix(y_true, y_pred, labels=range(3))
    assert ax.texts[1].get_text() == f"{expected[0, 1]:.2f}\n({counts[0, 1]})"


def test_confusion_matrix_raw_counts_when_not_normalised():
    ax = plot_confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], NAMES, normalize=False)
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1, 1, 0], [0, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize("call, message", [
    (lambda: plot_class_balance([0, 3], NAMES), r"class ids must lie in 0..2 \(3 names\), got values from 0 to 3"),
    (lambda: plot_class_balance([], NAMES), "non-empty 1-D sequence of integer class ids"),
    (lambda: plot_class_balance([0.5, 1.0], NAMES), "integer class ids, got shape \\(2,\\) and dtype float64"),
    (lambda: plot_class_balance([0, 1], "rotten"), "expected a list of class names"),
    (lambda: plot_text_lengths([1, 2, 3], [0, 1], NAMES), "one length per label: 2 labels"),
    (lambda: plot_umap_density(np.zeros((3, 3)), [0, 1, 2], NAMES), r"coords of shape \(3, 2\)"),
    (lambda: plot_confusion_matrix([0, 1], [0, 1, 2], NAMES), "as many predictions as true labels"),
])
def test_bad_input_is_rejected_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
