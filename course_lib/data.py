"""The course data sets as ``datasets.DatasetDict`` with fixed, seeded splits and named labels.

* :func:`load_movie_reviews`: Rotten Tomatoes snippets (Pang & Lee), labels ``rotten`` / ``fresh``.
* :func:`load_tweets`: tweets about self-driving cars, labels ``negative`` / ``neutral`` / ``positive``,
  cleaned (handles -> ``@user``, links -> ``http``, duplicates dropped, offensive words filtered).

Splits are 80 / 10 / 10, stratified by label, with seed 0, computed on the whole data set; the ``quick``
profile then keeps a fixed, seeded slice of each split, so quick rows are always a subset of full rows.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

import pandas as pd

from course_lib import assets
from course_lib.settings import get_profile

SPLIT_SEED = 0
MOVIE_LABELS = ("rotten", "fresh")
TWEET_LABELS = ("negative", "neutral", "positive")
DATASET_NAMES = ("movie_reviews", "tweets")

_HANDLE = re.compile(r"@\w+")
_URL = re.compile(r"(?:https?://|\bwww\.)\S+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def offensive_words() -> frozenset[str]:
    """The documented word filter (``course_lib/resources/offensive_words.txt``)."""
    text = files("course_lib").joinpath("resources/offensive_words.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@lru_cache(maxsize=1)
def _offensive_pattern() -> re.Pattern:
    words = sorted(offensive_words(), key=len, reverse=True)
    # Whole words, where a "word" is a run of ASCII letters (the corpus has mojibake glued to words).
    return re.compile(r"(?<![a-z])(?:" + "|".join(map(re.escape, words)) + r")(?![a-z])", re.IGNORECASE)


def clean_tweet(text: str) -> str:
    """Replace user handles with ``@user`` and links with ``http``; collapse whitespace."""
    text = _URL.sub("http", text)
    text = _HANDLE.sub("@user", text)
    return _SPACES.sub(" ", text).strip()


def is_offensive(text: str) -> bool:
    return _offensive_pattern().search(text) is not None


# ----------------------------------------------------------------------------------------------- raw tables
@lru_cache(maxsize=1)
def movie_reviews_frame() -> pd.DataFrame:
    """All fresh/rotten snippets (plot summaries dropped), de-duplicated: columns ``text``, ``label``."""
    raw = pd.read_csv(assets.movie_reviews_path())
    raw = raw[raw["category"].isin(MOVIE_LABELS)]
    frame = pd.DataFrame({"text": raw["text"].astype(str).str.strip(), "label": raw["category"]})
    frame = frame[frame["text"] != ""].drop_duplicates("text").reset_index(drop=True)
    frame["label"] = frame["label"].map(MOVIE_LABELS.index)
    return frame


@lru_cache(maxsize=1)
def tweets_frame() -> pd.DataFrame:
    """Cleaned, de-duplicated, filtered tweets: columns ``text``, ``label``."""
    raw = pd.read_csv(assets.tweets_path(), encoding="latin-1")
    frame = pd.DataFrame({"text": raw["text"].astype(str).map(clean_tweet), "label": raw["sentiment"]})
    frame = frame[frame["label"].isin(TWEET_LABELS) & (frame["text"] != "")]
    frame = frame[~frame["text"].map(is_offensive)]
    frame = frame.drop_duplicates("text").reset_index(drop=True)
    frame["label"] = frame["label"].map(TWEET_LABELS.index)
    return frame


# ----------------------------------------------------------------------------------------------- splits
def split_frame(frame: pd.DataFrame, seed: int = SPLIT_SEED) -> dict[str, pd.DataFrame]:
    """Stratified 80/10/10 train/validation/test split, the same for a given seed."""
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=seed)
    validation, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    return {"train": train, "validation": validation, "test": test}


def _to_dataset_dict(splits: dict[str, pd.DataFrame], label_names, profile: str | None):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names))})
    chosen = get_profile(profile)
    out = {}
    for name, part in splits.items():
        rows = chosen.rows(name, len(part))
        if rows < len(part):  # a fixed, seeded slice: quick rows are always a subset of full rows
            part = part.sample(n=rows, random_state=SPLIT_SEED)
        part = part.sort_index()  # a stable order, independent of the split's shuffling
        out[name] = Dataset.from_pandas(part[["text", "label"]], features=features, preserve_index=False)
    return DatasetDict(out)


def load_movie_reviews(profile: str | None = None):
    """Rotten Tomatoes snippets as a ``DatasetDict`` (train / validation / test), labels rotten/fresh."""
    return _to_dataset_dict(split_frame(movie_reviews_frame()), MOVIE_LABELS, profile)


def load_tweets(profile: str | None = None):
    """Cleaned tweets as a ``DatasetDict`` (train / validation / test), labels negative/neutral/positive."""
    return _to_dataset_dict(split_frame(tweets_frame()), TWEET_LABELS, profile)


def load_course_dataset(name: str, profile: str | None = None):
    """``"movie_reviews"`` or ``"tweets"``."""
    loaders = {"movie_reviews": load_movie_reviews, "tweets": load_tweets}
    if name not in loaders:
        raise ValueError(f"Unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    return loaders[name](profile)
