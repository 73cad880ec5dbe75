"""Exercises of lesson 06 (features and UMAP): masked mean, min-max scaling, majority baseline, confusion counts."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from course_lib.checks import Case, Exercise, Mistake, register
from course_lib.pooling import masked_mean as _masked_mean


# ----------------------------------------------------------------------------------------------- 06.masked_mean
def masked_mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of the token vectors where ``attention_mask`` is 1: (B, T, D), (B, T) -> (B, D)."""
    return _masked_mean(hidden, attention_mask)


def _hidden(batch: int, tokens: int, dim: int, seed: int) -> Tensor:
    return torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(seed))  # (B, T, D)


def _padded(hidden: Tensor, mask: Tensor, value: float = 5.0) -> Tensor:
    """Padding positions get a recognisable value, as if the encoder had written something there."""
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, value)


_MASK_A = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
_MASK_B = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])

register(Exercise(
    name="06.masked_mean",
    title="mean pooling that ignores padding",
    reference=masked_mean,
    cases=[
        Case((_padded(_hidden(2, 4, 3, 0), _MASK_A), _MASK_A), label="two texts, the second padded by 2 tokens"),
        Case((_hidden(2, 3, 4, 1), torch.ones(2, 3, dtype=torch.long)), label="no padding at all"),
        Case((_padded(_hidden(3, 5, 2, 2), _MASK_B, -3.0), _MASK_B), label="three texts of 3, 5 and 1 tokens"),
        Case((_padded(_hidden(2, 4, 3, 3), _MASK_A), _MASK_A.bool()), label="a boolean attention mask"),
    ],
    mistakes=[
        Mistake(lambda h, m: h.mean(dim=1),
                "a plain mean over the tokens includes the [PAD] positions; multiply by the mask first and "
                "divide by the number of real tokens, mask.sum(dim=1)."),
        Mistake(lambda h, m: (h * m.unsqueeze(-1)).sum(dim=1) / h.shape[1],
                "you zeroed the padding but divided by the padded length T; divide each text by its own number "
                "of real tokens, attention_mask.sum(dim=1, keepdim=True)."),
        Mistake(lambda h, m: (h * m.unsqueeze(-1)).sum(dim=0) / m.unsqueeze(-1).sum(dim=0),
                "average over the tokens (dim=1), not over the batch (dim=0): one vector per text, shape (B, D)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 06.minmax
def min_max_scale(features: np.ndarray) -> np.ndarray:
    """Scale each column (feature) of (N, D) to [0, 1]; a constant column becomes 0, as in sklearn's MinMaxScaler."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"expected features of shape (samples, features), got {features.shape}")
    low = features.min(axis=0, keepdims=True)  # (1, D)
    span = features.max(axis=0, keepdims=True) - low  # (1, D)
    span[span == 0] = 1.0  # constant column: (x - min) is 0 everywhere, keep it 0
    return (features - low) / span  # (N, D)


def _rows_scaled(x):
    x = np.asarray(x, dtype=np.float64)
    low = x.min(axis=1, keepdims=True)
    return (x - low) / (x.max(axis=1, keepdims=True) - low)


def _globally_scaled(x):
    x = np.asarray(x, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min())


def _scaled_without_guard(x):
    x = np.asarray(x, dtype=np.float64)
    low = x.min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x - low) / (x.max(axis=0) - low)


_RNG = np.random.default_rng(5)
_WIDE = np.column_stack([_RNG.normal(0, 1, 6), _RNG.normal(40, 10, 6), _RNG.uniform(-5, -1, 6)])
_CONSTANT = np.array([[0.2, 3.0, -1.0], [0.8, 3.0, 4.0], [0.5, 3.0, 1.5], [0.3, 3.0, 0.0]])

register(Exercise(
    name="06.minmax",
    title="min-max scaling per feature",
    reference=min_max_scale,
    cases=[
        Case((_WIDE,), label="6 samples, 3 features on very different scales"),
        Case((_CONSTANT,), label="a feature that is the same for every sample"),
        Case((np.array([[1.0, -2.0], [3.0, 6.0]]),), label="2 samples, 2 features"),
    ],
    mistakes=[
        Mistake(_rows_scaled,
                "scale each feature (column, axis=0) over the samples, not each sample (row, axis=1) over "
                "its features."),
        Mistake(_globally_scaled,
                "use each column's own min and max (axis=0, keepdims=True); one min and max for the whole "
                "matrix leaves small-range features squashed near one value."),
        Mistake(_scaled_without_guard,
                "a constant column has max - min = 0, so you divided by zero (NaN); give such columns a span of "
                "1 (or add a small epsilon) so they come out as 0."),
    ],
))


# ----------------------------------------------------------------------------------------------- 06.baseline
def majority_baseline_accuracy(train_labels, test_labels) -> float:
    """Accuracy on the test labels of always predicting the most frequent class of the training labels."""
    train, test = np.asarray(train_labels), np.asarray(test_labels)
    if train.size == 0 or test.size == 0:
        raise ValueError(f"expected non-empty label lists, got {train.size} train and {test.size} test labels")
    majority = np.bincount(train).argmax()  # ties: the smallest class id, like DummyClassifier
    return float(np.mean(test == majority))


def _least_frequent_class(train_labels, test_labels):
    train = np.asarray(train_labels)
    counts = np.bincount(train)
    rarest = np.flatnonzero(counts)[counts[counts > 0].argmin()]
    return float(np.mean(np.asarray(test_labels) == rarest))


def _majority_of_test(train_labels, test_labels):
    return majority_baseline_accuracy(test_labels, test_labels)


def _scored_on_train(train_labels, test_labels):
    return majority_baseline_accuracy(train_labels, train_labels)


register(Exercise(
    name="06.baseline",
    title="accuracy of the most-frequent-class baseline",
    reference=majority_baseline_accuracy,
    cases=[
        Case(([1] * 6 + [0] * 3 + [2], [0] * 5 + [1] * 3 + [2] * 2), label="3 classes, train and test disagree"),
        Case((np.array([0, 1, 1, 1, 0, 1, 1]), np.array([1, 0, 0, 1])), label="2 classes as numpy arrays"),
        Case(([2, 2, 0, 1, 2, 0, 2], [2, 1, 2, 2, 0]), label="the majority is the last class"),
    ],
    mistakes=[
        Mistake(_least_frequent_class,
                "the baseline predicts the MOST frequent class of the training labels (np.bincount(...).argmax()),"
                " not the least frequent one."),
        Mistake(_majority_of_test,
                "find the majority class on the training labels: the test labels are unknown when you choose "
                "the prediction (that would be peeking)."),
        Mistake(_scored_on_train,
                "measure the accuracy on the test labels: the share of test labels equal to the training "
                "majority class."),
    ],
))


# ----------------------------------------------------------------------------------------------- 06.confusion
def confusion_counts(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class, as in sklearn's ``confusion_matrix``."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"expected two 1-D label arrays of the same length, got {true.shape} and {pred.shape}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (true, pred), 1)
    return counts


def _confusion_transposed(y_true, y_pred, num_classes):
    return confusion_counts(y_true, y_pred, num_classes).T


def _confusion_normalised(y_true, y_pred, num_classes):
    counts = confusion_counts(y_true, y_pred, num_classes)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def _confusion_sized_by_data(y_true, y_pred, num_classes):
    seen = int(max(np.max(y_true), np.max(y_pred))) + 1
    return confusion_counts(y_true, y_pred, seen)


register(Exercise(
    name="06.confusion",
    title="count a confusion matrix",
    reference=confusion_counts,
    cases=[
        Case(([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0, 2], 3), label="3 classes, 7 texts"),
        Case((np.array([1, 1, 0, 1]), np.array([1, 0, 0, 0]), 2), label="2 classes as numpy arrays"),
        Case(([0, 1, 0], [0, 1, 1], 3), label="3 classes, but class 2 never occurs"),
    ],
    mistakes=[
        Mistake(_confusion_transposed,
                "rows are the TRUE classes and columns the PREDICTED ones: counts[true, predicted] += 1."),
        Mistake(_confusion_normalised,
                "return the raw counts (integers); normalising each row is a separate step for the plot."),
        Mistake(_confusion_sized_by_data,
                "the matrix is num_classes x num_classes even when a class never appears in the data."),
    ],
))
