"""The methods every lmlab model offers its Python users, written once.

Each model class (n-gram, add-k, ARPA-loaded, neural, bidirectional, mixture) supplies only the
protocol of :class:`lmlab.metrics.LanguageModel`: ``vocab``, ``logprobs(stream)`` and
``next_logprobs(context)``. :class:`Scoring`, a mixin, builds the friendly methods on top of
them, so a number from ``lm.perplexity(...)`` is exactly the number ``lmlab eval`` prints::

    >>> import lmlab
    >>> lm = lmlab.train_ngram(["the cat sat", "the dog sat"], order=2, smoothing="mle")
    >>> round(lm.perplexity(["the cat sat"]).perplexity, 4)
    1.1892
    >>> [t.token for t in lm.token_logprobs("the cat sat")]
    ['the', 'cat', 'sat', '</s>']
    >>> [(w, round(p, 3)) for w, p in lm.next_words("the", k=2)]
    [('cat', 0.5), ('dog', 0.5)]

Text given as a Python ``str`` is one sentence of raw text, cut by the model's tokenizer (by
default: split on whitespace); a list of strings is a list of tokens. ``perplexity`` takes a
path (``str`` or ``Path``: a file, ``-`` for standard input) or an iterable of sentences.
This module imports nothing heavy: no torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lmlab.corpus import BOS_ID, TokenStream, Vocabulary, check_words, encode_lines
from lmlab.errors import LmlabError
from lmlab.tokenizers import WHITESPACE, Tokenizer

if TYPE_CHECKING:
    from lmlab.metrics import EvalResult

Sentence = str | Sequence[str]
Text = str | os.PathLike | Iterable[Sentence]


@dataclass(frozen=True)
class TokenScore:
    """One predicted token of a sentence: the same fields ``lmlab score --json`` prints."""

    token: str
    oov: bool
    logprob: float  # natural log
    log10prob: float
    bits: float

    def to_dict(self) -> dict:
        return asdict(self)


def tokens_of(sentence: Sentence, tokenizer: Tokenizer = WHITESPACE) -> list[str]:
    """The tokens of one sentence: a ``str`` is cut by ``tokenizer`` (default: split on
    whitespace), a sequence is taken as is.

    Raises :class:`LmlabError` for a sentence boundary written inside it (lmlab adds those)."""
    if isinstance(sentence, str):
        words = tokenizer.split(sentence)
    elif isinstance(sentence, bytes):
        raise LmlabError("a sentence must be text (str) or a list of tokens, not bytes")
    else:
        words = list(sentence)
        if not all(isinstance(w, str) for w in words):
            raise LmlabError("a sentence given as a list must hold str tokens")
    check_words(words)
    return words


def is_path(text: object) -> bool:
    """Whether ``text`` names a file (``str`` or ``os.PathLike``) rather than holding sentences."""
    return isinstance(text, str | os.PathLike)


def sentences_of(text: Iterable[Sentence], tokenizer: Tokenizer = WHITESPACE
                 ) -> list[list[str]]:
    """Tokenized sentences of an iterable of sentences (each a ``str`` or a list of tokens)."""
    if isinstance(text, bytes):
        raise LmlabError("text must be a path or an iterable of sentences, not bytes")
    return [tokens_of(s, tokenizer) for s in text]


def stream_of(text: Iterable[Sentence], vocab: Vocabulary, source: str = "<sentences>"
              ) -> TokenStream:
    """The token stream of an iterable of sentences, cut by ``vocab.tokenizer``. Sentences all
    given as ``str`` are read as the lines of a file are (their characters counted as given);
    lists of tokens stand for the text their tokenizer joins them into."""
    if isinstance(text, bytes):
        raise LmlabError("text must be a path or an iterable of sentences, not bytes")
    items = list(text)
    if items and all(isinstance(s, str) for s in items):
        return encode_lines(items, vocab, source)
    return TokenStream.from_sentences(sentences_of(items, vocab.tokenizer), vocab, source)


class Model(Protocol):
    """What every model :func:`lmlab.load` returns offers: the scoring protocol, the methods of
    :class:`Scoring`, and ``save``."""

    vocab: Vocabulary
    normalised: bool

    def logprobs(self, stream: TokenStream) -> np.ndarray: ...
    def next_logprobs(self, context: list[str]) -> np.ndarray: ...
    def describe(self) -> dict: ...
    def logprob(self, sentence: Sentence) -> float: ...
    def token_logprobs(self, sentence: Sentence) -> list[TokenScore]: ...
    def perplexity(self, text: Text) -> EvalResult: ...
    def next_words(self, context: Sentence = "", k: int = 10) -> list[tuple[str, float]]: ...
    def generate(self, words: int = 50, *, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0, prefix: Sentence = "") -> list[str]: ...
    def save(self, path: str | os.PathLike) -> None: ...


class Scoring:
    """Mixin: ``logprob``, ``token_logprobs``, ``perplexity``, ``next_words``, ``generate``.

    Relies on the host class's ``vocab``, ``logprobs(stream)`` and ``next_logprobs(context)``.
    """

    path: str | None = None  # the file it was loaded from or last saved to (mixtures name it)

    def logprob(self, sentence: Sentence) -> float:
        """Natural-log probability of one sentence by the chain rule: its words and ``</s>``,
        each given ``<s>`` and the words before it.

        >>> import lmlab
        >>> lm = lmlab.train_ngram(["a b", "a c"], order=2, smoothing="mle")
        >>> round(lm.logprob("a b"), 6)   # ln(1 * 1/2 * 1)
        -0.693147
        """
        return float(sum(t.logprob for t in self.token_logprobs(sentence)))

    def token_logprobs(self, sentence: Sentence) -> list[TokenScore]:
        """Per predicted token of one sentence (its words, then ``</s>``): the same records as
        ``lmlab score``.

        >>> import lmlab
        >>> lm = lmlab.train_ngram(["a b", "a c"], order=2, smoothing="mle")
        >>> [(t.token, round(t.bits, 3) + 0) for t in lm.token_logprobs("a b")]
        [('a', 0.0), ('b', 1.0), ('</s>', 0.0)]
        """
        from lmlab.metrics import token_table

        return [TokenScore(**row) for row in token_table(self, tokens_of(sentence,
                                                                          self.vocab.tokenizer))]

    def perplexity(self, text: Text) -> EvalResult:
        """Evaluate ``text`` (a file path, ``-`` for standard input, or an iterable of
        sentences) under lmlab's protocol; returns a :class:`lmlab.metrics.EvalResult`
        (``perplexity``, ``cross_entropy``, ``bits_per_token``, ``tokens``, ``oov``, ...).

        >>> import lmlab
        >>> lm = lmlab.train_ngram(["a b", "a c"], order=2, smoothing="mle")
        >>> r = lm.perplexity(["a b", "a c"])
        >>> r.tokens, round(r.perplexity, 4)
        (6, 1.2599)
        """
        from lmlab.metrics import evaluate_file, evaluate_stream

        if is_path(text):  # streamed (memory does not grow with the file) where the model allows
            return evaluate_file(self, text)
        return evaluate_stream(self, stream_of(text, self.vocab))[0]

    def next_words(self, context: Sentence = "", k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most probable next words after ``context`` (a sentence prefix) with their
        probabilities, most probable first. ``<s>`` is never listed; ``</s>`` may be.

        >>> import lmlab
        >>> lm = lmlab.train_ngram(["a b", "a c", "a b"], order=2, smoothing="mle")
        >>> [(w, round(p, 3)) for w, p in lm.next_words("a", k=2)]
        [('b', 0.667), ('c', 0.333)]
        """
        if k < 1:
            raise LmlabError(f"k must be >= 1, got {k}")
        logp = np.asarray(self.next_logprobs(tokens_of(context, self.vocab.tokenizer)),
                          dtype=np.float64)
        # <s> is context only; a neural softmax still gives it a sliver of mass (mean 1e-6 on
        # PTB test for the Zaremba-small LSTM, more for an undertrained model)
        order = [i for i in np.argsort(-logp, kind="stable") if i != BOS_ID][:k]
        itos = self.vocab.itos
        return [(itos[i], float(np.exp(logp[i]))) for i in order]

    def generate(self, words: int = 50, *, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0, prefix: Sentence = "") -> list[str]:
        """Sample sentences until ``words`` tokens were produced; one string per sentence (its
        tokens joined by the model's tokenizer). The same seed, model and options give the same
        text.

        >>> import lmlab
        >>> lm = lmlab.train_ngram(["a b", "a c", "a b"], order=2, smoothing="mle")
        >>> lm.generate(4, seed=1, top_k=1)
        ['a b', 'a b']
        """
        from lmlab.generate import generate

        tok = self.vocab.tokenizer
        return [tok.join(s) for s in generate(self, words, seed=seed, temperature=temperature,
                                              top_k=top_k, prefix=tokens_of(prefix, tok))]
