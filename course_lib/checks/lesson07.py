"""Exercises of lesson 07 (fine-tuning): metrics for the Trainer, per-example loss, freezing the body. The
Trainer exercises (your own CSV, layer-wise learning rates) are in :mod:`course_lib.checks.lesson07_trainer`.

The references are the course's tested helpers in :mod:`course_lib.training`: ``compute_metrics``,
``per_example_loss`` and ``freeze_body``."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.checks import Case, Exercise, Mistake, _describe, compare_outputs, register
from course_lib.training import compute_metrics, freeze_body, per_example_loss


# ----------------------------------------------------------------------------------------------- 07.metrics
def _compare_metrics(got, expected) -> str | None:
    """'accuracy' and 'f1' as numbers equal to the reference's; other keys (the Trainer allows them) are ignored."""
    if not isinstance(got, Mapping) or not set(expected) <= set(got):
        return f"expected a dict with keys 'accuracy' and 'f1', got {_describe(got)}" + (
            f" with keys {sorted(got, key=str)}" if isinstance(got, Mapping) else "")
    return compare_outputs({key: got[key] for key in expected}, expected, atol=1e-6, rtol=0)


def _metrics_from(predictions, labels, average: str) -> dict[str, float]:
    from sklearn.metrics import f1_score

    return {"accuracy": float(np.mean(predictions == labels)),
            "f1": float(f1_score(labels, predictions, average=average, zero_division=0))}


def _metrics_wrong_axis(eval_pred):
    logits, labels = eval_pred
    predictions = np.asarray(logits).argmax(axis=0)  # the best example for each class, not a class per example
    return _metrics_from(predictions, np.asarray(labels), "weighted")


def _metrics_macro(eval_pred):
    logits, labels = eval_pred
    return _metrics_from(np.asarray(logits).argmax(-1), np.asarray(labels), "macro")


def _metrics_binary(eval_pred):
    from sklearn.metrics import f1_score

    logits, labels = eval_pred
    predictions, labels = np.asarray(logits).argmax(-1), np.asarray(labels)
    return {"accuracy": float(np.mean(predictions == labels)),
            "f1": float(f1_score(labels == 1, predictions == 1, zero_division=0))}


def _metrics_case(labels: list[int], predictions: list[int], classes: int, label: str, seed: int) -> Case:
    """Logits (N, C) whose argmax is ``predictions``, with random runner-up scores."""
    noise = np.random.default_rng(seed).random((len(labels), classes))
    logits = 2.0 * np.eye(classes)[predictions] + noise  # (N, C)
    return Case(((logits.astype(np.float32), np.array(labels)),), label=label)


# Imbalanced labels and a classifier that is right most of the time, so that the F1 averages differ. The first
# case is square (as many examples as classes) and has two classes, so that the wrong-axis and the binary-F1
# mistakes run without an error and can be recognised (its noise makes argmax over axis 0 pick [1, 0]).
_METRICS_CASES = [
    _metrics_case([0, 1], [1, 1], 2, "2 reviews, 2 classes", seed=2),
    _metrics_case([1] * 9 + [0] * 3, [1] * 7 + [0, 0] + [0, 1, 1], 2, "12 reviews, 2 classes, imbalanced", seed=1),
    _metrics_case([0] * 15 + [1] * 10 + [2] * 5, [0] * 12 + [1, 2, 2] + [1] * 8 + [0, 0] + [2, 2, 1, 0, 2], 3,
                  "30 tweets, 3 classes", seed=3),
    _metrics_case([0, 1, 2, 2, 2, 1], [2, 2, 2, 2, 2, 2], 3, "every tweet predicted positive: classes 0 and 1 are "
                  "never predicted (their F1 is 0)", seed=4),
    _metrics_case([1, 1, 0, 1, 1], [1, 1, 1, 1, 2], 3, "3 classes, but class 2 occurs only among the predictions",
                  seed=5),
    _metrics_case([2], [2], 3, "a single example, predicted right", seed=6),
]

register(Exercise("07.metrics", "accuracy and weighted F1 from (logits, labels)", compute_metrics, cases=_METRICS_CASES,
    level="warm-up", minutes=10,
    mistakes=[
        Mistake(_metrics_wrong_axis, "logits have shape (examples, classes): take argmax over the last axis "
                                     "(axis=-1) to get one predicted class per example."),
        Mistake(_metrics_macro, "that is macro F1 (every class counts the same); weighted F1 averages the "
                                "per-class F1 scores weighted by how many true examples each class has: "
                                "f1_score(..., average='weighted')."),
        Mistake(_metrics_binary, "that is the F1 of class 1 only (average='binary'); weighted F1 combines the F1 "
                                 "of every class, weighted by its number of true examples."),
    ],
    compare=_compare_metrics,
))


# ----------------------------------------------------------------------------------------------- 07.loss
def _loss_mean(logits, labels):
    return F.cross_entropy(logits, labels)


def _loss_double_softmax(logits, labels):
    return F.cross_entropy(torch.softmax(logits, dim=-1), labels, reduction="none")


def _loss_no_log(logits, labels):
    return -torch.softmax(logits, dim=-1).gather(1, labels[:, None])[:, 0]


def _loss_positive(logits, labels):
    return torch.log_softmax(logits, dim=-1).gather(1, labels[:, None])[:, 0]


def _random_loss_case(rows: int, classes: int, label: str, seed: int) -> Case:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, classes, generator=generator)  # (N, C)
    return Case((logits, torch.randint(0, classes, (rows,), generator=generator)), label=label)


_LOSS_CASES = [
    _random_loss_case(8, 2, "8 examples, 2 classes", seed=6),
    _random_loss_case(5, 3, "5 examples, 3 classes", seed=7),
    _random_loss_case(1, 2, "a single example", seed=8),
    Case((torch.tensor([[100.0, -100.0, 0.0], [0.0, 5.0, 200.0]]), torch.tensor([1, 2])),
         label="confident logits 200 apart, one wrong (loss 200) and one right (loss 0): log_softmax stays finite "
               "where log(softmax) gives inf"),
    Case((torch.tensor([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([3])), label="4 tied logits, the last class is the "
         "label: the loss is log(4)"),
]

register(Exercise("07.loss", "cross-entropy of each example (no averaging)", per_example_loss, cases=_LOSS_CASES,
    level="warm-up", minutes=5,
    mistakes=[
        Mistake(_loss_mean, "that is the mean over the batch (one number); error analysis needs one loss per "
                            "example: a tensor of shape (N,)."),
        Mistake(_loss_double_softmax, "softmax was applied twice: cross-entropy expects raw logits and applies "
                                      "log-softmax itself, so do not pass probabilities in as logits."),
        Mistake(_loss_no_log, "the loss is the negative LOG of the probability of the true label: use "
                              "torch.log_softmax (not torch.softmax) before picking the label's column."),
        Mistake(_loss_positive, "check the sign: log-probabilities are <= 0, and the loss is their negative, "
                                "so every loss should be >= 0."),
    ],
))


# ----------------------------------------------------------------------------------------------- 07.freeze
class _TinyClassifier(torch.nn.Module):
    """A stand-in with the layout of a transformers classifier: a body (``base_model``) and a head of one layer
    (``classifier``, as in BERT) or two (``pre_classifier`` and ``classifier``, as in DistilBERT)."""

    def __init__(self, hidden: int, classes: int, layers: int, head_layers: int = 1):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Embedding(50, hidden),
                                        *[torch.nn.Linear(hidden, hidden) for _ in range(layers)])
        if head_layers == 2:
            self.pre_classifier = torch.nn.Linear(hidden, hidden)
        self.classifier = torch.nn.Linear(hidden, classes)

    @property
    def base_model(self) -> torch.nn.Module:
        return self.body


def _trainable_after(freeze):
    """Freeze a fresh tiny classifier with ``freeze`` and report which parameters can still learn."""
    def run(hidden, classes, layers, head_layers=1):
        with torch.random.fork_rng(devices=[]):  # weights seeded, the global random state left as it was
            torch.manual_seed(0)
            model = _TinyClassifier(hidden, classes, layers, head_layers)
        returned = freeze(model)
        model = model if returned is None else returned
        names = sorted(name for name, p in model.named_parameters() if p.requires_grad)
        return (names, sum(p.numel() for p in model.parameters() if p.requires_grad))
    return run


def _freeze_everything(model):
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _freeze_nothing(model):
    return model


def _freeze_only_embeddings(model):
    for parameter in model.base_model[0].parameters():
        parameter.requires_grad_(False)
    return model


def _freeze_head_instead(model):
    for parameter in model.classifier.parameters():
        parameter.requires_grad_(False)
    return model


_FREEZE_CASES = [Case((16, 2, 2), label="hidden 16, 2 classes, 2 body layers"),
                 Case((8, 3, 1), label="hidden 8, 3 classes, 1 body layer"),
                 Case((8, 2, 1, 2), label="a head of two layers, pre_classifier and classifier (as in DistilBERT): "
                                          "both stay trainable")]


register(Exercise("07.freeze", "freeze the body, keep the classification head trainable", freeze_body,
    cases=_FREEZE_CASES,
    adapt=_trainable_after,  # the answer changes a model in place: compare what is left trainable
    level="warm-up", minutes=2,
    mistakes=[
        Mistake(_freeze_everything, "nothing can learn now: the classifier was frozen too. Freeze only "
                                    "model.base_model's parameters."),
        Mistake(_freeze_nothing, "every parameter is still trainable: set requires_grad to False on each "
                                 "parameter of model.base_model (and return the model)."),
        Mistake(_freeze_only_embeddings, "only the embeddings are frozen; the whole body "
                                         "(model.base_model.parameters()) should be."),
        Mistake(_freeze_head_instead, "that froze the head and left the body trainable: it is the other way "
                                      "round."),
    ],
))

