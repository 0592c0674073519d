"""KenLM's Python query API over lmlab's n-gram models: a drop-in for code written against the
``kenlm`` module (``import lmlab.kenlm as kenlm``), with KenLM's exact conventions::

    model = kenlm.Model("lm.arpa")           # ARPA (plain or gzip) or an lmlab .lm n-gram model
    model.score("a sentence", bos=True, eos=True)   # log10 p(a sentence </s> | <s>)
    for log10, ngram_length, oov in model.full_scores("a sentence"): ...
    state, out = kenlm.State(), kenlm.State()
    model.BeginSentenceWrite(state)
    model.BaseScore(state, "a", out)          # log10 p(a | <s>); out is the state after "a"

Conventions (those of KenLM's ``lm::ngram::Model`` and its ``kenlm.pyx``, checked against the
``kenlm`` package): sentences are split on ASCII whitespace of their UTF-8 bytes; ``<s>`` is
context only and ``</s>`` is scored when ``eos``; a word absent from the model is ``<unk>``
(``oov`` is true, also for a literal ``<unk>``, and ``"<unk>" in model`` is false);
``ngram_length`` is the length of the longest n-gram matched; probabilities and backoffs are
float32 and every sum (a probability plus its backoffs, shortest context first; a sentence's total)
is rounded to float32 after each addition, as KenLM's ``float`` arithmetic does; ``-99`` (log10
of zero, e.g. ``<s>``) is kept as ``-99``. A state holds only the context words that can still
extend: after a word, the longest suffix of the matched n-gram (shorter than the order) that has
a non-zero backoff or is the context of a longer n-gram; two states are equal when they hold the
same words. N-grams an ARPA file lacks although a longer n-gram ends with them (SRILM-style
pruning) are added as KenLM does, with their backed-off probability, so ``ngram_length`` counts
them too.

Speed: a state is one integer (an n-gram's number, times the vocabulary size), and one Python
``dict`` maps ``state + word`` to the n-gram that extends it, so a word costs one dict lookup (one
more per backoff step) and a few array reads: several times slower than the C++ ``kenlm`` module
(``benchmarks/kenlm_api.py``). The index is built when the model is opened (about 0.5 s per
million n-grams) and takes about 170 bytes per n-gram (KenLM's probing binary: about 22).
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterator

import numpy as np

from lmlab.corpus import BOS_ID, UNK_ID
from lmlab.errors import LmlabError
from lmlab.ngram.arpa import LOG_ZERO, insert_ngrams, table_word_ids

__all__ = ["Model", "LanguageModel", "State", "FullScoreReturn", "Config", "LoadMethod"]

_F32 = struct.Struct("f")  # unpack(pack(x))[0]: x rounded to float32, as KenLM computes


def _as_bytes(data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise TypeError(f"Cannot convert {type(data)} to string")


def _not_str(word) -> None:
    raise TypeError(f"Argument 'word' has incorrect type (expected str, got "
                    f"{type(word).__name__})")


class State:
    """A context, as KenLM's ``State``: equal (and equally hashed) when it holds the same words;
    ordered shorter first. A fresh ``State()`` is the empty context, as in KenLM."""

    __slots__ = ("_s",)

    def __init__(self) -> None:
        self._s = 0  # the empty context, in every model

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self._s == other._s

    def __lt__(self, other: State) -> bool:
        return self._s < other._s if isinstance(other, State) else NotImplemented

    def __le__(self, other: State) -> bool:
        return self._s <= other._s if isinstance(other, State) else NotImplemented

    def __gt__(self, other: State) -> bool:
        return self._s > other._s if isinstance(other, State) else NotImplemented

    def __ge__(self, other: State) -> bool:
        return self._s >= other._s if isinstance(other, State) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._s)

    def __copy__(self) -> State:
        return _state(self._s)

    def __deepcopy__(self, memo) -> State:
        return self.__copy__()

    def __reduce__(self):
        return (_state, (self._s,))


def _state(value: int) -> State:
    state = State()
    state._s = value
    return state


class FullScoreReturn:
    """What ``BaseFullScore`` returns: ``log_prob`` (log10), ``ngram_length``, ``oov``."""

    __slots__ = ("log_prob", "ngram_length", "oov")

    def __init__(self, log_prob: float, ngram_length: int, oov: bool) -> None:
        self.log_prob = log_prob
        self.ngram_length = ngram_length
        self.oov = oov

    def __repr__(self) -> str:
        return f"FullScoreReturn({self.log_prob!r}, {self.ngram_length!r}, {self.oov!r})"


class LoadMethod:
    """KenLM's load methods; accepted and ignored (lmlab loads the whole model)."""

    LAZY, POPULATE_OR_LAZY, POPULATE_OR_READ, READ, PARALLEL_READ = range(5)


class Config:
    """KenLM's load configuration; accepted for compatibility, ``load_method`` is ignored."""

    def __init__(self) -> None:
        self.load_method = LoadMethod.POPULATE_OR_READ


class Model:
    """An n-gram model with KenLM's query API. ``path``: an ARPA file (plain or gzip) or an
    lmlab n-gram model (``.lm``); anything else (a neural checkpoint, a mixture, an add-k model,
    which has no backoff form) is an :class:`~lmlab.errors.LmlabError`. ``config`` is accepted
    for compatibility with ``kenlm.Model`` and ignored."""

    def __init__(self, path, config: Config | None = None) -> None:
        from lmlab.models import detect_format, load_model
        from lmlab.ngram.model import require_backoff_form

        name = path if isinstance(path, bytes) else os.fsencode(os.fspath(path))
        self.path = os.path.abspath(name)  # bytes, as kenlm's
        where = os.fsdecode(name)
        kind = detect_format(where) if os.path.isfile(where) else None
        if kind in ("checkpoint", "mixture"):
            raise LmlabError(f"a {'neural checkpoint' if kind == 'checkpoint' else kind} has no "
                             "backoff form: KenLM's query API (states and backoffs) needs an "
                             "n-gram model (an ARPA file or an lmlab .lm n-gram model)", where)
        model = load_model(where)
        try:
            require_backoff_form(model, "KenLM's query API (states and backoffs) needs one")
        except LmlabError as err:  # (named with the file)
            raise LmlabError(str(err), where) from None
        tables = [model.keys, model.logp, model.bow, model.vocab]
        if model.vocab.tokenizer.name not in ("whitespace", "whitespace-ascii"):
            raise LmlabError(f"a model of the {model.vocab.tokenizer.describe()} tokenizer: "
                             "KenLM's API passes whitespace-separated words, which this model "
                             "does not read; score raw text with lmlab.load(path) instead",
                             where)
        # An ARPA file without <unk> (the reader notes it): KenLM substitutes one whose zero
        # backoff counts as an extension, so the state after an unknown word keeps it.
        self._build(*tables, missing_unk=bool(model.meta.get("missing_unk")))

    # -- tables --------------------------------------------------------------------------------
    def _build(self, keys, logp, bow, vocab, missing_unk: bool = False) -> None:
        V = len(vocab)
        keys, logp, bow = list(keys), list(logp), list(bow)
        suffix = _suffixes(keys, V)
        if any((s < 0).any() for s in suffix[1:]):
            _add_missing_suffixes(keys, logp, bow, V)
            suffix = _suffixes(keys, V)
        N = len(keys)
        sizes = [len(k) for k in keys]
        offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # Extension (KenLM's HasExtension): a non-zero backoff, or the context of a longer n-gram.
        ext = [np.asarray(bow[n]) != 0 for n in range(N - 1)]
        if N > 1 and missing_unk:
            ext[0][UNK_ID] = True
        for n in range(1, N):
            ext[n - 1][np.asarray(keys[n]) // V] = True
        # out: per n-gram, the state after it (longest suffix of order < N with an extension).
        out = []
        for n in range(N):
            if n == 0:
                o = np.full(V, -1, dtype=np.int64)
            else:
                o = out[n - 1][suffix[n]]
            if n < N - 1:
                o = np.where(ext[n], offset[n] + np.arange(sizes[n]), o)
            out.append(o)
        # A state is (n-gram number + 1) * V, the empty context 0; key = state + word.
        dict_keys = [np.arange(V, dtype=np.int64)]
        for n in range(1, N):
            k = np.asarray(keys[n])
            dict_keys.append((k // V + offset[n - 1] + 1) * V + k % V)
        self._index = dict(zip(np.concatenate(dict_keys).tolist(), range(int(offset[-1])),
                               strict=True))
        probs = np.concatenate([np.asarray(p, dtype=np.float64) for p in logp])
        probs[np.isneginf(probs)] = LOG_ZERO  # lmlab reads ARPA's <= -99 as -inf; KenLM keeps it
        # Per context (indexed by state // V, so [0] is the empty context): backoff and the
        # state without its first word.
        ctx_bow = np.concatenate([np.zeros(1)] + [np.asarray(b, dtype=np.float64)
                                                  for b in bow[:N - 1]])
        ctx_bow[np.isneginf(ctx_bow)] = LOG_ZERO
        ctx_suffix = np.concatenate([np.full(V + 1, -1, dtype=np.int64)] + [
            suffix[n] + offset[n - 1] for n in range(1, N - 1)])
        lengths = np.repeat(np.arange(1, N + 1, dtype=np.int8), sizes)
        self._prob = array("f", probs.astype(np.float32).tobytes())
        self._bow = array("f", ctx_bow.astype(np.float32).tobytes())
        self._suffix_v = array("q", ((ctx_suffix + 1) * V).tobytes())
        self._out_v = array("q", ((np.concatenate(out) + 1) * V).tobytes())
        self._length = array("b", lengths.tobytes())
        self._V = V
        self._order = N
        self.vocab = vocab  # (lmlab's; not in kenlm's API)
        self._stoi = vocab.stoi
        self._btoi = {w.encode("utf-8", "surrogateescape"): i for w, i in vocab.stoi.items()}
        # <s> as context; an order-1 model has no context at all (KenLM's state is empty)
        self._begin = (BOS_ID + 1) * V if N > 1 else 0
        self._null = 0

    # -- KenLM's API ---------------------------------------------------------------------------
    @property
    def order(self) -> int:
        return self._order

    def __contains__(self, word) -> bool:
        if isinstance(word, str):
            return self._stoi.get(word, UNK_ID) != UNK_ID
        return self._btoi.get(_as_bytes(word), UNK_ID) != UNK_ID

    def __repr__(self) -> str:
        return f"<Model from {os.path.basename(self.path)}>"

    def __reduce__(self):
        return (type(self), (self.path,))

    def score(self, sentence, bos: bool = True, eos: bool = True) -> float:
        """log10 p(sentence </s> | <s>), summed in float32 as KenLM does; ``bos=False``
        starts from the empty context, ``eos=False`` leaves ``</s>`` out."""
        words = _as_bytes(sentence).split()
        if eos:
            words.append(b"</s>")
        get, wid, V = self._index.get, self._btoi.get, self._V
        prob, bow, suffix_v, out_v = self._prob, self._bow, self._suffix_v, self._out_v
        pack, unpack = _F32.pack, _F32.unpack
        total = array("f", (0.0,))  # KenLM sums in float32
        s = self._begin if bos else self._null
        for word in words:
            w = wid(word, 0)
            g = get(s + w)
            if g is None:  # back off (inlined: most words need one or two steps)
                c = s // V
                b = bow[c]
                s = suffix_v[c]
                g = get(s + w)
                if g is None:
                    c = s // V
                    b2 = bow[c]
                    s = suffix_v[c]
                    g = get(s + w)
                    if g is None:
                        g, p = self._backoff(s, w, [b, b2])
                    else:
                        p = unpack(pack(unpack(pack(prob[g] + b2))[0] + b))[0]
                else:
                    p = unpack(pack(prob[g] + b))[0]
                total[0] += p
            else:
                total[0] += prob[g]
            s = out_v[g]
        return total[0]

    def full_scores(self, sentence, bos: bool = True,
                    eos: bool = True) -> Iterator[tuple[float, int, bool]]:
        """Per word (and ``</s>`` when ``eos``): (log10 probability, length of the n-gram
        matched, whether the word is out of the vocabulary)."""
        words = _as_bytes(sentence).split()
        if eos:
            words.append(b"</s>")
        get, wid, V = self._index.get, self._btoi.get, self._V
        prob, bow, suffix_v, out_v = self._prob, self._bow, self._suffix_v, self._out_v
        length, pack, unpack = self._length, _F32.pack, _F32.unpack
        s = self._begin if bos else self._null
        for word in words:
            w = wid(word, 0)
            g = get(s + w)
            if g is None:  # back off, as in score()
                c = s // V
                b = bow[c]
                s = suffix_v[c]
                g = get(s + w)
                if g is None:
                    g, p = self._backoff(s, w, [b])
                else:
                    p = unpack(pack(prob[g] + b))[0]
                yield p, length[g], w == 0
            else:
                yield prob[g], length[g], w == 0
            s = out_v[g]

    def perplexity(self, sentence) -> float:
        """10 ** (-score / (words + 1)): the sentence with ``<s>`` and ``</s>``."""
        words = len(_as_bytes(sentence).split()) + 1
        return 10.0 ** (-self.score(sentence) / words)

    def BeginSentenceWrite(self, state: State) -> None:
        """Make ``state`` the sentence-start context ``<s>``."""
        state._s = self._begin

    def NullContextWrite(self, state: State) -> None:
        """Make ``state`` the empty context."""
        state._s = self._null

    def BaseScore(self, in_state: State, word: str, out_state: State) -> float:
        """log10 p(word | in_state); ``out_state`` becomes the context after ``word``."""
        w = self._stoi.get(word, 0)
        if w == 0 and not isinstance(word, str):
            _not_str(word)
        s = in_state._s
        get = self._index.get
        g = get(s + w)
        if g is None:  # back off (the first step inlined, as in score())
            c = s // self._V
            b = self._bow[c]
            g = get(self._suffix_v[c] + w)
            if g is None:
                g, p = self._backoff(self._suffix_v[c], w, [b])
            else:
                p = _F32.unpack(_F32.pack(self._prob[g] + b))[0]
            out_state._s = self._out_v[g]
            return p
        out_state._s = self._out_v[g]
        return self._prob[g]

    def BaseFullScore(self, in_state: State, word: str,
                      out_state: State) -> FullScoreReturn:
        """As :meth:`BaseScore`, with the n-gram length matched and whether ``word`` is OOV."""
        w = self._stoi.get(word, 0)
        if w == 0 and not isinstance(word, str):
            _not_str(word)
        g = self._index.get(in_state._s + w)
        if g is None:
            g, p = self._backoff(in_state._s, w, [])
        else:
            p = self._prob[g]
        out_state._s = self._out_v[g]
        return FullScoreReturn(p, self._length[g], w == 0)

    def _backoff(self, s: int, w: int, backoffs: list) -> tuple[int, float]:
        """The n-gram matched by word ``w`` after the context ``s``, which does not extend to it
        itself (``backoffs``: those of the longer contexts already passed, longest first), and
        its log10 probability: the n-gram's plus the backoffs of the longer contexts, added
        shortest first in float32 (KenLM's order and precision)."""
        V, get, bow, suffix_v = self._V, self._index.get, self._bow, self._suffix_v
        while (g := get(s + w)) is None:
            c = s // V
            backoffs.append(bow[c])
            s = suffix_v[c]
        p = self._prob[g]
        pack, unpack = _F32.pack, _F32.unpack
        for b in reversed(backoffs):
            p = unpack(pack(p + b))[0]
        return g, p


class LanguageModel(Model):
    """Backwards-compatibility alias, as in ``kenlm``: use :class:`Model`."""


def _suffixes(keys: list, V: int) -> list[np.ndarray]:
    """Per order n (index n-1), the index in the order n-1 table of each n-gram without its first
    word (-1 where absent; unigrams: -1)."""
    V64 = np.int64(V)
    out = [np.full(len(keys[0]), -1, dtype=np.int64)]
    for n in range(1, len(keys)):
        k = np.asarray(keys[n], dtype=np.int64)
        ctx, word = k // V64, k % V64
        if n == 1:
            out.append(word)
            continue
        ctx_suffix = out[n - 1][ctx]
        query = np.where(ctx_suffix >= 0, ctx_suffix * V64 + word, -1)
        table = np.asarray(keys[n - 1], dtype=np.int64)
        pos = np.minimum(np.searchsorted(table, query), len(table) - 1)
        out.append(np.where((ctx_suffix >= 0) & (table[pos] == query), pos, -1))
    return out


def _add_missing_suffixes(keys: list, logp: list, bow: list, V: int) -> None:
    """Add, as KenLM does when it reads such a file, every n-gram that a longer n-gram ends with
    but the model lacks (SRILM-style pruning): its probability backed off, backoff 0. Works on
    the lists given (new arrays; the model's own are not modified)."""
    for n in range(len(keys), 2, -1):  # top down: added n-grams are checked one order lower
        suffix = _suffixes(keys[:n], V)[n - 1]
        if (suffix < 0).any():  # each missing suffix, and any missing prefix of it
            rows = table_word_ids(keys[:n], V)[n - 1][suffix < 0][:, 1:]
            insert_ngrams(keys, logp, bow, V, np.unique(rows, axis=0))
