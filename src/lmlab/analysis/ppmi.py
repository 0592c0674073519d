"""Count-based word vectors: positive PMI of window co-occurrences, reduced by truncated SVD.

The classic baseline for neural embeddings (Levy, Goldberg & Dagan 2015, "Improving
distributional similarity with lessons learned from word embeddings"), built over the same corpus
and vocabulary lmlab's language models use, so the two can be compared word for word:

1. co-occurrence counts #(w, c) of every word pair at most ``window`` tokens apart WITHIN a
   sentence (symmetric; ``</s>`` is not a context), each pair weighted 1 (``uniform``) or 1/d
   (``harmonic``, as GloVe) for distance d. One vectorised pass per distance, summed in a
   scipy.sparse matrix; no Python loop over tokens;
2. PPMI(w, c) = max(0, log P(w, c) / (P(w) P_alpha(c)) - log shift), with context-distribution
   smoothing P_alpha(c) = #c^alpha / sum #c'^alpha (alpha = 0.75, as word2vec's negative
   sampling) and the shifted variant (``shift`` = k of SGNS's k negative samples; 1 = none);
3. the ``dim`` largest singular triplets of the sparse PPMI matrix (ARPACK through
   ``scipy.sparse.linalg.svds`` from a seeded start vector, so results repeat; dense LAPACK for
   small vocabularies), word vectors W = U_d S_d^eig (``eig`` = 0.5, Levy et al.'s eigenvalue
   weighting; 1 is the plain SVD, 0 drops the singular values). Signs are fixed so that each
   column's largest entry is positive.

Words with no context at all (only in one-word sentences) get no vector and are left out, as are
``<s>`` and ``</s>``; ``<unk>`` is a word like any other when the text contains it (PTB does).
"""

from __future__ import annotations

import os
import time

import numpy as np

from lmlab.analysis.embeddings import Embeddings
from lmlab.errors import LmlabError

WEIGHTINGS = ("uniform", "harmonic")
DENSE_LIMIT = 1500  # vocabularies up to this size use a dense SVD


def cooccurrence(ids: np.ndarray, sentence: np.ndarray, vocab_size: int, window: int = 5,
                 weighting: str = "uniform"):
    """Symmetric [V, V] float64 CSR matrix of weighted co-occurrence counts of the tokens
    ``ids`` (``sentence[i]`` = the sentence of token i; pairs never cross sentences)."""
    from scipy import sparse

    if not isinstance(window, int) or window < 1:
        raise LmlabError(f"--window must be an integer >= 1, got {window!r}")
    if weighting not in WEIGHTINGS:
        raise LmlabError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got "
                         f"{weighting!r}")
    ids = np.asarray(ids, dtype=np.int32)
    sentence = np.asarray(sentence)
    rows, cols, data = [], [], []
    for d in range(1, min(window, len(ids) - 1) + 1):
        same = sentence[:-d] == sentence[d:]
        left, right = ids[:-d][same], ids[d:][same]
        weight = 1.0 if weighting == "uniform" else 1.0 / d
        rows += [left, right]
        cols += [right, left]
        data.append(np.full(2 * len(left), weight, dtype=np.float64))
    if not data or sum(len(x) for x in data) == 0:
        return sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    matrix = sparse.coo_matrix((np.concatenate(data), (np.concatenate(rows),
                                                       np.concatenate(cols))),
                               shape=(vocab_size, vocab_size)).tocsr()  # sums duplicates
    matrix.sum_duplicates()
    return matrix


def ppmi(counts, alpha: float = 0.75, shift: float = 1.0):
    """Positive (shifted) PMI of a co-occurrence matrix, as a CSR matrix of the same shape;
    context-distribution smoothing with exponent ``alpha`` (1 = none)."""
    from scipy import sparse

    if not 0 < alpha <= 1:
        raise LmlabError(f"--alpha must be in (0, 1], got {alpha}")
    if not shift >= 1:
        raise LmlabError(f"--shift must be >= 1, got {shift}")
    counts = sparse.csr_matrix(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise LmlabError("no co-occurrences: every sentence has a single word?")
    p_word = np.asarray(counts.sum(axis=1)).ravel() / total
    c = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    p_context = c / c.sum()
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    with np.errstate(divide="ignore"):
        pmi = (np.log(counts.data / total) - np.log(p_word[rows])
               - np.log(p_context[counts.indices]) - np.log(shift))
    out = sparse.csr_matrix((np.maximum(pmi, 0.0), counts.indices.copy(),
                             counts.indptr.copy()), shape=counts.shape)
    out.eliminate_zeros()
    return out


def svd_vectors(matrix, dim: int, eig: float = 0.5, seed: int = 0) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """``U_d * S_d**eig`` of the ``dim`` largest singular values of ``matrix`` (sparse or
    dense), and those singular values (descending)."""
    from scipy import sparse

    n = min(matrix.shape)
    if not isinstance(dim, int) or dim < 1:
        raise LmlabError(f"--dim must be an integer >= 1, got {dim!r}")
    if dim >= n:
        raise LmlabError(f"--dim {dim} must be smaller than the number of words with a context "
                         f"({n})")
    if n <= DENSE_LIMIT:
        dense = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
        u, s, _ = np.linalg.svd(dense, full_matrices=False)
        u, s = u[:, :dim], s[:dim]
    else:
        from scipy.sparse.linalg import svds

        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
        u, s, _ = svds(sparse.csr_matrix(matrix), k=dim, v0=v0, solver="arpack")
        order = np.argsort(-s, kind="stable")
        u, s = u[:, order], s[order]
    big = np.abs(u).argmax(axis=0)
    signs = np.sign(u[big, np.arange(u.shape[1])])
    u = u * np.where(signs == 0, 1.0, signs)
    return (u * s ** eig).astype(np.float32), s


def check_options(dim: int, window: int, alpha: float, shift: float, weighting: str) -> None:
    """One-line errors for out-of-range options."""
    if not isinstance(dim, int) or dim < 1:
        raise LmlabError(f"--dim must be an integer >= 1, got {dim!r}")
    if not isinstance(window, int) or window < 1:
        raise LmlabError(f"--window must be an integer >= 1, got {window!r}")
    if weighting not in WEIGHTINGS:
        raise LmlabError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got "
                         f"{weighting!r}")
    if not 0 < alpha <= 1:
        raise LmlabError(f"--alpha must be in (0, 1], got {alpha}")
    if not shift >= 1:
        raise LmlabError(f"--shift must be >= 1, got {shift}")


def ppmi_embeddings(path: str | os.PathLike, dim: int = 200, window: int = 5,
                    min_count: int = 1, max_vocab: int | None = None, alpha: float = 0.75,
                    eig: float = 0.5, shift: float = 1.0, weighting: str = "uniform",
                    seed: int = 0) -> Embeddings:
    """PPMI + truncated SVD word vectors of the text file ``path`` (one sentence per line),
    with lmlab's vocabulary rules (``min_count``, ``max_vocab``; rarer words are ``<unk>``)."""
    from lmlab.corpus import BOS_ID, EOS_ID, read_training_corpus

    start = time.perf_counter()
    check_options(dim, window, alpha, shift, weighting)  # before reading the corpus
    vocab, stream = read_training_corpus(path, min_count=min_count, max_size=max_vocab)
    keep = stream.ids != EOS_ID
    tokens = stream.ids[keep]
    sentence = stream.sentence_index()[keep]
    counts = cooccurrence(tokens, sentence, len(vocab), window, weighting)
    has_context = np.asarray(counts.sum(axis=1)).ravel() > 0
    has_context[[BOS_ID, EOS_ID]] = False
    rows = np.flatnonzero(has_context)
    if len(rows) < 2:
        raise LmlabError("fewer than two words with a context: nothing to factorise", path)
    counts = counts[rows][:, rows]
    matrix = ppmi(counts, alpha=alpha, shift=shift)
    vectors, singular = svd_vectors(matrix, dim, eig=eig, seed=seed)
    words = [vocab.itos[i] for i in rows]
    occurs = vocab.counts > 0
    occurs[[BOS_ID, EOS_ID]] = False
    without = int((occurs & ~has_context).sum())
    meta = {"corpus": os.fspath(path), "dim": dim, "window": window, "weighting": weighting,
            "alpha": alpha, "eig": eig, "shift": shift, "min_count": min_count,
            "max_vocab": max_vocab, "tokens": int(len(tokens)), "vocabulary": len(words),
            "words_without_context": without, "ppmi_nonzeros": int(matrix.nnz),
            "top_singular_values": [float(x) for x in singular[:5]],
            "seconds": round(time.perf_counter() - start, 2),
            "summary": f"PPMI+SVD (window {window}, alpha {alpha}, eig {eig})"}
    return Embeddings(words, vectors, os.fspath(path), "ppmi", meta)


__all__ = ["cooccurrence", "ppmi", "svd_vectors", "ppmi_embeddings", "WEIGHTINGS"]
