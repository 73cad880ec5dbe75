"""Sentence features from a frozen encoder: pool the hidden states, batch over a data set, cache to disk.

Shapes: ``B`` batch, ``T`` tokens, ``D`` hidden width (384 for the course encoder), ``N`` texts, ``L`` layers
(6 for the course encoder).

>>> features = extract_features(["A warm film.", "A mess."])      # {"cls": (2, 384), "mean": (2, 384)}
>>> layers = extract_features(["A warm film."], all_layers=True)  # {"cls": (7, 1, 384), "mean": (7, 1, 384)}
>>> train = dataset_features("movie_reviews", "train")             # cached in cache_dir() / "features"
"""
from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from course_lib.assets import cache_dir, load_encoder, load_tokenizer
from course_lib.data import load_course_dataset
from course_lib.pooling import POOLING_FUNCTIONS, POOLINGS
from course_lib.settings import get_profile

FEATURE_CACHE = "features"


# ----------------------------------------------------------------------------------------------- inputs
def _check_poolings(poolings: str | Sequence[str]) -> tuple[str, ...]:
    chosen = (poolings,) if isinstance(poolings, str) else tuple(poolings)
    unknown = [p for p in chosen if p not in POOLING_FUNCTIONS]
    if not chosen or unknown:
        raise ValueError(f"expected poolings from {POOLINGS}, got {poolings!r}")
    return chosen


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single str: wrap it in a list, e.g. [text]")
    try:
        texts = list(texts)  # a list, a datasets Column, a pandas Series ...
    except TypeError:
        raise TypeError(f"expected a list of texts, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError("expected at least one text, got an empty list")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"expected every text to be a str, got {type(text).__name__} at position {i}: {text!r}")
    return texts


# ----------------------------------------------------------------------------------------------- extraction
@torch.no_grad()
def extract_features(
    texts: Sequence[str],
    model=None,
    tokenizer=None,
    poolings: str | Sequence[str] = POOLINGS,
    batch_size: int = 64,
    max_length: int = 128,
    sort_by_length: bool = True,
    progress: bool = True,
    desc: str = "encoding",
    all_layers: bool = False,
) -> dict[str, np.ndarray]:
    """Pooled last hidden states of a frozen encoder for every text: ``{pooling: (N, D) float32}``.

    Texts are encoded in batches (sorted by length, so each batch has little padding) and the rows come back
    in the order of ``texts``. The course encoder (SDPA attention) is used when no model is given.

    ``all_layers=True`` pools the hidden states of every layer from the same forward pass
    (``output_hidden_states=True``): ``{pooling: (L + 1, N, D) float32}``, where index 0 is the embedding
    layer's output, index ``i`` the output of layer ``i``, and index ``L`` the features of ``all_layers=False``.
    """
    from tqdm.std import tqdm  # a plain text bar: it shows in a terminal, a notebook and the book alike

    texts = _check_texts(texts)
    poolings = _check_poolings(poolings)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"expected a batch_size >= 1, got {batch_size!r}")
    if not isinstance(all_layers, bool):
        raise TypeError(f"all_layers must be True or False, got {all_layers!r}")
    if model is None or tokenizer is None:
        model = model if model is not None else load_encoder(attn_implementation="sdpa")
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    device = next(model.parameters()).device

    order = list(range(len(texts)))
    if sort_by_length:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order.sort(key=lambda i: lengths[i])
    width = model.config.hidden_size
    depth = model.config.num_hidden_layers + 1 if all_layers else 1  # the embeddings and every layer, or the last
    out = {name: np.empty((depth, len(texts), width), dtype=np.float32) for name in poolings}  # (L + 1 or 1, N, D)

    was_training = model.training
    model.eval()  # no dropout: the same text always gives the same features
    try:
        with tqdm(total=len(texts), desc=desc, unit="text", file=sys.stdout, mininterval=1.0,
                  disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size]
                batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt").to(device)
                outputs = model(**batch, output_hidden_states=all_layers)
                layers = outputs.hidden_states if all_layers else (outputs.last_hidden_state,)  # each (B, T, D)
                for index, hidden in enumerate(layers):
                    for name in poolings:
                        pooled = POOLING_FUNCTIONS[name](hidden, batch["attention_mask"])  # (B, D)
                        out[name][index, rows] = pooled.float().cpu().numpy()
                bar.update(len(rows))
    finally:
        model.train(was_training)
    return out if all_layers else {name: stacked[0] for name, stacked in out.items()}  # (L + 1, N, D) or (N, D)


# ----------------------------------------------------------------------------------------------- cached
def _fingerprint(texts: list[str], model, max_length: int) -> str:
    """Short hash of everything the features depend on besides the data set name."""
    import transformers

    digest = hashlib.sha256()
    for part in (getattr(model.config, "_name_or_path", ""), model.config.model_type, str(max_length),
                 transformers.__version__, torch.__version__.split("+")[0]):
        digest.update(part.encode("utf-8") + b"\0")
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]


def feature_cache_path(name: str, profile: str, split: str, pooling: str, max_length: int, fingerprint: str):
    """Where the features of one split and pooling are cached: keyed by data set, profile, split, pooling."""
    return cache_dir() / FEATURE_CACHE / f"{name}-{profile}-{split}-{pooling}-len{max_length}-{fingerprint}.npy"


def dataset_features(
    name: str,
    split: str = "train",
    poolings: str | Sequence[str] = POOLINGS,
    profile: str | None = None,
    model=None,
    tokenizer=None,
    max_length: int = 128,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features of one split of a course data set (``"movie_reviews"`` or ``"tweets"``), cached on disk.

    A cached file is reused only for the same texts, encoder, ``max_length`` and library versions.
    """
    profile_name = get_profile(profile).name
    splits = load_course_dataset(name, profile_name)
    if split not in splits:
        raise ValueError(f"expected a split from {list(splits)}, got {split!r}")
    texts = list(splits[split]["text"])
    poolings = _check_poolings(poolings)
    model = model if model is not None else load_encoder(attn_implementation="sdpa")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()

    fingerprint = _fingerprint(texts, model, max_length)
    paths = {p: feature_cache_path(name, profile_name, split, p, max_length, fingerprint) for p in poolings}
    if cache and all(path.exists() for path in paths.values()):
        return {p: np.load(path) for p, path in paths.items()}
    features = extract_features(texts, model, tokenizer, poolings, batch_size=batch_size, max_length=max_length,
                                progress=progress, desc=f"{name} {split}")
    if cache:
        _save(features, paths)
    return features


def _save(features: dict[str, np.ndarray], paths: dict) -> None:
    """Write the arrays where :func:`dataset_features` looks for them; a cache folder this user cannot write
    (a class cache shared read-only) only costs the time to compute them again next time."""
    try:
        for p, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".partial-{os.getpid()}.npy")
            np.save(partial, features[p])
            partial.replace(path)
    except OSError as error:  # read-only or full: the features are right, only not kept
        warnings.warn(f"features not cached ({error}); they will be computed again next time", stacklevel=3)
