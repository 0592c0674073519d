"""The estimator pipeline, KenLM-style: count -> adjust -> discount -> interpolate -> tables.

Each stage works on whole sorted arrays (see :mod:`.counts`). The result is in *backoff form*, the
form an ARPA file stores: for every seen n-gram its final log10 probability, for every context its
log10 backoff weight. Interpolated methods fit that form exactly (KenLM does the same): a seen
n-gram stores alpha + gamma * p_lower, an unseen word after context h gets gamma(h) * p_lower.
"""

from __future__ import annotations

import numpy as np

from lmlab.corpus import BOS_ID, TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.ngram.counts import OrderCounts, continuation_counts, count_ngrams, count_of_counts
from lmlab.ngram.prune import drop_pruned, kept_ngrams
from lmlab.ngram.smoothing import OrderStats, Smoothing

MAX_ORDER = 20  # character models want long contexts; KenLM is compiled for 6 by default


def check_order(order: int) -> None:
    if not 1 <= order <= MAX_ORDER:
        raise LmlabError(f"order must be between 1 and {MAX_ORDER}, got {order}")


def uniform_distribution(vocab_size: int) -> np.ndarray:
    """Order-0 distribution: uniform over the vocabulary, ``<unk>`` included, ``<s>`` excluded."""
    p = np.full(vocab_size, 1.0 / (vocab_size - 1))
    p[BOS_ID] = 0.0
    return p


def interpolate(tables: list[OrderCounts], used: list[np.ndarray], smoothing: Smoothing,
                vocab_size: int, keep: list[np.ndarray] | None = None,
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The one recursion shared by every alpha/gamma method.

    Returns per order the probability of each seen n-gram and, for orders below the highest, the
    backoff weight of each n-gram as a context (1 where it is not a context). Plain probabilities,
    not logs.

    ``keep`` (per order, a mask from :func:`lmlab.ngram.prune.kept_ngrams`) marks the n-grams that
    survive pruning; the values computed for the others are meaningless and dropped afterwards.
    A pruned n-gram becomes unseen: backoff methods renormalise over the kept ones; for
    interpolated methods its discounted mass alpha joins its context's gamma, as in ``lmplz``
    (gamma(h) = (sum of D(c) over kept followers + sum of c over pruned ones) / c(h)).
    """
    probs: list[np.ndarray] = []
    backoffs: list[np.ndarray] = []
    lower = uniform_distribution(vocab_size)
    for n, (table, counts) in enumerate(zip(tables, used, strict=True), 1):
        if n == 1:
            context, n_contexts = np.zeros(len(table), dtype=np.int64), 1
        else:
            context, n_contexts = table.keys // vocab_size, len(tables[n - 2])
            lower = lower[table.suffix]
        kept = None if keep is None or n == 1 else keep[n - 1]
        lower, bow = interpolate_order(n, counts, context, n_contexts, lower, smoothing, kept)
        probs.append(lower)
        if bow is not None:
            backoffs.append(bow)
    if len(tables) > 0:
        backoffs.append(np.ones(len(tables[-1])))
    return probs, backoffs


def interpolate_order(n: int, counts: np.ndarray, context: np.ndarray, n_contexts: int,
                      lower_p: np.ndarray, smoothing: Smoothing, kept: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """One order of :func:`interpolate`: the probability of each n-gram (``context``: its
    context's id in ``0..n_contexts-1``, followers of a context in ascending word order;
    ``lower_p``: the lower order's probability of its suffix) and, for n > 1, the backoff
    weight of each context. Everything it needs is grouped by context, so the out-of-core
    estimator (:mod:`.external`) runs it on one partition of the n-grams at a time."""
    stats = OrderStats(n, counts, context, n_contexts)
    alpha, gamma = smoothing.alpha_gamma(stats)
    if gamma is None:  # backoff method: gamma normalises what seen words leave over
        left = 1.0 - stats.per_context(alpha if kept is None else alpha * kept)
        if n == 1:  # all vocabulary words are listed; unseen ones share the rest uniformly
            gamma = np.where(left > 1e-12, left, 0.0)
        else:
            covered = 1.0 - stats.per_context(lower_p if kept is None else lower_p * kept)
            gamma = np.divide(left, covered, out=np.zeros_like(left),
                              where=(covered > 1e-12) & (left > 1e-12))
    elif kept is not None and smoothing.normalised:  # pruned mass backs off
        gamma = gamma + stats.per_context(np.where(kept, 0.0, alpha))
    if smoothing.interpolated or n == 1 and smoothing.normalised:
        p = alpha + gamma[context] * lower_p
    else:
        p = np.where(counts > 0, alpha, gamma[context] * lower_p)
    if n == 1:
        return p, None
    has_followers = np.bincount(context, minlength=n_contexts) > 0
    bow = np.where(has_followers, gamma, 1.0)
    if kept is not None and smoothing.normalised:  # all followers pruned: exactly 1
        bow[np.bincount(context[kept], minlength=n_contexts) == 0] = 1.0
    return p, bow


def estimate(stream: TokenStream, vocab: Vocabulary, order: int, smoothing: Smoothing,
             progress=None, prune: list[int] | None = None) -> dict:
    """Run the pipeline on a training stream; returns the arrays an ``NGramModel`` holds.

    ``prune``: one count threshold per order (checked by :func:`.prune.prune_thresholds`); n-grams
    seen at most that often are dropped after discounting, as ``lmplz --prune`` does.
    """
    check_order(order)
    V = len(vocab)
    step = progress or (lambda stage: None)
    tables = count_ngrams(stream, order, V)
    step("counted")
    used = continuation_counts(tables) if smoothing.continuation else [t.counts for t in tables]
    smoothing.fit([count_of_counts(c) for c in used])  # from every n-gram, pruned ones included
    step("adjusted and discounted")
    keep = kept_ngrams(tables, prune, V) if prune else None
    probs, backoffs = interpolate(tables, used, smoothing, V, keep)
    step("interpolated")
    with np.errstate(divide="ignore"):
        logp = [np.log10(p) for p in probs]
        bow = [np.log10(b) for b in backoffs]
    keys = [t.keys for t in tables]
    if keep is not None:
        keys, (logp, bow) = drop_pruned(keys, [logp, bow], keep, V)
    return {"keys": keys, "logp": logp, "bow": bow}
