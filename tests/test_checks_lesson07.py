"""Lesson 07 exercises: answers written as a learner would write them in the notebook pass, and wrong ones of many
kinds fail for their reason. The references are course_lib.training's compute_metrics, per_example_loss and
freeze_body, which test_training compares with scikit-learn, PyTorch and transformers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from course_lib.checks import check
from course_lib.training import compute_metrics, per_example_loss


def test_correct_answers_written_differently_also_pass():
    def metrics_with_numpy(eval_pred):
        logits, labels = eval_pred
        predictions = np.argmax(logits, axis=-1)
        return {"accuracy": (predictions == labels).mean(), "f1": f1_score(labels, predictions, average="weighted")}

    def metrics_with_extra_keys(eval_pred):  # the Trainer logs any extra key too
        logits, labels = eval_pred
        predictions = logits.argmax(-1)
        return {"accuracy": accuracy_score(labels, predictions), "f1": f1_score(labels, predictions,
                                                                               average="weighted"), "n": len(labels)}

    def freeze_by_name(model):
        for name, parameter in model.named_parameters():
            parameter.requires_grad = "classifier" in name  # classifier and pre_classifier stay trainable
        return model

    assert check("07.metrics", metrics_with_numpy).passed
    assert check("07.metrics", metrics_with_extra_keys).passed
    assert check("07.loss", lambda logits, labels: -torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)),
                                                                                       labels]).passed
    assert check("07.loss", lambda logits, labels: F.cross_entropy(logits.double(), labels, reduction="none")).passed
    assert check("07.freeze", lambda model: model.base_model.requires_grad_(False) and model).passed
    assert check("07.freeze", freeze_by_name).passed


def _metrics(predict=lambda logits: np.argmax(logits, axis=-1), f1=lambda labels, predictions: f1_score(
        labels, predictions, average="weighted"), scale=1.0):
    """compute_metrics with a pluggable prediction step, F1 and scale."""
    def metrics(eval_pred):
        logits, labels = eval_pred
        predictions = predict(np.asarray(logits))
        return {"accuracy": scale * float(np.mean(predictions == labels)), "f1": scale * float(f1(labels, predictions))}
    return metrics


def _freeze_all_but_the_last_two_tensors(model):
    for parameter in list(model.parameters())[:-2]:
        parameter.requires_grad = False
    return model


def _freeze_with_eval(model):
    model.base_model.eval()  # eval() switches dropout off; it freezes nothing
    return model


def _freeze_linear_layers_only(model):
    for module in model.base_model.modules():
        if isinstance(module, torch.nn.Linear):
            module.requires_grad_(False)
    return model


def _freeze_returning_the_head(model):
    model.base_model.requires_grad_(False)
    return model.classifier


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # y_true and y_pred swapped in f1_score: weighted by the predicted counts
    pytest.param("07.metrics", _metrics(f1=lambda labels, predictions: f1_score(predictions, labels,
                                                                                average="weighted")), "f1: expected",
                 id="f1-arguments-swapped"),
    # micro F1, which equals the accuracy
    pytest.param("07.metrics", _metrics(f1=lambda labels, predictions: f1_score(labels, predictions,
                                                                                average="micro")), "f1:",
                 id="micro-f1"),
    # a binary threshold on the second logit, fine for reviews, wrong for three classes
    pytest.param("07.metrics", _metrics(predict=lambda logits: (logits[:, 1] > logits[:, 0]).astype(int)),
                 "30 tweets", id="two-class-threshold"),
    # percentages
    pytest.param("07.metrics", _metrics(scale=100.0), "accuracy: expected 0.5, got 50", id="percent"),
    # the number of correct predictions instead of the share
    pytest.param("07.metrics", lambda eval_pred: {**compute_metrics(eval_pred), "accuracy": int(
        (np.argmax(eval_pred[0], axis=-1) == eval_pred[1]).sum())}, "accuracy:", id="count"),
    # other key names
    pytest.param("07.metrics", lambda eval_pred: {"acc": 1.0, "f1_weighted": 1.0}, "keys 'accuracy' and 'f1'",
                 id="key-names"),
    # log(softmax): infinite when a probability underflows to 0
    pytest.param("07.loss", lambda logits, labels: -torch.log(torch.softmax(logits, dim=-1))[
        torch.arange(len(labels)), labels], "confident logits 200 apart", id="log-of-softmax"),
    # nll_loss on raw logits (log_softmax forgotten)
    pytest.param("07.loss", lambda logits, labels: F.nll_loss(logits, labels, reduction="none"), "values differ",
                 id="nll-on-logits"),
    # the label column picked for every row: an (N, N) table
    pytest.param("07.loss", lambda logits, labels: -torch.log_softmax(logits, dim=-1)[:, labels], "expected shape",
                 id="column-indexing"),
    # the summed loss
    pytest.param("07.loss", lambda logits, labels: F.cross_entropy(logits, labels, reduction="sum"),
                 "expected shape", id="sum"),
    # one number per example, as a list
    pytest.param("07.loss", lambda logits, labels: per_example_loss(logits, labels).tolist(),
                 "expected a torch.Tensor, got list", id="list"),
    # binary cross-entropy on the second logit alone
    pytest.param("07.loss", lambda logits, labels: F.binary_cross_entropy_with_logits(
        logits[:, 1], labels.float(), reduction="none"), "values differ", id="bce-on-one-logit"),
    # everything frozen except the last two tensors: a two-layer head loses its first layer
    pytest.param("07.freeze", _freeze_all_but_the_last_two_tensors, "a head of two layers", id="last-two-tensors"),
    # eval() taken for freezing
    pytest.param("07.freeze", _freeze_with_eval, "expected", id="eval"),
    # the head returned instead of the model
    pytest.param("07.freeze", _freeze_returning_the_head, "expected", id="returns-head"),
    # only the body's Linear layers frozen, as if embeddings had no weights to train
    pytest.param("07.freeze", _freeze_linear_layers_only, "expected", id="linear-layers-only"),
]



def test_a_crashing_answer_is_reported_not_raised():
    result = check("07.metrics", lambda eval_pred: {"accuracy": 1 / 0, "f1": 0.0})
    assert not result.passed and "ZeroDivisionError" in result.message
