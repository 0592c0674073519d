"""The :class:`Embeddings` class: words and their vectors (float32 [V, D]) with the cosine
queries every embedding tool uses (neighbours, analogies, PCA) and the conversion to gensim.

It sits below both :mod:`lmlab.analysis.embeddings` (loading, evaluation, plots) and
:mod:`lmlab.analysis.embedding_formats` (vector files), which both use it, so neither imports
the other's way back. numpy only; gensim is imported by :func:`require_gensim` when needed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from lmlab.errors import LmlabError

GENSIM_HINT = "pip install 'lmlab[embeddings]'"
COSMUL_EPS = 1e-3  # Levy & Goldberg (2014); gensim's most_similar_cosmul uses 1e-6


# ----------------------------------------------------------------------------------------------
# The vectors
# ----------------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """``vectors[i]`` is the embedding of ``words[i]`` (float32 [V, D])."""

    words: list[str]
    vectors: np.ndarray
    source: str = "<memory>"
    kind: str = "vectors"  # "input", "output", "word2vec", "tsv", "ppmi", ...
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.words = list(self.words)
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise LmlabError(f"{len(self.words)} words but vectors of shape "
                             f"{self.vectors.shape}", self.source)
        if not self.words:
            raise LmlabError("no word vectors", self.source)
        self.index: dict[str, int] = {}
        for i, w in enumerate(self.words):
            if w in self.index:
                raise LmlabError(f"word {w!r} has two vectors", self.source)
            self.index[w] = i
        self._lower: dict[str, int] | None = None
        self._unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def describe(self) -> str:
        what = self.meta.get("summary") or self.kind
        return f"{what}, {len(self):,} words x {self.dim}"

    @property
    def unit(self) -> np.ndarray:
        """Rows scaled to length 1 (an all-zero row stays zero: cosine 0 with everything)."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.maximum(norms, np.float32(1e-12))
        return self._unit

    # -- words ----------------------------------------------------------------------------------
    def lookup(self, word: str) -> int:
        """Index of ``word``: exact, else its lower-case form (PTB and most LM corpora are lower
        case); otherwise a one-line error suggesting close matches."""
        i = self.index.get(word)
        if i is None:
            i = self.index.get(word.lower())
        if i is None:
            if self._lower is None:
                self._lower = {}
                for j, w in enumerate(self.words):
                    self._lower.setdefault(w.lower(), j)
            i = self._lower.get(word.lower())
        if i is not None:
            return i
        close = difflib.get_close_matches(word, self.words, n=5, cutoff=0.6)
        if word.lower() != word:
            close += [w for w in difflib.get_close_matches(word.lower(), self.words, n=5,
                                                           cutoff=0.6) if w not in close]
        hint = f"; close matches: {', '.join(close[:5])}" if close else "; no close match"
        raise LmlabError(f"{word!r} is not in the vocabulary ({len(self):,} words){hint}",
                         self.source)

    def vector(self, word: str) -> np.ndarray:
        return self.vectors[self.lookup(word)]

    def similarity(self, a: str, b: str) -> float:
        return float(self.unit[self.lookup(a)] @ self.unit[self.lookup(b)])

    # -- queries --------------------------------------------------------------------------------
    def neighbors(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words of highest cosine similarity to ``word`` (itself excluded)."""
        i = self.lookup(word)
        return self._top(self.unit @ self.unit[i], k, {i})

    def analogy(self, a: str, b: str, c: str, k: int = 5, method: str = "add",
                eps: float = COSMUL_EPS) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to ...? Top ``k`` answers, a, b and c excluded.

        ``add`` (3CosAdd): cos(d, b^ - a^ + c^), the reported score. ``mul`` (3CosMul):
        cos'(d,b) cos'(d,c) / (cos'(d,a) + eps), cos' = (1 + cos) / 2."""
        ia, ib, ic = (self.lookup(w) for w in (a, b, c))
        u = self.unit
        if method == "add":
            target = u[ib] - u[ia] + u[ic]
            norm = float(np.linalg.norm(target))
            scores = u @ (target / norm if norm > 0 else target)
        elif method == "mul":
            sa, sb, sc = ((1.0 + u @ u[i]) / 2.0 for i in (ia, ib, ic))
            scores = sb * sc / (sa + np.float32(eps))
        else:
            raise LmlabError(f"analogy method must be add or mul, got {method!r}")
        return self._top(scores, k, {ia, ib, ic})

    def _top(self, scores: np.ndarray, k: int, exclude: set[int]) -> list[tuple[str, float]]:
        if not isinstance(k, int) or k < 1:
            raise LmlabError(f"k must be an integer >= 1, got {k!r}")
        scores = np.array(scores, dtype=np.float64)
        scores[list(exclude)] = -np.inf
        k = min(k, len(scores) - len(exclude))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]  # best first, ties by vocabulary order
        return [(self.words[j], float(scores[j])) for j in top]

    # -- conversions ----------------------------------------------------------------------------
    def to_keyed_vectors(self, drop_zero: bool = True):
        """gensim ``KeyedVectors`` of these vectors, in the same word order. All-zero rows (a
        word with no vector, e.g. no context in a count model) are left out: gensim would divide
        by their zero norm."""
        KeyedVectors = require_gensim()
        keep = np.flatnonzero(np.any(self.vectors != 0, axis=1)) if drop_zero \
            else np.arange(len(self))
        kv = KeyedVectors(self.dim)  # not count=: that pre-allocates rows keyed None
        kv.add_vectors([self.words[i] for i in keep], self.vectors[keep])
        return kv

    def pca(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """2-D PCA coordinates [n, 2] of the unit vectors of ``words`` and the share of their
        variance each of the two axes explains."""
        x = self.unit[[self.lookup(w) for w in words]].astype(np.float64)
        x = x - x.mean(axis=0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        coords = u[:, :2] * s[:2]
        if coords.shape[1] < 2:
            coords = np.hstack([coords, np.zeros((len(words), 2 - coords.shape[1]))])
        # deterministic signs: the largest coordinate of each axis is positive
        signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
        coords = coords * np.where(signs == 0, 1.0, signs)
        total = float((s ** 2).sum())
        explained = (s[:2] ** 2) / total if total > 0 else np.zeros(min(2, len(s)))
        return coords, np.pad(explained, (0, 2 - len(explained)))


def require_gensim():
    """gensim's ``KeyedVectors`` class, or a one-line error naming the extra to install."""
    try:
        from gensim.models import KeyedVectors
    except ImportError:
        raise LmlabError(f"this needs gensim, which is not installed: {GENSIM_HINT} (or pip "
                         "install gensim)") from None
    return KeyedVectors


__all__ = ["Embeddings", "require_gensim", "GENSIM_HINT", "COSMUL_EPS"]
