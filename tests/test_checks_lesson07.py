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


# ----------------------------------------------------------------------------------------------- 07.csv_finetune
def _student_finetune(label_order=sorted, best_metric=lambda trainer, encoded: trainer.state.best_metric,
                      test_average="macro", scale=1.0):
    """A student's fine-tuning on CSV files, written with datasets and the Trainer, with pluggable details."""
    def finetune(data_files, model_path, output_dir, *, epochs, batch_size, learning_rate, patience, seed):
        from datasets import load_dataset
        from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                                  EarlyStoppingCallback, Trainer, TrainingArguments)

        data = load_dataset("csv", data_files=data_files)
        names = label_order(set(data["train"]["label"]))
        label2id = {name: i for i, name in enumerate(names)}
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        encoded = data.map(lambda batch: {**tokenizer(batch["text"], truncation=True, max_length=64),
                                          "labels": [label2id[name] for name in batch["label"]]},
                           batched=True, remove_columns=["text", "label"])
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=len(names), label2id=label2id, id2label={i: n for n, i in label2id.items()})
        args = TrainingArguments(output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                                 learning_rate=learning_rate, eval_strategy="epoch", save_strategy="epoch",
                                 load_best_model_at_end=True, metric_for_best_model="f1_macro", seed=seed,
                                 report_to="none")
        trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["validation"],
                          data_collator=DataCollatorWithPadding(tokenizer),
                          compute_metrics=lambda p: {"f1_macro": f1_score(p.label_ids, p.predictions.argmax(-1),
                                                                          average="macro")},
                          callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)])
        trainer.train()
        predictions = trainer.predict(encoded["test"]).predictions.argmax(-1)
        test_f1 = f1_score(encoded["test"]["labels"], predictions, average=test_average)
        return label2id, scale * best_metric(trainer, encoded), scale * test_f1, model.config.id2label
    return finetune


def _finetune_with_class_label(data_files, model_path, output_dir, *, epochs, batch_size, learning_rate, patience,
                               seed):
    """Right, written another way: ClassLabel (alphabetical names) from class_encode_column, the best model's score
    on validation re-evaluated after training, the test split through evaluate."""
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              EarlyStoppingCallback, Trainer, TrainingArguments)

    data = load_dataset("csv", data_files=data_files).class_encode_column("label")
    names = data["train"].features["label"].names
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = data.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(names),
                                                               id2label=dict(enumerate(names)),
                                                               label2id={n: i for i, n in enumerate(names)})

    def metrics(eval_pred):
        logits, labels = eval_pred
        return {"macro_f1": f1_score(labels, np.argmax(logits, axis=1), average="macro")}

    trainer = Trainer(model=model, train_dataset=data["train"], eval_dataset=data["validation"],
                      args=TrainingArguments(output_dir, eval_strategy="epoch", save_strategy="epoch",
                                             num_train_epochs=epochs, learning_rate=learning_rate, seed=seed,
                                             per_device_train_batch_size=batch_size, load_best_model_at_end=True,
                                             metric_for_best_model="macro_f1", greater_is_better=True,
                                             report_to=[]),
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics,
                      callbacks=[EarlyStoppingCallback(patience)])
    trainer.train()
    best = trainer.evaluate()["eval_macro_f1"]   # the best checkpoint is loaded: its validation score
    test = trainer.evaluate(data["test"], metric_key_prefix="test")["test_macro_f1"]
    return model.config.label2id, best, test, model.config.id2label


def test_correct_csv_finetuning_written_differently_also_passes():
    assert check("07.csv_finetune", _student_finetune()).passed
    assert check("07.csv_finetune", _finetune_with_class_label).passed


# ----------------------------------------------------------------------------------------------- 07.llrd
def test_correct_layerwise_rates_written_differently_also_pass():
    def rates_by_module(model, learning_rate, decay):
        layers = model.bert.encoder.layer
        rates = {name: learning_rate for name, _ in model.named_parameters()}  # head and pooler
        for i, layer in enumerate(layers):
            for name, _ in layer.named_parameters():
                rates[f"bert.encoder.layer.{i}.{name}"] = learning_rate * decay ** (len(layers) - i)
        for name, _ in model.bert.embeddings.named_parameters():
            rates[f"bert.embeddings.{name}"] = learning_rate * decay ** (len(layers) + 1)
        return rates

    assert check("07.llrd", rates_by_module).passed


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
    # label ids numbered from the reverse-sorted names
    pytest.param("07.csv_finetune", _student_finetune(label_order=lambda names: sorted(names, reverse=True)),
                 "label2id:", id="reverse-sorted-ids"),
    # the maps mixed up: id2label returned where label2id belongs (the last logged validation score instead of the
    # best one is not listed: on this tiny case the validation score does not move, so the two agree)
    pytest.param("07.csv_finetune", lambda *args, **settings: (lambda result: (result[3], *result[1:]))(
        _student_finetune()(*args, **settings)), "label2id:", id="id2label-as-label2id"),
    # weighted F1 on the test split
    pytest.param("07.csv_finetune", _student_finetune(test_average="weighted"), "the test macro F1:",
                 id="weighted-test-f1"),
    # percentages
    pytest.param("07.csv_finetune", _student_finetune(scale=100.0), "best validation macro F1", id="percent"),
    # the embeddings forgotten: they keep the head's rate
    pytest.param("07.llrd", lambda model, lr, decay: {
        name: lr * decay ** (model.config.num_hidden_layers - int(name.split(".")[3]))
        if ".layer." in name else lr for name, _ in model.named_parameters()}, "embeddings", id="embeddings-forgotten"),
    # one factor too few: the top layer keeps the full rate
    pytest.param("07.llrd", lambda model, lr, decay: {
        name: lr * decay ** (model.config.num_hidden_layers - 1 - int(name.split(".")[3])) if ".layer." in name
        else lr * decay ** model.config.num_hidden_layers if "embeddings" in name else lr
        for name, _ in model.named_parameters()}, "layer", id="top-layer-undecayed"),
    # param groups for the optimizer instead of a rate per name
    pytest.param("07.llrd", lambda model, lr, decay: [{"params": list(model.parameters()), "lr": lr}],
                 "expected a dict", id="param-groups"),
]



def test_a_crashing_answer_is_reported_not_raised():
    result = check("07.metrics", lambda eval_pred: {"accuracy": 1 / 0, "f1": 0.0})
    assert not result.passed and "ZeroDivisionError" in result.message
