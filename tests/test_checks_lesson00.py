"""Lesson 00 exercises: references agree with torch / transformers, and the checker explains each mistake."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from course_lib.checks import check
from course_lib.checks.lesson00 import (
    classify_by_hand,
    count_parameters,
    length_sorted_batches,
    make_batch,
    predicted_labels,
    probabilities,
)


def test_correct_answers_written_differently_also_pass():
    def batch_with_torch_padding(sequences, pad_id=0):
        rows = [torch.tensor(ids) for ids in sequences]
        mask = [torch.ones(len(ids), dtype=torch.long) for ids in sequences]
        return {"input_ids": pad_sequence(rows, batch_first=True, padding_value=pad_id),
                "attention_mask": pad_sequence(mask, batch_first=True)}

    assert check("00.batch", batch_with_torch_padding).passed
    assert check("00.softmax", lambda z: torch.softmax(z, dim=-1)).passed
    assert check("00.softmax", lambda z: torch.nn.functional.softmax(z.double(), dim=1)).passed  # float64 is fine
    assert check("00.labels", lambda z, names: [names[int(i)] for i in z.max(dim=1).indices]).passed
    assert check("00.labels", lambda z, names: tuple(map(names.get, z.argmax(-1).tolist()))).passed  # a tuple
    assert check("00.parameters", lambda m, trainable_only=False: sum(
        p.numel() for p in m.parameters() if p.requires_grad or not trainable_only)).passed
    assert check("00.parameters", lambda m, trainable_only=False: int(sum(
        np.prod(p.shape) for p in m.parameters() if p.requires_grad or not trainable_only))).passed


def _classify_one_at_a_time(texts, tokenizer, model):
    """No padding at all: one forward pass per text, as the pipeline itself does."""
    model.eval()
    results = []
    for text in [texts] if isinstance(texts, str) else texts:
        encoded = tokenizer(text, truncation=True, max_length=512, return_tensors="pt")
        with torch.no_grad():
            probs = model(**encoded).logits[0].softmax(dim=0)  # (C,)
        best = int(probs.argmax())
        results.append({"label": model.config.id2label[best], "score": float(probs[best])})
    return results


def _classify_with_log_softmax(texts, tokenizer, model):
    texts = [texts] if isinstance(texts, str) else texts
    model.train(False)
    with torch.inference_mode():
        batch = tokenizer(texts, padding="longest", truncation=True, return_tensors="pt")
        log_probs = torch.log_softmax(model(**batch).logits, dim=1)  # (B, C)
    best = log_probs.argmax(dim=1)
    return [{"score": log_probs[row, c].exp().item(), "label": model.config.id2label[c.item()]}
            for row, c in enumerate(best)]


def test_right_answers_to_the_core_and_stretch_exercises_written_differently_pass():
    assert check("00.classify", _classify_one_at_a_time).passed
    assert check("00.classify", _classify_with_log_softmax).passed
    # the tokens without [CLS] and [SEP]: every length shifts by 2, the order stays
    assert check("00.sorted_batches", lambda texts, tok, size: [
        order[i:i + size] for order in [sorted(range(len(texts)), key=lambda i: (len(tok.tokenize(texts[i])), i))]
        for i in range(0, len(texts), size)]).passed
    assert check("00.sorted_batches", lambda texts, tok, size: [
        chunk.tolist() for chunk in np.array_split(np.argsort([len(ids) for ids in tok(texts)["input_ids"]],
                                                              kind="stable"), range(size, len(texts), size))]).passed


def _batch(sequences, pad_id=0):
    return {"input_ids": pad_sequence([torch.tensor(s) for s in sequences], batch_first=True, padding_value=pad_id)}


def _softmax_global_max(z):
    exp = (z - z.max()).exp()  # one maximum for the whole batch: the other rows can underflow to 0 / 0
    return exp / exp.sum(dim=-1, keepdim=True)


def _softmax_in_place(z):
    z -= z.max(dim=-1, keepdim=True).values  # changes the caller's logits
    return z.exp() / z.exp().sum(dim=-1, keepdim=True)


def _labels_by_position(z, id2label):
    names = list(id2label.values())  # insertion order of the dict, not the class ids
    return [names[i] for i in z.argmax(-1).tolist()]


def _padded_in_place(sequences, pad_id=0):
    longest = max(map(len, sequences))
    for ids in sequences:
        ids += [pad_id] * (longest - len(ids))  # pads the caller's lists
    return {"input_ids": torch.tensor(sequences), "attention_mask": (torch.tensor(sequences) != pad_id).long()}


def _classify_wrong(label_only=False, dict_for_one=False, tensor_score=False, max_length=512, column=None,
                    truncation=True):
    """A batch pipeline by hand with one slip, as students write it."""
    def classify(texts, tokenizer, model):
        single = isinstance(texts, str)
        model.eval()
        batch = tokenizer([texts] if single else texts, padding=True, truncation=truncation,
                          max_length=max_length if truncation else None, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**batch).logits, dim=-1)  # (B, C)
        scores, ids = probs.max(dim=-1)
        if column is not None:
            scores = probs[:, column]
        results = [{"label": model.config.id2label[i], "score": s if tensor_score else s.item()}
                   for s, i in zip(scores, ids.tolist())]
        if label_only:
            return [r["label"] for r in results]
        return results[0] if single and dict_for_one else results
    return classify


def _batches_of_texts(texts, tokenizer, batch_size):
    return [[texts[i] for i in batch] for batch in length_sorted_batches(texts, tokenizer, batch_size)]


def _sorted_within_batches(texts, tokenizer, batch_size):
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return [sorted(range(s, min(s + batch_size, len(texts))), key=lambda i: lengths[i])
            for s in range(0, len(texts), batch_size)]


def _sorted_by_words(texts, tokenizer, batch_size):
    order = sorted(range(len(texts)), key=lambda i: len(texts[i].split()))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # only the label names, no scores
    pytest.param("00.classify", _classify_wrong(label_only=True), "expected a dict with keys ['label', 'score']",
                 id="labels-only"),
    # a single string answered with a bare dict (the pipeline returns a list of one)
    pytest.param("00.classify", _classify_wrong(dict_for_one=True), "on a single string", id="dict-for-one"),
    # the score left as a 0-d tensor
    pytest.param("00.classify", _classify_wrong(tensor_score=True), "score", id="tensor-score"),
    # truncated to the 64 tokens the model was fine-tuned with, not to the model's 512 positions
    pytest.param("00.classify", _classify_wrong(max_length=64), "a review of 680 tokens", id="max-length-64"),
    # the probability of 'fresh' as every text's score
    pytest.param("00.classify", _classify_wrong(column=1), "item 1: score", id="fresh-column"),
    # no truncation: the 680-token review does not fit the 512 position embeddings
    pytest.param("00.classify", _classify_wrong(truncation=False), "your function raised", id="no-truncation"),
    # sorted by words, not tokens
    pytest.param("00.sorted_batches", _sorted_by_words, "20 validation reviews", id="by-words"),
    # the texts themselves instead of their indices
    pytest.param("00.sorted_batches", _batches_of_texts, "expected", id="texts"),
    # batches cut in the original order, each sorted on its own
    pytest.param("00.sorted_batches", _sorted_within_batches, "20 validation reviews", id="sorted-within"),
    # the mask compares ids with pad_id: a real token equal to the pad id gets 0
    pytest.param("00.batch", lambda s, pad_id=0: {**_batch(s, pad_id), "attention_mask": (
        _batch(s, pad_id)["input_ids"] != pad_id).long()}, "a real token equal to the pad id", id="mask-from-ids"),
    # a float matrix filled by hand (torch.zeros defaults to float32)
    pytest.param("00.batch", lambda s, pad_id=0: {k: v.float() for k, v in make_batch(s, pad_id).items()},
                 "expected a torch.int64 tensor, got torch.float32", id="float-tensors"),
    # a boolean mask from the lengths
    pytest.param("00.batch", lambda s, pad_id=0: {**make_batch(s, pad_id), "attention_mask": make_batch(
        s, pad_id)["attention_mask"].bool()}, "expected a torch.int64 tensor, got torch.bool", id="bool-mask"),
    # what the tokenizer returns without return_tensors="pt": lists
    pytest.param("00.batch", lambda s, pad_id=0: {k: v.tolist() for k, v in make_batch(s, pad_id).items()},
                 "expected a torch.Tensor, got list", id="lists"),
    # the result is right but the caller's token lists were padded in place
    pytest.param("00.batch", _padded_in_place, "changed its input", id="pads-the-input-lists"),
    # stability done with one maximum for the whole batch
    pytest.param("00.softmax", _softmax_global_max, "on very large logits", id="global-max"),
    # log-probabilities instead of probabilities
    pytest.param("00.softmax", lambda z: torch.log_softmax(z, dim=-1), "values differ", id="log-softmax"),
    # the max subtracted in place from the caller's logits
    pytest.param("00.softmax", _softmax_in_place, "changed its input", id="in-place-shift"),
    # probabilities as nested lists
    pytest.param("00.softmax", lambda z: torch.softmax(z, dim=-1).tolist(), "expected a torch.Tensor, got list",
                 id="list"),
    # argmin: the least likely class
    pytest.param("00.labels", lambda z, names: [names[i] for i in z.argmin(-1).tolist()], "expected ['fresh'",
                 id="argmin"),
    # the names in the dict's insertion order, which need not be the id order
    pytest.param("00.labels", _labels_by_position, "id2label written as", id="insertion-order"),
    # ties resolved towards the later class (>= instead of >)
    pytest.param("00.labels", lambda z, names: [names[len(row) - 1 - int(row.flip(0).argmax())] for row in z],
                 "ties", id="last-of-ties"),
    # the names as a NumPy array
    pytest.param("00.labels", lambda z, names: np.array([names[i] for i in z.argmax(-1).tolist()]),
                 "expected a list, got a NumPy", id="numpy-array"),
    # only the first text's label, as a string
    pytest.param("00.labels", lambda z, names: names[int(z[0].argmax())], "expected a list, got str", id="one-str"),
    # weights only, biases forgotten
    pytest.param("00.parameters", lambda m, trainable_only=False: sum(
        p.numel() for n, p in m.named_parameters() if n.endswith("weight")), "expected 15, got 12", id="no-biases"),
    # the first dimension of each tensor instead of its number of values
    pytest.param("00.parameters", lambda m, trainable_only=False: sum(p.shape[0] for p in m.parameters()),
                 "nn.Linear(4, 3)", id="shape0"),
    # a tied weight counted under each of its names
    pytest.param("00.parameters", lambda m, trainable_only=False: sum(
        p.numel() for _, p in m.named_parameters(remove_duplicate=False)
        if p.requires_grad or not trainable_only), "one shared weight", id="tied-twice"),
    # trainable_only read the other way round
    pytest.param("00.parameters", lambda m, trainable_only=False: sum(
        p.numel() for p in m.parameters() if not p.requires_grad or not trainable_only),
        "trainable_only=True", id="frozen-counted"),
    # the count as a tensor
    pytest.param("00.parameters", lambda m, trainable_only=False: torch.tensor(count_parameters(m, trainable_only)),
                 "expected an int, got a torch.int64 tensor", id="tensor"),
    # the count as a float
    pytest.param("00.parameters", lambda m, trainable_only=False: float(count_parameters(m, trainable_only)),
                 "expected an int, got float", id="float"),
]



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


@pytest.mark.slow
def test_classify_reference_is_the_pipeline_and_equals_the_steps_by_hand():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from course_lib.sentiment import load_sentiment_pipeline, sentiment_model_path

    texts = ["A warm, funny and beautifully acted film.", "Overlong.", ""]
    tokenizer = AutoTokenizer.from_pretrained(sentiment_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(sentiment_model_path())
    expected = load_sentiment_pipeline()(texts)
    got = classify_by_hand(texts, tokenizer, model)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=1e-6)
    assert _classify_one_at_a_time(texts, tokenizer, model) == got or all(
        abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(_classify_one_at_a_time(texts, tokenizer, model), got))


def test_length_sorted_batches_cut_the_padding_of_real_reviews(tokenizer):
    from course_lib.data import load_movie_reviews

    texts = list(load_movie_reviews(profile="quick")["validation"]["text"][:64])
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]

    def padding(batches):
        return sum(max(lengths[i] for i in batch) * len(batch) - sum(lengths[i] for i in batch) for batch in batches)

    natural = [list(range(s, min(s + 8, 64))) for s in range(0, 64, 8)]
    batches = length_sorted_batches(texts, tokenizer, 8)
    assert sorted(i for batch in batches for i in batch) == list(range(64))
    assert padding(batches) < padding(natural) / 3
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        length_sorted_batches(texts, tokenizer, 0)
