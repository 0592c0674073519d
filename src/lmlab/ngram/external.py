"""Out-of-core estimation: the estimator's stages over n-grams spilled to disk, in bounded memory.

The in-memory pipeline (:mod:`.estimate`) holds every n-gram at once. Here the same stages run on
*partitions* that each fit a memory budget, and the model is identical, array for array, because
every number is computed by the same code (:func:`.estimate.interpolate_order`) from the same
values summed in the same order. What makes partitions possible: for an n-gram ``w1 .. wn``
(n >= 2) everything its estimate needs shares its context's last word ``w(n-1)``:

- its context ``w1 .. w(n-1)``, whose followers give the context's totals and backoff;
- its suffix ``w2 .. wn`` (context ``w2 .. w(n-1)``), whose probability it interpolates with;
- its left extensions ``v w1 .. wn``, whose number is its Kneser-Ney adjusted count.

So n-grams are hash-partitioned by that word (words assigned greedily by frequency to balance the
partitions). Only the unigrams are global: they are a dense array over the vocabulary, reduced by
summing what each partition contributes. The stages, KenLM-style, each over sorted streams:

1. **count** (:func:`count_chunk`): the corpus is read in chunks; each position's *window* (the
   ``order`` words ending there, sentence start padded) is the sufficient statistic for every
   n-gram ending there. Distinct windows and their counts go to one file per chunk, grouped by
   partition.
2. **adjust** (:func:`adjust_partition`): per partition, windows from every chunk become the
   sorted n-gram tables of each order, with counts, suffixes and adjusted counts; the
   count-of-counts are summed over partitions, then the discounts are fitted once.
3. **interpolate** (:func:`interpolate_partition`): per partition, probabilities and backoffs,
   written out grouped by the n-gram's *first* word (a backoff belongs to the context, which
   lives in another partition).
4. **write** (:func:`assemble_bucket`): buckets of first words, in vocabulary order, give the
   model's global sort order; each bucket's n-grams are sorted, get their context's global index
   and are appended to the model's arrays (and ARPA text), which are copied into the model file.

Every stage is a function of files in a scratch directory, so partitions can run anywhere that
sees the directory. Peak memory is the largest partition's or bucket's, which the plan sizes
from the budget; the scratch directory is removed at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from lmlab.corpus import BOS_ID, EOS_ID, Span, TokenStream, Vocabulary, iter_corpus
from lmlab.errors import LmlabError
from lmlab.ngram.arpa import ngram_lines
from lmlab.ngram.counts import count_of_counts, sentence_positions
from lmlab.ngram.estimate import interpolate_order
from lmlab.ngram.smoothing import Smoothing

# Bytes of working memory per unit, measured with tracemalloc on the benchmark's text (MKN 5-gram;
# benchmarks/ngram_scale.py) and rounded up: per corpus token while a chunk is read and counted
# (~115), per window row of a partition (~150 adjusting, ~130 interpolating), per n-gram record of
# a bucket (~37). The fixed overhead is the interpreter, numpy and the vocabulary pass.
CHUNK_BYTES_PER_TOKEN = 160
PARTITION_BYTES_PER_ROW = 170
BUCKET_BYTES_PER_NGRAM = 60
FIXED_OVERHEAD = 96 * 2**20
MAX_PACK = 1 << 62  # codes stay below this: int64 with room for one more multiply check


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
    """The distinct rows of ``columns`` in lexicographic order (the model's order): returns the
    first row of each, the inverse (row -> distinct index), each distinct row's context id (its
    first ``len(columns) - 1`` words, dense in that order) and the number of contexts."""
    if len(columns) == 1:
        ctx, bound = np.zeros(len(columns[0]), dtype=np.int64), 1
    else:
        ctx, bound = fold(columns[:-1], base)
        if bound * base >= MAX_PACK:
            _, ctx = np.unique(ctx, return_inverse=True)
    key = ctx * base + columns[-1]
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    context, n_contexts = dense_groups(uniq // base)
    return first, inverse, context, n_contexts


# -- the plan: how many partitions and buckets the budget needs -----------------------------------
@dataclass
class Plan:
    order: int
    vocab_size: int
    memory: int
    chunk_tokens: int
    part_of: np.ndarray  # word id -> partition of the n-grams whose context ends in it
    bucket_of: np.ndarray  # word id -> bucket of the n-grams that start with it (ascending)
    scratch: str

    @property
    def parts(self) -> int:
        return int(self.part_of.max()) + 1

    @property
    def buckets(self) -> int:
        return int(self.bucket_of.max()) + 1

    def path(self, *name: str) -> str:
        return os.path.join(self.scratch, "-".join(name))


def make_plan(order: int, word_counts: np.ndarray, memory: int, scratch: str,
              sentences: int = 0) -> Plan:
    """Size chunks, partitions and buckets so each stage's working set fits ``memory``.

    ``word_counts``: how often each vocabulary word occurs; a word's share of the text bounds
    its share of the windows (as their last context word) and of the n-grams (as first word);
    ``<s>`` occurs once per sentence (``sentences``).
    """
    word_counts = word_counts.copy()
    word_counts[BOS_ID] = max(word_counts[BOS_ID], sentences)
    V = len(word_counts)
    budget = memory - FIXED_OVERHEAD
    tokens = max(int(word_counts.sum()), 1)
    if budget < 32 * 2**20:
        raise LmlabError(f"--memory {memory >> 20}M is too small: the fixed overhead alone is "
                         f"{FIXED_OVERHEAD >> 20}M; give at least {(FIXED_OVERHEAD >> 20) + 32}M")
    chunk_tokens = max(10_000, budget // CHUNK_BYTES_PER_TOKEN)
    # Windows per partition <= tokens whose previous word is in it; greedy largest-first
    # assignment to the lightest partition keeps them even (one word can never be split).
    rows_fit = budget // PARTITION_BYTES_PER_ROW
    parts = min(V, max(1, -(-tokens // rows_fit)))
    if parts > 1:
        parts = min(V, int(parts * 1.25) + 1)  # slack for the greedy's imbalance
    heaviest = int(word_counts.max())
    if heaviest > rows_fit:
        raise LmlabError(f"--memory {memory >> 20}M is too small for this corpus: the n-grams "
                         f"after its most frequent word ({heaviest:,} occurrences) are one "
                         f"partition, which needs about "
                         f"{(heaviest * PARTITION_BYTES_PER_ROW + FIXED_OVERHEAD) >> 20}M")
    part_of = greedy_partition(word_counts, parts)
    ngrams_fit = budget // BUCKET_BYTES_PER_NGRAM
    # an order-n bucket holds ~ its first words' share of all n-grams: at most order x tokens
    buckets = min(V, max(1, -(-order * tokens // ngrams_fit)))
    share = np.cumsum(word_counts) / tokens
    bucket_of = np.minimum((share * buckets).astype(np.int64), buckets - 1)
    bucket_of = np.maximum.accumulate(np.concatenate([[0], bucket_of[:-1]]))  # own word first
    _, bucket_of = np.unique(bucket_of, return_inverse=True)  # no empty buckets
    return Plan(order, V, memory, int(chunk_tokens), part_of, bucket_of.astype(np.int64),
                scratch)


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


# -- stage 1: count windows per chunk -------------------------------------------------------------
def count_span(item: tuple[int, Span | None], *, plan: Plan, path: str, vocab: Vocabulary
               ) -> tuple[list[str], np.ndarray, int, int]:
    """Stage 1 on span ``item = (index, span)`` of the corpus (None: the whole file): count each
    piece of at most ``plan.chunk_tokens`` tokens (:func:`count_chunk`); return the pieces' names,
    the unigram counts, the tokens and the words (tokens other than ``</s>``) read."""
    index, span = item
    names, unigrams, tokens, words = [], np.zeros(plan.vocab_size, dtype=np.int64), 0, 0
    for k, (_, stream) in enumerate(iter_corpus(path, vocab, plan.chunk_tokens,
                                                plan.chunk_tokens * 4, span)):
        names.append(f"{index}.{k}")
        unigrams += count_chunk(plan, names[-1], stream)
        tokens += len(stream)
        words += int(np.count_nonzero(stream.ids != EOS_ID))
    return names, unigrams, tokens, words


def count_chunk(plan: Plan, name: str, stream: TokenStream) -> np.ndarray:
    """Write the distinct windows of ``stream``, grouped by partition, to ``count-<name>``;
    return the unigram counts (raw: each position's word) for the global reduce."""
    N, V = plan.order, plan.vocab_size
    seq, dist = sentence_positions(stream)
    pos = np.flatnonzero(dist >= 1)
    unigrams = np.bincount(seq[pos], minlength=V).astype(np.int64)
    pad = V  # the word before a sentence start: sorts after every real word
    columns = []
    for back in range(N - 1, -1, -1):
        col = np.full(len(pos), pad, dtype=np.int64)
        ok = dist[pos] >= back
        col[ok] = seq[pos[ok] - back]
        columns.append(col)
    del seq, dist, pos
    part = plan.part_of[columns[-2]] if N > 1 else np.zeros(len(columns[0]), dtype=np.int64)
    code, _ = fold([part, *columns], V + 1)
    _, first, counts = np.unique(code, return_index=True, return_counts=True)
    del code
    words = np.empty((len(first), N), dtype=np.int32)
    for j, col in enumerate(columns):
        words[:, j] = col[first]
    save_grouped(plan, f"count-{name}", part[first], plan.parts, words=words, counts=counts)
    return unigrams


def save_grouped(plan: Plan, name: str, group: np.ndarray, groups: int,
                 **columns: np.ndarray) -> None:
    """Save ``columns`` (rows sorted by ``group``) as ``.npy`` files, with where each group
    starts, so :func:`read_group` reads one group from each of many such files."""
    with spill_errors(plan):
        for col, a in columns.items():
            np.save(plan.path(name, col + ".npy"), a)
        np.save(plan.path(name, "bounds.npy"), np.searchsorted(group, np.arange(groups + 1)))


def read_group(plan: Plan, name: str, files: list[str], which: int, *cols: str
               ) -> list[np.ndarray]:
    """Group ``which`` of columns ``cols`` of files ``name-<f>`` for each ``f`` in ``files``,
    concatenated. The files are mapped, and only the group's pages read."""
    out: list[list[np.ndarray]] = [[] for _ in cols]
    for f in files:
        bounds = np.load(plan.path(name, f, "bounds.npy"))
        lo, hi = int(bounds[which]), int(bounds[which + 1])
        for parts, col in zip(out, cols, strict=True):
            parts.append(np.array(np.load(plan.path(name, f, col + ".npy"), mmap_mode="r")[lo:hi]))
    return [np.concatenate(parts) for parts in out]


def group_sizes(plan: Plan, name: str, files: list[str], groups: int) -> np.ndarray:
    """How many records each group has over files ``name-<f>`` (from their bounds alone)."""
    sizes = np.zeros(groups, dtype=np.int64)
    for f in files:
        sizes += np.diff(np.load(plan.path(name, f, "bounds.npy")))
    return sizes


# -- stage 2: adjust, per partition ---------------------------------------------------------------
def adjust_partition(part: int, *, plan: Plan, chunks: list[str], continuation: bool
                     ) -> tuple[list[np.ndarray], np.ndarray]:
    """Build the partition's n-gram tables for orders 2..N and save them; return the
    count-of-counts of the counts the method uses (per order 2..N) and the partition's share of
    the unigrams' left-extension counts."""
    N, V = plan.order, plan.vocab_size
    words, weight = read_group(plan, "count", chunks, part, "words", "counts")
    row_index = None  # per row: the index of its order n-1 n-gram (the suffix), -1 if none
    coc: list[np.ndarray] = []
    unigram_left = np.zeros(V, dtype=np.int64)
    used = bos = None  # the order below's counts, and which of its n-grams start with <s>

    def save(n: int, **arrays: np.ndarray) -> None:
        with spill_errors(plan):
            for name, a in arrays.items():
                np.save(plan.path("table", str(part), f"{name}{n}.npy"), a)

    for n in range(2, N + 1):
        valid = np.flatnonzero(words[:, N - n] != V)
        cols = [words[valid, j] for j in range(N - n, N)]
        first, inverse, context, n_contexts = sorted_tuples(cols, V + 1)
        counts = np.bincount(inverse, weights=weight[valid], minlength=len(first))
        counts = counts.astype(np.int64)
        rep = valid[first]  # one row holding each n-gram
        suffix = cols[-1][first].astype(np.int64) if n == 2 else row_index[rep]
        left = np.bincount(suffix, minlength=V if n == 2 else len(used))
        if n == 2:
            unigram_left += left
        else:  # the order below is complete: its adjusted counts are known
            if continuation:
                used = np.where(bos, used, left)
            coc.append(count_of_counts(used))
            save(n - 1, used=used)
        row_index = np.full(len(words), -1, dtype=np.int64)
        row_index[valid] = inverse
        bos = cols[0][first] == BOS_ID
        del cols, first, inverse, valid, left
        save(n, words=words[rep, N - n:], raw=counts, context=context, suffix=suffix,
             ncontexts=np.array(n_contexts))
        used = counts
        del rep, context, suffix
    if N > 1:
        coc.append(count_of_counts(used))
        save(N, used=used)
    return coc, unigram_left


# -- stage 3: interpolate, per partition ----------------------------------------------------------
def interpolate_partition(part: int, *, plan: Plan, unigram_p: np.ndarray,
                          smoothing: Smoothing, prune: list[int] | None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the partition's n-grams and backoffs of their contexts, written per order
    grouped by bucket (``prob-<n>-<part>``, ``bow-<n-1>-<part>``) as log10; returns the backoffs
    of the unigram contexts here (word ids, log10 backoffs)."""
    N = plan.order
    def table(name: str) -> np.ndarray:
        path = plan.path("table", str(part), name + ".npy")
        a = np.load(path)
        os.remove(path)
        return a

    lower = unigram_p
    unigram_bow = (np.zeros(0, dtype=np.int64), np.zeros(0))
    for n in range(2, N + 1):
        words, context, raw = table(f"words{n}"), table(f"context{n}"), table(f"raw{n}")
        kept = raw > prune[n - 1] if prune else None
        p, bow = interpolate_order(n, table(f"used{n}"), context, int(table(f"ncontexts{n}")),
                                   lower[table(f"suffix{n}")], smoothing, kept)
        lower = p
        first_of_context = np.flatnonzero(np.diff(context, prepend=-1))
        with np.errstate(divide="ignore"):
            logp, logb = np.log10(p), np.log10(bow)
        ctx_words = words[first_of_context, :-1]
        if n == 2:
            unigram_bow = (ctx_words[:, 0].astype(np.int64), logb)
        else:
            write_grouped(plan, f"bow-{n - 1}-{part}", ctx_words, logb)
        if kept is not None:
            words, logp = words[kept], logp[kept]
        write_grouped(plan, f"prob-{n}-{part}", words, logp)
    return unigram_bow


def write_grouped(plan: Plan, name: str, words: np.ndarray, values: np.ndarray) -> None:
    """Records (words, value) grouped by the bucket of their first word."""
    bucket = plan.bucket_of[words[:, 0]]
    order = np.argsort(bucket, kind="stable")
    save_grouped(plan, name, bucket[order], plan.buckets, words=words[order],
                 values=values[order])


# -- stage 4: assemble the model in its global order, bucket by bucket -----------------------------
def bucket_starts(plan: Plan, parts: list[str]) -> list[list[int]]:
    """Per bucket, per order (1..N), the global index of its first n-gram: what the buckets
    before it hold, known from the record counts alone, so buckets are assembled independently."""
    starts = np.zeros((plan.buckets, plan.order), dtype=np.int64)
    starts[:, 0] = plan.vocab_size
    for n in range(2, plan.order + 1):
        sizes = group_sizes(plan, f"prob-{n}", parts, plan.buckets)
        starts[:, n - 1] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return starts.tolist()


def out_path(plan: Plan, what: str, n: int, bucket: int) -> str:
    """Bucket ``bucket``'s piece of the model's order-n ``what`` (keys, logp, bow or arpa)."""
    return plan.path("out", what, str(n), str(bucket))


def assemble_bucket(item: tuple[int, list[int]], *, plan: Plan, parts: list[str],
                    itos: list[str] | None) -> None:
    """Sort bucket ``item = (bucket, its starts)``'s n-grams of each order, find each one's
    context index in the global table below and write keys, log10 probabilities and backoffs
    (and ARPA lines, given the vocabulary ``itos``) as the bucket's piece of the model."""
    bucket, start = item
    N, V = plan.order, plan.vocab_size
    keys_below: list[np.ndarray] = [np.zeros(0)] * (N + 1)
    for n in range(2, N + 1):
        words, logp = read_group(plan, f"prob-{n}", parts, bucket, "words", "values")
        key = global_keys(words, keys_below, start, V)
        order = np.argsort(key, kind="stable")
        key, words, logp = key[order], words[order], logp[order]
        del order
        bow = np.zeros(len(key))
        if n < N:
            bwords, bvalues = read_group(plan, f"bow-{n}", parts, bucket, "words", "values")
            bkey = global_keys(bwords, keys_below, start, V)
            at = np.minimum(np.searchsorted(key, bkey), max(len(key) - 1, 0))
            hit = key[at] == bkey if len(key) else np.zeros(0, dtype=bool)
            bow[at[hit]] = bvalues[hit]  # a miss: the context itself was pruned
        keys_below[n] = key
        with spill_errors(plan):
            for what, a in (("keys", key), ("logp", logp), ("bow", bow)):
                a.tofile(out_path(plan, what, n, bucket))
            if itos is not None:
                strings = [" ".join(itos[w] for w in row) for row in words.tolist()]
                with open(out_path(plan, "arpa", n, bucket), "w", encoding="utf-8") as f:
                    f.writelines(ngram_lines(strings, logp, bow if n < N else None))


def global_keys(words: np.ndarray, keys_below: list[np.ndarray], start: list[int],
                V: int) -> np.ndarray:
    """``context index * V + last word`` for n-grams ``words`` of one bucket: the context's index
    is found order by order in the bucket's sorted keys below (every context is stored)."""
    n = words.shape[1]
    index = words[:, 0].astype(np.int64)  # unigram index = word id
    for k in range(2, n):
        index = start[k - 1] + np.searchsorted(keys_below[k], index * V + words[:, k - 1])
    return index * V + words[:, n - 1]


# -- errors and the scratch directory -------------------------------------------------------------
@contextmanager
def spill_errors(plan: Plan):
    """A full or failing scratch disk is one line naming the directory."""
    try:
        yield
    except OSError as err:
        why = "is full" if err.errno == 28 else f"cannot be written ({err.strerror or err})"
        raise LmlabError(f"the temporary directory {why}; give --temp a folder with more room "
                         "(the scratch files are about 30 bytes per token)",
                         os.path.dirname(plan.scratch)) from None


@contextmanager
def scratch_directory(temp: str | os.PathLike | None) -> Iterator[str]:
    """A fresh folder under ``temp`` (default: the system's), removed however the work ends."""
    parent = os.fspath(temp) if temp is not None else tempfile.gettempdir()
    try:
        path = tempfile.mkdtemp(prefix="lmlab-ngram-", dir=parent)
    except FileNotFoundError:
        raise LmlabError("no such directory (--temp)", parent) from None
    except OSError as err:
        raise LmlabError(f"cannot create a scratch folder here ({err.strerror or err}; --temp)",
                         parent) from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


