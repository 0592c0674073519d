"""Count pruning with the semantics of KenLM's ``lmplz --prune``.

Thresholds are given per order (a shorter list's last value applies to the remaining orders; the
unigram threshold must be 0 and the list non-decreasing). An n-gram of order n >= 2 whose *raw*
count (occurrences in the training text, not its Kneser-Ney adjusted count) is <= the threshold of
order n is dropped. Because a context or suffix occurs at least as often as every n-gram extending
it and thresholds never decrease, the survivors are closed under taking contexts and suffixes;
:func:`kept_ngrams` enforces that closure anyway, so the backoff structure can never break.

Pruning happens after counting: adjusted counts and discounts are those of the unpruned model
(KenLM collects its count-of-counts before it prunes). The discounted mass of a dropped n-gram moves
into its context's backoff (see :func:`lmlab.ngram.estimate.interpolate`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from lmlab.errors import LmlabError
from lmlab.ngram.counts import OrderCounts


def prune_thresholds(prune: Sequence[int] | None, order: int,
                     smoothing: str = "mkn") -> list[int] | None:
    """Check ``prune`` and return one threshold per order (None: nothing is pruned)."""
    if prune is None:
        return None
    values = list(prune)
    if not values:
        raise LmlabError("--prune needs at least one threshold (e.g. --prune 0 1 1)")
    if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in values):
        raise LmlabError(f"prune thresholds must be whole numbers, got {values}")
    values = [int(t) for t in values]
    shown = " ".join(map(str, values))
    if len(values) > order:
        raise LmlabError(f"--prune {shown} gives {len(values)} thresholds but the model has order "
                         f"{order}: give at most one per order")
    if min(values) < 0:
        raise LmlabError(f"--prune {shown}: thresholds must be >= 0")
    if values[0] != 0:
        raise LmlabError(f"--prune {shown}: unigrams are never pruned, so the first threshold "
                         "must be 0 (as in lmplz)")
    if any(b < a for a, b in zip(values, values[1:], strict=False)):
        raise LmlabError(f"--prune {shown}: thresholds must be non-decreasing (as in lmplz; a "
                         "lower order pruned harder would remove contexts of kept n-grams)")
    values += [values[-1]] * (order - len(values))
    if smoothing == "addk" and any(values):
        raise LmlabError("pruning needs a backoff-form model; addk has none (use another "
                         "smoothing method)")
    return values if any(values) else None


def kept_ngrams(tables: list[OrderCounts], thresholds: list[int],
                vocab_size: int) -> list[np.ndarray]:
    """Per order, a mask of the n-grams that survive pruning (unigrams always do)."""
    keep = [np.ones(len(tables[0]), dtype=bool)]
    keep += [t.counts > th for t, th in zip(tables[1:], thresholds[1:], strict=True)]
    for n in range(len(tables) - 1, 0, -1):  # a kept n-gram keeps its context and its suffix
        kept = keep[n]
        keep[n - 1][tables[n].keys[kept] // vocab_size] = True
        keep[n - 1][tables[n].suffix[kept]] = True
    return keep


def drop_pruned(keys: list[np.ndarray], values: list[list[np.ndarray]], keep: list[np.ndarray],
                vocab_size: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Remove the pruned n-grams from the sorted key tables and the per-n-gram ``values`` arrays.

    Keys hold the index of their context in the order below, so that index is renumbered to the
    context's position among the survivors (a monotone map: the keys stay sorted).
    """
    V = vocab_size
    new_keys = [keys[0]]
    for n in range(1, len(keys)):
        renumber = np.cumsum(keep[n - 1]) - 1
        k = keys[n][keep[n]]
        new_keys.append(renumber[k // V] * V + k % V)
    new_values = [[a[m] for a, m in zip(arrays, keep, strict=True)] for arrays in values]
    return new_keys, new_values
