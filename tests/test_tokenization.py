"""course_lib.tokenization against the real tokenizers: transformers' BERT tokenizer, tiktoken's GPT-2, torch."""
from __future__ import annotations

import unicodedata

import pytest
import torch
import torch.nn.functional as F

from course_lib.assets import hamlet_text
from course_lib.tokenization import gpt2_encoding
from course_lib.data import movie_reviews_frame, tweets_frame
from course_lib.tokenization import (
    SPECIAL_TOKENS,
    ByteLevelBPE,
    CharTokenizer,
    WordPieceTokenizer,
    WordTokenizer,
    normalize,
    one_hot,
    pre_tokenize,
    train_bpe,
    wordpiece,
)

HARD_CASES = [
    "",
    " ",
    "\t\n\r\n  \t",
    "Hello, world!",
    "Café naïve résumé Ångström façade Zürich ÉCOLE",
    "e\u0301 a\u0308 n\u0303 (combining accents)",
    "ΟΔΟΣ ΣΟΦΟΣ ΌΣΟΣ",  # a final capital sigma lower-cases to σ, one character at a time
    "İstanbul ǅemal ﬁne ﬃ Kelvin:\u212a Ohm:\u2126 Straße ẞ",
    "I ❤️ 🤗 😀👍🏽 family: 👨\u200d👩\u200d👧 flags 🇫🇷",
    "我爱北京天安门 東京タワー 한국어 𠀀𪜀 \U0002b820\U0002b920 \uf900",
    "Привет мир مرحبا שלום नमस्ते ไทย",
    "!!!???...---,,,;;;:::",
    "$100+ <3 ^_^ `code` |pipe| ~tilde~ {braces} [brackets] \\back/slash @user #tag %&*=",
    "« guillemets » „quotes“ “curly” ‘single’ — en–dash … ¿qué? ¡sí!",
    "don't won't y'all it's I'M rock'n'roll",
    "a" * 100,
    "b" * 101,
    "supercalifragilisticexpialidocious" * 3,
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "tab\tseparated\tvalues\nnew line\r\ncarriage",
    "no\u00a0break\u00a0space zero\u200bwidth ideographic\u3000space line\u2028separator para\u2029graph",
    "en\u2002space em\u2003space thin\u2009space\u202fnarrow\u205fmath \u1680ogham",
    "control\x00nul\x01soh\x07bell\x1b[31mred\x7fdel \x0bvt\x0cff\x1cfs\x85nel",
    "replacement\ufffdchar soft\u00adhyphen bidi\u202eoverride\u202c bom\ufeffhere private\ue000use",
    "[MASK] is special, [CLS] and [SEP] inline, [mask] is not, nor [unused0]",
    "[PAD][UNK]x[SEP]",
    "3.14159 1,000,000 10⁵ x² ½ ①②③ ٣٤٥ 0x1F",
    "@user check http this out!!! #SelfDrivingCars :) :-( <3",
    "ALL CAPS SHOUTING AND MiXeD cAsE",
    "\u0345abc \u0e31\u0e48 ᄀ\u1161\u11a8 \u0915\u093f\u0902",
    "hyphen-ated words, e-mail, self-driving, state-of-the-art",
    "<|endoftext|> is only text here <|endoftext|>",
    "   leading and trailing spaces   ",
    "'s 'S 'll 'LL 've 're 'd 't 'm",
    "\n\n\nblank lines\n\n\n",
    " ".join(["long sentence"] * 400),  # more than 512 tokens
]
SENTENCE_PAIRS = [
    ("How old are you?", "I'm six years old."),
    ("", ""),
    ("a", ""),
    ("", "b"),
    ("The movie was great.", "Le film était génial ! 🎬"),
    ("[MASK] here", "and [SEP] there"),
]


def course_texts() -> list[str]:
    return list(movie_reviews_frame()["text"]) + list(tweets_frame()["text"])


@pytest.fixture(scope="module")
def bert():
    return WordPieceTokenizer.from_pretrained()


@pytest.fixture(scope="module")
def gpt2():
    return ByteLevelBPE.gpt2()


def hf_pair(tokenizer, first: str, second: str, **options) -> dict:
    """transformers' encoding of one pair, through its batch form: a single call of transformers drops an
    empty ``text_pair`` (a truthiness check) while a batch keeps it, as the reference does."""
    return {key: rows[0] for key, rows in tokenizer([first], [second], **options).items()}


def mismatches(expected: list, actual: list, texts: list[str]) -> list[str]:
    assert len(expected) == len(actual) == len(texts)
    return [text for text, e, a in zip(texts, expected, actual) if e != a]


# ----------------------------------------------------------------------------------------------- one-hot
@pytest.mark.parametrize("shape, num_classes", [((5,), 7), ((2, 3), 4), ((0,), 3), ((), 2), ((2, 1, 4), 30522)])
def test_one_hot_equals_torch_one_hot(shape, num_classes):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, num_classes, shape, generator=generator)
    expected = F.one_hot(ids, num_classes=num_classes)
    actual = one_hot(ids, num_classes)
    assert actual.dtype == expected.dtype and torch.equal(actual, expected)


def test_one_hot_accepts_python_lists_and_small_integer_dtypes():
    assert torch.equal(one_hot([2, 0, 1], 3), F.one_hot(torch.tensor([2, 0, 1]), 3))
    ids = torch.tensor([[1, 2], [3, 0]], dtype=torch.int32)
    assert torch.equal(one_hot(ids, 5), F.one_hot(ids.long(), 5))


def test_one_hot_rejects_ids_outside_num_classes_like_torch():
    with pytest.raises(RuntimeError):
        F.one_hot(torch.tensor([0, 3]), num_classes=3)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 2\] for num_classes=3, got values from 0 to 3"):
        one_hot(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="from -1"):
        one_hot([-1, 1], 3)


@pytest.mark.parametrize("ids, num_classes, error, message", [
    (torch.tensor([0.0, 1.0]), 3, TypeError, "integer tensor, got dtype torch.float32"),
    (torch.tensor([True, False]), 3, TypeError, "integer tensor, got dtype torch.bool"),
    ([0, 1], 0, ValueError, "num_classes must be a positive integer, got 0"),
    ([0, 1], 2.0, ValueError, "num_classes must be a positive integer, got 2.0"),
    ("abc", 3, TypeError, "ids must be integers"),
])
def test_one_hot_rejects_bad_input_with_a_clear_message(ids, num_classes, error, message):
    with pytest.raises(error, match=message):
        one_hot(ids, num_classes)


# ----------------------------------------------------------------------------------------------- char / word
def test_char_vocabulary_is_ordered_by_frequency_then_alphabetically():
    # counts: a 3, b 2, c 2, d 1 -> a first, then b and c (tie, alphabetical), then d
    tokenizer = CharTokenizer.from_corpus(["abca", "bcd", "a"])
    assert tokenizer.id_to_token == ["[PAD]", "[UNK]", "a", "b", "c", "d"]
    assert tokenizer.encode("cab") == [4, 2, 3]
    assert tokenizer.encode("axz") == [2, 1, 1]  # unseen characters are unknown
    assert tokenizer.tokenize("axz") == ["a", "[UNK]", "[UNK]"]
    assert tokenizer.decode([4, 2, 3, 0, 0]) == "cab"  # padding is dropped


def test_char_vocabulary_respects_min_freq_and_max_size():
    corpus = ["abca", "bcd", "a"]
    assert CharTokenizer.from_corpus(corpus, min_freq=2).id_to_token == ["[PAD]", "[UNK]", "a", "b", "c"]
    assert CharTokenizer.from_corpus(corpus, max_size=1).id_to_token == ["[PAD]", "[UNK]", "a"]


def test_char_tokenizer_round_trips_the_course_corpus():
    texts = list(movie_reviews_frame()["text"][:2000])
    tokenizer = CharTokenizer.from_corpus(texts)
    assert all(tokenizer.decode(tokenizer.encode(text)) == text for text in texts)
    assert tokenizer.vocab_size == len(set("".join(texts))) + 2


def test_word_tokenizer_splits_words_and_symbols_and_marks_unknown_words():
    # counts: the 2, and the symbols/words once -> "the" first, then alphabetical: "!", ".", "cat", "dog"
    tokenizer = WordTokenizer.from_corpus(["The cat.", "the dog!"])
    assert tokenizer.id_to_token == ["[PAD]", "[UNK]", "the", "!", ".", "cat", "dog"]
    assert tokenizer.tokenize("The bird, the cat!") == ["the", "[UNK]", "[UNK]", "the", "cat", "!"]
    assert tokenizer.decode(tokenizer.encode("The dog.")) == "the dog ."
    cased = WordTokenizer.from_corpus(["The the"], lowercase=False)
    assert cased.id_to_token == ["[PAD]", "[UNK]", "The", "the"]


def test_word_vocabulary_of_the_course_corpus_leaves_unknown_words_in_new_text():
    reviews = list(movie_reviews_frame()["text"])
    tokenizer = WordTokenizer.from_corpus(reviews[:5000], min_freq=2)
    held_out = [token for text in reviews[5000:6000] for token in tokenizer.tokenize(text)]
    unknown = held_out.count("[UNK]") / len(held_out)
    assert 0.01 < unknown < 0.2  # a word vocabulary never covers new text


@pytest.mark.parametrize("corpus, error, message", [
    ([], ValueError, "corpus is empty"),
    (["", ""], ValueError, "corpus is empty"),
    ("just one string", TypeError, "got a single str"),
    (["ok", 3], TypeError, "only str, got int at position 1"),
    (42, TypeError, "iterable of str, got int"),
])
def test_vocabulary_building_rejects_bad_corpora(corpus, error, message):
    with pytest.raises(error, match=message):
        CharTokenizer.from_corpus(corpus)


def test_simple_tokenizers_reject_non_text_and_unknown_ids():
    tokenizer = CharTokenizer.from_corpus(["abc"])
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        tokenizer.encode(b"abc")
    with pytest.raises(ValueError, match=r"unknown token id 9: valid ids are 0 to 4"):
        tokenizer.decode([2, 9])
    with pytest.raises(TypeError, match="sequence of integers"):
        tokenizer.decode(["a"])


# ----------------------------------------------------------------------------------------------- WordPiece
def test_wordpiece_vocabulary_and_special_token_ids_match_bert(bert, tokenizer):
    assert bert.vocab == tokenizer.get_vocab()
    assert bert.vocab_size == 30522
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(bert, f"{name}_token") == getattr(tokenizer, f"{name}_token")
        assert getattr(bert, f"{name}_token_id") == getattr(tokenizer, f"{name}_token_id")


def test_wordpiece_greedy_longest_match_on_a_tiny_vocabulary():
    vocab = {"un", "una", "##ff", "##ffa", "##able", "##ble", "a", "##b"}
    assert wordpiece("unaffable", vocab) == ["una", "##ffa", "##ble"]  # longest first: "una", not "un"
    assert wordpiece("ab", vocab) == ["a", "##b"]
    assert wordpiece("abc", vocab) == ["[UNK]"]  # no piece for "c": the whole word is unknown
    assert wordpiece("a" * 101, {"a", "##a"}) == ["[UNK]"]  # longer than 100 characters
    assert wordpiece("a" * 100, {"a", "##a"}) == ["a"] + ["##a"] * 99


def test_wordpiece_normalizer_and_pre_tokenizer_match_berts(tokenizer):
    backend = tokenizer.backend_tokenizer
    for text in HARD_CASES:
        expected = backend.normalizer.normalize_str(text)
        assert normalize(text) == expected, text
        assert pre_tokenize(expected) == [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(expected)], text


def test_wordpiece_matches_bert_tokenizer_on_hard_cases(bert, tokenizer):
    for text in HARD_CASES:
        assert bert.tokenize(text) == tokenizer.tokenize(text), text
        assert bert.encode(text) == dict(tokenizer(text)), text


def test_wordpiece_sentence_pairs_have_token_type_ids_like_bert(bert, tokenizer):
    for first, second in SENTENCE_PAIRS:
        expected = hf_pair(tokenizer, first, second)
        encoded = bert.encode(first, second)
        assert encoded == expected, (first, second)
        # [CLS] A [SEP] is segment 0; B [SEP] is segment 1
        n_first = len(bert.tokenize(first)) + 2
        assert encoded["token_type_ids"] == [0] * n_first + [1] * (len(encoded["input_ids"]) - n_first)


def test_wordpiece_pairs_from_the_course_corpus_match_bert(bert, tokenizer):
    reviews = list(movie_reviews_frame()["text"][:600])
    pairs = list(zip(reviews[::2], reviews[1::2]))
    expected = tokenizer([a for a, _ in pairs], [b for _, b in pairs])
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert [bert.encode(a, b)[key] for a, b in pairs] == expected[key]


@pytest.mark.parametrize("max_length", [2, 3, 4, 5, 8, 13])
def test_wordpiece_truncation_and_padding_match_bert(bert, tokenizer, max_length):
    texts = ["", "one", "one two", "one two three four five six seven", "a b c d e f g h i j k l m n o p"]
    for first in texts:
        options = dict(truncation=True, max_length=max_length, padding="max_length")
        assert bert.encode(first, **options) == dict(tokenizer(first, **options)), first
        if max_length < 3:
            continue  # no room for [CLS] A [SEP] B [SEP]
        for second in texts:
            expected = hf_pair(tokenizer, first, second, **options)
            assert bert.encode(first, second, **options) == expected, (first, second)


def test_wordpiece_truncation_defaults_to_the_models_512_tokens_like_bert(bert, tokenizer):
    long_text, other = HARD_CASES[-1], "a short second text"
    assert len(bert.tokenize(long_text)) > 512
    assert bert.encode(long_text, truncation=True) == dict(tokenizer(long_text, truncation=True))
    assert bert.encode(long_text, other, truncation=True) == dict(tokenizer(long_text, other, truncation=True))
    assert len(bert.encode(long_text, truncation=True)["input_ids"]) == 512


def test_wordpiece_batches_pad_to_the_longest_like_bert(bert, tokenizer):
    texts = HARD_CASES[:12]
    assert bert.encode_batch(texts) == dict(tokenizer(texts, padding=True))
    pairs = [b for _, b in SENTENCE_PAIRS]
    firsts = [a for a, _ in SENTENCE_PAIRS]
    assert bert.encode_batch(firsts, pairs) == dict(tokenizer(firsts, pairs, padding=True))
    options = dict(truncation=True, max_length=10, padding="max_length")
    assert bert.encode_batch(texts, **options) == dict(tokenizer(texts, **options))


def test_wordpiece_decode_matches_bert(bert, tokenizer):
    for text in HARD_CASES + course_texts()[:500]:
        ids = tokenizer(text)["input_ids"]
        assert bert.decode(ids) == tokenizer.decode(ids), text
        assert bert.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True), text
    arbitrary = list(range(0, 30522, 97)) + [1005, 1055, 1050, 1005, 1056, 2079, 2025, 1012, 1029]
    assert bert.decode(arbitrary) == tokenizer.decode(arbitrary)


def test_wordpiece_token_and_id_conversions_match_bert(bert, tokenizer):
    tokens = ["hello", "##s", "[MASK]", "not-a-token", "[unused0]"]
    assert bert.convert_tokens_to_ids(tokens) == tokenizer.convert_tokens_to_ids(tokens)
    assert bert.convert_tokens_to_ids("hello") == tokenizer.convert_tokens_to_ids("hello")
    ids = [0, 100, 101, 102, 103, 7592, 2015]
    assert bert.convert_ids_to_tokens(ids) == tokenizer.convert_ids_to_tokens(ids)


@pytest.mark.slow
def test_wordpiece_matches_bert_tokenizer_on_course_corpus(bert, tokenizer):
    texts = course_texts()
    assert len(texts) > 45_000  # both data sets, every text
    expected = tokenizer(texts)
    actual = [bert.encode(text) for text in texts]
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        different = mismatches(expected[key], [row[key] for row in actual], texts)
        assert not different, f"{len(different)} of {len(texts)} texts differ in {key}, e.g. {different[:3]}"


@pytest.mark.slow
def test_wordpiece_matches_bert_on_every_long_established_unicode_character(bert, tokenizer):
    """Every character that Unicode 3.2 already had, alone and between letters."""
    old = unicodedata.ucd_3_2_0
    # Four characters changed category after Unicode 8.0, whose tables the fast tokenizer uses:
    # U+166D Po -> So, U+1734 Mn -> Mc, U+1885/U+1886 Lo -> Mn.
    changed = {"\u166d", "\u1734", "\u1885", "\u1886"}
    chars = [chr(c) for c in range(0x110000) if old.category(chr(c)) not in ("Cn", "Cs") and chr(c) not in changed]
    assert len(chars) > 230_000
    texts = [" ".join(f"a{c}b {c}" for c in chars[i:i + 50]) for i in range(0, len(chars), 50)]
    expected = tokenizer(texts, add_special_tokens=False)["input_ids"]
    actual = [bert.convert_tokens_to_ids(bert.tokenize(text)) for text in texts]
    different = mismatches(expected, actual, texts)
    assert not different, f"{len(different)} groups of 50 characters differ, e.g. {different[:1]}"


def test_wordpiece_loads_vocabulary_from_any_bert_folder(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "he", "##llo"]) + "\n")
    small = WordPieceTokenizer.from_pretrained(tmp_path)
    assert small.encode("Hello hi") == {"input_ids": [2, 5, 6, 1, 3], "token_type_ids": [0] * 5,
                                        "attention_mask": [1] * 5}


def test_wordpiece_rejects_bad_input_with_clear_messages(bert):
    with pytest.raises(TypeError, match="text must be a str, got int"):
        bert.tokenize(42)
    with pytest.raises(TypeError, match="text_pair must be a str, got list"):
        bert.encode("a", ["b"])
    with pytest.raises(ValueError, match=r"unknown token id 30522"):
        bert.decode([101, 30522])
    with pytest.raises(ValueError, match="1-D"):
        bert.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="need an integer max_length, got None"):
        WordPieceTokenizer(list(SPECIAL_TOKENS)).encode("a", truncation=True)  # no model_max_length either
    with pytest.raises(ValueError, match="max_length=1 leaves no room"):
        bert.encode("a", truncation=True, max_length=1)
    with pytest.raises(ValueError, match="padding must be one of"):
        bert.encode("a", padding="longest")
    with pytest.raises(TypeError, match="texts must be a list of str, got str"):
        bert.encode_batch("one text")
    with pytest.raises(ValueError, match="text_pairs must be as long as texts: got 1 and 2"):
        bert.encode_batch(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="lacks the special tokens"):
        WordPieceTokenizer(["a", "b"])


def test_wordpiece_decode_accepts_a_tensor_of_ids(bert, tokenizer):
    ids = torch.tensor(tokenizer("A tensor of ids.")["input_ids"])
    assert bert.decode(ids) == "[CLS] a tensor of ids. [SEP]"


# ----------------------------------------------------------------------------------------------- BPE training
def test_bpe_trainer_learns_the_most_frequent_pairs_first():
    # Words: low x5, lower x2, newest x6, widest x3. Pair counts: e-s 9, s-t 9, w-e 8, l-o 7, o-w 7, ...
    # 1. (e, s) 9, tied with (s, t) and first in byte order; 2. (es, t) 9; 3. (l, o) 7, tied with (o, w);
    # 4. (lo, w) 7; 5. (e, w) 6, tied with (n, e) and (w, est).
    corpus = ["low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3]
    tokenizer = train_bpe(corpus, vocab_size=256 + 5, pattern=r"\S+")
    assert tokenizer.merges == [(b"e", b"s"), (b"es", b"t"), (b"l", b"o"), (b"lo", b"w"), (b"e", b"w")]
    assert tokenizer.vocab_size == 261
    assert tokenizer.ranks[b"est"] == 257 and tokenizer.ranks[b"low"] == 259
    assert tokenizer.tokenize("lowest") == [b"low", b"est"]
    assert tokenizer.tokenize("newer") == [b"n", b"ew", b"e", b"r"]


def test_bpe_trainer_breaks_ties_by_byte_order_and_stops_when_nothing_is_left():
    tokenizer = train_bpe(["ba ab"], vocab_size=1000, pattern=r"\S+")
    assert tokenizer.merges == [(b"a", b"b"), (b"b", b"a")]  # both pairs occur once
    assert tokenizer.vocab_size == 258


def test_bpe_trainer_merges_within_gpt2_pieces_only():
    tokenizer = train_bpe(["the cat the hat the mat"], vocab_size=256 + 4)
    # Pieces: "the", " cat", " the", " hat", " the", " mat". The pairs a-t, h-e and t-h occur 3 times each;
    # (a, t) comes first in byte order.
    assert tokenizer.merges[0] == (b"a", b"t")
    assert all(b" " not in right for _, right in tokenizer.merges)  # a space only ever starts a piece


def test_bpe_trained_on_course_corpus_round_trips_and_compresses():
    texts = list(movie_reviews_frame()["text"][:2000])
    tokenizer = train_bpe(texts, vocab_size=256 + 300)
    assert tokenizer.vocab_size == 556
    assert b" the" in tokenizer.ranks and b" and" in tokenizer.ranks
    for text in texts[:500] + HARD_CASES:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text, text
    sample = " ".join(texts[:500])
    assert len(tokenizer.encode(sample)) < 0.6 * len(sample.encode("utf-8"))


def test_bpe_trained_tokenizer_is_deterministic():
    texts = list(tweets_frame()["text"][:500])
    first = train_bpe(texts, vocab_size=300)
    second = train_bpe(list(texts), vocab_size=300)
    assert first.merges == second.merges and first.ranks == second.ranks


@pytest.mark.parametrize("corpus, vocab_size, error, message", [
    ([], 300, ValueError, "corpus is empty"),
    ([""], 300, ValueError, "corpus is empty"),
    ("text", 300, TypeError, "got a single str"),
    (["text"], 100, ValueError, "vocab_size must be an integer >= 256"),
    (["text"], 300.0, ValueError, "vocab_size must be an integer >= 256"),
])
def test_bpe_trainer_rejects_bad_input(corpus, vocab_size, error, message):
    with pytest.raises(error, match=message):
        train_bpe(corpus, vocab_size)


# ----------------------------------------------------------------------------------------------- GPT-2 BPE
def test_gpt2_vocabulary_matches_tiktoken(gpt2):
    encoding = gpt2_encoding()
    assert gpt2.vocab_size == encoding.n_vocab == 50257
    assert all(gpt2.decode_bytes([i]) == encoding.decode_single_token_bytes(i) for i in range(0, 50257, 7))


def test_gpt2_pre_tokenization_keeps_spaces_with_the_next_word(gpt2):
    assert gpt2.pre_tokenize("Hello world!! It's 2024.") == ["Hello", " world", "!!", " It", "'s", " 2024", "."]
    assert gpt2.pre_tokenize("a  b\n\n") == ["a", " ", " b", "\n\n"]


def test_gpt2_matches_tiktoken_on_hard_cases_and_round_trips(gpt2):
    encoding = gpt2_encoding()
    cases = HARD_CASES + ["\ud83d\ude00 paired surrogates", "lone \ud800 surrogate", "x" * 500, "🤗" * 50]
    for text in cases:
        ids = gpt2.encode(text)
        assert ids == encoding.encode_ordinary(text), repr(text)
        assert gpt2.decode(ids) == encoding.decode(ids)
    for text in HARD_CASES:
        assert gpt2.decode(gpt2.encode(text)) == text, repr(text)


def test_gpt2_special_tokens_are_text_unless_allowed(gpt2):
    encoding = gpt2_encoding()
    text = "end<|endoftext|>start"
    assert gpt2.encode(text) == encoding.encode(text, disallowed_special=())
    assert gpt2.encode(text, allowed_special="all") == encoding.encode(text, allowed_special="all")
    assert gpt2.encode(text, allowed_special="<|endoftext|>") == encoding.encode(text, allowed_special="all")
    assert gpt2.decode(gpt2.encode(text, allowed_special="all")) == text


def test_gpt2_decode_of_a_split_character_uses_the_replacement_character(gpt2):
    encoding = gpt2_encoding()
    ids = gpt2.encode("🤗")
    assert len(ids) > 1  # a 4-byte character in several tokens
    assert gpt2.decode(ids[:1]) == encoding.decode(ids[:1]) == "\ufffd"
    assert gpt2.decode_bytes(ids) == "🤗".encode("utf-8")


def test_gpt2_rejects_bad_input_with_clear_messages(gpt2):
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        gpt2.encode(b"bytes")
    with pytest.raises(ValueError, match="unknown token id 50257"):
        gpt2.decode([50257])
    with pytest.raises(ValueError, match="not special tokens"):
        gpt2.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match="all 256 single bytes"):
        ByteLevelBPE({b"a": 0})


@pytest.mark.slow
def test_gpt2_matches_tiktoken_on_course_corpus(gpt2):
    encoding = gpt2_encoding()
    texts = course_texts() + hamlet_text().splitlines()
    assert len(texts) > 50_000
    expected = [encoding.encode_ordinary(text) for text in texts]
    actual = [gpt2.encode(text) for text in texts]
    different = mismatches(expected, actual, texts)
    assert not different, f"{len(different)} of {len(texts)} texts differ, e.g. {different[:3]}"
    hamlet = hamlet_text()
    assert gpt2.encode(hamlet) == encoding.encode_ordinary(hamlet)
    assert gpt2.decode(gpt2.encode(hamlet)) == hamlet


@pytest.mark.slow
def test_gpt2_matches_tiktoken_on_every_character_of_the_first_two_planes(gpt2):
    encoding = gpt2_encoding()
    chars = [chr(c) for c in range(0x20000) if not 0xD800 <= c < 0xE000]
    texts = ["".join(f"a{c}b {c}{c}1{c} " for c in chars[i:i + 50]) for i in range(0, len(chars), 50)]
    expected = [encoding.encode_ordinary(text) for text in texts]
    different = mismatches(expected, [gpt2.encode(text) for text in texts], texts)
    assert not different, f"{len(different)} groups of 50 characters differ, e.g. {different[:1]}"


def test_gpt2_encoding_uses_gpt2_ids():
    encoding = gpt2_encoding()
    assert encoding.n_vocab == 50257
    assert encoding.encode("hello world") == [31373, 995]  # GPT-2's published ids for these words
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [50256]
