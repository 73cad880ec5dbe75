"""Instruction-tuning a decoder on a classification task (lesson 08): prompts, answer-only labels, scoring.

A review becomes a prompt, and the answer is one label word::

    Review: A warm, funny film.
    Sentiment: positive

The model learns from the answer tokens only: their positions in ``labels`` hold the token ids, every prompt
and padding position holds -100, which the cross-entropy of ``transformers`` causal LMs ignores (they shift
the labels by one position themselves). To classify, compare the logits of the two label words at the
position after the prompt. Shapes: ``B`` batch, ``T`` tokens, ``D`` hidden width, ``V`` vocabulary.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100  # the label value that torch's cross_entropy (and transformers' losses) skip
LABEL_WORDS = (" negative", " positive")  # index-aligned with course_lib.data.MOVIE_LABELS (rotten, fresh)
PROMPT = "Review: {review}\nSentiment:"


def prompt(review: str) -> str:
    """The prompt for one review; the answer (a label word with its leading space) follows it directly."""
    if not isinstance(review, str) or not review.strip():
        raise ValueError(f"expected a non-empty review text, got {review!r}")
    return PROMPT.format(review=review.strip())


def label_token_ids(tokenizer, words: Sequence[str] = LABEL_WORDS) -> list[int]:
    """The token id of each label word, checked to be a single token (so one logit scores each label)."""
    ids = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"label word {word!r} is {len(pieces)} tokens {pieces} for this tokenizer; "
                             "pick words that are one token each (try a leading space)")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {list(words)} share token ids {ids}")
    return ids


def answer_only_example(prompt_ids: Sequence[int], answer_ids: Sequence[int], length: int,
                        pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """One training row, right-padded to ``length``: ``(input_ids, attention_mask, labels)``, each (length,) long.

    ``labels`` copies the answer ids at the answer positions and holds -100 on the prompt and the padding,
    so the loss comes from the answer alone. The attention mask is built from the lengths, not by comparing
    with ``pad_id``: the padding id can also be a real token of the text (SmolLM2 pads with its end token).
    """
    prompt_ids, answer_ids = list(prompt_ids), list(answer_ids)
    if not prompt_ids or not answer_ids:
        raise ValueError(f"expected at least one prompt and one answer token, got {len(prompt_ids)} and "
                         f"{len(answer_ids)}")
    used = len(prompt_ids) + len(answer_ids)
    if length < used:
        raise ValueError(f"length {length} is shorter than the prompt and answer ({used} tokens)")
    padding = length - used
    input_ids = torch.tensor(prompt_ids + answer_ids + [pad_id] * padding, dtype=torch.long)      # (length,)
    attention_mask = torch.tensor([1] * used + [0] * padding, dtype=torch.long)                    # (length,)
    labels = torch.tensor([IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * padding,
                          dtype=torch.long)                                                         # (length,)
    return input_ids, attention_mask, labels


def encode(tokenizer, reviews: Sequence[str], labels: Sequence[int] | None = None,
           max_review_tokens: int = 32) -> list[dict]:
    """Tokenized examples: ``prompt_ids`` for each review (the review cut to ``max_review_tokens`` tokens) and,
    with ``labels``, ``answer_ids`` (the label word's token)."""
    if isinstance(reviews, str) or len(reviews) == 0:
        raise ValueError("expected a non-empty list of reviews")
    if labels is not None and len(labels) != len(reviews):
        raise ValueError(f"expected one label per review ({len(reviews)}), got {len(labels)}")
    words = label_token_ids(tokenizer)
    examples = []
    for i, review in enumerate(reviews):
        pieces = tokenizer(review.strip(), add_special_tokens=False)["input_ids"][:max_review_tokens]
        text = prompt(tokenizer.decode(pieces))
        example = {"prompt_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}
        if labels is not None:
            example["answer_ids"] = [words[int(labels[i])]]
        examples.append(example)
    return examples


def collate(examples: Sequence[dict], pad_id: int) -> dict[str, Tensor]:
    """A training batch: every example right-padded to the longest one, labels on the answers only."""
    length = max(len(e["prompt_ids"]) + len(e["answer_ids"]) for e in examples)
    rows = [answer_only_example(e["prompt_ids"], e["answer_ids"], length, pad_id) for e in examples]
    input_ids, attention_mask, labels = (torch.stack(column) for column in zip(*rows))  # (B, T) each
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _decoder_parts(model):
    """The decoder body and the output layer, for a plain ``transformers`` causal LM or a peft wrapper of one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError(f"expected a causal LM with an output layer without bias (Llama style), got "
                         f"{type(base).__name__}")
    return base.base_model, head


@torch.no_grad()
def last_prompt_states(model, examples: Sequence[dict], pad_id: int, batch_size: int = 16) -> Tensor:
    """The decoder's last hidden state at each prompt's last token: (N, D), from right-padded batches.

    Right padding leaves every real token's position (and so its rotary embedding) as in the unpadded
    prompt, and the causal mask keeps padding out of the tokens before it.
    """
    if len(examples) == 0:
        raise ValueError("expected at least one example")
    body, head = _decoder_parts(model)
    device = head.weight.device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = [e["prompt_ids"] for e in examples[start:start + batch_size]]
            lengths = torch.tensor([len(ids) for ids in batch])                                 # (B,)
            width = int(lengths.max())
            input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in batch])   # (B, T)
            mask = (torch.arange(width)[None, :] < lengths[:, None]).long()                     # (B, T)
            hidden = body(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            out.append(hidden[torch.arange(len(batch)), lengths.to(device) - 1].float().cpu())  # (B, D)
    finally:
        model.train(was_training)
    return torch.cat(out)  # (N, D)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def next_token_logits(model, tokenizer, examples: Sequence[dict], batch_size: int = 16) -> Tensor:
    """Logits over the whole vocabulary for the token after each prompt: (N, V)."""
    _, head = _decoder_parts(model)
    states = last_prompt_states(model, examples, _pad_id(tokenizer), batch_size)  # (N, D)
    return states @ head.weight.detach().float().cpu().T                          # (N, V)


def label_word_logits(model, tokenizer, examples: Sequence[dict], batch_size: int = 16) -> Tensor:
    """Logits of the label words after each prompt: (N, number of label words).

    The same numbers as the matching columns of the full logits, computed only for those columns: the last
    prompt state (N, D) times the label words' rows of the output layer (L, D).
    """
    _, head = _decoder_parts(model)
    rows = head.weight.detach()[label_token_ids(tokenizer)].float().cpu()            # (L, D)
    states = last_prompt_states(model, examples, _pad_id(tokenizer), batch_size)  # (N, D)
    return states @ rows.T                                                         # (N, L)
