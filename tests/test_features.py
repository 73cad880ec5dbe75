"""Feature extraction: pooling, batching and every layer's hidden states agree with transformers run text by text, and
the cache is used."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.features import dataset_features, extract_features, feature_cache_path

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations

TEXTS = [
    "A warm, funny and beautifully acted film.",
    "Dull.",
    "The plot is a mess, the jokes never land, and the two leads seem to be acting in different movies.",
    "An intelligent thriller that trusts its audience.",
    "Not bad at all",
]


def _hidden_alone(model, tokenizer, text: str) -> torch.Tensor:
    """transformers' last hidden state of one text, no padding: (T, D)."""
    with torch.no_grad():
        return model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0]


# ------------------------------------------------------------------ extraction against transformers
def test_mean_pooling_of_a_padded_batch_equals_each_text_alone(hf_encoder, tokenizer):
    ours = extract_features(TEXTS, hf_encoder, tokenizer, poolings="mean", batch_size=len(TEXTS),
                            sort_by_length=False, progress=False)["mean"]  # one batch: short texts are padded
    alone = np.stack([_hidden_alone(hf_encoder, tokenizer, t).mean(dim=0).numpy() for t in TEXTS])
    np.testing.assert_allclose(ours, alone, atol=1e-5, rtol=0)


def test_cls_pooling_equals_transformers_last_hidden_state_first_token(hf_encoder, tokenizer):
    ours = extract_features(TEXTS, hf_encoder, tokenizer, poolings="cls", progress=False)["cls"]
    with torch.no_grad():
        theirs = hf_encoder(**tokenizer(TEXTS, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5, rtol=0)


def test_batches_sorted_by_length_come_back_in_the_original_order(hf_encoder_sdpa, tokenizer):
    batched = extract_features(TEXTS, hf_encoder_sdpa, tokenizer, batch_size=2, sort_by_length=True, progress=False)
    singles = [extract_features([t], hf_encoder_sdpa, tokenizer, batch_size=1, progress=False) for t in TEXTS]
    for pooling in ("cls", "mean"):
        one_by_one = np.concatenate([single[pooling] for single in singles])  # (N, D)
        np.testing.assert_allclose(batched[pooling], one_by_one, atol=1e-5, rtol=0)
    assert batched["mean"].shape == (len(TEXTS), 384) and batched["mean"].dtype == np.float32


def test_sdpa_and_eager_attention_give_the_same_features(hf_encoder, hf_encoder_sdpa, tokenizer):
    eager = extract_features(TEXTS, hf_encoder, tokenizer, progress=False)
    sdpa = extract_features(TEXTS, hf_encoder_sdpa, tokenizer, progress=False)
    for pooling in ("cls", "mean"):
        np.testing.assert_allclose(eager[pooling], sdpa[pooling], atol=1e-5, rtol=0)


def test_truncation_to_max_length_matches_the_truncated_text_alone(hf_encoder, tokenizer):
    long_text = TEXTS[2]
    ours = extract_features([long_text], hf_encoder, tokenizer, poolings="mean", max_length=8, progress=False)
    with torch.no_grad():
        hidden = hf_encoder(**tokenizer([long_text], truncation=True, max_length=8, return_tensors="pt"))
    np.testing.assert_allclose(ours["mean"][0], hidden.last_hidden_state[0].mean(dim=0).numpy(), atol=1e-5, rtol=0)


def test_a_model_in_training_mode_gives_dropout_free_features_and_stays_in_training_mode(hf_encoder, tokenizer):
    reference = extract_features(TEXTS[:2], hf_encoder, tokenizer, progress=False)
    hf_encoder.train()
    try:
        again = extract_features(TEXTS[:2], hf_encoder, tokenizer, progress=False)
        assert hf_encoder.training
    finally:
        hf_encoder.eval()
    np.testing.assert_array_equal(again["mean"], reference["mean"])


def test_all_layers_pools_every_hidden_state_as_transformers_gives_it_text_by_text(hf_encoder_sdpa, tokenizer):
    layers = extract_features(TEXTS, hf_encoder_sdpa, tokenizer, batch_size=2, all_layers=True, progress=False)
    assert layers["mean"].shape == layers["cls"].shape == (7, len(TEXTS), 384)  # embeddings + 6 layers
    for row, text in enumerate(TEXTS):
        with torch.no_grad():
            hidden_states = hf_encoder_sdpa(**tokenizer([text], return_tensors="pt"),
                                            output_hidden_states=True).hidden_states  # 7 of (1, T, D)
        expected_mean = np.stack([h[0].mean(dim=0).numpy() for h in hidden_states])  # (7, D)
        expected_cls = np.stack([h[0, 0].numpy() for h in hidden_states])  # (7, D)
        np.testing.assert_allclose(layers["mean"][:, row], expected_mean, atol=1e-5, rtol=0)
        np.testing.assert_allclose(layers["cls"][:, row], expected_cls, atol=1e-5, rtol=0)
    assert not np.allclose(layers["mean"][0], layers["mean"][-1], atol=1e-2)  # the layers really differ


def test_last_of_all_layers_equals_the_default_last_layer_features(hf_encoder_sdpa, tokenizer):
    last = extract_features(TEXTS, hf_encoder_sdpa, tokenizer, batch_size=2, progress=False)
    layers = extract_features(TEXTS, hf_encoder_sdpa, tokenizer, batch_size=2, all_layers=True, progress=False)
    for pooling in ("cls", "mean"):
        np.testing.assert_allclose(layers[pooling][-1], last[pooling], atol=1e-6, rtol=0)
        assert last[pooling].shape == (len(TEXTS), 384)


def test_progress_bar_counts_texts(hf_encoder_sdpa, tokenizer, capsys):
    extract_features(TEXTS, hf_encoder_sdpa, tokenizer, batch_size=2, desc="demo")
    printed = capsys.readouterr().out
    assert "demo: 100%" in printed and "5/5" in printed


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("texts, error, message", [
    ([], ValueError, "at least one text, got an empty list"),
    (["fine", 3], TypeError, "every text to be a str, got int at position 1"),
    (["fine", None], TypeError, "got NoneType at position 1"),
    ("a single text", TypeError, "got a single str"),
    (42, TypeError, "expected a list of texts, got int"),
])
def test_bad_texts_are_rejected_with_a_clear_message(texts, error, message, hf_encoder_sdpa, tokenizer):
    with pytest.raises(error, match=message):
        extract_features(texts, hf_encoder_sdpa, tokenizer, progress=False)


def test_unknown_pooling_and_bad_batch_size_are_rejected(hf_encoder_sdpa, tokenizer):
    with pytest.raises(ValueError, match=r"poolings from \('cls', 'mean'\), got 'max'"):
        extract_features(TEXTS, hf_encoder_sdpa, tokenizer, poolings="max")
    with pytest.raises(ValueError, match="batch_size >= 1, got 0"):
        extract_features(TEXTS, hf_encoder_sdpa, tokenizer, batch_size=0)
    with pytest.raises(TypeError, match="all_layers must be True or False, got 'all'"):
        extract_features(TEXTS, hf_encoder_sdpa, tokenizer, all_layers="all")


# ------------------------------------------------------------------ the on-disk cache
@pytest.mark.slow
def test_dataset_features_are_cached_per_data_set_profile_split_and_pooling(
        tmp_path, monkeypatch, hf_encoder_sdpa, tokenizer):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    first = dataset_features("movie_reviews", "test", profile="quick", model=hf_encoder_sdpa, tokenizer=tokenizer,
                             progress=False)
    files = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert len(files) == 2 and all(f.startswith("movie_reviews-quick-test-") for f in files)
    assert any("-cls-" in f for f in files) and any("-mean-" in f for f in files)
    assert first["mean"].shape == (500, 384)

    # the second call reads the files: make the cached mean features recognisable, then read them back
    mean_file = next(p for p in (tmp_path / "features").iterdir() if "-mean-" in p.name)
    np.save(mean_file, np.zeros((500, 384), dtype=np.float32))
    cached = dataset_features("movie_reviews", "test", profile="quick", model=hf_encoder_sdpa, tokenizer=tokenizer,
                              progress=False)
    assert not cached["mean"].any()
    np.testing.assert_array_equal(cached["cls"], first["cls"])


def test_cache_key_separates_data_sets_profiles_splits_poolings_and_lengths(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    base = ("movie_reviews", "quick", "train", "mean", 128, "abc")
    paths = {feature_cache_path(*base)}
    for position, other in enumerate(["tweets", "full", "test", "cls", 64, "def"]):
        changed = list(base)
        changed[position] = other
        paths.add(feature_cache_path(*changed))
    assert len(paths) == 7 and all(p.parent == tmp_path / "features" for p in paths)


def test_dataset_features_rejects_unknown_data_sets_and_splits(hf_encoder_sdpa, tokenizer):
    with pytest.raises(ValueError, match="Unknown data set 'imdb'"):
        dataset_features("imdb", model=hf_encoder_sdpa, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"split from \['train', 'validation', 'test'\], got 'dev'"):
        dataset_features("tweets", "dev", profile="quick", model=hf_encoder_sdpa, tokenizer=tokenizer)


def test_features_that_cannot_be_written_are_still_returned_with_a_warning(tmp_path, monkeypatch,
                                                                            hf_encoder_sdpa, tokenizer):
    blocked = tmp_path / "course-cache"
    blocked.write_text("a file where the cache folder should be: every write under it fails, as on a read-only class cache")
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("course_lib.features.cache_dir", lambda: blocked)
    with pytest.warns(UserWarning, match="features not cached"):
        features = dataset_features("movie_reviews", "test", profile="quick", model=hf_encoder_sdpa,
                                    tokenizer=tokenizer, progress=False)
    assert features["mean"].shape == (500, 384) and blocked.is_file()
