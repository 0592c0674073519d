"""The one evaluation protocol used for every model, n-gram or neural.

Convention (documented in the README and relied on everywhere):

* predicted tokens = each line's words + one ``</s>`` per line; ``<s>`` is never predicted;
* words outside the model's vocabulary are predicted as ``<unk>`` and *included* in perplexity;
* ``perplexity_excl_oov`` additionally drops those OOV tokens, as KenLM's ``query`` prints it;
* cross-entropy H = -(1/N) sum ln p(w_t | history), in nats, bits = nats / ln 2;
  perplexity = exp(H).

A model only has to provide the natural-log probability of every predicted token
(``model.logprobs(stream)``); everything reported is computed here from that array, so two models'
numbers are comparable token by token.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from lmlab.corpus import EOS_ID, RESERVED, TokenStream, Vocabulary, read_corpus
from lmlab.errors import LmlabError, LmlabWarning, file_label

OOV_WARN_RATE = 0.2  # warn above this share of OOV words (a model of another corpus)

LN10 = math.log(10.0)


class LanguageModel(Protocol):
    """What every lmlab model provides."""

    vocab: Vocabulary

    def logprobs(self, stream: TokenStream) -> np.ndarray:
        """Natural-log probability of each predicted token of ``stream`` (same length)."""
        ...

    def next_logprobs(self, context: list[str]) -> np.ndarray:
        """Natural-log distribution over ``vocab`` ids for the word after ``context`` (a sentence
        prefix, without ``<s>``)."""
        ...

    def describe(self) -> dict:
        """Model type and hyper-parameters, for reports."""
        ...


@dataclass(frozen=True)
class EvalResult:
    """Aggregate numbers of one model on one text."""

    tokens: int
    oov: int
    sentences: int
    logprob: float  # total natural-log probability of all predicted tokens
    logprob_excl_oov: float

    @property
    def cross_entropy_nats(self) -> float:
        return -self.logprob / self.tokens

    @property
    def cross_entropy_bits(self) -> float:
        return self.cross_entropy_nats / math.log(2.0)

    @property
    def cross_entropy(self) -> float:
        """Cross-entropy in nats per predicted token (``cross_entropy_nats``)."""
        return self.cross_entropy_nats

    @property
    def bits_per_token(self) -> float:
        """Cross-entropy in bits per predicted token (``cross_entropy_bits``)."""
        return self.cross_entropy_bits

    @property
    def oov_rate(self) -> float:
        """Share of the predicted words (``</s>`` not counted) outside the vocabulary."""
        words = self.tokens - self.sentences
        return self.oov / words if words else 0.0

    @property
    def perplexity(self) -> float:
        return safe_exp(self.cross_entropy_nats)

    @property
    def perplexity_excl_oov(self) -> float:
        n = self.tokens - self.oov
        return safe_exp(-self.logprob_excl_oov / n) if n else float("nan")

    @property
    def log10_prob(self) -> float:
        """Total log10 probability, the 'Total' KenLM's query prints."""
        return self.logprob / LN10

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(cross_entropy_nats=self.cross_entropy_nats,
                 cross_entropy_bits=self.cross_entropy_bits, perplexity=self.perplexity,
                 perplexity_excl_oov=self.perplexity_excl_oov, log10_prob=self.log10_prob)
        return d


def safe_exp(x: float) -> float:
    """``exp(x)`` as a float, ``inf`` where it overflows instead of raising (the perplexity of a
    model that gives some token probability ~0); nan stays nan. The one helper every perplexity
    and exponentiated loss in lmlab goes through.

    >>> safe_exp(0.0), safe_exp(1000.0)
    (1.0, inf)
    """
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


def summarize(logprobs: np.ndarray, stream: TokenStream) -> EvalResult:
    """Reduce per-token log-probs to the protocol's numbers."""
    if len(logprobs) != len(stream):
        raise ValueError(f"{len(logprobs)} log-probs for {len(stream)} tokens")
    if len(stream) == 0:
        raise LmlabError("no tokens to evaluate", stream.source)
    lp = np.asarray(logprobs, dtype=np.float64)
    return EvalResult(tokens=len(stream), oov=int(stream.oov.sum()), sentences=stream.n_sentences,
                      logprob=float(lp.sum()), logprob_excl_oov=float(lp[~stream.oov].sum()))


def sentence_logprobs(logprobs: np.ndarray, stream: TokenStream) -> np.ndarray:
    """Natural-log probability of each whole sentence (words and ``</s>``), by the chain rule."""
    return np.add.reduceat(np.asarray(logprobs, dtype=np.float64), stream.offsets[:-1]) \
        if len(stream) else np.zeros(0)


def evaluate(model: LanguageModel, path: str | os.PathLike) -> tuple[EvalResult, np.ndarray,
                                                                     TokenStream]:
    """Score the text file ``path`` with ``model``: the summary, per-token log-probs, the stream."""
    return evaluate_stream(model, read_corpus(path, model.vocab))


def evaluate_stream(model: LanguageModel, stream: TokenStream) -> tuple[EvalResult, np.ndarray,
                                                                        TokenStream]:
    """Score an encoded ``stream`` with ``model``, as :func:`evaluate` scores a file (checked
    by :func:`check_oov` first)."""
    check_oov(stream, stacklevel=4)
    logprobs = model.logprobs(stream)
    return summarize(logprobs, stream), logprobs, stream


def check_oov(stream: TokenStream, stacklevel: int = 2) -> None:
    """Text entirely outside the vocabulary is an error (wrong model or wrong file); text mostly
    outside it (more than ``OOV_WARN_RATE`` of its words) gets an
    :class:`~lmlab.errors.LmlabWarning`, since its perplexity is then mostly that of ``<unk>``."""
    words = stream.ids != EOS_ID
    n_words, n_oov = int(words.sum()), int(stream.oov[words].sum())
    if n_words and n_oov == n_words:
        raise LmlabError(f"every word ({n_words}) is outside the model's vocabulary; "
                         "wrong model or wrong file?", stream.source)
    if n_words and n_oov / n_words > OOV_WARN_RATE:
        warnings.warn(f"{file_label(stream.source)}: {n_oov / n_words:.1%} of the words "
                      f"({n_oov} of {n_words}) are outside the model's vocabulary; its "
                      "perplexity is mostly that of <unk> (wrong model or wrong file?)",
                      LmlabWarning, stacklevel=stacklevel)


def token_table(model: LanguageModel, words: list[str]) -> list[dict]:
    """Per-token report for one sentence (its words, then ``</s>``): one dict per predicted
    token with keys ``token``, ``oov`` (outside the vocabulary), ``logprob`` (natural log),
    ``log10prob`` and ``bits`` (-log2 p)."""
    reserved = [w for w in words if w in RESERVED]
    if reserved:
        raise LmlabError(f"reserved token {reserved[0]!r} inside the sentence; lmlab adds "
                         "sentence boundaries itself")
    stream = TokenStream.from_sentences([words], model.vocab)
    lp = model.logprobs(stream)
    names = list(words) + ["</s>"]
    return [{"token": w, "oov": bool(o), "logprob": float(x), "log10prob": float(x / LN10),
             "bits": float(-x / math.log(2.0))}
            for w, o, x in zip(names, stream.oov, lp, strict=True)]
