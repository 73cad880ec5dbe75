"""WordPiece, BERT's subword tokenizer: normalize, split into words, then greedy longest-match subwords.

The steps and character classes follow the fast (Rust) ``BertTokenizer`` of ``transformers``, so the ids are
identical to the real tokenizer of the course encoder:

1. normalize: drop control characters, turn every whitespace character into a space, put spaces around CJK
   ideographs, strip accents (NFD, then drop the combining marks), lower-case;
2. pre-tokenize: split on spaces, and make every punctuation character a word of its own;
3. WordPiece: cut each word into the longest vocabulary pieces from the left; later pieces carry ``##``.

Characters added to Unicode after version 8.0 (rare scripts, a few recent punctuation marks) can be
classified differently: the fast tokenizer's category tables are older than Python's ``unicodedata``.
"""
from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import regex

from course_lib.assets import encoder_path
from course_lib.tokenization._checks import check_ids, check_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"  # marks a piece that continues the previous one inside a word
MAX_CHARS_PER_WORD = 100  # longer words become [UNK] without trying

# CJK ideograph blocks that get a word each (the ranges used by the fast tokenizer).
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


# ----------------------------------------------------------------------------------------------- characters
def is_whitespace(char: str) -> bool:
    """Tab, newline, carriage return, and the Unicode space separators (categories Zs, Zl, Zp)."""
    return char in "\t\n\r" or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def is_control(char: str) -> bool:
    """Characters the normalizer deletes: control, format, private-use and surrogate codes, NUL and U+FFFD.

    Tab, newline and carriage return are controls too, but count as whitespace.
    """
    if char in "\t\n\r":
        return False
    return char in "\x00\ufffd" or unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs")


def is_punctuation(char: str) -> bool:
    """Unicode punctuation (categories P*) plus every ASCII symbol, such as ``$ + < = > ^ ` | ~``."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


class _CharTable(dict):
    """A ``str.translate`` table computed one character at a time, on first use."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule  # char -> replacement text ("" deletes it)

    def __missing__(self, code: int) -> str:
        self[code] = self.rule(chr(code))
        return self[code]


def _clean_char(char: str) -> str:
    if is_control(char):
        return ""
    if is_whitespace(char):
        return " "
    return f" {char} " if is_cjk(char) else char


_CLEAN = _CharTable(_clean_char)
_DROP_NONSPACING_MARKS = _CharTable(lambda char: "" if unicodedata.category(char) == "Mn" else char)
_LOWER = _CharTable(str.lower)  # per character, so a final capital sigma becomes σ, as in the fast tokenizer


def normalize(text: str, lowercase: bool = True, strip_accents: bool | None = None) -> str:
    """BERT's normalizer. ``strip_accents=None`` follows ``lowercase`` (the uncased models strip accents)."""
    text = check_text(text).translate(_CLEAN)  # no controls; whitespace -> " "; " 中 " around CJK
    if strip_accents is None:
        strip_accents = lowercase
    if strip_accents:
        text = unicodedata.normalize("NFD", text).translate(_DROP_NONSPACING_MARKS)  # "é" -> "e" + "◌́" -> "e"
    if lowercase:
        text = text.translate(_LOWER)
    return text


def split_punctuation(word: str) -> list[str]:
    """``"don't!"`` -> ``["don", "'", "t", "!"]``: each punctuation character stands alone."""
    words, current = [], ""
    for char in word:
        if is_punctuation(char):
            if current:
                words.append(current)
            words.append(char)
            current = ""
        else:
            current += char
    return words + [current] if current else words


def pre_tokenize(normalized: str) -> list[str]:
    """Split normalized text on whitespace, then isolate punctuation."""
    return [piece for word in normalized.split() for piece in split_punctuation(word)]


# ----------------------------------------------------------------------------------------------- WordPiece
def wordpiece(word: str, vocab, unk_token: str = "[UNK]", max_chars: int = MAX_CHARS_PER_WORD) -> list[str]:
    """Greedy longest-match-first: take the longest prefix in ``vocab``, then continue with ``##`` pieces.

    A word longer than ``max_chars`` characters, or with a position where no piece fits, is one ``unk_token``.
    """
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):  # longest candidate first
            piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
            if piece in vocab:
                break
        else:
            return [unk_token]  # nothing in the vocabulary starts here: the whole word is unknown
        pieces.append(piece)
        start = end
    return pieces


def _join_pieces(tokens: list[str]) -> str:
    """Undo WordPiece: glue ``##`` pieces to the previous token, separate the rest with spaces.

    Like BERT's decoder, it also removes the space before ``. , ? !`` and inside English contractions.
    """
    text = []
    for i, token in enumerate(tokens):
        if i > 0:
            token = token[len(CONTINUATION):] if token.startswith(CONTINUATION) else " " + token
        for spaced, tidy in _CLEANUP:
            token = token.replace(spaced, tidy)
        text.append(token)
    return "".join(text)


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


# ----------------------------------------------------------------------------------------------- tokenizer
class WordPieceTokenizer:
    """BERT's tokenizer: text -> tokens -> ids, with ``[CLS]``/``[SEP]``, sentence pairs, truncation, padding."""

    def __init__(self, vocab: Sequence[str] | dict[str, int], lowercase: bool = True,
                 strip_accents: bool | None = None, max_chars_per_word: int = MAX_CHARS_PER_WORD,
                 model_max_length: int | None = None):
        self.vocab = dict(vocab) if isinstance(vocab, dict) else {token: i for i, token in enumerate(vocab)}
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        self.id_to_token = {i: token for token, i in self.vocab.items()}
        self.lowercase, self.strip_accents, self.max_chars_per_word = lowercase, strip_accents, max_chars_per_word
        self.model_max_length = model_max_length  # the default max_length (512 for BERT models)
        self.pad_token, self.unk_token, self.cls_token, self.sep_token, self.mask_token = SPECIAL_TOKENS
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            self.vocab[t] for t in SPECIAL_TOKENS
        )
        # Special tokens written in the text are kept whole, before any normalization.
        self._specials = regex.compile("(" + "|".join(regex.escape(t) for t in SPECIAL_TOKENS) + ")")
        self._word_tokens = lru_cache(maxsize=200_000)(self._word_tokens_uncached)

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> WordPieceTokenizer:
        """Read ``vocab.txt`` (one token a line, id = line number) and the casing options of a BERT folder.

        Without ``folder``, the course encoder's folder (``course_lib.assets.encoder_path()``).
        """
        if folder is None:
            folder = encoder_path()
        folder = Path(folder)
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab.pop()  # the final newline
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
        return cls(vocab, lowercase=config.get("do_lower_case", True), strip_accents=config.get("strip_accents"),
                   model_max_length=config.get("model_max_length"))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return self.vocab_size

    # ---- text -> tokens
    def _word_tokens_uncached(self, word: str) -> tuple[str, ...]:
        return tuple(
            piece
            for part in split_punctuation(word)
            for piece in wordpiece(part, self.vocab, self.unk_token, self.max_chars_per_word)
        )

    def tokenize(self, text: str) -> list[str]:
        """``"Unaffable!"`` -> ``["una", "##ffa", "##ble", "!"]`` (no ``[CLS]``/``[SEP]``)."""
        tokens = []
        for i, part in enumerate(self._specials.split(check_text(text))):
            if i % 2:  # the split keeps the special tokens at odd positions
                tokens.append(part)
                continue
            for word in normalize(part, self.lowercase, self.strip_accents).split():
                tokens.extend(self._word_tokens(word))
        return tokens

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Vocabulary ids; a token outside the vocabulary gets the id of ``[UNK]``."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        if not all(isinstance(t, str) for t in tokens):
            raise TypeError("tokens must be a str or a sequence of str")
        return [self.vocab.get(token, self.unk_token_id) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.id_to_token[check_ids([ids], self.id_to_token)[0]]
        return [self.id_to_token[i] for i in check_ids(ids, self.id_to_token)]

    # ---- tokens -> model inputs
    def encode(self, text: str, text_pair: str | None = None, *, truncation: bool = False,
               max_length: int | None = None, padding: bool | str = False) -> dict[str, list[int]]:
        """Model inputs for one text or a sentence pair: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``.

        Returns ``input_ids``, ``token_type_ids`` (0 for A and its specials, 1 for B and its final
        ``[SEP]``) and ``attention_mask`` (1 for real tokens, 0 for padding). ``truncation`` cuts to
        ``max_length`` (longest sequence first); ``padding="max_length"`` pads with ``[PAD]`` up to it.
        Without ``max_length``, both use the model's ``model_max_length``.
        """
        check_text(text)
        if text_pair is not None:
            check_text(text_pair, "text_pair")
        padding = _check_padding(padding, allowed=(False, "max_length", "do_not_pad"))
        first = self.convert_tokens_to_ids(self.tokenize(text))
        second = None if text_pair is None else self.convert_tokens_to_ids(self.tokenize(text_pair))
        if truncation or padding == "max_length":
            max_length = self.model_max_length if max_length is None else max_length
            if not isinstance(max_length, int) or isinstance(max_length, bool):
                raise ValueError(f"truncation and padding='max_length' need an integer max_length, got {max_length!r}")
        if truncation:
            first, second = _truncate(first, second, max_length)
        encoded = self._with_special_tokens(first, second)
        if padding == "max_length":
            encoded = self._pad(encoded, max_length)
        return encoded

    def encode_batch(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                     truncation: bool = False, max_length: int | None = None,
                     padding: bool | str = "longest") -> dict[str, list[list[int]]]:
        """Encode several texts; ``padding="longest"`` (or ``True``) pads them all to the longest one."""
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
        texts = list(texts)
        if text_pairs is not None:
            if isinstance(text_pairs, str) or not isinstance(text_pairs, Iterable):
                raise TypeError(f"text_pairs must be a list of str, got {type(text_pairs).__name__}")
            text_pairs = list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"text_pairs must be as long as texts: got {len(text_pairs)} and {len(texts)}")
        padding = _check_padding(padding, allowed=(False, True, "longest", "max_length", "do_not_pad"))
        pairs = text_pairs if text_pairs is not None else [None] * len(texts)
        rows = [self.encode(a, b, truncation=truncation, max_length=max_length,
                            padding="max_length" if padding == "max_length" else False)
                for a, b in zip(texts, pairs)]
        if padding in (True, "longest") and rows:
            longest = max(len(row["input_ids"]) for row in rows)
            rows = [self._pad(row, longest) for row in rows]
        return {key: [row[key] for row in rows] for key in ("input_ids", "token_type_ids", "attention_mask")}

    def _with_special_tokens(self, first: list[int], second: list[int] | None) -> dict[str, list[int]]:
        input_ids = [self.cls_token_id] + first + [self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if second is not None:
            input_ids += second + [self.sep_token_id]
            token_type_ids += [1] * (len(second) + 1)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": [1] * len(input_ids)}

    def _pad(self, encoded: dict[str, list[int]], length: int) -> dict[str, list[int]]:
        missing = max(0, length - len(encoded["input_ids"]))
        return {
            "input_ids": encoded["input_ids"] + [self.pad_token_id] * missing,
            "token_type_ids": encoded["token_type_ids"] + [0] * missing,
            "attention_mask": encoded["attention_mask"] + [0] * missing,
        }

    # ---- ids -> text
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text from ids: ``##`` pieces glued back, words separated by spaces (lower-cased, accents gone)."""
        tokens = self.convert_ids_to_tokens(ids)
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        return _join_pieces(tokens)


def _check_padding(padding, allowed):
    if padding not in allowed or (padding is not True and padding is not False and not isinstance(padding, str)):
        raise ValueError(f"padding must be one of {allowed}, got {padding!r}")
    return False if padding == "do_not_pad" else padding


def _truncate(first: list[int], second: list[int] | None, max_length: int):
    """Cut the token lists so that, with their special tokens, they fit in ``max_length``.

    For a pair ("longest first"): the shorter sequence stays whole if the longer one can absorb the cut;
    otherwise each gets half of the room, the longer one the odd token.
    """
    room = max_length - (2 if second is None else 3)  # [CLS] A [SEP] (B [SEP])
    if room < 0:
        raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
    if second is None:
        return first[:room], None
    if len(first) + len(second) <= room:
        return first, second
    short, long = sorted((len(first), len(second)))
    keep_short = short if short <= room - short else room // 2
    keep_long = room - keep_short
    if len(first) > len(second):
        return first[:keep_long], second[:keep_short]
    return first[:keep_short], second[:keep_long]
