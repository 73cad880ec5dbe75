"""Lesson 06 exercises: references agree with scikit-learn, correct answers in other forms pass, and wrong ones of
many kinds fail for their reason."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from course_lib.checks import check
from course_lib.checks.lesson06_protocol import choose_threshold
from course_lib.evaluation import bootstrap_interval
from course_lib.checks.lesson06 import (
    balanced_class_weights,
    confusion_counts,
    majority_baseline_accuracy,
    min_max_scale,
)


def test_correct_answers_written_differently_also_pass():
    def class_weights_with_numpy(train_labels, num_classes):
        counts = np.bincount(np.asarray(train_labels), minlength=num_classes)
        return torch.from_numpy(len(train_labels) / (num_classes * counts))  # float64 is fine

    def class_weights_with_sklearn(train_labels, num_classes):
        from sklearn.utils.class_weight import compute_class_weight

        labels = np.asarray(train_labels)
        return torch.tensor(compute_class_weight("balanced", classes=np.arange(num_classes), y=labels),
                            dtype=torch.float32)

    def minmax_with_epsilon(x):
        x = np.asarray(x, dtype=float)
        return (x - x.min(0)) / (x.max(0) - x.min(0) + 1e-12)

    def baseline_with_counter(train, test):
        counts = Counter(np.asarray(train).tolist())
        majority = min(counts, key=lambda label: (-counts[label], label))  # most frequent, then smallest id
        return sum(int(label == majority) for label in test) / len(test)

    def confusion_with_loops(y_true, y_pred, num_classes):
        table = np.zeros((num_classes, num_classes), dtype=np.int32)
        for t, p in zip(y_true, y_pred):
            table[t, p] += 1
        return table

    assert check("06.class_weights", class_weights_with_numpy).passed
    assert check("06.class_weights", class_weights_with_sklearn).passed
    assert check("06.minmax", minmax_with_epsilon).passed
    assert check("06.baseline", baseline_with_counter).passed
    assert check("06.confusion", confusion_with_loops).passed


def _result(pooling, C, cv_accuracy, correct, seed):
    interval = bootstrap_interval(np.asarray(correct, dtype=float), seed=seed)
    return {"pooling": pooling, "C": float(C), "cv_accuracy": float(cv_accuracy),
            "test_accuracy": float(np.mean(correct)), "test_interval": (interval.low, interval.high)}


def protocol_with_grid_search(train, y_train, test, y_test, Cs, seed):
    """scikit-learn's own tool: one GridSearchCV per pooling on the same folds; it refits the winner itself."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    best_search, best_pooling = None, None
    for pooling, x in train.items():
        search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                              {"logisticregression__C": list(Cs)}, cv=folds).fit(x, y_train)
        if best_search is None or search.best_score_ > best_search.best_score_:
            best_search, best_pooling = search, pooling
    correct = best_search.predict(test[best_pooling]) == np.asarray(y_test)
    return _result(best_pooling, best_search.best_params_["logisticregression__C"], best_search.best_score_, correct,
                   seed)


def protocol_by_hand(train, y_train, test, y_test, Cs, seed):
    """Every fold written out, the scaler fitted by hand on each fold's training rows."""
    y_train = np.asarray(y_train)
    first = next(iter(train.values()))
    splits = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(first, y_train))
    table = []
    for pooling, x in train.items():
        for C in Cs:
            accuracies = []
            for fit_rows, held_out in splits:
                scaler = StandardScaler().fit(x[fit_rows])
                model = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(x[fit_rows]), y_train[fit_rows])
                accuracies.append(np.mean(model.predict(scaler.transform(x[held_out])) == y_train[held_out]))
            table.append((np.mean(accuracies), pooling, C))
    top = max(score for score, _, _ in table)
    score, pooling, C = next(row for row in table if row[0] == top)  # the first of the best
    scaler = StandardScaler().fit(train[pooling])
    model = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(train[pooling]), y_train)
    correct = model.predict(scaler.transform(test[pooling])) == np.asarray(y_test)
    return _result(pooling, C, score, correct, seed)


def threshold_vectorised(probabilities, y_true, positive, thresholds):
    p = np.asarray(probabilities)
    fallback = np.argmax(np.where(np.arange(p.shape[1]) == positive, -1.0, p), axis=1)
    scores = [f1_score(y_true, np.where(p[:, positive] >= t, positive, fallback), average="macro") for t in thresholds]
    best = int(np.argmax(scores))  # the first of the best
    return {"threshold": float(thresholds[best]), "macro_f1": float(scores[best])}


def test_evaluation_exercises_accept_answers_written_differently():
    assert check("06.protocol", protocol_with_grid_search).passed
    assert check("06.protocol", protocol_by_hand).passed
    assert check("06.threshold", threshold_vectorised).passed


def _majority_by_first_seen(train, test):
    majority = Counter(np.asarray(train).tolist()).most_common(1)[0][0]  # ties: the class seen first
    return float(np.mean(np.asarray(test) == majority))


def _minmax_in_place(x):
    x -= x.min(axis=0)  # shifts the caller's array
    span = x.max(axis=0)
    return x / np.where(span == 0, 1, span)


def _confusion_fancy_index(y_true, y_pred, num_classes):
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    counts[np.asarray(y_true), np.asarray(y_pred)] += 1  # a repeated (true, predicted) pair is counted once
    return counts


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # weights normalised to sum to 1
    pytest.param("06.class_weights", lambda y, c: (w := 1 / torch.bincount(torch.as_tensor(y), minlength=c)) / w.sum(),
                 "values differ", id="sum-to-one"),
    # integer division: n // (C * count)
    pytest.param("06.class_weights", lambda y, c: len(y) // (c * torch.bincount(torch.as_tensor(y), minlength=c)),
                 "expected a floating tensor", id="integer-division"),
    # the weights as a NumPy array
    pytest.param("06.class_weights", lambda y, c: balanced_class_weights(y, c).numpy(),
                 "expected a torch.Tensor, got a NumPy float32 array", id="numpy"),
    # classes in the order they first appear (Counter), not by id
    pytest.param("06.class_weights", lambda y, c: torch.tensor(
        [len(y) / (c * n) for n in Counter(np.asarray(y).tolist()).values()]), "values differ", id="counter-order"),
    # the size of the majority class over each count
    pytest.param("06.class_weights", lambda y, c: (b := torch.bincount(torch.as_tensor(y), minlength=c)).max() / b,
                 "values differ", id="max-over-count"),
    # weights from a fixed set of labels (a notebook variable), not from the labels passed in
    pytest.param("06.class_weights", lambda y, c: balanced_class_weights(np.arange(c).repeat(3), c),
                 "values differ", id="fixed-labels"),
    # divided by the largest value only
    pytest.param("06.minmax", lambda x: np.asarray(x) / np.asarray(x).max(axis=0), "values differ",
                 id="divide-by-max"),
    # standardised instead of scaled
    pytest.param("06.minmax", lambda x: (x - x.mean(0)) / np.where(x.std(0) == 0, 1, x.std(0)), "values differ",
                 id="z-score"),
    # scaled to [-1, 1]
    pytest.param("06.minmax", lambda x: 2 * min_max_scale(x) - 1, "values differ", id="minus-one-to-one"),
    # the caller's array shifted in place
    pytest.param("06.minmax", _minmax_in_place, "changed its input x in place", id="in-place"),
    # a constant column set to 1
    pytest.param("06.minmax", lambda x: np.where(np.ptp(x, axis=0) == 0, 1.0, min_max_scale(x)),
                 "the same for every sample", id="constant-is-one"),
    # the result as a torch tensor
    pytest.param("06.minmax", lambda x: torch.from_numpy(min_max_scale(x)), "expected a NumPy array, got a torch",
                 id="tensor"),
    # ties broken by the class seen first
    pytest.param("06.baseline", _majority_by_first_seen, "a tie in the training labels", id="first-seen-tie"),
    # a percentage
    pytest.param("06.baseline", lambda train, test: 100 * majority_baseline_accuracy(train, test), "expected 0.3",
                 id="percentage"),
    # the majority of train and test together
    pytest.param("06.baseline", lambda train, test: float(np.mean(np.asarray(test) == np.bincount(
        np.concatenate([train, test])).argmax())), "expected", id="pooled-majority"),
    # the largest class id instead of the most frequent one
    pytest.param("06.baseline", lambda train, test: float(np.mean(np.asarray(test) == np.unique(train).max())),
                 "expected", id="largest-id"),
    # numpy fancy indexing: repeated pairs counted once
    pytest.param("06.confusion", _confusion_fancy_index, "3 classes, 7 texts", id="fancy-index"),
    # floats from np.zeros's default dtype
    pytest.param("06.confusion", lambda t, p, c: confusion_counts(t, p, c).astype(float),
                 "expected a NumPy array of integer dtype", id="float-counts"),
    # nested lists
    pytest.param("06.confusion", lambda t, p, c: confusion_counts(t, p, c).tolist(), "expected a NumPy array, got "
                 "list", id="lists"),
    # labels taken as 1-based
    pytest.param("06.confusion", lambda t, p, c: confusion_counts(np.asarray(t) - 1, np.asarray(p) - 1, c),
                 "values differ", id="one-based"),
    # a 1 set instead of added for each example
    pytest.param("06.confusion", lambda t, p, c: (confusion_counts(t, p, c) > 0).astype(np.int64), "values differ",
                 id="set-not-add"),
    # GridSearchCV with cv=5: stratified, but never shuffled
    pytest.param("06.protocol", lambda *a: _grid_search_with_plain_cv(*a), "not shuffled", id="cv-5-unshuffled"),
    # every setting scored on the test split, the best one kept
    pytest.param("06.protocol", lambda *a: _chosen_by_test_score(*a), "the choice differs", id="chosen-on-test"),
    # shuffled folds that ignore the labels
    pytest.param("06.protocol", lambda *a: _kfold_shuffled(*a), "KFold ignores the labels", id="kfold"),
    # the model of the best fold kept, never refitted
    pytest.param("06.protocol", lambda *a: _best_fold_model(*a), "test_accuracy (the chosen setting, refitted",
                 id="best-fold-model"),
    # standardised with training and test rows together, before the search
    pytest.param("06.protocol", lambda *a: _scaled_with_test_rows(*a), "cv_accuracy",
                 id="scaler-on-all-rows"),
    # the interval of the training rows' right/wrong
    pytest.param("06.protocol", lambda *a: _interval_of_training_rows(*a), "TRAINING rows", id="bootstrap-train"),
    # the grid search's best score reported as the test accuracy
    pytest.param("06.protocol", lambda *a: _best_score_as_test(*a), "test_accuracy", id="cv-score-as-test"),
    # accuracy in disguise: micro F1
    pytest.param("06.threshold", lambda p, y, pos, ts: _threshold_scored(p, y, pos, ts, "micro"), "macro_f1",
                 id="micro-f1"),
    # a strict comparison with the threshold
    pytest.param("06.threshold", lambda p, y, pos, ts: _threshold_scored(p, y, pos, ts, "macro", strict=True),
                 "expected", id="strictly-above"),
    # the last of equally good thresholds
    pytest.param("06.threshold", lambda p, y, pos, ts: _threshold_scored(p, y, pos, ts, "macro", last=True),
                 "threshold", id="last-of-ties"),
]


def _search(x, y, Cs, cv):
    return GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                        {"logisticregression__C": list(Cs)}, cv=cv).fit(x, y)


def _grid_search_with_plain_cv(train, y_train, test, y_test, Cs, seed):
    searches = {pooling: _search(x, y_train, Cs, 5) for pooling, x in train.items()}
    pooling = max(searches, key=lambda p: searches[p].best_score_)
    correct = searches[pooling].predict(test[pooling]) == y_test
    return _result(pooling, searches[pooling].best_params_["logisticregression__C"], searches[pooling].best_score_,
                   correct, seed)


def _model(C):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def _chosen_by_test_score(train, y_train, test, y_test, Cs, seed):
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    best = None
    for pooling in train:
        for C in Cs:
            model = _model(C).fit(train[pooling], y_train)
            test_score = model.score(test[pooling], y_test)
            if best is None or test_score > best[0]:
                cv = cross_val_score(_model(C), train[pooling], y_train, cv=folds).mean()
                best = (test_score, pooling, C, cv, model)
    _, pooling, C, cv, model = best
    return _result(pooling, C, cv, model.predict(test[pooling]) == y_test, seed)


def _kfold_shuffled(train, y_train, test, y_test, Cs, seed):
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    scored = [(cross_val_score(_model(C), x, y_train, cv=folds).mean(), pooling, C)
              for pooling, x in train.items() for C in Cs]
    score, pooling, C = max(scored, key=lambda row: row[0])
    model = _model(C).fit(train[pooling], y_train)
    return _result(pooling, C, score, model.predict(test[pooling]) == y_test, seed)


def _best_fold_model(train, y_train, test, y_test, Cs, seed):
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    best = None
    for pooling, x in train.items():
        for C in Cs:
            run = cross_validate(_model(C), x, y_train, cv=folds, return_estimator=True)
            if best is None or run["test_score"].mean() > best[0]:
                best = (run["test_score"].mean(), pooling, C, run["estimator"][int(np.argmax(run["test_score"]))])
    score, pooling, C, model = best
    return _result(pooling, C, score, model.predict(test[pooling]) == y_test, seed)


def _scaled_with_test_rows(train, y_train, test, y_test, Cs, seed):
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    best = None
    for pooling in train:
        scaler = StandardScaler().fit(np.concatenate([train[pooling], test[pooling]]))
        x, x_test = scaler.transform(train[pooling]), scaler.transform(test[pooling])
        for C in Cs:
            score = cross_val_score(LogisticRegression(C=C, max_iter=2000), x, y_train, cv=folds).mean()
            if best is None or score > best[0]:
                best = (score, pooling, C, x, x_test)
    score, pooling, C, x, x_test = best
    model = LogisticRegression(C=C, max_iter=2000).fit(x, y_train)
    return _result(pooling, C, score, model.predict(x_test) == y_test, seed)


def _interval_of_training_rows(train, y_train, test, y_test, Cs, seed):
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scored = [(cross_val_score(_model(C), x, y_train, cv=folds).mean(), pooling, C)
              for pooling, x in train.items() for C in Cs]
    score, pooling, C = max(scored, key=lambda row: row[0])
    model = _model(C).fit(train[pooling], y_train)
    result = _result(pooling, C, score, model.predict(test[pooling]) == y_test, seed)
    interval = bootstrap_interval((model.predict(train[pooling]) == y_train).astype(float), seed=seed)
    return result | {"test_interval": (interval.low, interval.high)}


def _best_score_as_test(train, y_train, test, y_test, Cs, seed):
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    searches = {pooling: _search(x, y_train, Cs, folds) for pooling, x in train.items()}
    pooling = max(searches, key=lambda p: searches[p].best_score_)
    correct = searches[pooling].predict(test[pooling]) == y_test
    result = _result(pooling, searches[pooling].best_params_["logisticregression__C"], searches[pooling].best_score_,
                     correct, seed)
    return result | {"test_accuracy": float(searches[pooling].best_score_)}


def _threshold_scored(probabilities, y_true, positive, thresholds, average, strict=False, last=False):
    p = np.asarray(probabilities)
    others = p.copy()
    others[:, positive] = -np.inf
    best = None
    for t in thresholds:
        reaches = p[:, positive] > t if strict else p[:, positive] >= t
        score = f1_score(y_true, np.where(reaches, positive, others.argmax(axis=1)), average=average)
        if best is None or score > best[1] or (last and score == best[1]):
            best = (float(t), float(score))
    return {"threshold": best[0], "macro_f1": best[1]}



# ------------------------------------------------------------------ references against the real libraries
@pytest.mark.parametrize("counts", [[11964, 10922, 5191], [3, 1], [5, 5, 5, 5], [7]])
def test_class_weights_equal_sklearn_compute_class_weight_balanced(counts):
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    expected = compute_class_weight("balanced", classes=np.arange(len(counts)), y=labels)
    got = balanced_class_weights(torch.from_numpy(labels), len(counts))
    assert got.dtype == torch.float32 and got.shape == (len(counts),)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(balanced_class_weights(labels.tolist(), len(counts)).numpy(), expected, rtol=1e-6)


def test_class_weights_come_from_the_training_labels_only_and_make_every_class_weigh_the_same_in_total():
    train = np.array([0] * 60 + [1] * 30 + [2] * 10)  # imbalanced training split
    test = np.array([0] * 10 + [1] * 10 + [2] * 30)  # a test split where the rare class is the most frequent
    weights = balanced_class_weights(train, 3)
    assert not torch.allclose(weights, balanced_class_weights(test, 3))
    totals = weights.numpy() * np.bincount(train)  # each class's summed weight over the training examples
    np.testing.assert_allclose(totals, len(train) / 3, rtol=1e-6)
    assert weights.argmax() == 2 and weights.argmin() == 0  # the rarest training class weighs most


def test_min_max_scale_equals_sklearn_min_max_scaler():
    from sklearn.preprocessing import MinMaxScaler

    features = np.random.default_rng(0).normal(size=(50, 8)) * np.arange(1, 9)
    features[:, 3] = 2.5  # a constant column
    np.testing.assert_allclose(min_max_scale(features), MinMaxScaler().fit_transform(features), atol=1e-12)


def test_majority_baseline_equals_sklearn_dummy_classifier_ties_included():
    from sklearn.dummy import DummyClassifier

    rng = np.random.default_rng(1)
    tied = (np.array([2, 1, 2, 1, 0]), np.array([1, 1, 2, 0]))
    for train, test in [(rng.integers(0, c, 200), rng.integers(0, c, 60)) for c in (2, 3, 5)] + [tied]:
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), train)
        assert majority_baseline_accuracy(train, test) == pytest.approx(dummy.score(np.zeros((len(test), 1)), test))


def test_confusion_counts_equal_sklearn_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(2)
    y_true, y_pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    np.testing.assert_array_equal(confusion_counts(y_true, y_pred, 4),
                                  confusion_matrix(y_true, y_pred, labels=range(4)))


def test_references_reject_bad_input_with_a_clear_message():
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] never occur in the training labels"):
        balanced_class_weights(torch.tensor([0, 2, 2]), 3)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 1\], got values from 0 to 2"):
        balanced_class_weights([0, 2], 2)
    with pytest.raises(TypeError, match="integer class ids, got dtype float32"):
        balanced_class_weights(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"non-empty 1-D sequence of class ids, got shape \(0,\)"):
        balanced_class_weights(np.array([], dtype=np.int64), 2)
    with pytest.raises(ValueError, match=r"\(samples, features\), got \(3,\)"):
        min_max_scale(np.ones(3))
    with pytest.raises(ValueError, match="non-empty label lists, got 0 train"):
        majority_baseline_accuracy([], [1])
    with pytest.raises(ValueError, match=r"same length, got \(2,\) and \(3,\)"):
        confusion_counts([0, 1], [0, 1, 1], 2)
