"""Stage 1 of the estimator: count n-grams of every order, vectorised.

N-grams are stored per order as a *trie in sorted arrays*, the layout the scorer uses too:
an n-gram (h, w) is identified by the index of its context h in the order n-1 table and the word
id w, packed into one int64 key ``context_index * V + w``. Sorting the keys groups every context's
followers together. Unigrams are dense: the unigram table index *is* the word id, so every
vocabulary word has a unigram entry.

Counting never loops over n-grams in Python: for each order, the keys of all positions are built
from the previous order's per-position indices, then one ``np.unique`` gives the sorted table, the
counts and (via the inverse) the per-position indices for the next order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.corpus import BOS_ID, TokenStream


@dataclass
class OrderCounts:
    """All n-grams of one order seen in training."""

    order: int
    keys: np.ndarray  # int64, sorted: context_index * V + word (unigrams: word id)
    counts: np.ndarray  # int64 raw occurrence counts (as a predicted n-gram)
    suffix: np.ndarray  # int64 index in order n-1 of the n-gram minus its first word (-1: order 1)
    starts_with_bos: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.keys)


def sentence_positions(stream: TokenStream) -> tuple[np.ndarray, np.ndarray]:
    """The ids with ``<s>`` prepended per sentence, and each position's distance from its ``<s>``.

    An n-gram ending at position t exists only if ``dist[t] >= n - 1``: n-grams never cross a
    sentence start, and ``<s>`` is only ever the first word of an n-gram (KenLM's convention).
    """
    seq, bos_pos = stream.with_bos()
    lengths = np.diff(np.append(bos_pos, len(seq)))
    dist = np.arange(len(seq), dtype=np.int64) - np.repeat(bos_pos, lengths)
    return seq.astype(np.int64), dist


def count_ngrams(stream: TokenStream, order: int, vocab_size: int) -> list[OrderCounts]:
    """Count every n-gram of orders 1..``order`` in ``stream`` (sentences padded with ``<s>``)."""
    seq, dist = sentence_positions(stream)
    V = vocab_size
    unigram_counts = np.bincount(seq[dist >= 1], minlength=V).astype(np.int64)
    words = np.arange(V, dtype=np.int64)
    tables = [OrderCounts(1, words, unigram_counts, np.full(V, -1, dtype=np.int64),
                          words == BOS_ID)]
    index_at = seq  # index of the (n-1)-gram ending at each position; unigram index = word id
    for n in range(2, order + 1):
        pos = np.flatnonzero(dist >= n - 1)
        if len(pos) == 0:  # no sentence long enough: an empty table, scoring backs off
            empty = np.zeros(0, dtype=np.int64)
            tables.append(OrderCounts(n, empty, empty, empty, np.zeros(0, dtype=bool)))
            index_at = np.full(len(seq), -1, dtype=np.int64)
            continue
        keys = index_at[pos - 1] * V + seq[pos]
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        # Any occurrence tells the suffix: the (n-1)-gram that ends where the n-gram ends.
        occurrence = np.empty(len(uniq), dtype=np.int64)
        occurrence[inverse] = pos
        suffix = index_at[occurrence]
        starts_with_bos = tables[-1].starts_with_bos[uniq // V]
        tables.append(OrderCounts(n, uniq, counts.astype(np.int64), suffix, starts_with_bos))
        next_index = np.full(len(seq), -1, dtype=np.int64)
        next_index[pos] = inverse
        index_at = next_index
    return tables


def continuation_counts(tables: list[OrderCounts]) -> list[np.ndarray]:
    """Kneser-Ney adjusted counts, as KenLM's ``lmplz`` computes them.

    The highest order keeps raw counts. A lower-order n-gram x gets N1+(. x), the number of distinct
    words seen to its left, except when x starts with ``<s>``: nothing can precede it, so it keeps
    its raw count.
    """
    adjusted = []
    for n, table in enumerate(tables, 1):
        if n == len(tables):
            adjusted.append(table.counts.copy())
            continue
        left = np.bincount(tables[n].suffix, minlength=len(table)).astype(np.int64)
        adjusted.append(np.where(table.starts_with_bos, table.counts, left))
    return adjusted


def count_of_counts(counts: np.ndarray, up_to: int = 10) -> np.ndarray:
    """``n[k]`` = number of n-grams with count exactly k, for k = 0..up_to."""
    return np.bincount(np.minimum(counts, up_to + 1), minlength=up_to + 2)[: up_to + 1]
