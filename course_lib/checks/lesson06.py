"""Warm-up exercises of lesson 06 (features and UMAP): balanced class weights, min-max scaling, majority baseline,
confusion counts. The core exercise (the evaluation protocol) and the stretch one (a decision threshold) are in
:mod:`course_lib.checks.lesson06_protocol`."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from course_lib.checks import Case, Exercise, Mistake, register


# ----------------------------------------------------------------------------------------------- 06.class_weights
def balanced_class_weights(train_labels, num_classes: int) -> Tensor:
    """'Balanced' weight of each class, n_samples / (num_classes * count_c), from the training labels: (C,) float.

    Equal to scikit-learn's ``compute_class_weight("balanced", ...)``: a class half as frequent as in a balanced
    set weighs 2, and a balanced set gets 1 everywhere. ``train_labels`` is a 1-D integer tensor, array or list
    of class ids in [0, num_classes). A class that never occurs in them has no defined weight (n / 0): that is a
    ``ValueError`` naming the class, not an infinite weight.
    """
    labels = train_labels.detach().cpu().numpy() if isinstance(train_labels, Tensor) else np.asarray(train_labels)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"expected a non-empty 1-D sequence of class ids, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"expected integer class ids, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"class ids must lie in [0, {num_classes - 1}], got values from {labels.min()} to "
                         f"{labels.max()}")
    counts = np.bincount(labels, minlength=num_classes)  # (C,)
    absent = np.flatnonzero(counts == 0).tolist()
    if absent:
        raise ValueError(f"class(es) {absent} never occur in the training labels, so their balanced weight "
                         f"n_samples / (num_classes * 0) is undefined; add examples of them or leave them out")
    return torch.as_tensor(labels.size / (num_classes * counts), dtype=torch.float32)  # (C,)


def _counts(train_labels, num_classes):
    return torch.bincount(torch.as_tensor(np.asarray(train_labels)), minlength=num_classes).double()  # (C,)


_TWEET_LIKE = torch.tensor([1, 0, 1, 2, 0, 0, 1, 0, 2, 1, 0, 1, 0, 2, 1, 0, 0, 1, 2, 0, 1, 1, 0, 0, 2, 1, 0, 1, 0, 2,
                            1, 0, 1, 1, 0, 2, 0, 1, 0, 0, 2, 1, 1, 0, 0, 1, 2, 1])  # 20 x 0, 19 x 1, 9 x 2

register(Exercise("06.class_weights", "balanced class weights from the training labels", balanced_class_weights,
    level="warm-up", minutes=10,
    cases=[
        Case((_TWEET_LIKE, 3), label="48 training tweets: 20 negative, 19 neutral, 9 positive (a tensor)"),
        Case((np.array([2, 2, 1, 0, 2, 2, 1, 2, 2, 1]), 3),
             label="a NumPy array that starts with class 2, where class 0 occurs once"),
        Case((torch.tensor([3, 1, 0, 2]), 4), label="4 classes, each once: every weight is 1"),
        Case((np.array([0, 0, 0, 0, 0]), 1), label="a single class"),
        Case((torch.tensor([2] * 9 + [0, 1, 1], dtype=torch.int32), 3),
             label="training labels where positive (2) is the most frequent class, unlike in the test split: the "
                   "weights come from the labels passed in, nothing else"),
    ],
    mistakes=[
        Mistake(lambda labels, num_classes: (1.0 / _counts(labels, num_classes)).float(),
                "1 / count has the right shape but the wrong scale: multiply by n_samples / num_classes, so that "
                "the weights are n_samples / (num_classes * count) and a balanced set gets 1 everywhere."),
        Mistake(lambda labels, num_classes: (_counts(labels, num_classes) / len(labels)).float(),
                "those are the class frequencies: they give the FREQUENT classes the larger weight. Invert them: "
                "n_samples / (num_classes * count), so that a rare class weighs more."),
        Mistake(lambda labels, num_classes: (len(labels) / _counts(labels, num_classes)).float(),
                "divide by num_classes too: n_samples / (num_classes * count). Without it the weights are "
                "num_classes times too large (a balanced set should get weights of 1)."),
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

register(Exercise("06.minmax", "min-max scaling per feature", min_max_scale,
    level="warm-up", minutes=10,
    cases=[
        Case((_WIDE,), label="6 samples, 3 features on very different scales"),
        Case((_CONSTANT,), label="a feature that is the same for every sample"),
        Case((np.array([[1.0, -2.0], [3.0, 6.0]]),), label="2 samples, 2 features"),
        Case((np.array([[4.0, -1.0, 0.5]]),), label="a single sample: every column is constant, so all 0"),
        Case((np.array([[3], [7], [5], [7]]),), label="integer features, a single column (the result is floating)"),
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


register(Exercise("06.baseline", "accuracy of the most-frequent-class baseline", majority_baseline_accuracy,
    level="warm-up", minutes=5,
    cases=[
        Case(([1] * 6 + [0] * 3 + [2], [0] * 5 + [1] * 3 + [2] * 2), label="3 classes, train and test disagree"),
        Case((np.array([0, 1, 1, 1, 0, 1, 1]), np.array([1, 0, 0, 1])), label="2 classes as numpy arrays"),
        Case(([2, 2, 0, 1, 2, 0, 2], [2, 1, 2, 2, 0]), label="the majority is the last class"),
        Case(([2, 1, 2, 1, 0], [1, 1, 2, 0]),
             label="a tie in the training labels (1 and 2 twice each): the smaller class id wins, as in "
                   "sklearn's DummyClassifier and np.argmax"),
        Case((np.array([0, 0, 0, 1]), np.array([1, 1, 2])), label="the training majority never occurs in the test "
             "labels: accuracy 0"),
        Case(([1], [1]), label="one training label and one test label"),
        Case(([0, 0, 0, 1, 1], [1, 1, 1, 1, 2]), label="class 1 is rare in training but frequent in the test labels: "
             "the prediction is still the training majority, 0"),
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


register(Exercise("06.confusion", "count a confusion matrix", confusion_counts,
    level="warm-up", minutes=10,
    cases=[
        Case(([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0, 2], 3), label="3 classes, 7 texts"),
        Case((np.array([1, 1, 0, 1]), np.array([1, 0, 0, 0]), 2), label="2 classes as numpy arrays"),
        Case(([0, 1, 0], [0, 1, 1], 3), label="3 classes, but class 2 never occurs"),
        Case(([2], [0], 3), label="a single example"),
        Case((np.array([1, 0, 1, 1]), np.array([1, 0, 1, 1]), 2), label="every prediction right: only the diagonal"),
        Case(([0, 2, 2, 1], [0, 0, 0, 0], 4), label="4 classes, everything predicted as class 0"),
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
