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
                                    label_token_ids, label_word_logits, prompt)

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
    with pytest.raises(ValueError, match="at least one prompt and one answer token"):
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
