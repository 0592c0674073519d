"""How the out-of-core estimator (:mod:`.external`) cuts its work to fit a memory budget: word
tuples packed into sortable int64 codes, and the plan of spans, partitions, sub-batches and
buckets, sized from the vocabulary's word counts."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lmlab.corpus import BOS_ID
from lmlab.errors import LmlabError

# Bytes of working memory per unit, measured with tracemalloc on the benchmark's text (MKN 5-gram;
# benchmarks/ngram_scale.py) and rounded up: per corpus token while a chunk is read and counted
# (~115), per window row of a partition (~150 adjusting, ~130 interpolating), per n-gram record of
# a bucket (~37). The fixed overhead is the interpreter, numpy and the vocabulary pass.
CHUNK_BYTES_PER_TOKEN = 160
PARTITION_BYTES_PER_ROW = 170
BUCKET_BYTES_PER_NGRAM = 60
ORDER_BYTES = 16  # a window holds `order` words: per row or token, this much more per order above 5
FIXED_OVERHEAD = 96 * 2**20
MAX_PACK = 1 << 62  # codes stay below this: int64 with room for one more multiply check
MIN_BUDGET = 32 * 2**20  # the least working memory a plan is made for, beyond the overhead


def min_memory() -> int:
    """The smallest ``--memory`` a plan can be made for."""
    return FIXED_OVERHEAD + MIN_BUDGET


# -- packing word tuples into sortable int64 codes ------------------------------------------------
def fold(columns: list[np.ndarray], base: int) -> tuple[np.ndarray, int]:
    """Codes whose order is the lexicographic order of the rows of ``columns`` (values in
    ``0..base-1``): as many columns as fit are packed into one int64, and where the next would
    overflow the codes so far are replaced by their dense rank. Returns the codes and a bound."""
    code = columns[0].astype(np.int64)
    bound = base
    for col in columns[1:]:
        if bound * base >= MAX_PACK:
            uniq, code = np.unique(code, return_inverse=True)
            bound = len(uniq)
        code = code * base + col
        bound *= base
    return code, bound


def dense_groups(sorted_codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids (0, 1, ...) of the runs of equal values in a sorted array."""
    if len(sorted_codes) == 0:
        return np.zeros(0, dtype=np.int64), 0
    change = np.empty(len(sorted_codes), dtype=bool)
    change[0] = True
    np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=change[1:])
    ids = np.cumsum(change) - 1
    return ids, int(ids[-1]) + 1


def sorted_tuples(columns: list[np.ndarray], base: int) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray, int]:
    """The distinct rows of ``columns`` (two or more) in lexicographic order (the model's order):
    returns the first row of each, the inverse (row -> distinct index), each distinct row's
    context id (its first ``len(columns) - 1`` words, dense in that order) and the number of
    contexts. (:func:`fold`'s last step is ``prefix code * base + last column``, so a key's
    quotient by ``base`` is its context's code.)"""
    key, _ = fold(columns, base)
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    context, n_contexts = dense_groups(uniq // base)
    return first, inverse, context, n_contexts


# -- the plan: how many partitions and buckets the budget needs -----------------------------------
@dataclass
class Plan:
    order: int
    vocab_size: int
    chunk_tokens: int
    part_of: np.ndarray  # word id -> partition of the n-grams whose context ends in it
    # word id (and V, the padding before a sentence start) -> sub-batch, by the word before the
    # context's last one (orders >= 3): a partition too big for memory is adjusted and
    # interpolated one sub-batch at a time
    sub_of: np.ndarray
    # word id -> first bucket of the n-grams that start with it (ascending), and how many: a word
    # whose n-grams a bucket cannot hold has several, by ranges of the second word
    bucket_of: np.ndarray
    bucket_span: np.ndarray
    second_share: np.ndarray  # word id -> share of the text's words before it (cuts the ranges)
    scratch: str
    parts: int
    subs: int
    buckets: int

    def bucket(self, words: np.ndarray) -> np.ndarray:
        """The bucket of each n-gram (rows of ``words``, order >= 2): its first word's, or one
        of them by its second word. Buckets in order are the n-grams in the model's order."""
        first, span = self.bucket_of[words[:, 0]], self.bucket_span[words[:, 0]]
        within = (self.second_share[words[:, 1]] * span).astype(np.int64)
        return first + np.minimum(within, span - 1)

    def group(self, part: int, sub: int) -> int:
        """The group of the count files that holds partition ``part``'s sub-batch ``sub``."""
        return part * self.subs + sub

    def pieces(self) -> list[str]:
        """Names of every partition's sub-batches, where orders >= 3 are estimated."""
        return [f"{p}.{s}" for p in range(self.parts) for s in range(self.subs)]

    def prob_files(self, n: int) -> list[str]:
        """Which files hold the order-n probabilities: bigrams are estimated per partition,
        higher orders per sub-batch."""
        return [str(p) for p in range(self.parts)] if n == 2 else self.pieces()

    def path(self, *name: str) -> str:
        return os.path.join(self.scratch, "-".join(name))


def make_plan(order: int, word_counts: np.ndarray, memory: int, scratch: str,
              sentences: int = 0) -> Plan:
    """Size chunks, partitions, sub-batches and buckets so each stage's working set fits
    ``memory``.

    ``word_counts``: how often each vocabulary word occurs; a word's share of the text bounds
    its share of the windows (as their last context word) and of the n-grams (as first word);
    ``<s>`` occurs once per sentence (``sentences``).
    """
    word_counts = word_counts.copy()
    word_counts[BOS_ID] = max(word_counts[BOS_ID], sentences)
    V = len(word_counts)
    budget = memory - FIXED_OVERHEAD
    tokens = max(int(word_counts.sum()), 1)
    if memory < min_memory():
        raise LmlabError(f"--memory {memory >> 20}M is too small: give at least "
                         f"{min_memory() >> 20}M")
    wider = ORDER_BYTES * max(order - 5, 0)
    chunk_tokens = max(10_000, budget // (CHUNK_BYTES_PER_TOKEN + wider))
    # Windows per partition <= tokens whose previous word is in it; greedy largest-first
    # assignment to the lightest partition keeps them even. One word's windows can only be
    # split by the word before it: sub-batches, as many as the heaviest partition needs.
    rows_fit = budget // (PARTITION_BYTES_PER_ROW + wider)
    parts = min(V, max(1, -(-tokens // rows_fit)))
    if parts > 1:
        parts = min(V, int(parts * 1.25) + 1)  # slack for the greedy's imbalance
    part_of = greedy_partition(word_counts, parts)
    heaviest = int(np.bincount(part_of, weights=word_counts).max())
    subs = 1 if order < 3 or heaviest <= rows_fit else min(V, -(-2 * heaviest // rows_fit))
    sub_of = greedy_partition(np.append(word_counts, sentences), subs)
    bucket_of, bucket_span, buckets = first_word_buckets(
        word_counts * order, budget // BUCKET_BYTES_PER_NGRAM)
    second_share = (np.cumsum(word_counts) - word_counts) / tokens
    return Plan(order, V, int(chunk_tokens), part_of, sub_of, bucket_of, bucket_span,
                second_share, scratch, int(part_of.max()) + 1, int(sub_of.max()) + 1, buckets)


def first_word_buckets(load: np.ndarray, fit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut the vocabulary, in id order, into buckets of about ``fit`` n-grams (``load``: a
    word's expected n-grams as first word, at most order x its count): light words share one,
    a heavy word gets ``ceil(load / fit)`` of its own. Returns each word's first bucket, its
    number of buckets and the total."""
    span = np.maximum(1, -(-load // max(fit, 1))).astype(np.int64)
    first = np.empty(len(load), dtype=np.int64)
    bucket, filled = 0, 0
    for w, (weight, n) in enumerate(zip(load.tolist(), span.tolist(), strict=True)):
        if filled and (n > 1 or filled + weight > fit):
            bucket, filled = bucket + 1, 0
        first[w] = bucket
        if n > 1:
            bucket += n
        else:
            filled += weight
    return first, span, bucket + (filled > 0)


def greedy_partition(weights: np.ndarray, parts: int) -> np.ndarray:
    """Assign items to ``parts`` bins, heaviest first, each to the currently lightest bin."""
    import heapq

    part_of = np.zeros(len(weights), dtype=np.int64)
    heap = [(0, p) for p in range(parts)]
    for item in np.argsort(-weights, kind="stable").tolist():
        load, p = heapq.heappop(heap)
        part_of[item] = p
        heapq.heappush(heap, (load + int(weights[item]), p))
    return part_of
