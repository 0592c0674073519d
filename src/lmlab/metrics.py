"""The one evaluation protocol used for every model, n-gram or neural.

Convention (documented in the README and relied on everywhere):

* predicted tokens = each line's words + one ``</s>`` per line; ``<s>`` is never predicted;
* words outside the model's vocabulary are predicted as ``<unk>`` and *included* in perplexity;
* ``perplexity_excl_oov`` additionally drops those OOV tokens, as KenLM's ``query`` prints it;
* cross-entropy H = -(1/N) sum ln p(w_t | history), in nats, bits = nats / ln 2;
  perplexity = exp(H).

Across tokenizations (a character model's 2.7 and a word model's 141 per-token perplexities
measure different things), the numbers that compare are normalised by the *raw text* scored,
counted the same whatever the model's tokenizer (:mod:`lmlab.tokenizers`):

* ``characters`` and ``bytes`` (UTF-8) of every scored line, each line's end counted as one (the
  ``</s>`` every model predicts stands for it); ``words``: its whitespace words (``str.split``);
* ``bits_per_character`` = total bits / characters, ``bits_per_byte`` = total bits / bytes,
  where total bits = -sum log2 p over all predicted tokens, ``</s>`` included;
* ``word_perplexity`` = exp(-total ln p / (words + lines)): per whitespace word and line end, so
  for a whitespace-tokenized model it *is* the perplexity, and for a finer tokenization it is
  the perplexity a word model would need to match it.

A character model's ``bits_per_token`` equals its ``bits_per_character`` (one token per
character, ``</s>`` per line end); on PTB-char (Mikolov's files, symbols already separated by
spaces and ``_`` for a space), the literature's bpc is the ``bits_per_token`` of a whitespace model.

A model only has to provide the natural-log probability of every predicted token
(``model.logprobs(stream)``); everything reported is computed here from that array, so two models'
numbers are comparable token by token.

Totals are summed in float64 in one fixed order, whatever reads the text: each line's tokens
(``numpy.add.reduceat``), then the lines one after the other in input order. A text scored whole,
in pieces of any size (:func:`score_lines`, bounded memory) or by several processes
(``jobs``) therefore gives the same :class:`EvalResult`, bit for bit.

Streaming: a model whose scores of one sentence do not depend on the sentences before it (an
n-gram model, or a mixture of them: ``sentence_independent = True``) is scored a piece of whole
lines at a time, so memory does not grow with the text. A neural model carries its hidden state
from one sentence to the next; it is scored on the whole stream at once, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import IO, Protocol

import numpy as np

from lmlab.corpus import (
    EOS_ID,
    STREAM_BYTES,
    STREAM_TOKENS,
    TokenStream,
    Vocabulary,
    check_words,
    encode_lines,
    iter_corpus,
    read_corpus,
)
from lmlab.errors import LmlabError, LmlabWarning, file_label
from lmlab.fileio import STDIN, atomic_output, check_output_path, json_safe
from lmlab.textlines import decode_chunk, line_spans, raw_chunks

OOV_WARN_RATE = 0.2  # warn above this share of OOV words (a model of another corpus)

LN10 = math.log(10.0)
LN2 = math.log(2.0)


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
    characters: int = 0  # of the raw text scored, each line end counted as one (0: unknown)
    bytes: int = 0  # UTF-8 bytes of the raw text, each line end counted as one
    words: int = 0  # whitespace words of the raw text (str.split), line ends not counted
    unicode_spaces: int = 0  # characters str.split takes for spaces and KenLM does not (U+00A0..)

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

    @property
    def total_bits(self) -> float:
        """-log2 of the probability of the whole text."""
        return -self.logprob / LN2

    @property
    def bits_per_character(self) -> float:
        """Total bits / characters of the raw text (line ends included): comparable across
        tokenizations."""
        return self.total_bits / self.characters if self.characters else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """Total bits / UTF-8 bytes of the raw text (line ends included)."""
        return self.total_bits / self.bytes if self.bytes else float("nan")

    @property
    def word_perplexity(self) -> float:
        """exp(-total ln p / (whitespace words + lines)): the perplexity itself for a
        whitespace model; comparable to it for any tokenization."""
        n = self.words + self.sentences
        return safe_exp(-self.logprob / n) if self.characters and n else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(cross_entropy_nats=self.cross_entropy_nats,
                 cross_entropy_bits=self.cross_entropy_bits, perplexity=self.perplexity,
                 perplexity_excl_oov=self.perplexity_excl_oov, log10_prob=self.log10_prob,
                 bits_per_character=self.bits_per_character, bits_per_byte=self.bits_per_byte,
                 word_perplexity=self.word_perplexity)
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
    totals = Totals()
    totals.add(LineScores.of(logprobs, stream))
    return totals.result(stream.source)


@dataclass(frozen=True)
class LineScores:
    """The numbers of consecutive lines (sentences) of a text, one array entry per line."""

    first: int  # lines of the text before the first of these
    logprob: np.ndarray  # float64: natural-log probability of each line (words and </s>)
    logprob_excl_oov: np.ndarray  # float64: the same without its OOV tokens
    tokens: np.ndarray  # int64: predicted tokens (words + </s>)
    oov: np.ndarray  # int64: OOV words
    text: np.ndarray | None = None  # int64[lines, 4]: corpus.TEXT_COLUMNS of each line

    @classmethod
    def of(cls, logprobs: np.ndarray, stream: TokenStream, first: int = 0) -> LineScores:
        """Per-line sums of the per-token ``logprobs`` of ``stream``."""
        lp = np.asarray(logprobs, dtype=np.float64)
        if len(stream) == 0:
            none = np.zeros(0)
            return cls(first, none, none, none.astype(np.int64), none.astype(np.int64))
        starts = stream.offsets[:-1]
        return cls(first, np.add.reduceat(lp, starts),
                   np.add.reduceat(np.where(stream.oov, 0.0, lp), starts),
                   np.diff(stream.offsets).astype(np.int64),
                   np.add.reduceat(stream.oov.astype(np.int64), starts), stream.text)

    def records(self) -> Iterator[dict]:
        """One dict per line, the ``--per-line`` record: ``line`` (1-based), ``tokens`` (words
        + ``</s>``), ``oov``, ``log10prob``, ``logprob`` (natural log), ``perplexity`` (OOV
        included, as ``lmlab eval``'s) and the line's ``characters`` and ``bytes`` (its end
        counted as one)."""
        text = self.text.tolist() if self.text is not None else [(0, 0)] * len(self.tokens)
        for i, (lp, n, oov, t) in enumerate(zip(self.logprob.tolist(), self.tokens.tolist(),
                                                self.oov.tolist(), text, strict=True)):
            yield {"line": self.first + i + 1, "tokens": n, "oov": oov, "log10prob": lp / LN10,
                   "logprob": lp, "perplexity": safe_exp(-lp / n), "characters": t[0],
                   "bytes": t[1]}

    def write_jsonl(self, out: IO[str]) -> None:
        """Write :meth:`records` as JSON lines (inf and nan as null)."""
        out.writelines(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in self.records())


def sentence_logprobs(logprobs: np.ndarray, stream: TokenStream) -> np.ndarray:
    """Natural-log probability of each whole sentence (words and ``</s>``), by the chain rule."""
    return LineScores.of(logprobs, stream).logprob


def _running_sum(total: float, values: np.ndarray) -> float:
    """``total + values[0] + values[1] + ...`` strictly left to right (``cumsum`` is)."""
    if len(values) == 0:
        return total
    return float(np.cumsum(np.concatenate(([total], values)))[-1])


class Totals:
    """Sums :class:`LineScores` in input order into an :class:`EvalResult`."""

    def __init__(self) -> None:
        self.tokens = self.oov = self.sentences = 0
        self.logprob = self.logprob_excl_oov = 0.0
        self.text = np.zeros(4, dtype=np.int64)  # corpus.TEXT_COLUMNS

    def add(self, scores: LineScores) -> None:
        if scores.text is not None:
            self.text += scores.text.sum(axis=0)
        self.tokens += int(scores.tokens.sum())
        self.oov += int(scores.oov.sum())
        self.sentences += len(scores.tokens)
        self.logprob = _running_sum(self.logprob, scores.logprob)
        self.logprob_excl_oov = _running_sum(self.logprob_excl_oov, scores.logprob_excl_oov)

    def result(self, source: str | os.PathLike = "<memory>") -> EvalResult:
        if self.tokens == 0:
            raise LmlabError("no tokens to evaluate", source)
        chars, nbytes, words, spaces = map(int, self.text)
        return EvalResult(tokens=self.tokens, oov=self.oov, sentences=self.sentences,
                          logprob=self.logprob, logprob_excl_oov=self.logprob_excl_oov,
                          characters=chars, bytes=nbytes, words=words, unicode_spaces=spaces)


def evaluate(model: LanguageModel, path: str | os.PathLike) -> tuple[EvalResult, np.ndarray,
                                                                     TokenStream]:
    """Score the text file ``path`` with ``model`` whole: the summary, per-token log-probs, the
    stream (memory grows with the text; :func:`evaluate_file` streams, same summary)."""
    return evaluate_stream(model, read_corpus(path, model.vocab))


def evaluate_stream(model: LanguageModel, stream: TokenStream) -> tuple[EvalResult, np.ndarray,
                                                                        TokenStream]:
    """Score an encoded ``stream`` with ``model``, as :func:`evaluate` scores a file (checked
    by :func:`check_oov` first)."""
    check_oov(stream, stacklevel=4)
    logprobs = model.logprobs(stream)
    return summarize(logprobs, stream), logprobs, stream


def streams_by_sentence(model: LanguageModel) -> bool:
    """Whether ``model`` scores each sentence on its own (``sentence_independent``), so a text can
    be scored in pieces of whole lines with exactly the numbers of the whole text."""
    return bool(getattr(model, "sentence_independent", False))


def score_lines(model: LanguageModel, path: str | os.PathLike, *, jobs: int = 1,
                model_path: str | os.PathLike | None = None, chunk_tokens: int = STREAM_TOKENS,
                chunk_bytes: int = STREAM_BYTES, cluster: str | None = None
                ) -> Iterator[LineScores]:
    """Score the text file ``path`` (``-``: standard input; gzip by content) and yield its
    :class:`LineScores` in input order.

    A sentence-independent model (:func:`streams_by_sentence`) is scored ``chunk_tokens`` tokens
    (rounded up to a line end) of ``chunk_bytes`` read at a time, so memory stays flat however
    long the text; with ``jobs`` > 1, by that many worker processes, each loading ``model_path``
    (the file ``model`` was loaded from) once with :func:`lmlab.models.load_model` and given
    ``chunk_bytes`` of lines at a time; with ``cluster`` (``local:N``, ``tcp://HOST:PORT``), by
    a Dask cluster's workers, each reading spans of the file and the model from the paths given
    (a file system they share). Any other model (neural: its state
    runs on from sentence to sentence) is scored whole, in this process: one :class:`LineScores`.
    A bad line raises :class:`LmlabError` naming the file and the line.
    """
    if jobs < 1:
        raise LmlabError(f"--jobs must be >= 1, got {jobs}")
    if not streams_by_sentence(model):
        if jobs > 1 or cluster is not None:
            raise LmlabError("--jobs N and --cluster need an n-gram model (or a mixture of "
                             "them): a neural "
                             "model carries its state from sentence to sentence and is scored "
                             "in one process")
        stream = read_corpus(path, model.vocab)
        yield LineScores.of(model.logprobs(stream), stream)
        return
    if jobs == 1 and cluster is None:
        for first, stream in iter_corpus(path, model.vocab, chunk_tokens, chunk_bytes):
            yield LineScores.of(model.logprobs(stream), stream, first)
        return
    if model_path is None:
        raise LmlabError("scoring with jobs > 1 or a cluster needs the model's file "
                         "(model_path): each worker process loads it")
    if cluster is not None:
        if jobs > 1:
            raise LmlabError("give --jobs N or --cluster SPEC, not both (--cluster local:N "
                             "scores with N processes too)")
        yield from _score_on_cluster(cluster, os.path.abspath(model_path), path,
                                     _fingerprint(model), chunk_tokens)
        return
    yield from _score_in_processes(os.fspath(model_path), path, jobs, chunk_bytes,
                                   _fingerprint(model))


# A worker's piece of text: about STREAM_TOKENS words, so that a worker's memory is what one
# process scoring STREAM_TOKENS at a time needs.
JOB_BYTES = 2**18


def _score_in_processes(model_path: str, path: str | os.PathLike, jobs: int, chunk_bytes: int,
                        fingerprint: str) -> Iterator[LineScores]:
    """The lines of ``path`` read here (``chunk_bytes``, at most ``JOB_BYTES``, at a time),
    decoded, checked, encoded and scored by ``jobs`` worker processes, yielded in input order; at
    most ``2 * jobs`` chunks in flight, so memory stays bounded. This process only reads: the
    workers get bytes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn: clean workers that load the model themselves (a memory-mapped model's pages are
    # then shared by the page cache), whatever threads this process runs
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init,
                               initargs=(model_path, fingerprint))
    pending: deque = deque()
    lines = 0
    try:
        for first, data in raw_chunks(path, min(chunk_bytes, JOB_BYTES), once=True):
            pending.append(pool.submit(_worker_score, os.fspath(path), first, data))
            if len(pending) >= 2 * jobs:
                scores = pending.popleft().result()
                lines += len(scores.tokens)
                yield scores
        while pending:
            scores = pending.popleft().result()
            lines += len(scores.tokens)
            yield scores
    except BrokenProcessPool:
        raise LmlabError("a scoring worker process died (out of memory?)", model_path) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if not lines:
        raise LmlabError("empty corpus (no lines)", path)


CLUSTER_SPAN_BYTES = 2**25  # a cluster scoring task's piece of the text


def _score_on_cluster(spec: str, model_path: str, path: str | os.PathLike, fingerprint: str,
                      chunk_tokens: int) -> Iterator[LineScores]:
    """Spans of ``path`` scored by the cluster's workers (:func:`_span_scores`), yielded in
    input order, a few spans per worker at a time so memory stays bounded."""
    from lmlab.cluster import runner

    spans = line_spans(path, CLUSTER_SPAN_BYTES)
    if spans is None:
        raise LmlabError("--cluster reads a plain text file in spans: give an uncompressed "
                         "file (not gzip or standard input)", path)
    with runner(spec) as run:
        batch = 2 * run.workers
        for i in range(0, len(spans[0]), batch):
            for scores in run.map(_span_scores, spans[0][i:i + batch], path=os.path.abspath(path),
                                  model_path=model_path, fingerprint=fingerprint,
                                  chunk_tokens=chunk_tokens):
                yield from scores


def _span_scores(span, *, path: str, model_path: str, fingerprint: str,
                 chunk_tokens: int) -> list[LineScores]:
    """A cluster task: the scores of one span of the text (the model loaded once per worker)."""
    if _worker_key != (model_path, fingerprint):
        _worker_init(model_path, fingerprint)
    if _worker_error is not None:
        raise _worker_error
    return [LineScores.of(_worker_model.logprobs(stream), stream, first)
            for first, stream in iter_corpus(path, _worker_model.vocab, chunk_tokens,
                                             STREAM_BYTES, span)]


_worker_key: tuple[str, str] | None = None  # what _worker_init loaded, in a cluster worker
_worker_model = None  # the model of a scoring worker process, loaded once by _worker_init
_worker_error: LmlabError | None = None  # why it could not be, said by every task instead


def _fingerprint(model: LanguageModel) -> str:
    """Vocabulary, order and smoothing of ``model``, the same in every process (``hash`` is not):
    a worker checks that the file it loaded holds the model being scored (in any of its formats:
    an ``.lm`` here and its binary form in the workers is fine)."""
    meta = getattr(model, "meta", None) or {}
    text = "\n".join([str(getattr(model, "order", "")), str(meta.get("smoothing", "")),
                      json.dumps(model.vocab.tokenizer.spec(), sort_keys=True),
                      *model.vocab.itos])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _worker_init(model_path: str, fingerprint: str) -> None:
    global _worker_model, _worker_error, _worker_key
    from lmlab.models import load_model

    _worker_key, _worker_model, _worker_error = (model_path, fingerprint), None, None
    try:
        model = load_model(model_path)
        if not streams_by_sentence(model) or _fingerprint(model) != fingerprint:
            raise LmlabError("not the model being scored (each worker process loads it from "
                             "its file)", model_path)
        _worker_model = model
    except LmlabError as err:  # raised in the first task, so the user sees this one line
        _worker_error = err


def _worker_score(path: str, first: int, data: bytes) -> LineScores:
    if _worker_error is not None:
        raise _worker_error
    vocab = _worker_model.vocab
    lines = decode_chunk(data, path, first, vocab.tokenizer.errors)
    stream = encode_lines(lines, vocab, path, first)
    return LineScores.of(_worker_model.logprobs(stream), stream, first)


def evaluate_file(model: LanguageModel, path: str | os.PathLike, *, jobs: int = 1,
                  model_path: str | os.PathLike | None = None,
                  per_line: str | os.PathLike | None = None, chunk_tokens: int = STREAM_TOKENS,
                  chunk_bytes: int = STREAM_BYTES, cluster: str | None = None) -> EvalResult:
    """Score the text file ``path`` as :func:`evaluate` does (the same :class:`EvalResult`, bit for
    bit), streaming where the model allows (:func:`score_lines`; ``jobs``, ``model_path``,
    ``chunk_tokens``, ``chunk_bytes``, ``cluster`` as there). ``per_line``: also write one JSON
    record per input line, in input order (:meth:`LineScores.records`), atomically (``-``:
    standard output); an error anywhere leaves no file. The text is checked by
    :func:`check_oov` once scored."""
    if per_line is not None and os.fspath(per_line) != STDIN:
        check_output_path(per_line)
    totals = Totals()
    with _per_line_output(per_line) as out:
        for scores in score_lines(model, path, jobs=jobs, model_path=model_path,
                                  chunk_tokens=chunk_tokens, chunk_bytes=chunk_bytes,
                                  cluster=cluster):
            totals.add(scores)
            if out is not None:
                scores.write_jsonl(out)
        result = totals.result(path)
        check_oov_counts(result.tokens - result.sentences, result.oov, path, stacklevel=3)
    return result


@contextlib.contextmanager
def _per_line_output(per_line: str | os.PathLike | None) -> Iterator[IO[str] | None]:
    if per_line is None:
        yield None
    elif os.fspath(per_line) == STDIN:
        yield sys.stdout
        sys.stdout.flush()
    else:
        with atomic_output(per_line, "w") as f:
            yield f


def check_oov(stream: TokenStream, stacklevel: int = 2) -> None:
    """Text entirely outside the vocabulary is an error (wrong model or wrong file); text mostly
    outside it (more than ``OOV_WARN_RATE`` of its words) gets an
    :class:`~lmlab.errors.LmlabWarning`, since its perplexity is then mostly that of ``<unk>``."""
    words = stream.ids != EOS_ID
    check_oov_counts(int(words.sum()), int(stream.oov[words].sum()), stream.source,
                     stacklevel + 1)


def check_oov_counts(n_words: int, n_oov: int, source: str | os.PathLike,
                     stacklevel: int = 2) -> None:
    """:func:`check_oov` from the counts: ``n_oov`` of the ``n_words`` words of ``source``."""
    if n_words and n_oov == n_words:
        raise LmlabError(f"every word ({n_words}) is outside the model's vocabulary; "
                         "wrong model or wrong file?", source)
    if n_words and n_oov / n_words > OOV_WARN_RATE:
        warnings.warn(f"{file_label(source)}: {n_oov / n_words:.1%} of the words "
                      f"({n_oov} of {n_words}) are outside the model's vocabulary; its "
                      "perplexity is mostly that of <unk> (wrong model or wrong file?)",
                      LmlabWarning, stacklevel=stacklevel)


def token_table(model: LanguageModel, words: list[str]) -> list[dict]:
    """Per-token report for one sentence (its words, then ``</s>``): one dict per predicted
    token with keys ``token``, ``oov`` (outside the vocabulary), ``logprob`` (natural log),
    ``log10prob`` and ``bits`` (-log2 p)."""
    check_words(words)
    stream = TokenStream.from_sentences([words], model.vocab)
    lp = model.logprobs(stream)
    names = list(words) + ["</s>"]
    return [{"token": w, "oov": bool(o), "logprob": float(x), "log10prob": float(x / LN10),
             "bits": float(-x / math.log(2.0))}
            for w, o, x in zip(names, stream.oov, lp, strict=True)]
