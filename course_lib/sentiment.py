"""The course's own sentiment classifier, used by lesson 00 to show what ``pipeline(...)`` does.

No fine-tuned sentiment model ships offline, so the course makes one: the pretrained encoder
(all-MiniLM-L6-v2) with a fresh classification head, fine-tuned for a fixed budget of steps on the
training split of the movie reviews (labels ``rotten`` / ``fresh``), then cached. It is built by ``prepare``
(``make prepare`` in a clone, ``course-lib prepare`` elsewhere; about 2-3 minutes on a laptop CPU) or on first
use, and checked like every cache (:mod:`course_lib.runtime.cache`), whose errors name the repair command.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from course_lib import assets
from course_lib.runtime import cache
from course_lib.data import MOVIE_LABELS, load_movie_reviews
from course_lib.settings import seed_everything

CACHE_NAME = "sentiment-minilm-rotten-tomatoes"
RECIPE = {"steps": 150, "batch_size": 32, "max_length": 64, "learning_rate": 1e-4, "warmup_steps": 15,
          "weight_decay": 0.01, "seed": 0}


def recipe(steps: int | None = None) -> dict:
    """The fine-tuning recipe; ``steps`` other than 150 makes a quick model for testing the build itself."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive whole number, got {steps!r}")
    return {**RECIPE, "steps": RECIPE["steps"] if steps is None else steps}


def cache_spec(steps: int | None = None) -> cache.CacheSpec:
    """What the cache holds: 91.3 MB measured (model.safetensors 90.9 MB, tokenizer 0.9 MB)."""
    source = {"base_model": assets.source_pin("encoder"), "data": assets.source_pin("movie-reviews"),
              "recipe": recipe(steps)}
    return cache.CacheSpec("sentiment model", size_bytes=92_000_000, source=lambda: source)


def sentiment_model_path(build: bool = True, verbose: bool = True, *, repair: bool = False,
                         checksums: bool = False, steps: int | None = None) -> Path:
    """Folder of the fine-tuned classifier (``save_pretrained`` format), built once if missing.

    Checked like :func:`course_lib.assets.decoder_path`: a damaged cache raises
    :class:`~course_lib.runtime.errors.CacheDamagedError` unless ``repair``.
    """
    target = assets.cache_dir() / CACHE_NAME
    return cache.ensure(target, cache_spec(steps), lambda: _fine_tune(verbose, steps), build=build,
                        repair=repair, checksums=checksums, verbose=verbose)


def build_sentiment_model(target: Path, verbose: bool = True, *, steps: int | None = None) -> Path:
    """Fine-tune the encoder on the movie-review training split and save it to ``target`` (see :func:`recipe`)."""
    return cache.build_cache(Path(target), cache_spec(steps), lambda: _fine_tune(verbose, steps), verbose=verbose)


def _fine_tune(verbose: bool = True, steps: int | None = None) -> cache.Saver:
    """Train the classifier; return the function that saves it into a folder."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    plan = recipe(steps)
    if verbose:
        print(f"Building the course's sentiment model once (fine-tuning {assets.ENCODER_NAME} for "
              f"{plan['steps']} steps on movie reviews; a few minutes on CPU) ...", flush=True)
    seed_everything(plan["seed"])
    tokenizer = assets.load_tokenizer()
    train = load_movie_reviews(profile="full")["train"].shuffle(seed=plan["seed"])
    validation = load_movie_reviews(profile="full")["validation"]
    model = AutoModelForSequenceClassification.from_pretrained(
        assets.encoder_path(), num_labels=len(MOVIE_LABELS), attn_implementation="sdpa",
        id2label=dict(enumerate(MOVIE_LABELS)), label2id={name: i for i, name in enumerate(MOVIE_LABELS)},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan["learning_rate"],
                                  weight_decay=plan["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, plan["warmup_steps"], plan["steps"])
    batch_size, steps = plan["batch_size"], plan["steps"]
    start = time.perf_counter()
    model.train()
    for step in tqdm(range(steps), desc="fine-tuning", disable=not verbose):
        first = (step * batch_size) % (len(train) - batch_size)
        rows = train[first:first + batch_size]
        batch = tokenizer(rows["text"], padding=True, truncation=True, max_length=plan["max_length"],
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
    if verbose:
        print(f"Trained in {train_seconds:.0f} s: validation accuracy {accuracy:.3f} on {len(validation)} reviews.")

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "SOURCE.json").write_text(json.dumps({
            "base_model": f"{assets.ENCODER_NAME} from {assets.source_pin('encoder')}",
            "data": "course_lib.data.load_movie_reviews('full')['train'] (Rotten Tomatoes snippets, Pang & Lee)",
            "recipe": plan, "validation_accuracy": round(accuracy, 4), "validation_rows": len(validation),
            "train_seconds": round(train_seconds, 1), "torch": torch.__version__,
        }, indent=1))

    return save


def sentiment_model_info() -> dict:
    """What SOURCE.json says about how the cached model was made."""
    return json.loads((sentiment_model_path() / "SOURCE.json").read_text())


def load_sentiment_pipeline(device: int | str | None = None, *, steps: int | None = None):
    """``pipeline("text-classification")`` on the course's fine-tuned sentiment model."""
    from transformers import pipeline

    path = sentiment_model_path(steps=steps)
    with cache.explain_load_failure(path, cache_spec(steps)):
        return pipeline("text-classification", model=str(path), tokenizer=str(path), device=device)
