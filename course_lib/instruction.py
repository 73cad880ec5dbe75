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

from collections.abc import Collection, Iterable, Mapping, Sequence
from numbers import Integral

import torch
from torch import Tensor

from course_lib.runtime.validate import CourseInputError, names, nonnegative_int, positive_int

IGNORE_INDEX = -100  # the label value that torch's cross_entropy (and transformers' losses) skip
LABEL_WORDS = (" negative", " positive")  # index-aligned with course_lib.data.MOVIE_LABELS (rotten, fresh)
PROMPT = "Review: {review}\nSentiment:"


def prompt(review: str) -> str:
    """The prompt for one review; the answer (a label word with its leading space) follows it directly."""
    if not isinstance(review, str) or not review.strip():
        raise CourseInputError(f"expected a non-empty review text (a str), got {review!r}")
    return PROMPT.format(review=review.strip())


def label_token_ids(tokenizer, words: Sequence[str] = LABEL_WORDS) -> list[int]:
    """The token id of each label word, checked to be a single token (so one logit scores each label)."""
    tokenizer, words = _tokenizer(tokenizer), names("words", words)
    ids = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise CourseInputError(f"label word {word!r} is {len(pieces)} tokens {pieces} for this tokenizer; "
                                   "pick words that are one token each (try a leading space)")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise CourseInputError(f"label words {list(words)} share token ids {ids}; pick words with distinct tokens")
    return ids


def answer_only_example(prompt_ids: Sequence[int], answer_ids: Sequence[int], length: int,
                        pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """One training row, right-padded to ``length``: ``(input_ids, attention_mask, labels)``, each (length,) long.

    ``labels`` copies the answer ids at the answer positions and holds -100 on the prompt and the padding,
    so the loss comes from the answer alone. The attention mask is built from the lengths, not by comparing
    with ``pad_id``: the padding id can also be a real token of the text (SmolLM2 pads with its end token).
    """
    prompt_ids, answer_ids = _token_ids("prompt_ids", prompt_ids), _token_ids("answer_ids", answer_ids)
    pad_id = nonnegative_int("pad_id", pad_id)
    used = len(prompt_ids) + len(answer_ids)
    if positive_int("length", length) < used:
        raise CourseInputError(f"length {length} is shorter than the prompt and answer ({used} tokens): pass at "
                               f"least {used}")
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
    reviews, max_review_tokens = _items("reviews", reviews), positive_int("max_review_tokens", max_review_tokens)
    for i, review in enumerate(reviews):
        if not isinstance(review, str) or not review.strip():
            raise CourseInputError(f"reviews[{i}] must be a non-empty text (a str), got {review!r}")
    words = label_token_ids(tokenizer)
    if labels is not None and len(_items("labels", labels)) != len(reviews):
        raise CourseInputError(f"expected one label per review ({len(reviews)}), got {len(labels)}")
    for i, label in enumerate(() if labels is None else labels):
        if isinstance(label, bool) or label not in range(len(words)):
            raise CourseInputError(f"labels[{i}] must be a label index in 0..{len(words) - 1} (one per label word "
                                   f"{list(LABEL_WORDS)}), got {label!r}")
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
    examples, pad_id = _examples(examples, ("prompt_ids", "answer_ids")), nonnegative_int("pad_id", pad_id)
    length = max(len(e["prompt_ids"]) + len(e["answer_ids"]) for e in examples)
    rows = [answer_only_example(e["prompt_ids"], e["answer_ids"], length, pad_id) for e in examples]
    input_ids, attention_mask, labels = (torch.stack(column) for column in zip(*rows))  # (B, T) each
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _items(name: str, value) -> Sequence:
    """A non-empty list (or other sequence, a datasets column say) that is not a single string."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Collection) or len(value) == 0:
        raise CourseInputError(f"{name} must be a non-empty list, got {type(value).__name__} {value!r:.60}")
    return value


def _token_ids(name: str, ids) -> list[int]:
    """A non-empty list of token ids, each an int >= 0."""
    listed = list(ids) if isinstance(ids, Iterable) and not isinstance(ids, (str, bytes, Mapping)) else []
    if not listed or not all(isinstance(i, Integral) and not isinstance(i, bool) and i >= 0 for i in listed):
        raise CourseInputError(f"{name} must be a non-empty list of token ids (ints >= 0), got {ids!r:.80}")
    return listed


def _examples(examples, keys=("prompt_ids",), vocab_size: int | None = None) -> Sequence[dict]:
    """Examples as :func:`encode` makes them: each a dict with ``keys``, token ids below ``vocab_size``."""
    for i, example in enumerate(_items("examples", examples)):
        missing = [key for key in keys if not isinstance(example, Mapping) or key not in example]
        if missing:
            raise CourseInputError(f"examples[{i}] has no {missing}: pass dicts from encode() (with labels for "
                                   f"training), got {example!r:.80}")
        for key in keys:
            ids = _token_ids(f"examples[{i}][{key!r}]", example[key])
            if vocab_size is not None and max(ids) >= vocab_size:
                raise CourseInputError(f"examples[{i}][{key!r}] holds a token id >= {vocab_size}, outside the "
                                       "model's vocabulary: encode with the model's own tokenizer")
    return examples


def _tokenizer(tokenizer):
    if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise CourseInputError(f"tokenizer must be a transformers tokenizer (assets.load_decoder_tokenizer()), got "
                               f"{type(tokenizer).__name__}")
    return tokenizer


def _decoder_parts(model):
    """The decoder body and the output layer, for a plain ``transformers`` causal LM or a peft wrapper of one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None or getattr(head, "bias", None) is not None:
        raise CourseInputError(f"expected a causal LM with an output layer without bias (Llama style), got "
                               f"{type(base).__name__}")
    return base.base_model, head


@torch.no_grad()
def last_prompt_states(model, examples: Sequence[dict], pad_id: int, batch_size: int = 16) -> Tensor:
    """The decoder's last hidden state at each prompt's last token: (N, D), from right-padded batches.

    Right padding leaves every real token's position (and so its rotary embedding) as in the unpadded
    prompt, and the causal mask keeps padding out of the tokens before it.
    """
    body, head = _decoder_parts(model)
    vocab_size = head.weight.shape[0]
    examples, batch_size = _examples(examples, vocab_size=vocab_size), positive_int("batch_size", batch_size)
    if nonnegative_int("pad_id", pad_id) >= vocab_size:
        raise CourseInputError(f"pad_id {pad_id} is outside the model's vocabulary of {vocab_size} tokens: use the "
                               "tokenizer's pad or end-of-sequence id")
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
    pad_id = _tokenizer(tokenizer).pad_token_id
    pad_id = tokenizer.eos_token_id if pad_id is None else pad_id
    if pad_id is None:
        raise CourseInputError("the tokenizer has neither a pad nor an end-of-sequence token: set "
                               "tokenizer.pad_token_id")
    return pad_id


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
    ids = label_token_ids(tokenizer)
    if max(ids) >= head.weight.shape[0]:
        raise CourseInputError(f"the label words' token ids {ids} are outside the model's vocabulary of "
                               f"{head.weight.shape[0]} tokens: pass the model's own tokenizer")
    rows = head.weight.detach()[ids].float().cpu()                                 # (L, D)
    states = last_prompt_states(model, examples, _pad_id(tokenizer), batch_size)  # (N, D)
    return states @ rows.T                                                         # (N, L)
