"""Sampling text from a backoff n-gram model fast: many sentences side by side, one vectorised
step per word position (``lmlab data synthesize``; :func:`lmlab.generate.generate` is the
one-sentence-at-a-time path for any model, O(V) per word).

A backoff model says P(w | h) = p*(w | h) when the n-gram (h, w) is stored, else
bow(h) P(w | h') with h' the context without its oldest word. Exact sampling follows that
recursion without ever forming a distribution over the vocabulary:

* with probability S(h) = sum of p*(w | h) over the stored continuations of h, draw one of them
  in proportion to p* (the continuations of h are one contiguous run of the sorted order-n keys,
  ``h * V + w``: a prefix sum over the whole table turns the draw into one ``searchsorted``);
* else draw w from P(. | h') (the same recursion one order down) and redraw while (h, w) is
  stored: rejection gives exactly P(. | h') restricted to the words h leaves to the backoff,
  which is what bow(h) = (1 - S(h)) / (1 - sum of P(w | h') over stored w) normalises.

The draws are exact up to float rounding for a model whose probabilities are those it stores; a
quantised (8-bit) binary model, whose stored values sum only nearly to 1 per context, is
sampled as the distribution those values give after this recursion renormalises them. Memory:
per order a float64 prefix sum over the table and an int64 start per context (a binary model's
memory map is read into them), about 16 bytes per n-gram.

Every step works on arrays of streams (contexts as table indices per order, as
:meth:`NGramModel.index_at` computes them), so the cost per word is a few numpy operations
spread over thousands of sentences. The same seed, model and ``streams`` give the same text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lmlab.corpus import BOS_ID, EOS_ID
from lmlab.errors import LmlabError

# Rejection rounds before the few streams left are drawn from their exact distribution over
# the vocabulary (a context whose stored continuations hold most of the lower order's mass
# rejects often; a long tail of tiny rounds would cost more than the O(V) draw).
REJECTION_ROUNDS = 8


class BackoffSampler:
    """Draws next words for many contexts of one backoff-form n-gram model at once."""

    def __init__(self, model) -> None:
        from lmlab.ngram.model import require_backoff_form

        self.model = require_backoff_form(model, "sampling")
        if not self.model.normalised:
            raise LmlabError("stupid backoff scores are not probabilities: it cannot be sampled")
        self.V = len(model.vocab)
        self.order = model.order
        unigram = 10.0 ** model.logp[0].astype(np.float64)
        unigram[BOS_ID] = 0.0  # (<s> is context only)
        self.cum = [np.concatenate([[0.0], np.cumsum(unigram)])]
        # start[n - 1][c]: where the order-n continuations of context c (an index into the
        # order-(n-1) table) begin; they end where those of c + 1 begin
        self.start: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
        for n in range(2, self.order + 1):
            self.cum.append(np.concatenate([[0.0], np.cumsum(10.0 ** model.logp[n - 1])]))
            contexts = np.arange(len(model.keys[n - 2]) + 1, dtype=np.int64) * self.V
            self.start.append(np.searchsorted(model.keys[n - 1], contexts))

    def draw(self, ctx: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """One next word per stream; ``ctx[k]`` is the order-(k+1) table index of each stream's
        last k+1 words (-1: not stored), for k = 0 .. max(order-2, 0)."""
        return self._draw(self.order, ctx, rng)

    def _draw(self, n: int, ctx: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        m = len(ctx[0])
        if n == 1:
            cum = self.cum[0]
            return np.searchsorted(cum, rng.random(m) * cum[-1], side="right") - 1
        c = ctx[n - 2]
        words = np.empty(m, dtype=np.int64)
        stored = np.flatnonzero(c >= 0)
        absent = np.flatnonzero(c < 0)  # context not stored: its backoff weight is 1
        if len(absent):
            words[absent] = self._draw(n - 1, [a[absent] for a in ctx], rng)
        if not len(stored):
            return words
        keys, cum, base = self.model.keys[n - 1], self.cum[n - 1], c[stored] * self.V
        lo, hi = self.start[n - 1][c[stored]], self.start[n - 1][c[stored] + 1]
        mass = cum[hi] - cum[lo]
        u = rng.random(len(stored))
        seen = u < mass
        pick = lambda rows, x: np.clip(  # noqa: E731 - the draw among stored continuations
            np.searchsorted(cum, cum[lo[rows]] + x, side="right") - 1, lo[rows], hi[rows] - 1)
        idx = pick(seen, u[seen])
        words[stored[seen]] = keys[idx] - base[seen]
        todo = np.flatnonzero(~seen)  # back off, redrawing while the n-gram is stored
        index = self.model.key_index(n)
        for _ in range(REJECTION_ROUNDS):
            if not len(todo):
                break
            rows = stored[todo]
            w = self._draw(n - 1, [a[rows] for a in ctx], rng)
            free = index.find(base[todo] + w) < 0
            words[rows[free]] = w[free]
            todo = todo[~free]
        for t in todo:  # P(. | h') without the words stored after h, in full
            p = 10.0 ** self.model.next_log10probs([int(a[stored[t]]) for a in ctx], n - 1)
            p[BOS_ID] = 0.0
            p[keys[lo[t]:hi[t]] - base[t]] = 0.0
            cs = np.cumsum(p)
            if cs[-1] <= 0:  # (numerically all mass stored: draw among the stored ones)
                idx = pick(np.array([t]), rng.random(1) * mass[t])[0]
                words[stored[t]] = keys[idx] - base[t]
            else:  # (cs[-1] itself as the total: the draw lands on a word of p > 0)
                words[stored[t]] = int(np.searchsorted(cs, rng.random() * cs[-1], side="right"))
        return words

    def advance(self, ctx: list[np.ndarray], words: np.ndarray) -> list[np.ndarray]:
        """The contexts after each stream's ``words``."""
        out = [words.astype(np.int64)]
        for n in range(2, self.order):
            prev = ctx[n - 2]
            nxt = np.full(len(words), -1, dtype=np.int64)
            ok = np.flatnonzero(prev >= 0)
            nxt[ok] = self.model.key_index(n).find(prev[ok] * self.V + words[ok])
            out.append(nxt)
        return out


def sample_sentences(model, seed: int = 0, streams: int = 4096, max_words: int = 500
                     ) -> Iterator[np.ndarray]:
    """Sentences (word-id arrays, without ``</s>``) sampled from ``model`` without end, ``streams``
    at a time, in a fixed order for a seed; a sentence reaching ``max_words`` words ends there."""
    sampler = BackoffSampler(model)
    rng = np.random.default_rng(seed)
    start = [np.full(streams, BOS_ID, dtype=np.int64)] + \
        [np.full(streams, -1, dtype=np.int64) for _ in range(sampler.order - 2)]
    ctx = [a.copy() for a in start]
    buf = np.empty((max_words, streams), dtype=np.int64)
    length = np.zeros(streams, dtype=np.int64)
    cols = np.arange(streams)
    while True:
        words = sampler.draw(ctx, rng)
        end = words == EOS_ID
        buf[length[~end], cols[~end]] = words[~end]
        length[~end] += 1
        end |= length >= max_words
        for b in np.flatnonzero(end):
            yield buf[:length[b], b].copy()
        ctx = sampler.advance(ctx, words)
        for k, a in enumerate(ctx):
            a[end] = start[k][end]
        length[end] = 0
