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
partitions). A partition too big for memory is split into *sub-batches* by the word before,
``w(n-2)``, which the three share too for orders >= 3; its bigrams are estimated whole. Only the
unigrams are global: a dense array over the vocabulary, summed from what each partition
contributes. The stages, KenLM-style, each over sorted streams:

1. **count** (:func:`count_span`, :func:`count_chunk`): the corpus is read in spans; each
   position's *window* (the ``order`` words ending there, sentence start padded) is the
   sufficient statistic for every n-gram ending there. Distinct windows and their counts go to
   one file per chunk, grouped by partition and sub-batch.
2. **adjust** (:func:`adjust_partition`): per partition (bigrams) and sub-batch (higher orders),
   the windows from every chunk become the sorted n-gram tables of each order, with counts,
   suffixes and adjusted counts; the count-of-counts are summed, then the discounts fitted once.
3. **interpolate** (:func:`interpolate_partition`): probabilities and backoffs, written out
   grouped by the n-gram's *first* word (a backoff belongs to the context, which lives in
   another partition).
4. **write** (:func:`assemble_bucket`): buckets of first words, in vocabulary order, give the
   model's global sort order; each bucket's n-grams are sorted, get their context's global index
   and are written as the bucket's piece of the model's arrays (and ARPA text).

Every stage is a function of files in a scratch directory that only reads its inputs, so a task
can run anywhere that sees the directory, and run again. The plan sizes spans, partitions,
sub-batches and buckets from the budget and the vocabulary's word counts; what it cannot split
is one first word's n-grams (a bucket) or one pair of context words' (a sub-batch), so a word
far more frequent than the budget allows can take a process past it. The scratch directory is
removed at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from lmlab.corpus import BOS_ID, EOS_ID, TokenStream, Vocabulary, iter_corpus
from lmlab.errors import LmlabError
from lmlab.ngram.arpa import ngram_lines
from lmlab.ngram.counts import count_of_counts, sentence_positions
from lmlab.ngram.estimate import interpolate_order
from lmlab.ngram.partition import Plan, dense_groups, fold, sorted_tuples
from lmlab.ngram.smoothing import Smoothing
from lmlab.textlines import Span

ARPA_SLICE = 2**18  # ARPA lines are formatted this many n-grams at a time


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
    """Write the distinct windows of ``stream``, grouped by partition and sub-batch
    (:meth:`Plan.group`), to ``count-<name>``;
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
    group = plan.part_of[columns[-2]] * plan.subs if N > 1 else np.zeros_like(columns[0])
    if N > 2:
        group += plan.sub_of[columns[-3]]
    groups = plan.parts * plan.subs
    code, _ = fold([group, *columns], max(V + 1, groups))
    _, first, counts = np.unique(code, return_index=True, return_counts=True)
    del code
    words = np.empty((len(first), N), dtype=np.int32)
    for j, col in enumerate(columns):
        words[:, j] = col[first]
    save_grouped(plan, f"count-{name}", group[first], groups, words=words, counts=counts)
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
        bounds = _bounds(plan.path(name, f, "bounds.npy"))
        lo, hi = int(bounds[which]), int(bounds[which + 1])
        for parts, col in zip(out, cols, strict=True):
            if hi > lo or not parts:  # (one empty slice keeps the dtype and shape)
                data = np.load(plan.path(name, f, col + ".npy"), mmap_mode="r")
                parts.append(np.array(data[lo:hi]))
    return [np.concatenate(parts) for parts in out]


@functools.lru_cache(maxsize=4096)
def _bounds(path: str) -> np.ndarray:
    """Where each group of a grouped file starts (read once per process: a bucket reads one
    group of every partition's file)."""
    return np.load(path)


def group_sizes(plan: Plan, name: str, files: list[str], groups: int) -> np.ndarray:
    """How many records each group has over files ``name-<f>`` (from their bounds alone)."""
    sizes = np.zeros(groups, dtype=np.int64)
    for f in files:
        sizes += np.diff(_bounds(plan.path(name, f, "bounds.npy")))
    return sizes


# -- stage 2: adjust, per partition ---------------------------------------------------------------
def adjust_partition(part: int, *, plan: Plan, chunks: list[str], continuation: bool,
                     pruned: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Build the partition's n-gram tables and save them: its bigrams whole, higher orders one
    sub-batch at a time (with the raw counts too when the model is ``pruned``: pruning reads
    them). Return the count-of-counts of the counts the method uses (per order 2..N) and the
    partition's share of the unigrams' left-extension counts."""
    N, V = plan.order, plan.vocab_size
    base = V + 1
    coc = [np.zeros(11, dtype=np.int64) for _ in range(2, N + 1)]

    def save(piece: str, n: int, **arrays: np.ndarray) -> None:
        with spill_errors(plan):
            for name, a in arrays.items():
                if name != "raw" or pruned:
                    np.save(plan.path("table", piece, f"{name}{n}.npy"), a)

    held = None  # one sub-batch's rows are read once, not once per pass

    def rows(sub: int) -> tuple[np.ndarray, np.ndarray]:
        return held or read_group(plan, "count", chunks, plan.group(part, sub), "words",
                                  "counts")

    # Bigrams (context: one word of this partition) from every sub-batch: two columns each.
    keys, weights = [], []
    for sub in range(plan.subs):
        words, weight = rows(sub)
        uniq, inverse = np.unique(words[:, N - 2].astype(np.int64) * base + words[:, N - 1],
                                  return_inverse=True)
        keys.append(uniq)
        weights.append(np.bincount(inverse, weights=weight, minlength=len(uniq)))
        if plan.subs == 1:
            held = words, weight
        del words, weight, inverse
    bigrams, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    counts2 = np.bincount(inverse, weights=np.concatenate(weights),
                          minlength=len(bigrams)).astype(np.int64)
    del keys, weights, inverse
    left2 = np.zeros(len(bigrams), dtype=np.int64)
    for sub in range(plan.subs if N > 2 else 0):
        piece = f"{part}.{sub}"
        words, weight = rows(sub)
        row_index = np.searchsorted(bigrams, words[:, N - 2].astype(np.int64) * base
                                    + words[:, N - 1])  # each row's bigram (all are stored)
        used = bos = None  # the order below's counts, and which of its n-grams start with <s>
        for n in range(3, N + 1):
            valid = np.flatnonzero(words[:, N - n] != V)
            cols = [words[valid, j] for j in range(N - n, N)]
            first, inverse, context, n_contexts = sorted_tuples(cols, base)
            counts = np.bincount(inverse, weights=weight[valid], minlength=len(first))
            counts = counts.astype(np.int64)
            rep = valid[first]  # one row holding each n-gram
            suffix = row_index[rep]
            if n == 3:
                left2 += np.bincount(suffix, minlength=len(bigrams))
            else:  # the order below is complete: its adjusted counts are known
                if continuation:
                    used = np.where(bos, used, np.bincount(suffix, minlength=len(used)))
                coc[n - 3] += count_of_counts(used)
                save(piece, n - 1, used=used)
            row_index = np.full(len(words), -1, dtype=np.int64)
            row_index[valid] = inverse
            bos = cols[0][first] == BOS_ID
            del cols, first, inverse, valid
            save(piece, n, words=words[rep, N - n:], raw=counts, context=context.astype(np.int32),
                 suffix=suffix.astype(np.int32), ncontexts=np.array(n_contexts))
            used = counts
            del rep, context, suffix
        coc[N - 2] += count_of_counts(used)
        save(piece, N, used=used)
        del words, weight, row_index
    held = None
    first_words = bigrams // base
    context, n_contexts = dense_groups(first_words)
    used2 = np.where(first_words == BOS_ID, counts2, left2) if continuation and N > 2 \
        else counts2
    coc[0] += count_of_counts(used2)
    save(str(part), 2, words=np.stack([first_words, bigrams % base], axis=1).astype(np.int32),
         raw=counts2, context=context.astype(np.int32), suffix=(bigrams % base).astype(np.int32),
         ncontexts=np.array(n_contexts),
         used=used2)
    return coc, np.bincount(bigrams % base, minlength=V)


# -- stage 3: interpolate, per partition ----------------------------------------------------------
def interpolate_partition(part: int, *, plan: Plan, unigram_p: np.ndarray,
                          smoothing: Smoothing, prune: list[int] | None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the partition's n-grams and backoffs of their contexts, written per order
    grouped by bucket (``prob-<n>-<piece>``, ``bow-<n-1>-<piece>``) as log10; returns the
    backoffs of the unigram contexts here (word ids, log10 backoffs)."""
    N = plan.order

    def table(piece: str, name: str) -> np.ndarray:
        # (not deleted here: a task that Dask retries must find its inputs; the driver removes
        # a stage's inputs once the stage is done)
        return np.load(plan.path("table", piece, name + ".npy"))

    def order(piece: str, n: int, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order n of ``piece``: its probabilities, and its contexts' words and log10 backoffs
        (its n-grams' log10 probabilities are written here)."""
        words, context = table(piece, f"words{n}"), table(piece, f"context{n}")
        kept = table(piece, f"raw{n}") > prune[n - 1] if prune else None
        p, bow = interpolate_order(n, table(piece, f"used{n}"), context,
                                   int(table(piece, f"ncontexts{n}")),
                                   lower[table(piece, f"suffix{n}")], smoothing, kept)
        with np.errstate(divide="ignore"):
            logp, logb = np.log10(p), np.log10(bow)
        first_of_context = np.flatnonzero(np.diff(context, prepend=-1))
        write_grouped(plan, f"prob-{n}-{piece}", words if kept is None else words[kept],
                      logp if kept is None else logp[kept])
        return p, words[first_of_context, :-1], logb

    p2, ctx_words, logb = order(str(part), 2, unigram_p)
    for sub in range(plan.subs if N > 2 else 0):
        piece, lower = f"{part}.{sub}", p2
        for n in range(3, N + 1):
            lower, bow_words, bow_values = order(piece, n, lower)
            write_grouped(plan, f"bow-{n - 1}-{piece}", bow_words, bow_values)
    return ctx_words[:, 0].astype(np.int64), logb


def write_grouped(plan: Plan, name: str, words: np.ndarray, values: np.ndarray) -> None:
    """Records (words, value) grouped by the bucket of their first word."""
    bucket = plan.bucket(words)
    order = np.argsort(bucket, kind="stable")
    save_grouped(plan, name, bucket[order], plan.buckets, words=words[order],
                 values=values[order])


# -- stage 4: assemble the model in its global order, bucket by bucket -----------------------------
def bucket_starts(plan: Plan) -> list[list[int]]:
    """Per bucket, per order (1..N), the global index of its first n-gram: what the buckets
    before it hold, known from the record counts alone, so buckets are assembled independently."""
    starts = np.zeros((plan.buckets, plan.order), dtype=np.int64)  # (order 1: unused)
    for n in range(2, plan.order + 1):
        sizes = group_sizes(plan, f"prob-{n}", plan.prob_files(n), plan.buckets)
        starts[:, n - 1] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return starts.tolist()


def out_path(plan: Plan, what: str, n: int, bucket: int) -> str:
    """Bucket ``bucket``'s piece of the model's order-n ``what`` (keys, logp, bow or arpa)."""
    return plan.path("out", what, str(n), str(bucket))


def assemble_bucket(item: tuple[int, list[int]], *, plan: Plan, itos: list[str] | None) -> None:
    """Sort bucket ``item = (bucket, its starts)``'s n-grams of each order, find each one's
    context index in the global table below and write keys, log10 probabilities and backoffs
    (and ARPA lines, given the vocabulary ``itos``) as the bucket's piece of the model."""
    bucket, start = item
    N, V = plan.order, plan.vocab_size
    keys_below: list[np.ndarray] = [np.zeros(0)] * (N + 1)
    for n in range(2, N + 1):
        words, logp = read_group(plan, f"prob-{n}", plan.prob_files(n), bucket, "words",
                                 "values")
        key = global_keys(words, keys_below, start, V)
        order = np.argsort(key, kind="stable")
        key, words, logp = key[order], words[order], logp[order]
        del order
        bow = np.zeros(len(key))
        if n < N:
            bwords, bvalues = read_group(plan, f"bow-{n}", plan.pieces(), bucket, "words",
                                         "values")
            bkey = global_keys(bwords, keys_below, start, V)
            at = np.minimum(np.searchsorted(key, bkey), max(len(key) - 1, 0))
            hit = (bkey >= 0) & (key[at] == bkey) if len(key) else np.zeros(len(bkey), bool)
            bow[at[hit]] = bvalues[hit]  # a miss: the context itself was pruned
        keys_below[n] = key
        with spill_errors(plan):
            for what, a in (("keys", key), ("logp", logp), ("bow", bow)):
                a.tofile(out_path(plan, what, n, bucket))
            if itos is not None:  # (Python strings cost ~100 bytes each: a slice at a time)
                with open(out_path(plan, "arpa", n, bucket), "w", encoding="utf-8") as f:
                    for lo in range(0, len(key), ARPA_SLICE):
                        hi = lo + ARPA_SLICE
                        strings = [" ".join(itos[w] for w in row) for row in words[lo:hi].tolist()]
                        f.writelines(ngram_lines(strings, logp[lo:hi],
                                                 bow[lo:hi] if n < N else None))


def global_keys(words: np.ndarray, keys_below: list[np.ndarray], start: list[int],
                V: int) -> np.ndarray:
    """``context index * V + last word`` for n-grams ``words`` of one bucket: the context's index
    is found order by order in the bucket's sorted keys below; -1 where a context is not stored
    (a backoff weight whose context was pruned)."""
    n = words.shape[1]
    index = words[:, 0].astype(np.int64)  # unigram index = word id
    stored = np.ones(len(words), dtype=bool)
    for k in range(2, n):
        query = index * V + words[:, k - 1]
        at = np.searchsorted(keys_below[k], query)
        found = at < len(keys_below[k])
        found[found] = keys_below[k][at[found]] == query[found]
        stored &= found
        index = start[k - 1] + at
    key = index * V + words[:, n - 1]
    key[~stored] = -1
    return key


# -- errors and the scratch directory -------------------------------------------------------------
@contextmanager
def spill_errors(plan: Plan):
    """A full or failing scratch disk is one line naming the directory."""
    try:
        yield
    except OSError as err:
        why = "is full" if err.errno == errno.ENOSPC else \
            f"cannot be written ({err.strerror or err})"
        raise LmlabError(f"the temporary directory {why}; give --temp a folder with more room "
                         "(the scratch files take about 100 bytes per token of a 5-gram)",
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


