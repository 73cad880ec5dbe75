"""Training code: lesson 04's language-model training (one step, the warm-up + cosine schedule, a whole loop),
and the fine-tuning helpers of lesson 07 (metrics, per-example loss, Trainer settings, freezing the body or all
but its top layers, ONNX export).

The notebooks build each piece by hand once; these are the tested versions they then rely on.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.settings import DEFAULT_SEED, get_device, get_profile

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ----------------------------------------------------------------------------------------------- language model
def _batch(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).to(data.device)  # (B,)
    offsets = torch.arange(block_size, device=data.device)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T): the next token at every position
    return x, y


def train_language_model(
    model: nn.Module,
    token_ids: Tensor,
    steps: int,
    batch_size: int = 32,
    block_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    eval_every: int = 100,
    eval_batches: int = 8,
    val_fraction: float = 0.1,
    weight_decay: float = 0.01,
    log: Callable[[str], None] | None = None,
) -> list[tuple[int, float, float]]:
    """Train a language model on next-token prediction over a token stream; returns ``(step, train, val)`` losses.

    The last ``val_fraction`` of the stream is held out. Losses are averaged over ``eval_batches`` fixed batches
    at step 0, every ``eval_every`` steps and at the end. Batches and dropout are seeded, so runs repeat exactly.
    """
    if not isinstance(token_ids, Tensor) or token_ids.dtype != torch.long or token_ids.dim() != 1:
        got = f"{token_ids.dtype} tensor of shape {tuple(token_ids.shape)}" if isinstance(token_ids, Tensor) \
            else type(token_ids).__name__
        raise TypeError(f"token_ids must be a 1-D torch.long tensor (a token stream), got {got}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("block_size", block_size),
                        ("eval_every", eval_every), ("eval_batches", eval_batches)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    context = getattr(getattr(model, "config", None), "context_length", None)
    if context is not None and block_size > context:
        raise ValueError(f"block_size {block_size} is longer than the model's context_length {context}")
    split = int(len(token_ids) * (1 - val_fraction))
    train_data, val_data = token_ids[:split], token_ids[split:]
    if len(val_data) <= block_size or len(train_data) <= block_size:
        raise ValueError(
            f"a token stream of {len(token_ids)} ids is too short for block_size {block_size} with "
            f"val_fraction {val_fraction}: each split needs more than block_size + 1 ids"
        )
    device = next(model.parameters()).device
    train_data, val_data = train_data.to(device), val_data.to(device)

    @torch.no_grad()
    def estimate(data: Tensor, which: int) -> float:
        model.eval()
        generator = torch.Generator().manual_seed(seed + 1000 + which)  # the same batches at every evaluation
        losses = [model(*_batch(data, batch_size, block_size, generator))[1].item() for _ in range(eval_batches)]
        model.train()
        return sum(losses) / len(losses)

    history = []

    def evaluate(step: int) -> None:
        train_loss, val_loss = estimate(train_data, 0), estimate(val_data, 1)
        history.append((step, train_loss, val_loss))
        if log is not None:
            log(f"step {step:5d}   train loss {train_loss:.4f}   val loss {val_loss:.4f}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout
        model.train()
        evaluate(0)
        for step in range(1, steps + 1):
            x, y = _batch(train_data, batch_size, block_size, generator)  # (B, T), (B, T)
            _, loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % eval_every == 0 or step == steps:
                evaluate(step)
        model.eval()
    return history


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> Callable[[int], float]:
    """The learning-rate factor of step ``i`` (0, 1, ...) for ``torch.optim.lr_scheduler.LambdaLR``: a linear
    warm-up to 1 over ``warmup_steps`` steps, then a cosine decay to ``min_ratio`` at step ``total_steps - 1``."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"expected 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must lie in [0, 1], got {min_ratio}")

    def factor(i: int) -> float:
        step = i + 1  # LambdaLR counts from 0; the loop's steps from 1
        if step <= warmup_steps:
            return step / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)  # 0 -> 1
        return min_ratio + 0.5 * (1 - min_ratio) * (1 + math.cos(math.pi * progress))

    return factor


def train_step(model: nn.Module, windows: Tensor, optimizer: torch.optim.Optimizer, scheduler,
               max_norm: float) -> tuple[float, float]:
    """One step of lesson 04's training loop on ``(B, T + 1)`` token windows; returns ``(loss, gradient norm)``.

    ``model(inputs)`` must return the logits ``(B, T, V)``. The gradient norm is the one measured before
    clipping (what ``clip_grad_norm_`` returns), so a log of it shows how often clipping acted."""
    if not isinstance(windows, Tensor) or windows.dtype != torch.long or windows.dim() != 2 or windows.shape[1] < 2:
        got = f"{windows.dtype} tensor of shape {tuple(windows.shape)}" if isinstance(windows, Tensor) \
            else type(windows).__name__
        raise ValueError(f"expected windows as a torch.long tensor of shape (batch, tokens + 1), got {got}")
    model.train()
    inputs, targets = windows[:, :-1], windows[:, 1:]  # (B, T), (B, T): each target is the next token
    logits = model(inputs)  # (B, T, V)
    B, T, V = logits.shape
    loss = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))  # mean over B*T predictions
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # the norm before clipping
    optimizer.step()
    scheduler.step()  # the learning rate of the next step
    return loss.item(), grad_norm.item()


# ----------------------------------------------------------------------------------------------- metrics
def _logits_and_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both as NumPy arrays, checked: logits (N, C) float, labels (N,) integer."""
    logits = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (examples, classes), got shape {logits.shape}")
    if labels.ndim != 1 or len(labels) != len(logits):
        raise ValueError(f"expected labels of shape ({len(logits)},) to match the logits, got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("expected at least one example, got none")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected integer class labels, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1] - 1}], got values from {labels.min()} "
                         f"to {labels.max()}")
    return logits, labels


def weighted_f1(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """F1 of each class (0 where undefined), averaged with the class's share of ``labels`` as weight."""
    scores = []
    for c in range(num_classes):
        true_pos = np.sum((predictions == c) & (labels == c))
        predicted, actual = np.sum(predictions == c), np.sum(labels == c)
        # F1 = 2 TP / (predicted + actual): the harmonic mean of precision TP/predicted and recall TP/actual
        scores.append(2 * true_pos / (predicted + actual) if predicted + actual else 0.0)
    support = np.bincount(labels, minlength=num_classes) / len(labels)  # (C,)
    return float(np.dot(scores, support))


def compute_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and weighted F1 from ``(logits, labels)`` or a ``transformers.EvalPrediction``."""
    logits, labels = eval_pred[0], eval_pred[1]
    logits, labels = _logits_and_labels(logits, labels)  # (N, C), (N,)
    predictions = logits.argmax(axis=-1)  # (N,): one class per example
    return {"accuracy": float(np.mean(predictions == labels)),
            "f1": weighted_f1(predictions, labels, logits.shape[1])}


def per_example_loss(logits: Any, labels: Any) -> torch.Tensor:
    """Cross-entropy of each example, ``-log softmax(logits)[label]``: shape (N,), no averaging."""
    logits, labels = _logits_and_labels(logits, labels)
    log_probs = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1)  # (N, C)
    picked = log_probs.gather(1, torch.as_tensor(labels, dtype=torch.long)[:, None])  # (N, 1)
    return -picked[:, 0]  # (N,)


def loss_table(texts: Sequence[str], labels: Any, logits: Any, label_names: Sequence[str]):
    """A DataFrame of examples sorted by per-example loss, highest first (the model's worst mistakes on top)."""
    import pandas as pd

    logits, labels = _logits_and_labels(logits, labels)
    if len(texts) != len(labels):
        raise ValueError(f"expected one text per example ({len(labels)}), got {len(texts)} texts")
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()  # (N, C)
    frame = pd.DataFrame({
        "text": list(texts),
        "label": [label_names[i] for i in labels],
        "predicted": [label_names[i] for i in probs.argmax(-1)],
        "p_label": probs[np.arange(len(labels)), labels],
        "loss": per_example_loss(logits, labels).numpy(),
    })
    return frame.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- Trainer
def training_arguments(output_dir: str | os.PathLike, profile: str | None = None, **overrides):
    """``TrainingArguments`` for the course: the active profile's epochs and batch size, evaluation every
    epoch, length-grouped batches, quiet logs, seeded; mixed precision (bf16, else fp16) on a CUDA device.
    ``overrides`` win."""
    from transformers import TrainingArguments

    chosen = get_profile(profile)
    cuda = get_device().type == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    settings = dict(
        output_dir=str(output_dir),
        num_train_epochs=chosen.epochs,
        per_device_train_batch_size=chosen.batch_size,
        per_device_eval_batch_size=2 * chosen.batch_size,  # no gradients to keep: a larger batch fits
        learning_rate=1e-4,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float below 1 is a share of all steps
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        logging_strategy="steps",
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=cuda and not bf16,
        train_sampling_strategy="group_by_length",  # similar lengths in one batch: the collator adds little padding
        dataloader_num_workers=0,
        seed=DEFAULT_SEED,
        data_seed=DEFAULT_SEED,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def log_table(log_history: list[dict], decimals: int = 3):
    """``trainer.state.log_history`` as a compact DataFrame: one row per logged step, numbers rounded."""
    import pandas as pd

    columns = {"step": "step", "epoch": "epoch", "loss": "train_loss", "learning_rate": "lr",
               "eval_loss": "eval_loss", "eval_accuracy": "eval_accuracy", "eval_f1": "eval_f1",
               "eval_macro_f1": "eval_macro_f1"}
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "train_runtime" in entry:  # the summary at the end of training, not a step
            continue
        row = rows.setdefault(entry["step"], {})
        row.update({columns[k]: v for k, v in entry.items() if k in columns})
    frame = pd.DataFrame(list(rows.values()), columns=list(columns.values()))
    frame = frame.dropna(axis="columns", how="all")
    text = frame.round(decimals).astype(object)
    if "lr" in frame:  # learning rates are tiny: scientific notation instead of rounding them to 0
        text["lr"] = frame["lr"].map(lambda value: f"{value:.1e}" if pd.notna(value) else "")
    text["step"] = frame["step"].astype(int)
    return text.where(frame.notna(), "").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- freezing
def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """How many numbers the model holds (only those the optimiser may change, if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def freeze_body(model):
    """Freeze the pretrained body (``model.base_model``) so that only the task head trains. Returns the model."""
    body = model.base_model
    if body is model:
        raise ValueError(f"{type(model).__name__} has no separate body (base_model) to freeze; "
                         "expected a model with a task head, such as AutoModelForSequenceClassification")
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    return model


def unfreeze_top_layers(model, num_layers: int):
    """Make the last ``num_layers`` encoder layers and the pooler of a BERT-style classifier trainable again
    (after :func:`freeze_body`), so that the top of the body learns with the head. Returns the model."""
    body = model.base_model
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if body is model or layers is None:
        raise ValueError(f"{type(model).__name__} has no encoder layers at base_model.encoder.layer; expected a "
                         "BERT-style model with a task head, such as AutoModelForSequenceClassification")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 0 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be an integer from 0 to {len(layers)} (the body's layers), "
                         f"got {num_layers!r}")
    top = list(layers)[len(layers) - num_layers:] if num_layers else []
    pooler = [body.pooler] if num_layers and getattr(body, "pooler", None) is not None else []
    for module in top + pooler:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return model


# ----------------------------------------------------------------------------------------------- ONNX
def export_onnx(model, tokenizer, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write ``model`` (a sequence classifier) to an ONNX file with dynamic batch and sequence axes.

    Uses the TorchScript exporter (``dynamo=False``): it needs nothing beyond torch and onnx. The example
    input has padding, so the traced graph keeps the attention-mask branch that padded batches need.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = tokenizer(["a short one", "a longer example sentence with padding"], padding=True,
                        return_tensors="pt")
    names = [name for name in ONNX_INPUTS if name in example]
    device = next(model.parameters()).device
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():  # the exporter's notes on tracing Python branches and its own deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(example[name].to(device) for name in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_axes=dynamic,
                          opset_version=opset, dynamo=False)
    model.train(was_training)
    return path


def onnx_session(path: str | os.PathLike):
    """An onnxruntime ``InferenceSession`` on the CPU for the exported file."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, tokenizer, texts: Sequence[str], max_length: int = 128) -> np.ndarray:
    """Logits (N, C) from onnxruntime for a batch of texts, tokenized as the model was trained."""
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError(f"expected a non-empty list of texts, got {texts!r}")
    wanted = [node.name for node in session.get_inputs()]
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    (logits,) = session.run(["logits"], {name: encoded[name].astype(np.int64) for name in wanted})
    return logits  # (N, C)


# ----------------------------------------------------------------------------------------------- your own CSV
def finetune_csv(data_files: dict[str, str], model_path: str | os.PathLike, output_dir: str | os.PathLike, *,
                 epochs: int = 8, batch_size: int = 8, learning_rate: float = 5e-4, patience: int = 2,
                 seed: int = DEFAULT_SEED, max_length: int = 64):
    """Fine-tune a classifier on CSV files (columns ``text`` and ``label``, labels as strings) with a train,
    validation and test file: label ids from the sorted label names, evaluation on validation every epoch, early
    stopping and the best checkpoint by validation macro F1, then the test split once. Returns ``(label2id, best
    validation macro F1, test macro F1, the trained model's config.id2label)``."""
    from datasets import load_dataset
    from sklearn.metrics import f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments)

    if {"train", "validation", "test"} - set(data_files):
        raise ValueError(f"data_files needs a CSV for each of train, validation and test, got {sorted(data_files)}")
    splits = load_dataset("csv", data_files=dict(data_files))
    label2id = {name: i for i, name in enumerate(sorted(set(splits["train"]["label"])))}  # sorted: stable ids
    id2label = {i: name for name, i in label2id.items()}
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {**encoded, "labels": [label2id[name] for name in batch["label"]]}

    encoded = splits.map(encode, batched=True, remove_columns=["text", "label"])  # string labels -> ids
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(label2id),
                                                               id2label=id2label, label2id=label2id)

    def macro_f1(eval_pred):  # logits (N, C), labels (N,)
        return {"macro_f1": float(f1_score(eval_pred[1], np.argmax(eval_pred[0], axis=-1), average="macro"))}

    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="macro_f1", greater_is_better=True, save_total_limit=2, seed=seed,
        report_to="none", disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=macro_f1,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)])
    trainer.remove_callback(PrinterCallback)  # no log lines: the caller gets the numbers back
    trainer.train()  # ends with the best checkpoint (by validation macro F1) loaded
    test_f1 = trainer.evaluate(encoded["test"], metric_key_prefix="test")["test_macro_f1"]  # the test split, once
    return label2id, trainer.state.best_metric, test_f1, dict(trainer.model.config.id2label)

