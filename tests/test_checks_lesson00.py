"""Lesson 00 exercises: references agree with torch / transformers, and the checker explains each mistake."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.checks import check
from course_lib.checks.lesson00 import count_parameters, make_batch, predicted_labels, probabilities


def test_correct_answers_written_differently_also_pass():
    assert check("00.softmax", lambda z: torch.softmax(z, dim=-1)).passed
    assert check("00.softmax", lambda z: torch.nn.functional.softmax(z, dim=1)).passed
    assert check("00.labels", lambda z, names: [names[int(i)] for i in z.max(dim=1).indices]).passed
    assert check("00.parameters", lambda m, trainable_only=False: sum(
        p.numel() for p in m.parameters() if p.requires_grad or not trainable_only)).passed


def test_wrong_answer_outside_the_known_mistakes_fails_without_a_hint():
    result = check("00.softmax", lambda z: torch.sigmoid(z))
    assert not result.passed and result.hint is None and "on the sentiment model's logits" in result.message


# ------------------------------------------------------------------ references against the real libraries
def test_make_batch_equals_the_tokenizers_own_padding(tokenizer):
    texts = ["A film.", "The plot is a mess and the jokes never land.", "Warm and funny."]
    ids = [tokenizer(text)["input_ids"] for text in texts]
    ours = make_batch(ids, pad_id=tokenizer.pad_token_id)
    theirs = tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])


def test_probabilities_equal_torch_softmax_and_stay_finite_for_huge_logits():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0)) * 4
    torch.testing.assert_close(probabilities(logits), torch.softmax(logits, dim=-1))
    huge = torch.tensor([[1000.0, 1001.0], [-1000.0, -1002.0]])
    torch.testing.assert_close(probabilities(huge), torch.softmax(huge, dim=-1))
    assert torch.isfinite(probabilities(huge)).all()


@pytest.mark.slow
def test_labels_and_probabilities_reproduce_the_sentiment_pipeline():
    from transformers import AutoModelForSequenceClassification

    from course_lib.sentiment import load_sentiment_pipeline, sentiment_model_path

    texts = ["A warm, funny and beautifully acted film.", "The plot is a mess and the jokes never land."]
    classify = load_sentiment_pipeline()
    model = AutoModelForSequenceClassification.from_pretrained(sentiment_model_path()).eval()
    batch = make_batch([classify.tokenizer(t)["input_ids"] for t in texts], pad_id=classify.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**batch).logits  # (2, 2)
    results = classify(texts)
    assert predicted_labels(logits, model.config.id2label) == [r["label"] for r in results] == ["fresh", "rotten"]
    scores = probabilities(logits).max(dim=-1).values
    torch.testing.assert_close(scores, torch.tensor([r["score"] for r in results]), atol=1e-5, rtol=0)


def test_count_parameters_equals_transformers_num_parameters(hf_encoder):
    assert count_parameters(hf_encoder) == hf_encoder.num_parameters() == 22_713_216


def test_count_parameters_counts_tied_weights_once_and_respects_frozen_layers():
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, tie_word_embeddings=True)
    model = BertForMaskedLM(config)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    model.bert.embeddings.requires_grad_(False)
    assert count_parameters(model) == model.num_parameters()
    assert count_parameters(model, trainable_only=True) == model.num_parameters(only_trainable=True)
    assert count_parameters(model, trainable_only=True) < count_parameters(model)


# ------------------------------------------------------------------ clear errors on bad input
def test_bad_inputs_get_errors_that_name_what_was_expected():
    with pytest.raises(ValueError, match="non-empty list"):
        make_batch([])
    with pytest.raises(ValueError, match=r"sequence\(s\) \[1\] are empty"):
        make_batch([[1, 2], []])
    with pytest.raises(ValueError, match=r"shape \(batch, classes\), got \(3,\)"):
        probabilities(torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"no name for class id\(s\) \[2\]"):
        predicted_labels(torch.tensor([[0.0, 0.0, 5.0]]), {0: "rotten", 1: "fresh"})
    with pytest.raises(TypeError, match="expected a torch.nn.Module, got list"):
        count_parameters([nn.Linear(2, 2)])
