"""Answer-only labels and label-word scoring (course_lib.instruction) with the real SmolLM2 tokenizer and a
small Llama model from transformers: the masked loss is the cross-entropy of the answer tokens alone, and the
label-word logits are the matching columns of the model's full logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import course_lib  # noqa: F401  (offline mode first)
from course_lib import assets
from course_lib.instruction import (IGNORE_INDEX, LABEL_WORDS, answer_only_example, collate, encode,
                                    label_token_ids, label_word_logits, last_prompt_states, next_token_logits, prompt)
from course_lib.runtime.errors import CourseInputError

REVIEWS = ["A warm, funny and beautifully acted film.", "Two hours I will never get back.",
           "Not the best film of the year, but I smiled all the way through it, and so did my kids."]


@pytest.fixture(scope="module")
def tokenizer():
    return assets.load_decoder_tokenizer()


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_label_words_are_single_tokens_of_smollm2(tokenizer):
    ids = label_token_ids(tokenizer)
    assert ids == [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w))[0] for w in LABEL_WORDS]
    assert [tokenizer.decode([i]) for i in ids] == list(LABEL_WORDS)
    with pytest.raises(ValueError, match="is 2 tokens"):
        label_token_ids(tokenizer, [" positive", " a b"])


def test_prompt_and_encoding_cut_long_reviews_and_append_the_label_word(tokenizer):
    assert prompt("  Fine film. ") == "Review: Fine film.\nSentiment:"
    with pytest.raises(ValueError, match="non-empty review"):
        prompt("   ")
    examples = encode(tokenizer, REVIEWS, [1, 0, 1], max_review_tokens=8)
    long_prompt = tokenizer.decode(examples[2]["prompt_ids"])
    assert long_prompt.startswith("Review: Not the best film") and long_prompt.endswith("\nSentiment:")
    assert "kids" not in long_prompt  # cut to 8 review tokens
    assert [e["answer_ids"] for e in examples] == [[label_token_ids(tokenizer)[i]] for i in (1, 0, 1)]
    with pytest.raises(ValueError, match="one label per review"):
        encode(tokenizer, REVIEWS, [1])


def test_answer_only_example_masks_prompt_and_padding_with_minus_100():
    input_ids, attention_mask, labels = answer_only_example([5, 6, 7], [9], 6, pad_id=2)
    assert input_ids.tolist() == [5, 6, 7, 9, 2, 2]
    assert attention_mask.tolist() == [1, 1, 1, 1, 0, 0]
    assert labels.tolist() == [-100, -100, -100, 9, -100, -100]
    assert input_ids.dtype == attention_mask.dtype == labels.dtype == torch.long
    with pytest.raises(ValueError, match="shorter than the prompt and answer"):
        answer_only_example([1, 2], [3], 2, pad_id=0)
    with pytest.raises(ValueError, match="prompt_ids must be a non-empty list of token ids"):
        answer_only_example([], [3], 4, pad_id=0)


def test_masked_loss_is_the_cross_entropy_of_the_answer_tokens_alone(tokenizer, tiny_llama):
    examples = encode(tokenizer, REVIEWS, [1, 0, 1])
    batch = collate(examples, pad_id=tokenizer.pad_token_id)  # (B, T) each, right-padded
    loss = tiny_llama(**batch).loss
    with torch.no_grad():
        logits = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    by_hand = []
    for row, example in enumerate(examples):
        last_prompt = len(example["prompt_ids"]) - 1  # this position predicts the answer token
        by_hand.append(F.cross_entropy(logits[row, last_prompt][None], torch.tensor(example["answer_ids"])))
    torch.testing.assert_close(loss, torch.stack(by_hand).mean(), atol=1e-5, rtol=1e-5)
    assert (batch["labels"] != IGNORE_INDEX).sum() == len(examples)


def test_label_word_logits_are_the_full_logits_at_the_last_prompt_token(tokenizer, tiny_llama):
    examples = encode(tokenizer, REVIEWS)
    got = label_word_logits(tiny_llama, tokenizer, examples, batch_size=2)  # (3, 2), padded batches
    ids = label_token_ids(tokenizer)
    with torch.no_grad():
        expected = torch.stack([tiny_llama(input_ids=torch.tensor([e["prompt_ids"]])).logits[0, -1, ids]
                                for e in examples])  # each prompt alone, no padding
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_label_word_logits_work_through_a_peft_wrapper(tokenizer, tiny_llama):
    import copy

    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(copy.deepcopy(tiny_llama), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    examples = encode(tokenizer, REVIEWS[:2])
    torch.testing.assert_close(label_word_logits(wrapped, tokenizer, examples),
                               label_word_logits(tiny_llama, tokenizer, examples), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- refused input
class _NoPadTokenizer:
    """Callable and decodes, but has neither a pad nor an end-of-sequence token (like some base tokenizers)."""
    pad_token_id = eos_token_id = None

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


@pytest.fixture(scope="module")
def small_vocab_llama():
    """A causal LM with 100 tokens only: SmolLM2's ids (up to 49151) lie outside its vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("review", [None, 5, "", "   ", ["A fine film."]])
def test_prompt_refuses_what_is_not_a_review_text(review):
    with pytest.raises(CourseInputError, match=r"expected a non-empty review text \(a str\)"):
        prompt(review)


@pytest.mark.parametrize("tok, words, message", [
    (None, LABEL_WORDS, "tokenizer must be a transformers tokenizer.*got NoneType"),
    ("gpt2", LABEL_WORDS, "tokenizer must be a transformers tokenizer.*got str"),
    ("smollm2", [], "words must be a non-blank string or a list of them, got \\[\\]"),
    ("smollm2", None, "words must be a non-blank string or a list of them, got None"),
    ("smollm2", [" positive", None], "words must be a non-blank string or a list of them"),
    ("smollm2", [" positive", " "], "words must be a non-blank string or a list of them"),
    ("smollm2", [" positive", " positive"], r"share token ids \[\d+, \d+\]; pick words with distinct tokens"),
])
def test_label_token_ids_refuses_bad_tokenizers_and_words(tokenizer, tok, words, message):
    with pytest.raises(CourseInputError, match=message):
        label_token_ids(tokenizer if tok == "smollm2" else tok, words)


def test_label_token_ids_reads_one_string_as_one_word(tokenizer):
    assert label_token_ids(tokenizer, " positive") == label_token_ids(tokenizer)[1:]


@pytest.mark.parametrize("args, message", [
    ((None, [3], 4, 0), r"prompt_ids must be a non-empty list of token ids \(ints >= 0\), got None"),
    (("abc", [3], 4, 0), "prompt_ids must be a non-empty list of token ids.*got 'abc'"),
    (([1.5], [3], 4, 0), r"prompt_ids must be a non-empty list of token ids.*got \[1.5\]"),
    (([-5], [3], 4, 0), r"prompt_ids must be a non-empty list of token ids.*got \[-5\]"),
    (([True], [3], 4, 0), r"prompt_ids must be a non-empty list of token ids.*got \[True\]"),
    (([1], [], 4, 0), r"answer_ids must be a non-empty list of token ids.*got \[\]"),
    (([1], None, 4, 0), "answer_ids must be a non-empty list of token ids.*got None"),
    (([1], [3], None, 0), "length must be an integer >= 1, got None"),
    (([1], [3], 4.0, 0), "length must be an integer >= 1, got 4.0"),
    (([1], [3], True, 0), "length must be an integer >= 1, got True"),
    (([1], [3], 0, 0), "length must be an integer >= 1, got 0"),
    (([1], [3], 1, 0), r"length 1 is shorter than the prompt and answer \(2 tokens\): pass at least 2"),
    (([1], [3], 4, None), "pad_id must be an integer >= 0, got None"),
    (([1], [3], 4, -1), "pad_id must be an integer >= 0, got -1"),
    (([1], [3], 4, 1.0), "pad_id must be an integer >= 0, got 1.0"),
])
def test_answer_only_example_refuses_bad_ids_lengths_and_padding(args, message):
    with pytest.raises(CourseInputError, match=message):
        answer_only_example(*args)


@pytest.mark.parametrize("tok, reviews, labels, max_tokens, message", [
    (None, REVIEWS, None, 32, "tokenizer must be a transformers tokenizer"),
    ("smollm2", None, None, 32, "reviews must be a non-empty list, got NoneType"),
    ("smollm2", "A fine film.", None, 32, "reviews must be a non-empty list, got str"),
    ("smollm2", [], None, 32, "reviews must be a non-empty list, got list"),
    ("smollm2", ["A fine film.", None], None, 32, r"reviews\[1\] must be a non-empty text \(a str\), got None"),
    ("smollm2", ["A fine film.", "  "], None, 32, r"reviews\[1\] must be a non-empty text \(a str\), got '  '"),
    ("smollm2", REVIEWS, 5, 32, "labels must be a non-empty list, got int"),
    ("smollm2", REVIEWS, [1], 32, r"expected one label per review \(3\), got 1"),
    ("smollm2", REVIEWS, [1, 0, 2], 32, r"labels\[2\] must be a label index in 0\.\.1 .*got 2"),
    ("smollm2", REVIEWS, [1, -1, 0], 32, r"labels\[1\] must be a label index in 0\.\.1 .*got -1"),
    ("smollm2", REVIEWS, [None, 0, 1], 32, r"labels\[0\] must be a label index in 0\.\.1 .*got None"),
    ("smollm2", REVIEWS, [True, 0, 1], 32, r"labels\[0\] must be a label index in 0\.\.1 .*got True"),
    ("smollm2", REVIEWS, [0.5, 0, 1], 32, r"labels\[0\] must be a label index in 0\.\.1 .*got 0.5"),
    ("smollm2", REVIEWS, None, 0, "max_review_tokens must be an integer >= 1, got 0"),
    ("smollm2", REVIEWS, None, -1, "max_review_tokens must be an integer >= 1, got -1"),
    ("smollm2", REVIEWS, None, None, "max_review_tokens must be an integer >= 1, got None"),
    ("smollm2", REVIEWS, None, True, "max_review_tokens must be an integer >= 1, got True"),
])
def test_encode_refuses_bad_reviews_labels_and_lengths(tokenizer, tok, reviews, labels, max_tokens, message):
    with pytest.raises(CourseInputError, match=message):
        encode(tokenizer if tok == "smollm2" else tok, reviews, labels, max_review_tokens=max_tokens)


def test_encode_takes_labels_as_numpy_and_tensor_values(tokenizer):
    import numpy as np

    expected = encode(tokenizer, REVIEWS[:2], [1, 0])
    assert encode(tokenizer, REVIEWS[:2], np.array([1, 0])) == expected
    assert encode(tokenizer, REVIEWS[:2], torch.tensor([1, 0])) == expected


@pytest.mark.parametrize("examples, pad_id, message", [
    ([], 0, r"examples must be a non-empty list, got list \[\]"),
    (None, 0, "examples must be a non-empty list, got NoneType"),
    ({"prompt_ids": [1], "answer_ids": [2]}, 0, "examples must be a non-empty list, got dict"),
    ([None], 0, r"examples\[0\] has no \['prompt_ids', 'answer_ids'\]: pass dicts from encode\(\)"),
    ([{"prompt_ids": [1], "answer_ids": [2]}, {"prompt_ids": [1]}], 0,
     r"examples\[1\] has no \['answer_ids'\]: pass dicts from encode\(\) \(with labels for training\)"),
    ([{"prompt_ids": None, "answer_ids": [2]}], 0, r"examples\[0\]\['prompt_ids'\] must be a non-empty list"),
    ([{"prompt_ids": [1], "answer_ids": [-100]}], 0, r"examples\[0\]\['answer_ids'\] must be a non-empty list"),
    ([{"prompt_ids": [1], "answer_ids": [2]}], None, "pad_id must be an integer >= 0, got None"),
    ([{"prompt_ids": [1], "answer_ids": [2]}], -1, "pad_id must be an integer >= 0, got -1"),
])
def test_collate_refuses_empty_batches_unlabelled_examples_and_bad_padding(examples, pad_id, message):
    with pytest.raises(CourseInputError, match=message):
        collate(examples, pad_id)


def test_collate_refuses_examples_encoded_without_labels(tokenizer):
    with pytest.raises(CourseInputError, match=r"examples\[0\] has no \['answer_ids'\]"):
        collate(encode(tokenizer, REVIEWS), tokenizer.pad_token_id)


@pytest.mark.parametrize("model, examples, pad_id, batch_size, message", [
    ("tiny", [], 0, 16, "examples must be a non-empty list"),
    ("tiny", [{"ids": [1]}], 0, 16, r"examples\[0\] has no \['prompt_ids'\]"),
    ("tiny", [{"prompt_ids": [1, 2.0]}], 0, 16, r"examples\[0\]\['prompt_ids'\] must be a non-empty list of token"),
    ("tiny", [{"prompt_ids": [1]}], None, 16, "pad_id must be an integer >= 0, got None"),
    ("tiny", [{"prompt_ids": [1]}], -1, 16, "pad_id must be an integer >= 0, got -1"),
    ("tiny", [{"prompt_ids": [1]}], 10**6, 16, r"pad_id 1000000 is outside the model's vocabulary of \d+ tokens"),
    ("tiny", [{"prompt_ids": [1]}], 0, 0, "batch_size must be an integer >= 1, got 0"),
    ("tiny", [{"prompt_ids": [1]}], 0, -1, "batch_size must be an integer >= 1, got -1"),
    ("tiny", [{"prompt_ids": [1]}], 0, True, "batch_size must be an integer >= 1, got True"),
    ("small", [{"prompt_ids": [1]}, {"prompt_ids": [5, 100]}], 0, 16,
     r"examples\[1\]\['prompt_ids'\] holds a token id >= 100, outside the model's vocabulary"),
    (None, [{"prompt_ids": [1]}], 0, 16, r"expected a causal LM with an output layer without bias.*got NoneType"),
    (torch.nn.Linear(2, 2), [{"prompt_ids": [1]}], 0, 16, "expected a causal LM.*got Linear"),
])
def test_last_prompt_states_refuses_bad_models_examples_and_ids(tiny_llama, small_vocab_llama, model, examples,
                                                                pad_id, batch_size, message):
    model = {"tiny": tiny_llama, "small": small_vocab_llama}.get(model, model) if isinstance(model, str) else model
    was_training = getattr(model, "training", None)
    with pytest.raises(CourseInputError, match=message):
        last_prompt_states(model, examples, pad_id, batch_size)
    assert getattr(model, "training", None) == was_training


@pytest.mark.parametrize("function", [next_token_logits, label_word_logits])
@pytest.mark.parametrize("model, tok, examples, message", [
    ("tiny", None, [{"prompt_ids": [1]}], "tokenizer must be a transformers tokenizer"),
    ("tiny", "no pad", [{"prompt_ids": [1]}], "neither a pad nor an end-of-sequence token: set tokenizer.pad_token_id"),
    ("tiny", "smollm2", [], "examples must be a non-empty list"),
    (None, "smollm2", [{"prompt_ids": [1]}], "expected a causal LM with an output layer without bias"),
])
def test_logits_refuse_bad_models_tokenizers_and_examples(tokenizer, tiny_llama, small_vocab_llama, function, model,
                                                          tok, examples, message):
    model = {"tiny": tiny_llama, "small": small_vocab_llama}.get(model)
    tok = {"smollm2": tokenizer, "no pad": _NoPadTokenizer(tokenizer)}.get(tok)
    with pytest.raises(CourseInputError, match=message):
        function(model, tok, examples)


def test_logits_refuse_token_ids_outside_the_model_vocabulary(tokenizer, small_vocab_llama):
    with pytest.raises(CourseInputError, match=r"examples\[0\]\['prompt_ids'\] holds a token id >= 100, outside"):
        next_token_logits(small_vocab_llama, tokenizer, encode(tokenizer, REVIEWS))
    assert next_token_logits(small_vocab_llama, tokenizer, [{"prompt_ids": [1, 5]}]).shape == (1, 100)
    with pytest.raises(CourseInputError, match=r"the label words' token ids \[\d+, \d+\] are outside the model's "
                                               r"vocabulary of 100 tokens: pass the model's own tokenizer"):
        label_word_logits(small_vocab_llama, tokenizer, [{"prompt_ids": [1, 5]}])
