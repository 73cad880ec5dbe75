"""Input checks shared by the tokenizers: clear errors that say what was expected and what was given."""
from __future__ import annotations

import operator
from typing import Iterable


def check_text(text, name: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def check_corpus(corpus: Iterable[str]) -> list[str]:
    """A training corpus: an iterable of strings (not one string), with at least one non-empty text."""
    if isinstance(corpus, (str, bytes)):
        raise TypeError("corpus must be an iterable of texts (e.g. a list of str), got a single "
                        f"{type(corpus).__name__}; wrap it in a list")
    try:
        texts = list(corpus)
    except TypeError:
        raise TypeError(f"corpus must be an iterable of str, got {type(corpus).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"corpus must contain only str, got {type(text).__name__} at position {i}")
    if not any(texts):
        raise ValueError(f"corpus is empty: got {len(texts)} texts and none has any characters")
    return texts


def check_ids(ids, known) -> list[int]:
    """A flat sequence of token ids (list, tuple, 1-D tensor or array) as a list of int, each one ``in known``.

    ``known`` is a ``range`` of valid ids or a mapping whose keys are the valid ids.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be a sequence of integers, got {type(ids).__name__}")
    if hasattr(ids, "tolist") and hasattr(ids, "ndim"):  # torch tensor or numpy array
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D (one sequence), got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    try:
        values = [operator.index(i) for i in ids]
    except TypeError:
        raise TypeError(f"ids must be a sequence of integers, got {ids!r:.80}") from None
    for i in values:
        if i not in known:
            valid = f"0 to {known[-1]}" if isinstance(known, range) else f"the {len(known)} ids of the vocabulary"
            raise ValueError(f"unknown token id {i}: valid ids are {valid}")
    return values
