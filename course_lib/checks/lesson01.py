"""Exercises of lesson 01 (tokenization): one-hot characters, greedy WordPiece, WordPiece ids of a sentence (core),
one BPE merge, the BPE training loop (stretch), attention masks."""
from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from typing import Hashable, Sequence

import regex

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.checks import Case, Exercise, Mistake, register
from course_lib.checks.compare import compare_outputs
from course_lib.tokenization import merge_pair, one_hot, wordpiece
from course_lib.tokenization.bpe_training import learn_merges as learn_bpe_merges


# ----------------------------------------------------------------------------------------------- 01.char_one_hot
def char_one_hot(text: str, vocab: Sequence[str]) -> Tensor:
    """One row per character of ``text``: (T, V) int64, a 1 at the character's position in ``vocab``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    index = {char: i for i, char in enumerate(vocab)}
    missing = sorted(set(text) - set(index))
    if missing:
        raise ValueError(f"characters not in the vocabulary: {missing}; the vocabulary has {len(index)} characters")
    ids = torch.tensor([index[char] for char in text], dtype=torch.long)  # (T,)
    return one_hot(ids, num_classes=len(index))  # (T, V)


def _char_ids(text, vocab):
    return torch.tensor([list(vocab).index(char) for char in text], dtype=torch.long)  # (T,)


_LETTERS = list("abcdefgh")
_LOWER = list(" abcdefghijklmnopqrstuvwxyz.")

register(Exercise("01.char_one_hot", "one-hot vectors for the characters of a text", char_one_hot, level='warm-up', minutes=3,
    hints=('look each character up in vocab (its position is its id), then F.one_hot with as many classes as the vocabulary has entries.',
           'ids = torch.tensor([vocab.index(c) for c in text], dtype=torch.long); return F.one_hot(ids, num_classes=len(vocab))'),
    cases=[
        Case(("abbacab", _LETTERS), label="'abbacab' with the vocabulary a..h (7 characters, 8 in the vocabulary)"),
        Case(("a fine gem.", _LOWER), label="'a fine gem.' with a vocabulary of space, a..z and '.'"),
        Case(("b", ["a", "b"]), label="one character, a vocabulary of two"),
        Case(("", _LETTERS), label="an empty text: shape (0, len(vocab))"),
        Case(("bad", list("hgfedcba")), label="'bad' with the vocabulary h..a (ids follow the vocabulary's order, "
             "not the alphabet)"),
    ],
    mistakes=[
        Mistake(lambda text, vocab: F.one_hot(_char_ids(text, vocab), num_classes=len(text)),
                "num_classes is the size of the vocabulary, len(vocab), the same for every text; len(text) is the "
                "number of rows."),
        Mistake(lambda text, vocab: F.one_hot(_char_ids(text, vocab)),
                "without num_classes, F.one_hot makes each vector only (largest id in this text + 1) long; pass "
                "num_classes=len(vocab) so that every text gets vectors of the same length."),
        Mistake(lambda text, vocab: F.one_hot(_char_ids(text, vocab), num_classes=len(vocab)).T,
                "one row per character: the shape is (len(text), len(vocab)); you returned the transpose."),
        Mistake(lambda text, vocab: F.one_hot(_char_ids(text, vocab), num_classes=len(vocab)).float(),
                "keep the integer dtype of F.one_hot (torch.long); if you fill a matrix yourself, create it with "
                "torch.zeros(..., dtype=torch.long)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 01.greedy_wordpiece
def greedy_wordpiece(word: str, vocab) -> list[str]:
    """Greedy longest-match-first pieces of one word; ``["[UNK]"]`` if some position has no piece in ``vocab``."""
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    return wordpiece(word, vocab, unk_token="[UNK]")


def _pieces(word, vocab, candidates, lookup, on_failure):
    """Walk a word with a wrong variant of greedy WordPiece: ``candidates(start)`` gives the end positions to
    try, ``lookup(piece, start)`` the string to look up, ``on_failure(pieces)`` the result when nothing fits."""
    pieces, start = [], 0
    while start < len(word):
        for end in candidates(start):
            piece = lookup(word[start:end], start)
            if piece in vocab:
                break
        else:
            return on_failure(pieces)
        pieces.append(piece)
        start = end
    return pieces


def _with_prefix(piece, start):
    return piece if start == 0 else "##" + piece


def _shortest_first(word, vocab):
    return _pieces(word, vocab, lambda start: range(start + 1, len(word) + 1), _with_prefix, lambda _: ["[UNK]"])


def _without_continuation_prefix(word, vocab):  # no "##" for the pieces inside the word
    return _pieces(word, vocab, lambda start: range(len(word), start, -1), lambda piece, _: piece,
                   lambda _: ["[UNK]"])


def _partial_pieces(word, vocab):  # keeps the pieces found before the position where nothing fits
    return _pieces(word, vocab, lambda start: range(len(word), start, -1), _with_prefix,
                   lambda pieces: pieces + ["[UNK]"])


# A few tokens of the course encoder's vocabulary, including shorter "distractor" pieces.
SMALL_VOCAB = frozenset([
    "u", "un", "una", "##n", "##a", "##f", "##ff", "##ffa", "##b", "##bl", "##ble", "##able", "##l", "##e",
    "over", "long", "##lo", "##long", "movie", "go", "##go", "##er", "##ers", "watch", "able", "gem", "g", "ge",
])

register(Exercise("01.greedy_wordpiece", "greedy longest-match-first WordPiece for one word", greedy_wordpiece, level='warm-up', minutes=10,
    hints=("from each position, try the longest candidate first and shorten it until it is in vocab; pieces after the first carry '##'; if nothing fits, the whole word is ['[UNK]'].",
           "for end in range(len(word), start, -1): piece = word[start:end] if start == 0 else '##' + word[start:end]; if piece in vocab: break (for/else: return ['[UNK]'])"),
    cases=[
        Case(("unaffable", SMALL_VOCAB), label="'unaffable' with SMALL_VOCAB"),
        Case(("overlong", SMALL_VOCAB), label="'overlong' with SMALL_VOCAB"),
        Case(("moviegoers", SMALL_VOCAB), label="'moviegoers' with SMALL_VOCAB"),
        Case(("gem🙂", SMALL_VOCAB), label="'gem🙂' with SMALL_VOCAB (no piece for the emoji)"),
        Case(("watchable", SMALL_VOCAB), label="'watchable' with SMALL_VOCAB"),
        Case(("able", SMALL_VOCAB), label="'able', a whole word in SMALL_VOCAB"),
        Case(("🙂", SMALL_VOCAB), label="'🙂' alone"),
        Case(("g", SMALL_VOCAB), label="'g', a word of one character"),
        Case(("", SMALL_VOCAB), label="an empty word: no pieces, []"),
    ],
    mistakes=[
        Mistake(_shortest_first,
                "try the longest candidate first (end = len(word), then shorter) and keep the first one found in "
                "the vocabulary; starting from one character gives many tiny pieces."),
        Mistake(_without_continuation_prefix,
                "a piece that continues a word is looked up, and returned, with the '##' prefix ('##ffa', not "
                "'ffa'; '##long', not 'long'); only the first piece of a word has none."),
        Mistake(_partial_pieces,
                "when no piece fits at some position, the whole word becomes a single '[UNK]': return ['[UNK]'] "
                "and drop the pieces found before it."),
    ],
))


# ----------------------------------------------------------------------------------------------- 01.bpe_merge
def bpe_merge(tokens: Sequence[Hashable], pair: tuple, new_token: Hashable) -> list:
    """Replace every occurrence of ``pair`` in ``tokens``, scanning left to right, by ``new_token``."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise ValueError(f"pair must be a tuple of two tokens, got {pair!r}")
    return merge_pair(list(tokens), pair, new_token)


def _merge_without_skipping(tokens, pair, new_token):
    merged = []
    for i in range(len(tokens)):
        if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) == pair:
            merged.append(new_token)  # the pair's second token is visited again next
        else:
            merged.append(tokens[i])
    return merged


def _merge_first_only(tokens, pair, new_token):
    tokens = list(tokens)
    for i in range(len(tokens) - 1):
        if (tokens[i], tokens[i + 1]) == pair:
            return tokens[:i] + [new_token] + tokens[i + 2:]
    return tokens


def _merge_in_joined_string(tokens, pair, new_token):
    joined = " ".join(tokens).replace(f"{pair[0]} {pair[1]}", new_token)
    return joined.split(" ") if joined else []


register(Exercise("01.bpe_merge", "apply one BPE merge to a list of tokens", bpe_merge, level='warm-up', minutes=5,
    hints=('walk through the list with an index; where tokens[i] and tokens[i + 1] form the pair, emit new_token and jump two places, else emit tokens[i] and move one.',
           'if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) == pair: merged.append(new_token); i += 2'),
    cases=[
        Case((list("lowlower"), ("l", "o"), "lo"), label="'l o w l o w e r', merge ('l', 'o')"),
        Case((["a", "a", "a"], ("a", "a"), "aa"), label="overlapping pairs: 'a a a', merge ('a', 'a')"),
        Case((["se", "e", "d"], ("e", "e"), "ee"), label="'se e d', merge ('e', 'e'): no such pair of tokens"),
        Case(([116, 104, 101, 32, 116, 104, 101, 109], (116, 104), 256), label="token ids, merge (116, 104) -> 256"),
        Case((["th", "e"], ("e", "r"), "er"), label="a pair that does not occur"),
        Case(([], ("a", "b"), "ab"), label="an empty list"),
        Case((["c", "a", "b", "a", "b"], ("a", "b"), "ab"), label="'c a b a b', merge ('a', 'b'): the last two "
             "tokens form the pair"),
        Case((["a", "a", "a", "a"], ("a", "a"), "aa"), label="'a a a a', merge ('a', 'a'): two merges"),
        Case((["x"], ("x", "x"), "xx"), label="a single token"),
    ],
    mistakes=[
        Mistake(_merge_without_skipping,
                "after a merge, jump over both tokens of the pair (i += 2): the second one is now inside the new "
                "token and must not be kept, nor start another pair."),
        Mistake(_merge_first_only, "merge every occurrence of the pair, left to right, not only the first one."),
        Mistake(_merge_in_joined_string,
                "compare whole tokens, not text: in the joined string 'se e d', 'e e' also matches the end of 'se'. "
                "Walk through the list and test (tokens[i], tokens[i + 1]) == pair."),
    ],
))


# ----------------------------------------------------------------------------------------------- 01.attention_mask
def attention_mask_from_ids(input_ids: Tensor, pad_token_id: int) -> Tensor:
    """(B, T) padded ids -> (B, T) int64 mask: 1 for every real token (specials included), 0 for padding."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"expected integer input_ids of shape (batch, tokens), got {shape}")
    return (input_ids != pad_token_id).long()  # (B, T)


_MINILM_BATCH = torch.tensor([  # three short reviews (see tests), padded by the course encoder's tokenizer
    [101, 1037, 4010, 1010, 6057, 1998, 17950, 6051, 2143, 1012, 102, 0, 0],
    [101, 2058, 10052, 1012, 102, 0, 0, 0, 0, 0, 0, 0, 0],
    [101, 1996, 5436, 2003, 1037, 6752, 1998, 1996, 13198, 2196, 2455, 1012, 102],
])
_MINILM_MAX_LENGTH = torch.tensor([  # "Overlong." and "Unaffable!" padded to max_length=10
    [101, 2058, 10052, 1012, 102, 0, 0, 0, 0, 0],
    [101, 14477, 20961, 3468, 999, 102, 0, 0, 0, 0],
])
_GPT2_BATCH = torch.tensor([  # GPT-2 ids of three texts, padded with <|endoftext|> (id 50256)
    [32, 4490, 36375, 13] + [50256] * 8,
    [3118, 2001, 540, 0] + [50256] * 8,  # id 0 is the token "!"
    [1212, 318, 257, 3223, 11, 39679, 11, 3360, 8258, 1310, 16840, 13],
])

register(Exercise("01.attention_mask", "attention mask from padded token ids", attention_mask_from_ids, level='warm-up', minutes=2,
    hints=("a position is real when its id is not the pad id; the tokenizer's mask is integers, not booleans.",
           'return (input_ids != pad_token_id).long()'),
    cases=[
        Case((_MINILM_BATCH, 0), label="three texts padded with [PAD] (id 0)"),
        Case((_MINILM_BATCH[2:], 0), label="a single text without padding, shape (1, 13)"),
        Case((_GPT2_BATCH, 50256), label="GPT-2 ids padded with id 50256 (there, id 0 is the real token '!')"),
        Case((_MINILM_MAX_LENGTH, 0), label="two texts padded to max_length=10"),
        Case((torch.tensor([[101], [0]]), 0), label="a batch of 2 texts, 1 position: [CLS] and a [PAD]"),
    ],
    mistakes=[
        Mistake(lambda ids, pad: (ids == pad).long(),
                "it is the other way round: 1 for the real tokens the model should attend to, 0 for padding."),
        Mistake(lambda ids, pad: ((ids != pad) & (ids != 101) & (ids != 102)).long(),
                "[CLS] and [SEP] are real tokens that the model reads: only the padding positions get 0."),
        Mistake(lambda ids, pad: (ids != 0).long(),
                "use the pad_token_id argument instead of 0: not every tokenizer pads with id 0 (GPT-2 style "
                "tokenizers often pad with <|endoftext|>, id 50256, and use id 0 for '!')."),
    ],
))


# ----------------------------------------------------------------------------------------------- 01.encode (core)
@functools.lru_cache(maxsize=1)
def _real_tokenizer():
    from course_lib.assets import load_tokenizer

    return load_tokenizer()


def encode_sentence(text: str, vocab: dict[str, int]) -> list[int]:
    """The course encoder's ``input_ids`` for ``text``: the real fast tokenizer's answer (the check's reference).
    ``vocab`` must be that tokenizer's vocabulary (token -> id)."""
    tokenizer = _real_tokenizer()
    if len(vocab) != tokenizer.vocab_size:
        raise ValueError(f"expected the encoder's vocabulary of {tokenizer.vocab_size:,} tokens, got {len(vocab):,}")
    return tokenizer(text)["input_ids"]


_SYMBOLS = r"[\p{P}$+<=>^`|~]"  # Unicode punctuation and the ASCII symbols BERT splits off too


def _encode_variant(text, vocab, *, strip_accents=True, lowercase=True, split=_SYMBOLS, specials=True,
                    partial_unk=False, max_chars=100):
    """The whole-sentence WordPiece encoder with one step changed (the wrong ways students take)."""
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.lower() if lowercase else text
    words = [piece for chunk in text.split() for piece in regex.split(f"({split})", chunk) if piece]
    tokens = []
    for word in words:
        pieces = wordpiece(word, vocab, max_chars=max_chars)
        if partial_unk and pieces == ["[UNK]"] and len(word) <= max_chars:
            pieces = _partial_pieces(word, vocab)
        tokens += pieces
    ids = [vocab[token] for token in tokens]
    return [vocab["[CLS]"]] + ids + [vocab["[SEP]"]] if specials else ids


def _encode_cases() -> list[Case]:
    from course_lib.data import load_movie_reviews

    vocab, reviews = _real_tokenizer().get_vocab(), load_movie_reviews(profile="quick")["validation"]["text"][:5]
    texts = [
        ("A warm, funny and beautifully acted film.", "a course review"),
        ("Café Déjà Vu: NAÏVE, but it's charming!", "accents, capitals and punctuation"),
        ("$100+ <3 ^_^ |pipe| ~tilde~", "ASCII symbols, which BERT splits off like punctuation"),
        ("What a gem🙂 (really)", "a word with a character no piece covers"),
        ("Unaffable! " + "x" * 101, "a word of 101 characters (longer than the limit of 100)"),
        ("", "an empty text"),
        ("It's 1968 — and the U.S. is on fire…", "a dash, dots and an ellipsis"),
        ("tab\tand\nnewline", "a tab and a newline"),
    ] + [(review, f"validation review {i}") for i, review in enumerate(reviews)]
    return [Case((text, vocab), label=f"{label}: {text[:40]!r}{'...' if len(text) > 40 else ''}")
            for text, label in texts]


def _compare_ids(got, expected) -> str | None:
    """Like compare_outputs, and for two lists of ids it names the first position that differs, with its tokens."""
    problem = compare_outputs(got, expected)
    if problem is None or not isinstance(got, list) or not all(isinstance(i, int) for i in got):
        return problem
    at = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
    name = _real_tokenizer().convert_ids_to_tokens
    want = f"{expected[at]} ({name(expected[at])!r})" if at < len(expected) else "the end of the list"
    have = f"{got[at]} ({name(got[at])!r})" if at < len(got) else "the end of the list"
    return f"first difference at position {at}: expected {want}, got {have}; {problem}"


register(Exercise("01.encode", "WordPiece ids of a whole sentence", encode_sentence, cases=_encode_cases,
    compare=_compare_ids, level="core", minutes=30,
    hints=("four steps, each shown in section 3: normalize (NFD, drop the combining marks of category 'Mn', lower "
           "case); pre-tokenize (split on whitespace, then cut off every punctuation character and the ASCII "
           "symbols $+<=>^`|~); WordPiece each word (a word over 100 characters is '[UNK]'); ids with [CLS] "
           "first and [SEP] last.",
           "words = [p for chunk in text.split() for p in regex.split(r'([\\p{P}$+<=>^`|~])', chunk) if p]; "
           "tokens = [t for w in words for t in (['[UNK]'] if len(w) > 100 else greedy_wordpiece(w, vocab))]; "
           "return [vocab['[CLS]']] + [vocab[t] for t in tokens] + [vocab['[SEP]']]"),
    mistakes=[
        Mistake(functools.partial(_encode_variant, specials=False),
                "a model input starts with [CLS] (id 101) and ends with [SEP] (id 102), even for an empty text."),
        Mistake(functools.partial(_encode_variant, lowercase=False),
                "the encoder is uncased: lower-case the text; 'A' is not in the vocabulary and became [UNK]."),
        Mistake(functools.partial(_encode_variant, split=r"[^\w\s]{0}(?!)"),
                "split punctuation off the words: 'film.' is two words, 'film' and '.', before WordPiece."),
        Mistake(functools.partial(_encode_variant, strip_accents=False),
                "strip the accents: unicodedata.normalize('NFD', text) splits 'é' into 'e' and a combining mark "
                "(category 'Mn'); drop the marks."),
        Mistake(functools.partial(_encode_variant, split=r"\p{P}"),
                "BERT also splits off the ASCII symbols that Unicode does not call punctuation: $ + < = > ^ ` | ~."),
        Mistake(functools.partial(_encode_variant, partial_unk=True),
                "when no piece fits somewhere in a word, the whole word is one [UNK]: drop the pieces found before."),
        Mistake(functools.partial(_encode_variant, max_chars=10**9),
                "a word longer than 100 characters is [UNK] without trying pieces (the tokenizer's "
                "max_input_chars_per_word)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 01.bpe_train (stretch)
def _merges_by(choose, weighted=True, recount=True):
    def learn(word_counts, num_merges):
        words, merges, pairs = {word: [bytes([b]) for b in word] for word in word_counts}, [], None
        for _ in range(num_merges):
            if recount or pairs is None:
                pairs = Counter()
                for word, tokens in words.items():
                    for pair in zip(tokens, tokens[1:]):
                        pairs[pair] += word_counts[word] if weighted else 1
            pairs = Counter({p: c for p, c in pairs.items() if p not in merges})
            if not pairs:
                break
            best = choose(pairs)
            merges.append(best)
            words = {word: merge_pair(tokens, best, best[0] + best[1]) for word, tokens in words.items()}
        return merges
    return learn


def _bpe_cases() -> list[Case]:
    from course_lib.data import load_movie_reviews
    from course_lib.tokenization import GPT2_PATTERN

    counts = Counter(piece.encode("utf-8") for text in load_movie_reviews(profile="quick")["train"]["text"][:200]
                     for piece in regex.findall(GPT2_PATTERN, text))
    return [
        Case(({b"gem": 4, b"gems": 3, b"agent": 5, b"gentle": 2}, 6),
             label="{b'gem': 4, b'gems': 3, b'agent': 5, b'gentle': 2}, 6 merges"),
        Case(({b" the": 3, b" then": 1, b" hen": 2, b" ten": 2}, 5), label="words with leading spaces, 5 merges "
             "(ties between pairs of equal count)"),
        Case(({b"ab": 1}, 4), label="{b'ab': 1}, 4 merges asked, one possible"),
        Case((dict(counts), 40), label="200 training reviews split with GPT-2's pattern, 40 merges")]


register(Exercise("01.bpe_train", "the BPE training loop", learn_bpe_merges, cases=_bpe_cases, level="stretch",
    minutes=25,
    hints=("each round: count the neighbouring pairs of every word, weighted by the word's count; take the most "
           "frequent pair (ties: the smallest pair, comparing bytes); merge it in every word; repeat.",
           "best = min(pairs, key=lambda p: (-pairs[p], p)); merges.append(best); words = {w: bpe_merge(t, best, "
           "best[0] + best[1]) for w, t in words.items()}"),
    mistakes=[
        Mistake(_merges_by(lambda pairs: min(pairs, key=lambda p: (-pairs[p], p)), weighted=False),
                "weight each pair by how often its word occurs in the corpus (word_counts[word]), not by 1."),
        Mistake(_merges_by(lambda pairs: max(pairs, key=pairs.get)),
                "on a tie, take the pair whose bytes sort first (min over (-count, pair)); max(pairs, key=pairs.get) "
                "takes whichever tie it meets first."),
        Mistake(_merges_by(lambda pairs: min(pairs, key=lambda p: (-pairs[p], p)), recount=False),
                "count the pairs again after every merge: a merge creates new pairs and removes old ones."),
    ],
))
