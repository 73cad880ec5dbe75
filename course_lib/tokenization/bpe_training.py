"""Learning byte-level BPE merges from a corpus.

Start from the 256 single bytes. Count every adjacent pair of tokens over the corpus's distinct words
(weighted by how often each word occurs), merge the most frequent pair into a new token, and repeat until
the vocabulary has ``vocab_size`` tokens. Ties go to the pair whose bytes sort first, so training is
deterministic. Only the words that contain the merged pair are recounted, which keeps training fast.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable

import regex

from course_lib.tokenization._checks import check_corpus
from course_lib.tokenization.bpe import GPT2_PATTERN, ByteLevelBPE


def merge_pair(tokens: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``tokens``, left to right, by ``new_id``."""
    merged, i = [], 0
    while i < len(tokens):
        if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(tokens[i])
            i += 1
    return merged


def train_bpe(corpus: Iterable[str], vocab_size: int, pattern: str = GPT2_PATTERN) -> ByteLevelBPE:
    """Learn ``vocab_size - 256`` merges from ``corpus`` (a list of texts) and return the tokenizer.

    ``pattern`` splits texts into words first (GPT-2's by default), so no merge crosses a word boundary.
    Training stops early when no pair is left to merge. The merges are in ``tokenizer.merges``.
    """
    texts = check_corpus(corpus)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an integer >= 256 (the single bytes), got {vocab_size!r}")
    splitter = regex.compile(pattern)
    word_counts = Counter(piece.encode("utf-8") for text in texts for piece in splitter.findall(text))
    if not word_counts:
        raise ValueError(f"the pattern {pattern!r} finds no words in the corpus")

    vocab = [bytes([b]) for b in range(256)]  # id -> token bytes; byte b has id b
    ranks = {token: i for i, token in enumerate(vocab)}
    words = [list(word) for word in word_counts]  # each distinct word as a list of token ids
    counts = list(word_counts.values())

    pair_counts: Counter[tuple[int, int]] = Counter()
    words_with = defaultdict(set)  # pair -> indices of the words that (may) contain it
    for w, tokens in enumerate(words):
        for pair in zip(tokens, tokens[1:]):
            pair_counts[pair] += counts[w]
            words_with[pair].add(w)

    # A max-heap by count, then by the pair's bytes; entries whose count changed since are skipped.
    def entry(pair):
        return (-pair_counts[pair], vocab[pair[0]], vocab[pair[1]], pair)

    heap = [entry(pair) for pair in pair_counts]
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size and heap:
        negative_count, _, _, pair = heapq.heappop(heap)
        if pair_counts[pair] != -negative_count or negative_count == 0:
            continue  # stale heap entry
        merged = vocab[pair[0]] + vocab[pair[1]]
        new_id = ranks.get(merged)
        if new_id is None:  # the same bytes can come from two different pairs: keep one id for them
            new_id = ranks[merged] = len(vocab)
            vocab.append(merged)
        merges.append((vocab[pair[0]], vocab[pair[1]]))

        changed = set()
        for w in words_with.pop(pair):
            old, count = words[w], counts[w]
            new = words[w] = merge_pair(old, pair, new_id)
            for p in zip(old, old[1:]):
                pair_counts[p] -= count
                changed.add(p)
            for p in zip(new, new[1:]):
                pair_counts[p] += count
                words_with[p].add(w)
                changed.add(p)
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, entry(p))
    return ByteLevelBPE(ranks, pattern, merges=merges)


def learn_merges(word_counts: dict[bytes, int], num_merges: int) -> list[tuple[bytes, bytes]]:
    """The first ``num_merges`` BPE merges learned from ``word_counts`` (word as UTF-8 bytes -> count): each round,
    count every pair of neighbouring tokens weighted by the word's count, merge the most frequent pair (ties: the
    pair whose bytes sort first) in every word; stop early when no pair is left. Equal to ``train_bpe``'s merges.

    The plain loop, recounting every pair each round: what ``train_bpe`` does, without its bookkeeping.
    """
    if isinstance(num_merges, bool) or not isinstance(num_merges, int) or num_merges < 0:
        raise ValueError(f"num_merges must be a non-negative integer, got {num_merges!r}")
    if not isinstance(word_counts, dict) or not all(isinstance(word, bytes) for word in word_counts):
        raise TypeError("word_counts must be a dict of words as UTF-8 bytes -> count, e.g. {b' the': 12}")
    words = {word: [bytes([b]) for b in word] for word in word_counts}  # word -> its tokens, single bytes first
    merges: list[tuple[bytes, bytes]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, tokens in words.items():
            for pair in zip(tokens, tokens[1:]):
                pairs[pair] += word_counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))  # most frequent; ties: bytes sort first
        merges.append(best)
        words = {word: merge_pair(tokens, best, best[0] + best[1]) for word, tokens in words.items()}  # a, b -> ab
    return merges
