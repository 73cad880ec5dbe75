"""Lesson 07 exercises: the reference passes, each known mistake is rejected with its hint, a stub is 'not done'."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from course_lib.checks import check, get_exercise

NAMES = ["07.metrics", "07.loss", "07.freeze"]


# student answers written as a learner would write them in the notebook
def metrics_correct(eval_pred):
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=-1)
    return {"accuracy": (predictions == labels).mean(), "f1": f1_score(labels, predictions, average="weighted")}


def metrics_macro(eval_pred):
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=-1)
    return {"accuracy": (predictions == labels).mean(), "f1": f1_score(labels, predictions, average="macro")}


def metrics_wrong_axis(eval_pred):
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=0)
    return {"accuracy": (predictions == labels).mean(), "f1": f1_score(labels, predictions, average="weighted")}


def metrics_binary(eval_pred):
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=-1)
    return {"accuracy": (predictions == labels).mean(), "f1": f1_score(labels, predictions, average="binary")}


def loss_correct(logits, labels):
    return -torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels]


def loss_mean(logits, labels):
    return F.cross_entropy(logits, labels)


def loss_softmax_twice(logits, labels):
    return F.cross_entropy(logits.softmax(dim=-1), labels, reduction="none")


def loss_without_log(logits, labels):
    return -logits.softmax(dim=-1)[torch.arange(len(labels)), labels]


def freeze_correct(model):
    for p in model.base_model.parameters():
        p.requires_grad = False
    return model


def freeze_all(model):
    for p in model.parameters():
        p.requires_grad = False
    return model


def freeze_none(model):
    for p in model.base_model.parameters():
        p.requires_grad_(True)
    return model


def freeze_head(model):
    for p in model.classifier.parameters():
        p.requires_grad = False
    return model


def freeze_embeddings_only(model):
    for p in model.base_model[0].parameters():
        p.requires_grad = False
    return model


def test_lesson07_registers_three_exercises_each_with_two_or_more_mistakes():
    for name in NAMES:
        exercise = get_exercise(name)
        assert len(exercise.cases) >= 2 and len(exercise.mistakes) >= 2


@pytest.mark.parametrize("name,student", [("07.metrics", metrics_correct), ("07.loss", loss_correct),
                                          ("07.freeze", freeze_correct)])
def test_a_learners_correct_solution_passes(name, student):
    result = check(name, student)
    assert result.passed, result.message


@pytest.mark.parametrize("name,student,hint_words", [
    ("07.metrics", metrics_wrong_axis, "last axis"),
    ("07.metrics", metrics_macro, "macro F1"),
    ("07.metrics", metrics_binary, "class 1 only"),
    ("07.loss", loss_mean, "one loss per example"),
    ("07.loss", loss_softmax_twice, "softmax was applied twice"),
    ("07.loss", loss_without_log, "negative LOG"),
    ("07.freeze", freeze_all, "classifier was frozen too"),
    ("07.freeze", freeze_none, "still trainable"),
    ("07.freeze", freeze_head, "other way round"),
    ("07.freeze", freeze_embeddings_only, "only the embeddings"),
])
def test_known_mistake_is_rejected_with_its_hint(name, student, hint_words):
    result = check(name, student)
    assert not result.passed
    assert result.hint is not None and hint_words in result.hint, result.message


def test_a_crashing_answer_is_reported_not_raised():
    def broken(eval_pred):
        return {"accuracy": 1 / 0, "f1": 0.0}

    result = check("07.metrics", broken)
    assert not result.passed and "ZeroDivisionError" in result.message


def test_metrics_answer_without_f1_key_names_the_missing_key():
    result = check("07.metrics", lambda eval_pred: {"accuracy": 1.0})
    assert not result.passed and "'f1'" in result.message
