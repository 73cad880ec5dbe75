"""Lesson 07's Trainer exercises: a classifier fine-tuned on your own CSV (core: string labels, label ids, early
stopping, the best checkpoint, the test split once) and layer-wise learning-rate decay (stretch).

The core exercise's reference is :func:`course_lib.training.finetune_csv`, run on a tiny BERT (random weights,
no dropout, the course tokenizer) and three small CSVs of tweets, so that a check takes seconds; its known
mistakes are the same function with one thing done wrong (:func:`_finetune_variant`)."""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import tempfile
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from course_lib.checks import Case, Exercise, Mistake, _describe, compare_outputs, register
from course_lib.precision import tolerance
from course_lib.training import finetune_csv

# ----------------------------------------------------------------------------------------------- 07.csv_finetune
def _finetune_variant(data_files, model_path, output_dir, *, epochs, batch_size, learning_rate, patience, seed,
                      appearance_order=False, select_on="validation", metric="macro_f1", best_by_metric=True,
                      greater_is_better=True, load_best=True, name_labels=True):
    """``finetune_csv`` with one thing done the way a student might get it wrong (the flags), for the mistakes."""
    from datasets import load_dataset
    from sklearn.metrics import f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments)

    splits = load_dataset("csv", data_files=dict(data_files))
    names = list(dict.fromkeys(splits["train"]["label"])) if appearance_order else sorted(set(splits["train"]["label"]))
    label2id = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    encoded = splits.map(lambda b: {**tokenizer(b["text"], truncation=True, max_length=64),
                                    "labels": [label2id[n] for n in b["label"]]}, batched=True,
                         remove_columns=["text", "label"])
    named = dict(id2label={i: n for n, i in label2id.items()}, label2id=label2id) if name_labels else {}
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(names), **named)

    def metrics(eval_pred):
        logits, labels = eval_pred
        predictions = np.argmax(logits, axis=-1)
        return {"macro_f1": float(f1_score(labels, predictions, average="macro")),
                "accuracy": float(np.mean(predictions == labels))}

    best = dict(metric_for_best_model=metric, greater_is_better=greater_is_better) if best_by_metric else {}
    args = TrainingArguments(output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                             learning_rate=learning_rate, eval_strategy="epoch", save_strategy="epoch",
                             load_best_model_at_end=load_best, save_total_limit=2, seed=seed, report_to="none",
                             disable_tqdm=True, logging_strategy="no", **best)
    stopper = EarlyStoppingCallback(early_stopping_patience=patience)
    trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded[select_on],
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics,
                      callbacks=[stopper] if load_best else [])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    test_f1 = trainer.evaluate(encoded["test"], metric_key_prefix="test")["test_macro_f1"]
    return label2id, trainer.state.best_metric, test_f1, dict(trainer.model.config.id2label)


_CSV_ROWS = {"train": 48, "validation": 24, "test": 24}
CSV_SETTINGS = dict(epochs=4, batch_size=8, learning_rate=3e-2, patience=2, seed=0)


def tiny_csv_case(folder=None) -> tuple[dict[str, str], str]:
    """Three small CSVs of tweets (string labels; the training file starts with a positive tweet, so that the
    order of appearance differs from the sorted names) and a tiny BERT classifier with the course tokenizer,
    saved with a 3-class head (so loading it draws no random weights) and without dropout."""
    import tempfile
    from pathlib import Path

    import pandas as pd
    from transformers import BertConfig, BertForSequenceClassification

    from course_lib import assets
    from course_lib.data import TWEET_LABELS, load_tweets

    folder = Path(folder or tempfile.mkdtemp(prefix="course-07-csv-"))
    folder.mkdir(parents=True, exist_ok=True)
    tweets, files = load_tweets("quick"), {}
    for split, rows in _CSV_ROWS.items():
        part = tweets[split].shuffle(seed=1).select(range(rows))
        frame = pd.DataFrame({"text": part["text"], "label": [TWEET_LABELS[i] for i in part["label"]]})
        if split == "train":  # a positive tweet first, then a negative one: appearance order != sorted order
            first = [frame.index[frame["label"] == name][0] for name in ("positive", "negative")]
            frame = pd.concat([frame.loc[first], frame.drop(first)])
        files[split] = str(folder / f"{split}.csv")
        frame.to_csv(files[split], index=False)
    tokenizer = assets.load_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=len(TWEET_LABELS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(folder / "tiny-bert")
    tokenizer.save_pretrained(folder / "tiny-bert")
    return files, str(folder / "tiny-bert")


_CSV_MISTAKES = {  # the flag of _finetune_variant each mistake sets
    "appearance": dict(appearance_order=True), "on_test": dict(select_on="test"), "by_loss": dict(best_by_metric=False),
    "lower_is_better": dict(greater_is_better=False), "last": dict(load_best=False), "accuracy": dict(metric="accuracy"),
    "no_names": dict(name_labels=False)}
_CSV_WRONG = {name: functools.partial(_finetune_variant, **flags) for name, flags in _CSV_MISTAKES.items()}
_CSV_RESULTS: dict = {}  # the reference's and the mistakes' results, computed once per process (they are fixed)


def _in_a_fresh_folder(fn):
    """Run a fine-tuning answer in a temporary output folder, quietly, leaving the global random state (which the
    Trainer reseeds) as it was; the reference's and the known mistakes' results are remembered."""
    def run(data_files, model_path, **settings):
        key = (fn, tuple(sorted(data_files.items())), model_path, tuple(sorted(settings.items())))
        if key in _CSV_RESULTS:
            return copy.deepcopy(_CSV_RESULTS[key])
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with tempfile.TemporaryDirectory() as folder, torch.random.fork_rng(devices=[]), _quiet():
            result = fn(data_files, model_path, folder, **settings)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if fn is finetune_csv or fn in _CSV_WRONG.values():
            _CSV_RESULTS[key] = copy.deepcopy(result)
        return result
    return run


@contextlib.contextmanager
def _quiet():
    import datasets
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


_CSV_PARTS = ("label2id", "the best validation macro F1 (trainer.state.best_metric)", "the test macro F1",
              "the trained model's config.id2label")


def _compare_csv_result(got, expected) -> str | None:
    """The label maps exactly, the two metrics within the float32 tolerance after the run's training steps."""
    if not isinstance(got, (tuple, list)) or len(got) != len(expected):
        return f"expected a tuple of 4: ({', '.join(_CSV_PARTS)}), got {_describe(got)}"
    atol, rtol = tolerance(torch.float32, "cpu", steps=CSV_SETTINGS["epochs"] * math.ceil(
        _CSV_ROWS["train"] / CSV_SETTINGS["batch_size"]))
    for part, value, reference in zip(_CSV_PARTS, got, expected):
        if isinstance(reference, float):
            value = float(value) if isinstance(value, (np.floating, np.integer)) else value
            problem = compare_outputs(value, reference, atol=atol, rtol=rtol)
        else:
            problem = compare_outputs(dict(value) if isinstance(value, Mapping) else value, reference)
        if problem is not None:
            return f"{part}: {problem}"
    return None


def _csv_cases() -> list[Case]:
    files, model_path = tiny_csv_case()
    return [Case((files, model_path), dict(CSV_SETTINGS), label="48 training tweets in a CSV with string labels "
                 "(the first row is positive), a tiny BERT, at most 4 epochs, patience 2, seed 0")]


register(Exercise("07.csv_finetune", "fine-tune on your own CSV: label ids, early stopping, best checkpoint, test once",
    finetune_csv, cases=_csv_cases, adapt=_in_a_fresh_folder, compare=_compare_csv_result,
    level="core", minutes=30,
    hints=("Ids come from the sorted names of the training labels; the Trainer evaluates the validation split each "
           "epoch, keeps the checkpoint with the best validation macro F1 and stops after `patience` epochs without "
           "a better one; the test split is evaluated once, after training, on that best checkpoint.",
           "label2id = {name: i for i, name in enumerate(sorted(set(splits['train']['label'])))} and "
           "TrainingArguments(..., eval_strategy='epoch', save_strategy='epoch', load_best_model_at_end=True, "
           "metric_for_best_model='macro_f1', greater_is_better=True) with "
           "callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)]"),
    # Choosing the checkpoint on test, keeping the worst one or the last one give, on this small case, the same
    # numbers as the reference (the tiny model's validation score does not move between epochs), so they are not
    # listed as known mistakes: an answer that makes them is not told apart here. The hint ladder names them.
    mistakes=[
        Mistake(_CSV_WRONG["appearance"], "the label ids follow the order in which the names first appear in the "
                "file; another file (or a shuffled one) would number them differently. Number the sorted names: "
                "enumerate(sorted(set(labels)))."),
        Mistake(_CSV_WRONG["by_loss"], "without metric_for_best_model the Trainer keeps the checkpoint with the "
                "lowest validation loss, and best_metric is that loss. Set metric_for_best_model='macro_f1'."),
        Mistake(_CSV_WRONG["accuracy"], "the checkpoint was chosen by accuracy; with imbalanced classes (few "
                "positive tweets) a model that ignores a class can have the best accuracy. Choose by macro F1."),
        Mistake(_CSV_WRONG["no_names"], "the model's config still says LABEL_0, LABEL_1, ...: pass id2label and "
                "label2id to from_pretrained, so that the saved model and pipeline print the names."),
    ],
))


# ----------------------------------------------------------------------------------------------- 07.llrd (stretch)
def layerwise_learning_rates(model, learning_rate: float, decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay for a BERT-style classifier: the head and the pooler get ``learning_rate``,
    the top encoder layer ``learning_rate * decay``, each layer below one more factor ``decay``, and the
    embeddings one factor below the first layer. Returns {parameter name: learning rate} for every parameter."""
    count, prefix = model.config.num_hidden_layers, model.base_model_prefix  # 6, "bert"
    rates = {}
    for name, _ in model.named_parameters():
        if name.startswith(f"{prefix}.embeddings."):
            depth = count + 1
        elif name.startswith(f"{prefix}.encoder.layer."):
            depth = count - int(name.split(".")[3])  # layer count - 1 (the top) is one factor down
        else:
            depth = 0  # pooler and classifier
        rates[name] = learning_rate * decay ** depth
    return rates


def _llrd_upside_down(model, learning_rate, decay):
    return {name: learning_rate * decay ** (int(name.split(".")[3]) + 1) if ".encoder.layer." in name else rate
            for name, rate in layerwise_learning_rates(model, learning_rate, decay).items()}


def _llrd_embeddings_with_first_layer(model, learning_rate, decay):
    return {name: rate / decay if ".embeddings." in name else rate
            for name, rate in layerwise_learning_rates(model, learning_rate, decay).items()}


def _llrd_pooler_decayed(model, learning_rate, decay):
    return {name: rate * (decay if ".pooler." in name else 1)
            for name, rate in layerwise_learning_rates(model, learning_rate, decay).items()}


def _tiny_bert(layers: int, classes: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, num_labels=classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return BertForSequenceClassification(config)


def _llrd_cases() -> list[Case]:
    return [Case((_tiny_bert(2), 1e-3, 0.5), label="2 layers, learning rate 1e-3, decay 0.5"),
            Case((_tiny_bert(4, 3), 2e-5, 0.9), label="4 layers, 3 classes, learning rate 2e-5, decay 0.9"),
            Case((_tiny_bert(3), 1e-4, 1.0), label="decay 1.0: every parameter gets the same rate")]


register(Exercise("07.llrd", "layer-wise learning-rate decay: one rate per parameter", layerwise_learning_rates,
    cases=_llrd_cases, level="stretch", minutes=20,
    hints=("Count down from the top: head and pooler at depth 0, the top layer at depth 1, the first layer at depth "
           "num_hidden_layers, the embeddings one deeper; the rate is learning_rate * decay ** depth.",
           "depth = count - int(name.split('.')[3]) for 'bert.encoder.layer.<i>....' names"),
    mistakes=[
        Mistake(_llrd_upside_down, "the decay runs upwards: the first layer got the largest rate. The layers near "
                                   "the head change most in fine-tuning, so the top layer gets learning_rate * decay "
                                   "and each layer below one more factor."),
        Mistake(_llrd_embeddings_with_first_layer, "the embeddings sit below the first layer: they get one more "
                                                   "factor of decay than layer 0."),
        Mistake(_llrd_pooler_decayed, "the pooler belongs with the head (it is on top of the last layer): it gets "
                                      "the full learning rate."),
    ],
))
