"""A transparent, dict-based n-gram reference written straight from the textbook formulas.

Slow and obvious on purpose: the vectorised estimator in ``lmlab.ngram`` must agree with it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class NaiveNGram:
    def __init__(self, sentences, vocab_words, order, method, k=1.0, factor=0.4,
                 discounts=None):
        self.N, self.method, self.k, self.factor = order, method, k, factor
        self.words = list(vocab_words)  # includes <unk>, <s>, </s>
        self.V = len(self.words) - 1  # uniform excludes <s>
        known = set(self.words)
        self.raw = [Counter() for _ in range(order + 1)]
        for s in sentences:
            toks = [BOS] + [w if w in known else UNK for w in s] + [EOS]
            for t in range(1, len(toks)):
                for n in range(1, min(order, t + 1) + 1):
                    self.raw[n][tuple(toks[t - n + 1: t + 1])] += 1
        self.counts = self.raw
        if method in ("kn", "mkn"):
            self.counts = [Counter() for _ in range(order + 1)]
            self.counts[order] = Counter(self.raw[order])
            for n in range(1, order):
                left = Counter(g[1:] for g in self.raw[n + 1])
                for g, c in self.raw[n].items():
                    self.counts[n][g] = c if g[0] == BOS else left[g]
        self.followers = [defaultdict(dict) for _ in range(order + 1)]
        for n in range(1, order + 1):
            for g, c in self.counts[n].items():
                self.followers[n][g[:-1]][g[-1]] = c
        self.discounts = discounts or {}
        for n in range(1, order + 1):
            nk = Counter(self.counts[n].values())
            if method == "mkn" and n not in self.discounts:
                y = nk[1] / (nk[1] + 2 * nk[2])
                self.discounts[n] = [j - (j + 1) * y * nk[j + 1] / nk[j] for j in (1, 2, 3)]
            if method in ("kn", "absdisc") and n not in self.discounts:
                self.discounts[n] = [nk[1] / (nk[1] + 2 * nk[2])]

    def uniform(self, w):
        return 0.0 if w == BOS else 1.0 / self.V

    def prob(self, h, w):
        """p(w | h) where h is a tuple of the previous words (starting with <s> if it reaches
        the sentence start)."""
        h = tuple(h[-(self.N - 1):]) if self.N > 1 else ()
        if self.method == "addk":
            f = self.followers[len(h) + 1].get(h, {})
            return (f.get(w, 0) + self.k) / (sum(f.values()) + self.k * self.V)
        return self._p(h, w)

    def _p(self, h, w):
        n = len(h) + 1
        lower = self.uniform(w) if n == 1 else self._p(h[1:], w)
        f = self.followers[n].get(h)
        if not f:
            return lower
        total = sum(f.values())
        c = f.get(w, 0)
        m = self.method
        if m == "wb":
            return (c + len(f) * lower) / (total + len(f))
        if m in ("kn", "absdisc"):
            (d,) = self.discounts[n]
            return (max(c - d, 0) + d * len(f) * lower) / total
        if m == "mkn":
            ds = self.discounts[n]
            dc = lambda x: ds[min(x, 3) - 1] if x else 0.0  # noqa: E731
            gamma = sum(dc(x) for x in f.values()) / total
            return (c - dc(c)) / total + gamma * lower
        if m == "stupid":
            return c / total if c else self.factor * lower
        if m in ("mle", "katz"):
            alpha = self._katz_alpha(n, f, total)
            if n == 1:
                left = 1 - sum(alpha.values())
                return alpha.get(w, 0.0) + (left if left > 1e-12 else 0.0) * lower
            if c:
                return alpha[w]
            left = 1 - sum(alpha.values())
            covered = 1 - sum(self._p(h[1:], x) for x in f)
            return left / covered * lower if left > 1e-12 and covered > 1e-12 else 0.0
        raise ValueError(m)

    def _alpha(self, n, c, total):
        if self.method == "mle":
            return c / total
        d = self._good_turing(n)
        if d[0] == "abs":
            return max(c - d[1], 0) / total
        return (d[c - 1] if c <= len(d) else 1.0) * c / total

    def _katz_alpha(self, n, f, total):
        alpha = {x: self._alpha(n, cx, total) for x, cx in f.items()}
        if self.method == "katz" and 1 - sum(alpha.values()) <= 1e-9:
            nk = Counter(self.raw[n].values())
            d = nk[1] / (nk[1] + 2 * nk[2]) if nk[1] and nk[2] else 0.5
            alpha = {x: (cx - d) / total for x, cx in f.items()}
        return alpha

    def _good_turing(self, n, k=5):
        nk = Counter(self.raw[n].values())
        if all(nk[r] > 0 for r in range(1, k + 2)):
            big_r = (k + 1) * nk[k + 1] / nk[1]
            if big_r != 1:  # at big_r = 1 every d_r is 0/0 or x/0: Good-Turing is undefined
                d = [((r + 1) * nk[r + 1] / nk[r] / r - big_r) / (1 - big_r)
                     for r in range(1, k + 1)]
                if all(0 < x <= 1 for x in d):
                    return d
        return ("abs", nk[1] / (nk[1] + 2 * nk[2]) if nk[1] and nk[2] else 0.5)

    def sentence_logprobs(self, sentence):
        known = set(self.words)
        toks = [BOS] + [w if w in known else UNK for w in sentence] + [EOS]
        return [math.log(self.prob(tuple(toks[:t]), toks[t])) if self.prob(
            tuple(toks[:t]), toks[t]) > 0 else -math.inf for t in range(1, len(toks))]
