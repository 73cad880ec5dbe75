"""The course's own fine-tuned sentiment model behind lesson 00's pipeline."""
import torch

from course_lib import sentiment
from course_lib.assets import load_tokenizer


def test_sentiment_model_records_how_it_was_made_and_is_better_than_chance():
    info = sentiment.sentiment_model_info()
    assert info["recipe"]["steps"] == sentiment.RECIPE["steps"]
    assert info["validation_accuracy"] > 0.75  # majority class is ~0.58


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
