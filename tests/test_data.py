"""The course data sets: seeded, disjoint, complete splits with named labels; tweets cleaned."""
from __future__ import annotations

import re

import pytest

from course_lib import data, settings


def _texts(split) -> set[str]:
    return set(split["text"])


@pytest.mark.parametrize("loader,frame", [(data.load_movie_reviews, data.movie_reviews_frame),
                                          (data.load_tweets, data.tweets_frame)])
def test_full_splits_are_disjoint_and_cover_the_data(loader, frame):
    splits = loader(profile="full")
    train, validation, test = (_texts(splits[name]) for name in ("train", "validation", "test"))
    assert not (train & validation) and not (train & test) and not (validation & test)
    assert len(train) + len(validation) + len(test) == len(frame())
    assert train | validation | test == set(frame()["text"])
    assert abs(len(train) / len(frame()) - 0.8) < 0.01


@pytest.mark.parametrize("loader", [data.load_movie_reviews, data.load_tweets])
def test_splits_are_deterministic(loader):
    first, second = loader(profile="full"), loader(profile="full")
    for name in ("train", "validation", "test"):
        assert list(first[name]["text"]) == list(second[name]["text"])
        assert list(first[name]["label"]) == list(second[name]["label"])


@pytest.mark.parametrize("loader", [data.load_movie_reviews, data.load_tweets])
def test_quick_profile_is_a_fixed_subset_of_full(loader):
    quick, full = loader(profile="quick"), loader(profile="full")
    for name, rows in settings.get_profile("quick").split_rows.items():
        assert len(quick[name]) == rows
        assert _texts(quick[name]) <= _texts(full[name])


def test_label_names_and_class_balance_of_movie_reviews(movie_reviews_full):
    features = movie_reviews_full["train"].features["label"]
    assert features.names == ["rotten", "fresh"]
    labels = list(movie_reviews_full["train"]["label"]) + list(movie_reviews_full["test"]["label"])
    share_fresh = sum(labels) / len(labels)
    assert 0.55 < share_fresh < 0.6  # 7,403 fresh of 12,808 in the source


def test_label_names_of_tweets_and_stratification(tweets_full):
    assert tweets_full["train"].features["label"].names == ["negative", "neutral", "positive"]
    shares = []
    for name in ("train", "validation", "test"):
        labels = list(tweets_full[name]["label"])
        shares.append([labels.count(k) / len(labels) for k in range(3)])
    for k in range(3):
        assert max(s[k] for s in shares) - min(s[k] for s in shares) < 0.01


@pytest.mark.parametrize("raw,clean", [
    ("@elonmusk self-driving cars are here https://t.co/abc123", "@user self-driving cars are here http"),
    ("RT @a_b: see www.example.com/page   now", "RT @user: see http now"),
    ("  no\thandles\nhere ", "no handles here"),
])
def test_clean_tweet_normalises_handles_urls_and_spaces(raw, clean):
    assert data.clean_tweet(raw) == clean


def test_cleaned_tweets_have_no_handles_urls_filtered_words_or_duplicates(tweets_full):
    texts = [t for name in tweets_full for t in tweets_full[name]["text"]]
    assert len(texts) == len(set(texts))
    handles = [t for t in texts if re.search(r"@(?!user\b)\w+", t)]
    assert not handles, handles[:3]
    assert not [t for t in texts if re.search(r"https?://|\bwww\.\S", t, re.I)]
    words = data.offensive_words()
    assert len(words) > 20
    offending = [t for t in texts if set(re.findall(r"[a-z]+", t.lower())) & words]
    assert not offending, offending[:3]


def test_the_filter_really_removes_tweets_from_the_raw_file():
    import pandas as pd

    from course_lib import assets

    raw = pd.read_csv(assets.tweets_path(), encoding="latin-1")["text"].astype(str)
    flagged = raw.map(data.is_offensive).sum()
    assert flagged > 100  # the raw corpus does contain such tweets
    assert len(data.tweets_frame()) < len(raw) - flagged + 1


def test_unknown_data_set_name_is_rejected():
    with pytest.raises(ValueError, match="movie_reviews"):
        data.load_course_dataset("imdb")
