"""Byte-level byte-pair encoding (BPE), the tokenizer family of GPT-2 and most decoders.

Text becomes UTF-8 bytes, so no input is ever unknown. A regular expression first splits the text into
pieces (words with their leading space, numbers, runs of symbols, whitespace); inside each piece, adjacent
tokens are merged, always the pair whose merged bytes have the lowest rank, until no merge applies.
A token's rank is its id: merges learned earlier have lower ranks. Encoding with GPT-2's ranks gives the
same ids as ``tiktoken``'s ``gpt2`` encoding.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import regex

from course_lib.assets import gpt2_ranks_path
from course_lib.tokenization._checks import check_ids, check_text


# GPT-2's pre-tokenization pattern: contractions, words and numbers with their leading space, runs of symbols,
# whitespace; and its one special token, the last id of the vocabulary.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_END_OF_TEXT = 50256


def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's byte-level BPE merge ranks from the course's local file: token bytes -> id (lower = merged earlier)."""
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(gpt2_ranks_path()))


def gpt2_encoding():
    """``tiktoken``'s GPT-2 encoding, built from the local ranks file instead of a download: the real tokenizer
    that :class:`ByteLevelBPE` is tested against."""
    import tiktoken

    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=gpt2_ranks(),
                             special_tokens={"<|endoftext|>": GPT2_END_OF_TEXT}, explicit_n_vocab=GPT2_END_OF_TEXT + 1)


def merge_by_rank(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Split ``piece`` into tokens: start from single bytes, merge the lowest-ranked adjacent pair, repeat.

    When the same best rank occurs twice, the leftmost pair is merged first.
    """
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])  # None: this pair is not a token
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best = rank, i
        if best is None:
            break  # no adjacent pair forms a token
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


class ByteLevelBPE:
    """A byte-level BPE tokenizer defined by its ranks (token bytes -> id) and a pre-tokenization pattern."""

    def __init__(self, ranks: dict[bytes, int], pattern: str = GPT2_PATTERN,
                 special_tokens: dict[str, int] | None = None, merges: list[tuple[bytes, bytes]] | None = None):
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"ranks must contain all 256 single bytes; missing {len(missing)}, e.g. {missing[:5]}")
        self.ranks = dict(ranks)
        self.special_tokens = dict(special_tokens or {})
        self.id_to_bytes = {i: token for token, i in self.ranks.items()}
        clashes = set(self.special_tokens.values()) & set(self.id_to_bytes)
        if clashes or len(self.id_to_bytes) != len(self.ranks):
            raise ValueError("every token needs its own id (ranks and special tokens overlap)")
        self.id_to_bytes.update({i: text.encode("utf-8") for text, i in self.special_tokens.items()})
        self.pattern = pattern
        self._pieces = regex.compile(pattern)
        self.merges = merges  # the learned merges, in order (only for a trained tokenizer)
        self._encode_piece = lru_cache(maxsize=200_000)(self._encode_piece_uncached)

    @classmethod
    def gpt2(cls) -> ByteLevelBPE:
        """GPT-2's tokenizer from the course's local ranks file (50,257 tokens with ``<|endoftext|>``)."""
        return cls(gpt2_ranks(), GPT2_PATTERN, special_tokens={"<|endoftext|>": GPT2_END_OF_TEXT})

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_bytes)

    def __len__(self) -> int:
        return self.vocab_size

    def pre_tokenize(self, text: str) -> list[str]:
        """``"Hello world!!"`` -> ``["Hello", " world", "!!"]`` with GPT-2's pattern."""
        return self._pieces.findall(check_text(text))

    def _encode_piece_uncached(self, piece: bytes) -> tuple[int, ...]:
        if piece in self.ranks:  # a piece that is already a token stays whole
            return (self.ranks[piece],)
        return tuple(self.ranks[part] for part in merge_by_rank(piece, self.ranks))

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token ids of ``text``. Special-token text (``<|endoftext|>``) is ordinary text unless allowed.

        ``allowed_special`` is one special token, a collection of them, or ``"all"``.
        """
        text = check_text(text)
        if isinstance(allowed_special, str):
            allowed_special = self.special_tokens if allowed_special == "all" else {allowed_special}
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special has tokens that are not special tokens: {sorted(unknown)}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: pair them up where possible, otherwise U+FFFD
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids = []
        parts = regex.split("(" + "|".join(map(regex.escape, sorted(allowed))) + ")", text) if allowed else [text]
        for i, part in enumerate(parts):
            if i % 2:  # an allowed special token
                ids.append(self.special_tokens[part])
                continue
            for piece in self._pieces.findall(part):
                ids.extend(self._encode_piece(piece.encode("utf-8")))
        return ids

    def tokenize(self, text: str) -> list[bytes]:
        """The tokens of ``text`` as bytes (a token may hold part of a multi-byte character)."""
        return [self.id_to_bytes[i] for i in self.encode(text)]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.id_to_bytes[i] for i in check_ids(ids, self.id_to_bytes))

    def decode(self, ids: Sequence[int]) -> str:
        """Text from ids; bytes that do not form valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
