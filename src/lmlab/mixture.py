"""Linear interpolation of any lmlab models (n-gram, neural, ARPA, or other mixtures)::

    p(w | h) = sum_i lambda_i p_i(w | h),    lambda_i >= 0,  sum_i lambda_i = 1

The weights are tuned on validation text by EM (the standard recipe, e.g. SRILM's
``compute-best-mix``): each iteration sets lambda_i to the average posterior responsibility of
model i over the validation tokens. EM never decreases the validation likelihood.

A mixture is saved as a small JSON file naming its member files (paths relative to it) and weights;
``lmlab eval``, ``score`` and ``generate`` load it like any model. Members must share the same word
set, otherwise ``<unk>`` would mean different things to each and the mixture would not be a
distribution.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from lmlab.corpus import TokenStream, read_corpus
from lmlab.errors import LmlabError, LmlabWarning
from lmlab.fileio import atomic_output, open_binary
from lmlab.metrics import check_oov
from lmlab.scoring import Scoring

FORMAT = "lmlab-mixture"


class Mixture(Scoring):
    def __init__(self, models: list, weights: list[float], paths: list[str] | None = None) -> None:
        if len(models) < 1 or len(models) != len(weights):
            raise LmlabError("a mixture needs one weight per model")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or not math.isclose(w.sum(), 1.0, rel_tol=1e-6):
            raise LmlabError(f"mixture weights must be >= 0 and sum to 1, got {list(weights)}")
        base = set(models[0].vocab.itos)
        for i, m in enumerate(models[1:], 2):
            if m.vocab.tokenizer != models[0].vocab.tokenizer:
                raise LmlabError(f"model {i} uses the {m.vocab.tokenizer.describe()} tokenizer, "
                                 f"model 1 {models[0].vocab.tokenizer.describe()}; a mixture "
                                 "adds the probabilities of the same tokens: interpolate models "
                                 "of one tokenizer")
            if set(m.vocab.itos) != base:
                diff = len(base.symmetric_difference(m.vocab.itos))
                raise LmlabError(f"model {i} has a different vocabulary ({diff} words differ); "
                                 "interpolate models trained with the same vocabulary")
        self.models, self.weights, self.paths = models, w, paths or []
        self.em_perplexity: list[float] = []  # set by fit_mixture
        self.member_perplexity: list[float] = []
        self.vocab = models[0].vocab
        # Each member's ids in the first member's order, for next-word distributions.
        self._perm = [np.array([m.vocab.stoi[w] for w in self.vocab.itos]) for m in models]
        self.normalised = all(getattr(m, "normalised", True) for m in models)

    @property
    def sentence_independent(self) -> bool:
        """Scored sentence by sentence (so in pieces) if every member is."""
        return all(getattr(m, "sentence_independent", False) for m in self.models)

    def member_logprobs(self, text: str | os.PathLike | TokenStream
                        ) -> tuple[np.ndarray, TokenStream]:
        """[models, tokens] natural-log probs of ``text`` (a file, each member encoding it
        itself, or a stream encoded with the first member's vocabulary)."""
        if isinstance(text, TokenStream):
            return self._member_rows(text), text
        rows, first = [], None
        for m in self.models:
            stream = read_corpus(text, m.vocab)
            first = first or stream
            rows.append(m.logprobs(stream))
        return np.vstack(rows), first

    def _member_rows(self, stream: TokenStream) -> np.ndarray:
        rows = []
        for m, perm in zip(self.models, self._perm, strict=True):
            ids = perm[stream.ids] if m.vocab is not self.vocab else stream.ids
            s = TokenStream(ids.astype(np.int32), stream.offsets, stream.oov, stream.source)
            rows.append(m.logprobs(s))
        return np.vstack(rows)

    def logprobs(self, stream: TokenStream) -> np.ndarray:
        return mix(self._member_rows(stream), self.weights)

    def next_logprobs(self, context: list[str]) -> np.ndarray:
        rows = [m.next_logprobs(context)[perm] for m, perm in
                zip(self.models, self._perm, strict=True)]
        return mix(np.vstack(rows), self.weights)

    def describe(self) -> dict:
        return {"type": "mixture", "weights": self.weights.tolist(), "members": self.paths,
                "smoothing": "interpolated", "order": "-"}

    def save(self, path: str | os.PathLike) -> None:
        """Write the mixture file: its members' file names (relative to it) and weights."""
        # a member saved since the mixture was made has a file now
        given = self.paths or [None] * len(self.models)
        self.paths = [p or getattr(m, "path", None) for m, p in zip(self.models, given,
                                                                     strict=True)]
        unsaved = [i for i, p in enumerate(self.paths, 1) if not p]
        if unsaved:
            raise LmlabError(f"member {unsaved[0]} of the mixture has no file: a mixture file "
                             "names its members, so save each member first (model.save(path))")
        folder = Path(path).resolve().parent
        rel = [os.path.relpath(Path(p).resolve(), folder) for p in self.paths]
        with atomic_output(path, "w") as f:
            json.dump({"format": FORMAT, "version": 1, "models": rel,
                       "weights": self.weights.tolist()}, f, indent=1)
        self.path = os.fspath(path)


def mix(member_logprobs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log sum_i w_i exp(lp_i), computed stably; zero weights drop out."""
    with np.errstate(divide="ignore"):
        a = member_logprobs + np.log(weights)[:, None]
    top = a.max(axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.exp(a - safe).sum(axis=0))


EM_ITERATIONS = 1000  # at most; EM stops earlier once no weight moves by more than EM_TOL
EM_TOL = 1e-7


def em_weights(member_logprobs: np.ndarray, iterations: int = EM_ITERATIONS,
               tol: float = EM_TOL) -> tuple[np.ndarray, list[float], bool]:
    """EM for the interpolation weights; returns the weights, the validation perplexity before
    the first iteration and after each (non-increasing), and whether the weights settled
    (moved by less than ``tol``) within ``iterations``.

    The log-likelihood is concave in the weights, so EM climbs to the best mixture, but slowly
    where that lies near a corner (a member all but useless: after 100 plain EM steps such a
    mixture was still worse than its best member). Each iteration here is two EM steps and
    one extrapolation along them (SQUAREM, Varadhan and Roland 2008), kept only when it
    climbs higher than the two steps did. The members' probabilities are scaled per token
    once, so no exp or log runs inside the loop."""
    k, n = member_logprobs.shape
    w = np.full(k, 1.0 / k)
    shift = member_logprobs.max(axis=0)
    scored = np.isfinite(shift)  # (a token every member gives probability 0 moves no weight)
    with np.errstate(invalid="ignore"):
        probs = np.exp(member_logprobs[:, scored] - shift[scored])  # each token's best is 1
    lost = n - int(scored.sum())

    def perplexity(v: np.ndarray) -> float:
        if lost:
            return math.inf
        with np.errstate(divide="ignore"):
            return float(np.exp(-(np.log(v @ probs) + shift[scored]).sum() / n))

    def em(v: np.ndarray) -> np.ndarray:
        total = v @ probs
        with np.errstate(divide="ignore", invalid="ignore"):
            new = v * (probs @ np.where(total > 0, 1.0 / total, 0.0))
        return new / new.sum()

    history = [perplexity(w)]
    done = False
    for _ in range(iterations):
        w1 = em(w)
        w2 = em(w1)
        r, v = w1 - w, w2 - 2 * w1 + w
        new, best = w2, perplexity(w2)
        if np.linalg.norm(v) > 0:
            step = min(-np.linalg.norm(r) / np.linalg.norm(v), -1.0)
            far = np.maximum(w - 2 * step * r + step * step * v, 1e-10)  # (> 0: EM can regrow)
            far = em(far / far.sum())
            further = perplexity(far)
            if further < best:
                new, best = far, further
        done = np.abs(new - w).max() < tol
        w = new
        history.append(best)
        if done:
            break
    return w, history, done


def fit_mixture(models: list, paths: list, valid: str | os.PathLike | TokenStream,
                iterations: int | None = None) -> Mixture:
    """A mixture of ``models`` (files ``paths``, None where a model has none) whose weights EM
    tunes on ``valid``; it keeps ``em_perplexity`` (validation perplexity per iteration) and
    ``member_perplexity`` (each member's alone)."""
    if len(models) < 2:
        raise LmlabError("interpolation needs at least two models")
    mixture = Mixture(models, [1.0 / len(models)] * len(models), list(paths))
    lp, stream = mixture.member_logprobs(valid)
    check_oov(stream, stacklevel=3)
    if not np.isfinite(lp).any(axis=0).all():
        where = valid.source if isinstance(valid, TokenStream) else valid
        raise LmlabError("some validation token has probability 0 under every model", where)
    iterations = EM_ITERATIONS if iterations is None else iterations
    if iterations < 1:
        raise LmlabError(f"--iterations must be at least 1, got {iterations}")
    weights, history, settled = em_weights(lp, iterations)
    if not settled:
        warnings.warn(f"EM stopped after {iterations} iterations, before the weights settled "
                      f"(to {EM_TOL:g}); more --iterations may lower the validation perplexity "
                      "a little", LmlabWarning, stacklevel=2)
    mixture.weights = weights
    mixture.em_perplexity = history
    mixture.member_perplexity = [float(np.exp(-row.mean())) for row in lp]
    return mixture


def read_mixture_file(path: str | os.PathLike) -> tuple[list[str], list[float]]:
    """The member files (as paths usable from here) and weights a mixture file names. Loading
    the members is :func:`lmlab.models.load_mixture`'s (any kind of model, so it sits with
    :func:`~lmlab.models.load_model`; this module never loads model files)."""
    try:
        with open_binary(path) as f:  # (gzip, as `-o mix.json.gz` writes it, told by content)
            data = json.loads(f.read().decode("utf-8-sig"))
        members, weights = data["models"], data["weights"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError, EOFError) as err:
        raise LmlabError(f"corrupt mixture file ({type(err).__name__})", path) from None
    folder = Path(path).parent
    return [str(folder / m) for m in members], weights


def is_mixture_file(head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and FORMAT.encode() in head
