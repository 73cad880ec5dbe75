"""Tokenizers written to be read, each proven equal to the real one where a real one exists.

* :mod:`~course_lib.tokenization.simple`: character and word tokenizers, :func:`one_hot`.
* :mod:`~course_lib.tokenization.wordpiece`: BERT's WordPiece (ids identical to the course encoder's tokenizer).
* :mod:`~course_lib.tokenization.bpe`: byte-level BPE encoding (ids identical to ``tiktoken``'s GPT-2).
* :mod:`~course_lib.tokenization.bpe_training`: learning BPE merges from a corpus.
"""
from course_lib.tokenization.bpe import (GPT2_END_OF_TEXT, GPT2_PATTERN, ByteLevelBPE, gpt2_encoding, gpt2_ranks,
                                         merge_by_rank)
from course_lib.tokenization.bpe_training import merge_pair, train_bpe
from course_lib.tokenization.simple import CharTokenizer, SimpleTokenizer, WordTokenizer, one_hot
from course_lib.tokenization.wordpiece import (
    SPECIAL_TOKENS,
    WordPieceTokenizer,
    is_cjk,
    is_control,
    is_punctuation,
    is_whitespace,
    normalize,
    pre_tokenize,
    split_punctuation,
    wordpiece,
)

__all__ = [
    "GPT2_END_OF_TEXT", "GPT2_PATTERN", "gpt2_encoding", "gpt2_ranks",
    "SPECIAL_TOKENS", "ByteLevelBPE", "CharTokenizer", "SimpleTokenizer", "WordPieceTokenizer",
    "WordTokenizer", "is_cjk", "is_control", "is_punctuation", "is_whitespace", "merge_by_rank", "merge_pair",
    "normalize", "one_hot", "pre_tokenize", "split_punctuation", "train_bpe", "wordpiece",
]
