"""Character and word tokenizers with a vocabulary built from a corpus, and one-hot vectors.

Both tokenizers share one idea: split text into units, give every unit seen often enough in the corpus an
id, and map everything else to ``[UNK]``. They differ only in the unit: a character or a word.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import regex
import torch

from course_lib.tokenization._checks import check_corpus, check_ids, check_text

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
_WORD = regex.compile(r"\w+|[^\w\s]")  # a run of letters/digits, or one symbol


class SimpleTokenizer:
    """Maps units of text to ids with a fixed vocabulary; ``[PAD]`` is id 0 and ``[UNK]`` id 1."""

    joiner = ""  # how decode puts units back together

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("the vocabulary has repeated tokens")
        specials = [PAD_TOKEN, UNK_TOKEN]
        self.id_to_token = specials + [t for t in tokens if t not in specials]
        self.token_to_id = {token: i for i, token in enumerate(self.id_to_token)}
        self.unk_id = self.token_to_id[UNK_TOKEN]
        self.pad_id = self.token_to_id[PAD_TOKEN]

    def split(self, text: str) -> list[str]:
        raise NotImplementedError("a subclass says how text is split into units")

    @classmethod
    def from_corpus(cls, corpus: Iterable[str], min_freq: int = 1, max_size: int | None = None, **kwargs):
        """Keep the units seen at least ``min_freq`` times, most frequent first (ties in alphabetical order)."""
        corpus = check_corpus(corpus)
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be a positive integer, got {min_freq!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
            raise ValueError(f"max_size must be a non-negative integer or None, got {max_size!r}")
        splitter = cls(tokens=[], **kwargs)
        counts = Counter(unit for text in corpus for unit in splitter.split(text))
        ranked = sorted((u for u, c in counts.items() if c >= min_freq), key=lambda u: (-counts[u], u))
        return cls(tokens=ranked[:max_size], **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    def tokenize(self, text: str) -> list[str]:
        """The units of ``text``, with ``[UNK]`` for the ones outside the vocabulary."""
        return [unit if unit in self.token_to_id else UNK_TOKEN for unit in self.split(check_text(text))]

    def encode(self, text: str) -> list[int]:
        return [self.token_to_id.get(unit, self.unk_id) for unit in self.split(check_text(text))]

    def decode(self, ids: Sequence[int]) -> str:
        """Join the tokens of ``ids`` (``[PAD]`` is dropped; unknown units come back as ``[UNK]``)."""
        ids = check_ids(ids, range(self.vocab_size))
        return self.joiner.join(self.id_to_token[i] for i in ids if i != self.pad_id)


class CharTokenizer(SimpleTokenizer):
    """One token per character: a tiny vocabulary, but long sequences."""

    def split(self, text: str) -> list[str]:
        return list(text)


class WordTokenizer(SimpleTokenizer):
    """One token per word or symbol: short sequences, but a huge vocabulary and many unknown words."""

    joiner = " "

    def __init__(self, tokens: Sequence[str], lowercase: bool = True):
        super().__init__(tokens)
        self.lowercase = lowercase

    def split(self, text: str) -> list[str]:
        return _WORD.findall(text.lower() if self.lowercase else text)


def one_hot(ids, num_classes: int) -> torch.Tensor:
    """One-hot vectors, the same as ``torch.nn.functional.one_hot``: ids (...) -> (..., num_classes) int64."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(ids, torch.Tensor):
        try:
            ids = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"ids must be integers (a list or a tensor), got {type(ids).__name__}: {error}") from None
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(
            f"ids must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got values from {ids.min().item()} to {ids.max().item()}"
        )
    vectors = torch.zeros(*ids.shape, num_classes, dtype=torch.long)  # (..., C)
    return vectors.scatter_(-1, ids.long().unsqueeze(-1), 1)  # a 1 at position id of each vector
