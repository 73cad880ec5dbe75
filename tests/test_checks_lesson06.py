"""Lesson 06 exercises: references agree with torch / scikit-learn, and the checker explains each mistake."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.checks import check
from course_lib.checks.lesson06 import confusion_counts, majority_baseline_accuracy, masked_mean, min_max_scale


def test_correct_answers_written_differently_also_pass():
    def masked_mean_float_mask(hidden, mask):
        weights = mask.float() / mask.float().sum(dim=1, keepdim=True)  # (B, T), each row sums to 1
        return torch.einsum("bt,btd->bd", weights, hidden)

    def minmax_with_epsilon(x):
        x = np.asarray(x, dtype=float)
        return (x - x.min(0)) / (x.max(0) - x.min(0) + 1e-12)

    def baseline_with_counter(train, test):
        from collections import Counter

        majority = Counter(list(train)).most_common(1)[0][0]
        return sum(int(label == majority) for label in test) / len(test)

    def confusion_with_loops(y_true, y_pred, num_classes):
        table = [[0] * num_classes for _ in range(num_classes)]
        for t, p in zip(y_true, y_pred):
            table[t][p] += 1
        return table

    assert check("06.masked_mean", masked_mean_float_mask).passed
    assert check("06.minmax", minmax_with_epsilon).passed
    assert check("06.baseline", baseline_with_counter).passed
    assert check("06.confusion", confusion_with_loops).passed


def test_wrong_answer_outside_the_known_mistakes_fails_without_a_hint():
    result = check("06.minmax", lambda x: np.asarray(x) / 2)
    assert not result.passed and result.hint is None and "on 6 samples, 3 features" in result.message


# ------------------------------------------------------------------ references against the real libraries
def test_masked_mean_equals_the_mean_of_each_text_alone_through_the_encoder(hf_encoder, tokenizer):
    texts = ["Dull.", "A warm, funny and beautifully acted film about growing up."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = masked_mean(hf_encoder(**batch).last_hidden_state, batch["attention_mask"])
        alone = [hf_encoder(**tokenizer([t], return_tensors="pt")).last_hidden_state[0].mean(dim=0) for t in texts]
    torch.testing.assert_close(pooled, torch.stack(alone), atol=1e-5, rtol=0)


def test_min_max_scale_equals_sklearn_min_max_scaler():
    from sklearn.preprocessing import MinMaxScaler

    features = np.random.default_rng(0).normal(size=(50, 8)) * np.arange(1, 9)
    features[:, 3] = 2.5  # a constant column
    np.testing.assert_allclose(min_max_scale(features), MinMaxScaler().fit_transform(features), atol=1e-12)


def test_majority_baseline_equals_sklearn_dummy_classifier():
    from sklearn.dummy import DummyClassifier

    rng = np.random.default_rng(1)
    for classes in (2, 3, 5):
        train, test = rng.integers(0, classes, 200), rng.integers(0, classes, 60)
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((200, 1)), train)
        assert majority_baseline_accuracy(train, test) == pytest.approx(dummy.score(np.zeros((60, 1)), test))


def test_confusion_counts_equal_sklearn_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(2)
    y_true, y_pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    np.testing.assert_array_equal(confusion_counts(y_true, y_pred, 4),
                                  confusion_matrix(y_true, y_pred, labels=range(4)))


def test_references_reject_bad_input_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\(samples, features\), got \(3,\)"):
        min_max_scale(np.ones(3))
    with pytest.raises(ValueError, match="non-empty label lists, got 0 train"):
        majority_baseline_accuracy([], [1])
    with pytest.raises(ValueError, match=r"same length, got \(2,\) and \(3,\)"):
        confusion_counts([0, 1], [0, 1, 1], 2)
