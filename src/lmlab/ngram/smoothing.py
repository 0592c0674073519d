"""Smoothing methods as small strategies plugged into one recursion (see :mod:`.estimate`).

Every method is written in the common form (Chen & Goodman 1998; NLTK's ``alpha``/``gamma``)::

    p(w | h) = alpha(w | h) + gamma(h) * p(w | h')      h' = h without its first word

where ``alpha`` is the discounted estimate for n-grams seen in training (0 otherwise) and
``gamma`` the mass left for the shorter context. *Interpolated* methods apply the formula to
every word; *backoff* methods (Katz) use ``alpha`` alone for seen words and choose ``gamma`` so the
distribution still sums to 1. Below the unigrams is the uniform distribution over the vocabulary
(``<unk>`` included, ``<s>`` excluded), so unseen words get probability too.

A strategy only sees arrays for one order at a time and returns arrays: no per-n-gram Python code
and no hidden state carried between orders.
"""

from __future__ import annotations

import warnings as _warnings  # (the class below has a field named warnings)
from dataclasses import dataclass, field

import numpy as np

from lmlab.errors import LmlabError, LmlabWarning


@dataclass
class OrderStats:
    """What a strategy sees of one order: per-n-gram counts grouped by context."""

    order: int
    counts: np.ndarray  # counts the method uses (raw, or Kneser-Ney continuation counts)
    context: np.ndarray  # context index per n-gram (0 for unigrams: one empty context)
    n_contexts: int

    def per_context(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.context, weights=values, minlength=self.n_contexts)

    @property
    def totals(self) -> np.ndarray:
        return self.per_context(self.counts.astype(np.float64))

    def distinct(self, lo: int, hi: int | None = None) -> np.ndarray:
        """Per context, the number of followers whose count is in [lo, hi] (hi None: no bound)."""
        mask = self.counts >= lo if hi is None else (self.counts >= lo) & (self.counts <= hi)
        return self.per_context(mask.astype(np.float64))


@dataclass
class Smoothing:
    """Base strategy. ``interpolated``: alpha + gamma * lower for every word; else backoff."""

    name: str = "base"
    interpolated: bool = True
    continuation: bool = False  # Kneser-Ney family: lower orders count left contexts
    normalised: bool = True
    discounts: dict[int, list[float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def fit(self, count_of_counts: list[np.ndarray]) -> None:
        """Estimate per-order parameters from ``count_of_counts[n-1][k]``, n-grams with count k."""

    def alpha_gamma(self, s: OrderStats) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    verbose: bool = True

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.verbose:
            _warnings.warn(message, LmlabWarning, stacklevel=2)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


class MLE(Smoothing):
    """Maximum likelihood c(h,w)/c(h). Unseen words after a seen context get probability 0;
    an unseen context backs off to the longest seen one."""

    def __init__(self) -> None:
        super().__init__(name="mle", interpolated=False)

    def alpha_gamma(self, s):
        return self.counts_over_totals(s), None

    @staticmethod
    def counts_over_totals(s: OrderStats) -> np.ndarray:
        return _safe_div(s.counts.astype(np.float64), s.totals[s.context])


class StupidBackoff(Smoothing):
    """Brants et al. 2007: S(w|h) = c(h,w)/c(h) if seen, else ``factor`` * S(w|h'). Scores are NOT
    probabilities (they do not sum to 1); perplexities computed from them are not comparable."""

    def __init__(self, factor: float = 0.4) -> None:
        if not 0 < factor <= 1:
            raise LmlabError(f"stupid-backoff factor must be in (0, 1], got {factor}")
        super().__init__(name="stupid", interpolated=False, normalised=False)
        self.factor = factor

    def alpha_gamma(self, s):
        return MLE.counts_over_totals(s), np.full(s.n_contexts, self.factor)


class WittenBell(Smoothing):
    """Interpolated Witten-Bell: gamma(h) = T(h) / (c(h) + T(h)), T(h) = distinct followers."""

    def __init__(self) -> None:
        super().__init__(name="wb")

    def alpha_gamma(self, s):
        types = s.distinct(1)
        den = s.totals + types
        return _safe_div(s.counts.astype(np.float64), den[s.context]), _safe_div(types, den)


class AbsoluteDiscount(Smoothing):
    """Interpolated absolute discounting with one discount per order, D = n1 / (n1 + 2 n2)
    (Ney et al. 1994). ``KneserNey`` is the same with continuation counts on lower orders."""

    fallback = 0.5

    def __init__(self, name: str = "absdisc", continuation: bool = False) -> None:
        super().__init__(name=name, continuation=continuation)

    def fit(self, count_of_counts):
        for n, nk in enumerate(count_of_counts, 1):
            n1, n2 = float(nk[1]), float(nk[2])
            if n1 > 0 and n2 > 0:
                self.discounts[n] = [n1 / (n1 + 2 * n2)]
            else:
                self.discounts[n] = [self.fallback]
                self.warn(f"{self.name}: no {n}-grams seen {'once' if n1 == 0 else 'twice'}; "
                          f"discount for order {n} falls back to {self.fallback}")

    def alpha_gamma(self, s):
        (d,) = self.discounts[s.order]
        seen = s.counts > 0
        totals = s.totals
        alpha = _safe_div(np.where(seen, s.counts - d, 0.0), totals[s.context])
        return alpha, _safe_div(d * s.distinct(1), totals)


class KneserNey(AbsoluteDiscount):
    """Interpolated Kneser-Ney (Kneser & Ney 1995; Chen & Goodman's interpolated form)."""

    def __init__(self) -> None:
        super().__init__(name="kn", continuation=True)


class ModifiedKneserNey(Smoothing):
    """Interpolated modified Kneser-Ney (Chen & Goodman 1998), exactly as KenLM's ``lmplz``:
    continuation counts on lower orders (raw counts for n-grams starting with ``<s>``), three
    discounts per order from the count-of-counts of those adjusted counts::

        Y = n1 / (n1 + 2 n2),   D_k = k - (k + 1) Y n_{k+1} / n_k   for k = 1, 2, 3+

    Where a discount is undefined or out of [0, k] (tiny or artificial data, KenLM's
    BadDiscountException) the order falls back to KenLM's ``--discount_fallback`` values
    0.5, 1.0, 1.5 with a warning, unless ``strict``.
    """

    fallback = [0.5, 1.0, 1.5]

    def __init__(self, strict: bool = False) -> None:
        super().__init__(name="mkn", continuation=True)
        self.strict = strict

    def fit(self, count_of_counts):
        for n, nk in enumerate(count_of_counts, 1):
            nk = nk.astype(np.float64)
            problem = None
            if (nk[1:5] == 0).any():
                k = int(np.flatnonzero(nk[1:5] == 0)[0]) + 1
                problem = f"no {n}-grams with adjusted count {k}"
            else:
                y = nk[1] / (nk[1] + 2 * nk[2])
                ds = [k - (k + 1) * y * nk[k + 1] / nk[k] for k in (1, 2, 3)]
                bad = [k for k, d in zip((1, 2, 3), ds, strict=True) if not 0 <= d <= k]
                if bad:
                    problem = f"{n}-gram discount D{bad[0]}={ds[bad[0] - 1]:.3f} out of range"
            if problem is None:
                self.discounts[n] = [float(d) for d in ds]
            elif self.strict:
                raise LmlabError(f"cannot estimate modified Kneser-Ney discounts: {problem}; "
                                 "is this small or artificial data?")
            else:
                self.discounts[n] = list(self.fallback)
                self.warn(f"mkn: {problem} (small or artificial data); order {n} uses fallback "
                          f"discounts {self.fallback}")

    def alpha_gamma(self, s):
        d1, d2, d3 = self.discounts[s.order]
        table = np.array([0.0, d1, d2, d3])
        c = s.counts
        totals = s.totals
        alpha = _safe_div(c - table[np.minimum(c, 3)], totals[s.context])
        mass = d1 * s.distinct(1, 1) + d2 * s.distinct(2, 2) + d3 * s.distinct(3)
        return alpha, _safe_div(mass, totals)


class Katz(Smoothing):
    """Katz backoff with Good-Turing discounts (Katz 1987): counts r <= k are discounted by
    d_r = (r*/r - R) / (1 - R), r* = (r+1) n_{r+1} / n_r, R = (k+1) n_{k+1} / n_1; larger counts
    are trusted. Unseen words share the left-over mass in proportion to the lower order, normalised
    over the words not seen after h. Where Good-Turing is undefined for an order (some n_r = 0 or a
    d_r outside (0, 1]), that order uses absolute discounting D = n1 / (n1 + 2 n2) instead, with a
    warning; so does any context whose followers all occur more than k times (it would otherwise
    leave no mass, and unseen words after it would get probability 0)."""

    def __init__(self, k: int = 5) -> None:
        super().__init__(name="katz", interpolated=False)
        self.k = k
        self.absolute: dict[int, float] = {}
        self.fallback_discount: dict[int, float] = {}

    def fit(self, count_of_counts):
        k = self.k
        for n, nk in enumerate(count_of_counts, 1):
            nk = nk.astype(np.float64)
            ratios = None
            if (nk[1: k + 2] > 0).all():
                big_r = (k + 1) * nk[k + 1] / nk[1]
                r = np.arange(1, k + 1, dtype=np.float64)
                r_star = (r + 1) * nk[2: k + 2] / nk[1: k + 1]
                with np.errstate(divide="ignore", invalid="ignore"):  # R = 1: inf/nan, refused
                    d = (r_star / r - big_r) / (1 - big_r)
                if ((d > 0) & (d <= 1)).all():
                    ratios = [float(x) for x in d]
            n1, n2 = nk[1], nk[2]
            self.fallback_discount[n] = n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.5
            if ratios is not None:
                self.discounts[n] = ratios
            else:
                self.absolute[n] = self.fallback_discount[n]
                self.warn(f"katz: Good-Turing undefined for order {n} (small or artificial data); "
                          f"absolute discount {self.absolute[n]:.3f} used instead")

    def alpha_gamma(self, s):
        c = s.counts.astype(np.float64)
        if s.order in self.absolute:
            discounted = np.maximum(c - self.absolute[s.order], 0.0)
        else:
            table = np.concatenate([[0.0], self.discounts[s.order]])
            ratio = np.where(c <= self.k, table[np.minimum(s.counts, self.k)], 1.0)
            discounted = c * ratio
            # A context whose followers all occur more than k times would leave no mass, and
            # every unseen word after it would get probability 0 (infinite perplexity). There
            # the order's absolute discount applies to every follower instead.
            full = s.per_context(c - discounted) <= 1e-9
            redo = full[s.context] & (c > 0)
            discounted[redo] = c[redo] - self.fallback_discount[s.order]
        return _safe_div(discounted, s.totals[s.context]), None


METHODS = {
    "mle": MLE,
    "stupid": StupidBackoff,
    "wb": WittenBell,
    "absdisc": AbsoluteDiscount,
    "kn": KneserNey,
    "mkn": ModifiedKneserNey,
    "katz": Katz,
}
# add-k is not of the alpha/gamma-with-lower-order form (it interpolates straight with the uniform
# distribution at the longest context), so it has its own small scorer: see ``AddKModel``.
ALL_METHODS = ("mle", "addk", "katz", "wb", "absdisc", "kn", "mkn", "stupid")


def make_smoothing(name: str, **options) -> Smoothing:
    if name not in METHODS:
        raise LmlabError(f"unknown smoothing {name!r}; choose from {', '.join(ALL_METHODS)}")
    return METHODS[name](**options)
