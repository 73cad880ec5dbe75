"""Lesson 01 exercises: references agree with torch / transformers / tiktoken, and the checker explains mistakes."""
from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
import regex
import torch
import torch.nn.functional as F

from course_lib.tokenization import GPT2_PATTERN, gpt2_encoding, gpt2_ranks, normalize, pre_tokenize, train_bpe, wordpiece
from course_lib.tokenization.bpe_training import learn_merges
from course_lib.tokenization.wordpiece import is_punctuation
from course_lib.checks import check, get_exercise
from course_lib.checks.lesson01 import (  # _pieces: greedy WordPiece with a pluggable step, for wrong variants
    SMALL_VOCAB,
    _encode_variant,
    _pieces,
    attention_mask_from_ids,
    bpe_merge,
    char_one_hot,
    greedy_wordpiece,
)


def test_correct_answers_written_differently_also_pass():
    def one_hot_by_loop(text, vocab):
        rows = torch.zeros(len(text), len(vocab), dtype=torch.long)
        for row, char in enumerate(text):
            rows[row, vocab.index(char)] = 1
        return rows

    def wordpiece_recursive(word, vocab, first=True):
        if not word:
            return []
        for end in range(len(word), 0, -1):
            piece = word[:end] if first else "##" + word[:end]
            if piece in vocab:
                rest = wordpiece_recursive(word[end:], vocab, first=False)
                return ["[UNK]"] if rest == ["[UNK]"] else [piece] + rest
        return ["[UNK]"]

    def merge_with_while(tokens, pair, new_token):
        tokens, i = list(tokens), 0
        while i < len(tokens) - 1:
            if (tokens[i], tokens[i + 1]) == pair:
                tokens[i:i + 2] = [new_token]
            i += 1
        return tokens

    assert check("01.char_one_hot", one_hot_by_loop).passed
    assert check("01.greedy_wordpiece", wordpiece_recursive).passed
    assert check("01.bpe_merge", merge_with_while).passed
    assert check("01.attention_mask", lambda ids, pad: torch.where(ids == pad, 0, 1)).passed
    assert check("01.attention_mask", lambda ids, pad: (ids != pad).cumprod(dim=1)).passed  # right padding only
    assert check("01.char_one_hot", lambda text, vocab: torch.eye(len(vocab), dtype=torch.long)[
        [vocab.index(c) for c in text]].reshape(len(text), len(vocab))).passed


def _encode_with_course_lib(text, vocab):
    """The lesson's pieces from course_lib, put together."""
    tokens = [piece for word in pre_tokenize(normalize(text)) for piece in wordpiece(word, vocab)]
    return [vocab["[CLS]"], *(vocab[token] for token in tokens), vocab["[SEP]"]]


def _encode_char_by_char(text, vocab):
    """Normalizes with unicodedata.combining and splits with a loop over the characters."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if not unicodedata.combining(c))
    words, current = [], ""
    for char in text + " ":
        if char.isspace() or is_punctuation(char):
            words += [current] if current else []
            words += [char] if is_punctuation(char) else []
            current = ""
        else:
            current += char
    ids = [vocab["[CLS]"]]
    for word in words:
        pieces, start = [], 0
        while start < len(word) and len(word) <= 100:
            end = len(word)
            while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
                end -= 1
            if end == start:
                break
            pieces.append(word[start:end] if start == 0 else "##" + word[start:end])
            start = end
        ids += [vocab[p] for p in pieces] if start == len(word) else [vocab["[UNK]"]]
    return ids + [vocab["[SEP]"]]


def _merges_sorted(word_counts, num_merges):
    words = [([bytes([b]) for b in word], count) for word, count in word_counts.items()]
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for tokens, count in words:
            for i in range(len(tokens) - 1):
                pairs[tokens[i], tokens[i + 1]] += count
        if not pairs:
            return merges
        (a, b), _ = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[0]
        merges.append((a, b))
        words = [(bpe_merge(tokens, (a, b), a + b), count) for tokens, count in words]
    return merges


def test_right_answers_to_the_core_and_stretch_exercises_written_differently_pass():
    assert check("01.encode", _encode_with_course_lib).passed
    assert check("01.encode", _encode_char_by_char).passed
    assert check("01.encode", _encode_variant).passed  # the variant with no step changed is right
    assert check("01.bpe_train", _merges_sorted).passed


def _encode_word_regex(text, vocab):  # the word tokenizer's pattern of section 2: an emoji becomes a word of its own
    words = regex.findall(r"\w+|[^\w\s]", normalize(text))
    return [101] + [vocab[t] for w in words for t in wordpiece(w, vocab)] + [102]


def _encode_ascii_ignore(text, vocab):  # accents removed by dropping every non-ASCII character
    return _encode_with_course_lib(text.encode("ascii", "ignore").decode(), vocab)


def _merges_stop_at_one(word_counts, num_merges):  # a pair seen once is not merged
    merges = learn_merges(word_counts, num_merges)
    counts = [sum(c for w, c in word_counts.items() if a + b in w) for a, b in merges]
    return [m for m, c in zip(merges, counts) if c > 1]


def _wordpiece_from_the_right(word, vocab):
    """Longest match from the END of the word: another greedy order, other pieces."""
    pieces, end = [], len(word)
    while end > 0:
        for start in range(end):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.insert(0, piece)
        end = start
    return pieces


def _wordpiece_skipping_unknown(word, vocab):
    """Drops a character that no piece covers instead of making the word [UNK]."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                break
        else:
            end = start + 1
        start = end
    return pieces


def _wordpiece_all_prefixed(word, vocab):  # "##" on the first piece too
    return _pieces(word, vocab, lambda start: range(len(word), start, -1), lambda piece, _: "##" + piece,
                   lambda _: ["[UNK]"])


def _merge_loop(stop_before: int, keep_rest: bool):
    """The right merge loop, run while i < len(tokens) - stop_before; the tokens left after it kept or not."""
    def merge(tokens, pair, new_token):
        merged, i = [], 0
        while i < len(tokens) - stop_before:
            if (tokens[i], tokens[i + 1]) == pair:
                merged.append(new_token)
                i += 2
            else:
                merged.append(tokens[i])
                i += 1
        return merged + list(tokens[i:]) if keep_rest else merged
    return merge


def _merge_right_to_left(tokens, pair, new_token):
    merged, i = [], len(tokens) - 1
    while i >= 0:
        if i > 0 and (tokens[i - 1], tokens[i]) == pair:
            merged.insert(0, new_token)
            i -= 2
        else:
            merged.insert(0, tokens[i])
            i -= 1
    return merged


def _merge_in_place(tokens, pair, new_token):
    i = 0
    while i < len(tokens) - 1:
        if (tokens[i], tokens[i + 1]) == pair:
            tokens[i:i + 2] = [new_token]  # edits the caller's list
        i += 1
    return tokens


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # the word pattern of section 2 instead of whitespace and punctuation
    pytest.param("01.encode", _encode_word_regex, "a word with a character no piece covers", id="word-regex"),
    # accents "stripped" by dropping non-ASCII characters
    pytest.param("01.encode", _encode_ascii_ignore, "expected 7668 ('cafe')", id="ascii-ignore"),
    # the tokens, not their ids
    pytest.param("01.encode", lambda text, vocab: ["[CLS]"] + [t for w in pre_tokenize(normalize(text))
                 for t in wordpiece(w, vocab)] + ["[SEP]"], "item 0", id="tokens"),
    # a limit of 200 characters per word
    pytest.param("01.encode", lambda text, vocab: [101] + [vocab[t] for w in pre_tokenize(normalize(text))
                 for t in wordpiece(w, vocab, max_chars=200)] + [102], "101 characters", id="limit-200"),
    # a pair seen only once is never merged
    pytest.param("01.bpe_train", _merges_stop_at_one, "one possible", id="stop-at-one"),
    # the merged tokens instead of the pairs
    pytest.param("01.bpe_train", lambda counts, n: [a + b for a, b in learn_merges(counts, n)], "item 0",
                 id="merged-bytes"),
    # ids from the alphabet (ord(c) - ord("a")) instead of the positions in the vocabulary
    pytest.param("01.char_one_hot", lambda text, vocab: F.one_hot(torch.tensor([ord(c) - 97 for c in text],
                 dtype=torch.long), len(vocab)), "a fine gem.", id="alphabet-ids"),
    # a vocabulary made from the text itself
    pytest.param("01.char_one_hot", lambda text, vocab: F.one_hot(torch.tensor(
        [sorted(set(text)).index(c) for c in text], dtype=torch.long), len(vocab)), "values differ",
        id="vocab-from-text"),
    # a boolean one-hot from a comparison
    pytest.param("01.char_one_hot", lambda text, vocab: torch.tensor(
        [vocab.index(c) for c in text], dtype=torch.long)[:, None] == torch.arange(len(vocab)),
        "expected a torch.int64 tensor, got torch.bool", id="bool"),
    # rows of an identity matrix (float32)
    pytest.param("01.char_one_hot", lambda text, vocab: torch.eye(len(vocab))[[vocab.index(c) for c in text]],
                 "expected a torch.int64 tensor, got torch.float32", id="eye-float"),
    # nested lists
    pytest.param("01.char_one_hot", lambda text, vocab: [[int(c == v) for v in vocab] for c in text],
                 "expected a torch.Tensor, got list", id="lists"),
    # the vocabulary sorted first
    pytest.param("01.char_one_hot", lambda text, vocab: char_one_hot(text, sorted(vocab)), "values differ",
                 id="sorted-vocab"),
    # greedy from the right end of the word
    pytest.param("01.greedy_wordpiece", _wordpiece_from_the_right, "unaffable", id="from-the-right"),
    # unknown characters skipped instead of the whole word becoming [UNK]
    pytest.param("01.greedy_wordpiece", _wordpiece_skipping_unknown, "no piece for the emoji", id="skips-unknown"),
    # "##" on every piece, the first one too
    pytest.param("01.greedy_wordpiece", _wordpiece_all_prefixed, "unaffable", id="first-piece-prefixed"),
    # an unknown word gives no pieces at all
    pytest.param("01.greedy_wordpiece", lambda word, vocab: [] if (pieces := greedy_wordpiece(word, vocab)) == [
        "[UNK]"] else pieces, "no piece for the emoji", id="empty-for-unknown"),
    # [UNK] as a string, not a list holding it
    pytest.param("01.greedy_wordpiece", lambda word, vocab: pieces if (pieces := greedy_wordpiece(word, vocab)) != [
        "[UNK]"] else "[UNK]", "expected a list, got str", id="unk-string"),
    # the pieces joined into one string
    pytest.param("01.greedy_wordpiece", lambda word, vocab: " ".join(greedy_wordpiece(word, vocab)),
                 "expected a list, got str", id="joined"),
    # off by one: the loop stops before the last pair is tested
    pytest.param("01.bpe_merge", _merge_loop(stop_before=2, keep_rest=True), "the last two tokens form the pair",
                 id="last-pair"),
    # scanning from the right
    pytest.param("01.bpe_merge", _merge_right_to_left, "overlapping pairs", id="right-to-left"),
    # the right tokens, but the caller's list was edited
    pytest.param("01.bpe_merge", _merge_in_place, "changed its input tokens in place", id="in-place"),
    # the last token dropped when it is not part of a pair
    pytest.param("01.bpe_merge", _merge_loop(stop_before=1, keep_rest=False), "'l o w l o w e r'", id="drops-tail"),
    # the merged tokens as one string
    pytest.param("01.bpe_merge", lambda tokens, pair, new: " ".join(map(str, bpe_merge(tokens, pair, new))),
                 "expected a list, got str", id="string"),
    # a boolean mask
    pytest.param("01.attention_mask", lambda ids, pad: ids != pad, "expected a torch.int64 tensor, got torch.bool",
                 id="bool"),
    # a float mask
    pytest.param("01.attention_mask", lambda ids, pad: (ids != pad).float(),
                 "expected a torch.int64 tensor, got torch.float32", id="float"),
    # ones everywhere
    pytest.param("01.attention_mask", lambda ids, pad: torch.ones_like(ids), "values differ", id="all-ones"),
    # lengths counted right, but the ones put at the end (left padding)
    pytest.param("01.attention_mask", lambda ids, pad: (torch.arange(ids.shape[1]) >= ids.shape[1] - (
        ids != pad).sum(dim=1, keepdim=True)).long(), "values differ", id="left-aligned"),
    # the lengths instead of the mask
    pytest.param("01.attention_mask", lambda ids, pad: (ids != pad).long().sum(dim=1), "expected shape",
                 id="lengths"),
]



# ------------------------------------------------------------------ references against the real libraries
def test_char_one_hot_equals_torch_one_hot_on_a_course_text():
    text = "This is a dark, gritty, sometimes funny little gem."
    vocab = sorted(set(text)) + ["z", "!"]
    ids = torch.tensor([vocab.index(char) for char in text])
    expected = F.one_hot(ids, num_classes=len(vocab))  # (T, V)
    got = char_one_hot(text, vocab)
    assert got.dtype == expected.dtype == torch.int64
    assert torch.equal(got, expected)
    assert char_one_hot("", vocab).shape == (0, len(vocab))


def test_small_vocabulary_is_part_of_the_encoders_and_greedy_pieces_equal_bert(tokenizer):
    vocab = tokenizer.get_vocab()
    assert SMALL_VOCAB <= set(vocab)
    for case in get_exercise("01.greedy_wordpiece").cases:
        word = case.args[0]
        # Every longest match in the full vocabulary is in the small one, so the pieces are BERT's.
        assert greedy_wordpiece(word, SMALL_VOCAB) == tokenizer.tokenize(word), word
        assert greedy_wordpiece(word, vocab) == tokenizer.tokenize(word), word


def test_greedy_wordpiece_with_the_full_vocabulary_equals_bert_on_long_words(tokenizer):
    vocab = tokenizer.get_vocab()
    words = ["unaffable", "moviegoers", "unwatchable", "documentarian", "hypnotically", "snoozefest",
             "overlong", "czechoslovakia", "unfunny", "rewatchable"]
    assert [greedy_wordpiece(w, vocab) for w in words] == [tokenizer.tokenize(w) for w in words]


def _gpt2_bpe_with_whole_merges(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """GPT-2's original algorithm: merge every occurrence of the best-ranked pair at once, with bpe_merge."""
    tokens = [piece[i:i + 1] for i in range(len(piece))]
    while len(tokens) > 1:
        pairs = [(a, b) for a, b in zip(tokens, tokens[1:]) if a + b in ranks]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: ranks[pair[0] + pair[1]])
        tokens = bpe_merge(tokens, best, best[0] + best[1])
    return tokens


def test_repeated_bpe_merges_reproduce_tiktoken_gpt2():
    encoding, ranks = gpt2_encoding(), gpt2_ranks()
    texts = ["A grand immersion.", "aaaaaaa bbbbbbbb", "This is a dark, gritty, sometimes funny little gem.",
             "Unaffable!!!   snoozefest... 1968-1969 Czechoslovakia", "naïve café 🤗 東京"]
    for text in texts:
        ids = [ranks[token] for piece in regex.findall(GPT2_PATTERN, text)
               for token in _gpt2_bpe_with_whole_merges(piece.encode("utf-8"), ranks)]
        assert ids == encoding.encode(text), text


def test_attention_mask_cases_equal_the_real_tokenizers_masks(tokenizer):
    cases = get_exercise("01.attention_mask").cases
    texts = ["A warm, funny and beautifully acted film.", "Overlong.", "The plot is a mess and the jokes never land."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(cases[0].args[0], batch["input_ids"])
    assert torch.equal(attention_mask_from_ids(batch["input_ids"], tokenizer.pad_token_id), batch["attention_mask"])

    short = tokenizer(["Overlong.", "Unaffable!"], padding="max_length", max_length=10, return_tensors="pt")
    assert torch.equal(cases[3].args[0], short["input_ids"])
    assert torch.equal(attention_mask_from_ids(short["input_ids"], tokenizer.pad_token_id), short["attention_mask"])

    encoding = gpt2_encoding()
    gpt2_texts = ["A grand immersion.", "Unaffable!", "This is a dark, gritty, sometimes funny little gem."]
    rows = [encoding.encode(text) for text in gpt2_texts]
    eot = encoding.eot_token
    padded = torch.tensor([row + [eot] * (12 - len(row)) for row in rows])
    assert torch.equal(cases[2].args[0], padded)
    expected = torch.tensor([[1] * len(row) + [0] * (12 - len(row)) for row in rows])
    assert torch.equal(attention_mask_from_ids(padded, eot), expected)
    assert 0 in rows[1]  # "!" is GPT-2's token 0: a mask must not treat id 0 as padding there


# ------------------------------------------------------------------ clear errors on bad input
def test_bad_inputs_get_errors_that_name_what_was_expected():
    with pytest.raises(ValueError, match=r"characters not in the vocabulary: \['z'\]"):
        char_one_hot("abz", ["a", "b"])
    with pytest.raises(TypeError, match="text must be a str, got list"):
        char_one_hot(["a"], ["a"])
    with pytest.raises(TypeError, match="word must be a str, got int"):
        greedy_wordpiece(7, SMALL_VOCAB)
    with pytest.raises(ValueError, match="pair must be a tuple of two tokens"):
        bpe_merge(["a", "b"], ["a", "b"], "ab")
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\), got \(4,\)"):
        attention_mask_from_ids(torch.tensor([101, 7, 102, 0]), 0)
    with pytest.raises(ValueError, match=r"integer input_ids"):
        attention_mask_from_ids(torch.zeros(2, 3), 0)


def test_learn_merges_equals_train_bpe_on_course_reviews(movie_reviews_full):
    texts = list(movie_reviews_full["train"]["text"][:300])
    counts = Counter(piece.encode("utf-8") for text in texts for piece in regex.findall(GPT2_PATTERN, text))
    assert learn_merges(dict(counts), 60) == train_bpe(texts, vocab_size=256 + 60).merges
    assert learn_merges({b"ab": 1}, 3) == [(b"a", b"b")]
    with pytest.raises(ValueError, match="num_merges must be a non-negative integer"):
        learn_merges({b"ab": 1}, -1)
    with pytest.raises(TypeError, match="word_counts must be a dict"):
        learn_merges({"ab": 1}, 2)


def test_encode_cases_equal_the_real_tokenizer_and_the_course_tokenizer(tokenizer):
    from course_lib.tokenization import WordPieceTokenizer

    ours = WordPieceTokenizer.from_pretrained()
    for case in get_exercise("01.encode").case_list():
        text, vocab = case.args
        assert tokenizer(text)["input_ids"] == ours.encode(text)["input_ids"] == _encode_variant(text, vocab), text
