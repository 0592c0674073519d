"""N-gram language models: the backoff-form model every smoothing method produces (and ARPA
files hold), the add-k model, training, scoring, next-word distributions and saving.

Scoring is vectorised over a whole corpus: for each order, one ``searchsorted`` finds the index of
the n-gram ending at every position (keys are ``context_index * V + word``, so the index of the
(n-1)-gram ending one position earlier gives the n-gram's key). Then, as in an ARPA file,

    log p(w | h) = log p(longest stored n-gram ending in w) + sum of backoffs of the longer contexts
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from lmlab.corpus import BOS_ID, TokenStream, Vocabulary, read_training_corpus
from lmlab.errors import LmlabError
from lmlab.fileio import atomic_output, check_output_path
from lmlab.ngram.counts import count_ngrams, sentence_positions
from lmlab.ngram.estimate import check_order, estimate
from lmlab.ngram.keyindex import KeyIndex
from lmlab.ngram.prune import prune_thresholds
from lmlab.ngram.smoothing import ALL_METHODS, make_smoothing
from lmlab.scoring import Scoring
from lmlab.tokenizers import WHITESPACE, Tokenizer, tokenizer_from_spec, tokenizer_record

LN10 = math.log(10.0)
FORMAT = "lmlab-ngram"
# 2: the file holds a tokenizer (tokenizer.json), which an lmlab that reads 1 would silently ignore;
# a whitespace model is still written as 1, byte for byte as before
FORMAT_VERSION = 2


class _Tables(Scoring):
    """Sorted per-order n-gram keys and a lookup of the n-gram ending at each position."""

    keys: list[np.ndarray]
    vocab: Vocabulary
    meta: dict
    # each sentence is scored on its own: a text can be scored in pieces (lmlab.metrics)
    sentence_independent = True

    def describe(self) -> dict:
        return {"type": "ngram", **self.meta, "vocab_size": len(self.vocab),
                "ngrams": [len(k) for k in self.keys]}

    @property
    def order(self) -> int:
        return len(self.keys)

    def index_at(self, seq: np.ndarray, dist: np.ndarray) -> list[np.ndarray]:
        """Per order n, the table index of the n-gram ending at each position of ``seq`` (-1 if
        it is not stored or would cross the sentence start)."""
        V = len(self.vocab)
        found = [seq.astype(np.int64)]  # unigram table is dense: index = word id
        for n in range(2, self.order + 1):
            prev = found[-1]
            pos = np.flatnonzero(dist >= n - 1)
            pos = pos[prev[pos - 1] >= 0]
            out = np.full(len(seq), -1, dtype=np.int64)
            out[pos] = self.key_index(n).find(prev[pos - 1] * V + seq[pos])
            found.append(out)
        return found

    def key_index(self, n: int) -> KeyIndex:
        """Hash index of the order-n keys, built on first use (the tables never change)."""
        cache = self.__dict__.setdefault("_key_index", {})
        if n not in cache:
            cache[n] = KeyIndex(self.keys[n - 1])
        return cache[n]

    def children(self, n: int, context: int) -> tuple[np.ndarray, slice]:
        """The words stored after the (n-1)-gram of index ``context`` at order n, and the slice
        of their rows in the order-n tables (keys are sorted: the rows are one run)."""
        return key_run(self.keys[n - 1], len(self.vocab), n, context, getattr(self, "path", None))

    def context_index(self, context: list[str]) -> list[int]:
        """Per order n (1..N-1), the index of the last n words of ``<s> context`` (-1 if absent)."""
        seq = np.array([BOS_ID] + [self.vocab.id(w) for w in context], dtype=np.int64)
        dist = np.arange(len(seq), dtype=np.int64)
        found = self.index_at(seq, dist)
        return [int(found[n][-1]) for n in range(self.order)]


def key_run(keys, V: int, n: int, context: int, path=None) -> tuple[np.ndarray, slice]:
    """:meth:`NGramModel.children` in the sorted order-n ``keys``: a binary search, which reads
    only the run and the pages on the way to it."""
    lo, hi = np.searchsorted(keys, [context * V, (context + 1) * V])
    words = keys[lo:hi] - context * V
    if len(words) and (words.min() < 0 or words.max() >= V):  # (unsorted keys: damaged)
        raise LmlabError(f"corrupt n-gram model: the {n}-gram keys are not sorted", path)
    return words, slice(lo, hi)


def keys_problem(keys, contexts: int, V: int, n: int = 2) -> str | None:
    """What is wrong with an order's ``keys`` (None: nothing): lmlab writes them as a 1-D
    integer array, strictly increasing, each ``context * V + word`` with
    ``0 <= context < contexts`` (the size of the order below); the unigram keys (``n == 1``)
    are the word ids ``0 .. V-1``. A damaged or crafted file breaks this; every whole-table
    reader (ARPA export, pruning, sampling) relies on it and would otherwise fail with an
    IndexError or write nonsense."""
    k = np.asarray(keys)
    if k.ndim != 1 or k.dtype.kind not in "iu":
        return "keys are not a 1-D integer array"
    if n == 1:
        return None if len(k) == V and (k == np.arange(V)).all() else "keys are not the word ids"
    if not len(k):
        return None
    if k[0] < 0 or k[-1] >= contexts * V:
        return "keys out of range"
    if (k[1:] <= k[:-1]).any():
        return "keys not sorted"
    return None


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` where ``index >= 0``, else 0."""
    out = np.zeros(len(index), dtype=np.float64)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


class NGramModel(_Tables):
    """A backoff-form n-gram model: per order, sorted keys, log10 probabilities and backoffs."""

    def __init__(self, vocab: Vocabulary, keys: list[np.ndarray], logp: list[np.ndarray],
                 bow: list[np.ndarray], meta: dict | None = None) -> None:
        self.vocab = vocab
        self.keys = keys
        self.logp = logp
        self.bow = bow
        self.meta = dict(meta or {})
        self.meta.setdefault("order", len(keys))
        self.normalised = self.meta.get("smoothing") != "stupid"

    def log10probs(self, stream: TokenStream) -> np.ndarray:
        seq, dist = sentence_positions(stream)
        found = self.index_at(seq, dist)
        predicted = dist >= 1
        total = np.zeros(len(seq))
        done = ~predicted
        for n in range(self.order, 0, -1):
            idx = found[n - 1]
            hit = ~done & (idx >= 0)
            total[hit] += self.logp[n - 1][idx[hit]]
            done |= hit
            if n > 1:  # not stored at this order: pay the backoff of the (n-1)-word context
                ctx = np.full(len(seq), -1, dtype=np.int64)
                ctx[1:] = found[n - 2][:-1]
                miss = ~done & (ctx >= 0)
                total[miss] += self.bow[n - 2][ctx[miss]]
        return total[predicted]

    def logprobs(self, stream: TokenStream) -> np.ndarray:
        return self.log10probs(stream) * LN10

    def next_logprobs(self, context: list[str]) -> np.ndarray:
        ctx = self.context_index(context[-(self.order - 1):] if self.order > 1 else [])
        result = self.next_log10probs(ctx) * LN10
        result[BOS_ID] = -np.inf
        return result

    def next_log10probs(self, ctx: list[int], order: int | None = None) -> np.ndarray:
        """log10 P(. | h) over the vocabulary (``<s>`` included) at ``order`` (default: the
        model's), the context given as table indices: ``ctx[k]`` the index of its last k + 1
        words in the order-(k+1) table, -1 where not stored (:meth:`context_index`)."""
        result = self.logp[0].astype(np.float64)
        for n in range(2, (order or self.order) + 1):
            c = ctx[n - 2]
            if c < 0:
                continue  # (a longer context may still be stored: a pruned model's)
            words, rows = self.children(n, c)
            # Words not stored after this context: back off; stored ones replace the lower score.
            result += self.bow[n - 2][c]
            result[words] = self.logp[n - 1][rows]
        return result

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        save_arrays(path, self.vocab, self.meta, {"keys": self.keys, "logp": self.logp,
                                                  "bow": self.bow})
        self.path = os.fspath(path)


class AddKModel(_Tables):
    """Add-k (Lidstone; k=1 is Laplace) at the longest available context::

        p(w | h) = (c(h, w) + k) / (c(h) + k |V|)

    |V| counts ``<unk>`` but not ``<s>``; an unseen context gets the uniform distribution. This
    mixes straight with the uniform distribution rather than a lower order, so it has no backoff
    form and cannot be written as ARPA."""

    def __init__(self, vocab: Vocabulary, keys: list[np.ndarray], counts: list[np.ndarray],
                 meta: dict | None = None) -> None:
        self.vocab = vocab
        self.keys = keys
        self.counts = counts
        self.meta = dict(meta or {})
        self.k = float(self.meta.get("k", 1.0))
        self.normalised = True
        V = len(vocab)
        # c(h) per context: sum of its followers' counts (unigrams: one empty context).
        self.context_totals = [np.array([counts[0].sum()], dtype=np.float64)] + [
            np.bincount(keys[n] // V, weights=counts[n], minlength=len(keys[n - 1]))
            for n in range(1, len(keys))]

    def _logprob(self, count: np.ndarray, total: np.ndarray) -> np.ndarray:
        return np.log((count + self.k) / (total + self.k * (len(self.vocab) - 1)))

    def logprobs(self, stream: TokenStream) -> np.ndarray:
        seq, dist = sentence_positions(stream)
        found = self.index_at(seq, dist)
        use = np.minimum(dist, self.order - 1)  # context length available at each position
        pos = np.flatnonzero(dist >= 1)
        out = np.empty(len(pos))
        for m in range(self.order):  # m = context length
            sel = pos[use[pos] == m]
            if m == 0:
                count, total = self.counts[0][seq[sel]], self.context_totals[0][np.zeros_like(sel)]
            else:
                ctx = found[m - 1][sel - 1]
                idx = found[m][sel]
                count = _gather(self.counts[m], idx)
                total = _gather(self.context_totals[m], ctx)
            out[np.searchsorted(pos, sel)] = self._logprob(count, total)
        return out

    def next_logprobs(self, context: list[str]) -> np.ndarray:
        V = len(self.vocab)
        m = min(len(context) + 1, self.order - 1)  # +1: <s> starts every context
        count = np.zeros(V)
        total = 0.0
        if m == 0:
            count, total = self.counts[0].astype(np.float64), self.context_totals[0][0]
        else:
            c = self.context_index(context[-(self.order - 1):])[m - 1]
            if c >= 0:
                words, rows = self.children(m + 1, c)
                count[words] = self.counts[m][rows]
                total = self.context_totals[m][c]
        result = self._logprob(count, total)
        result[BOS_ID] = -np.inf
        return result

    def save(self, path: str | os.PathLike) -> None:
        save_arrays(path, self.vocab, self.meta, {"keys": self.keys, "counts": self.counts})
        self.path = os.fspath(path)


def train_ngram(path: str | os.PathLike | None = None, order: int = 3, smoothing: str = "mkn",
                *, stream: TokenStream | None = None, vocab: Vocabulary | None = None,
                min_count: int = 1, max_vocab: int | None = None, k: float = 1.0,
                progress: bool = False, verbose: bool = True, prune: Sequence[int] | None = None,
                tokenizer: Tokenizer = WHITESPACE, **options) -> NGramModel | AddKModel:
    """Train an n-gram model of ``order`` with ``smoothing`` (one of ``ALL_METHODS``) on the text
    file ``path`` (or an already-encoded ``stream`` with its ``vocab``), cut by ``tokenizer``
    (a given ``vocab``'s own when there is one). ``prune``: count thresholds per order,
    ``lmplz --prune``'s semantics (see :mod:`lmlab.ngram.prune`)."""
    check_order(order)
    if smoothing not in ALL_METHODS:
        raise LmlabError(f"unknown smoothing {smoothing!r}; choose from {', '.join(ALL_METHODS)}")
    thresholds = prune_thresholds(prune, order, smoothing)
    if stream is None:
        if path is None:
            raise ValueError("train_ngram needs a path or a stream")
        vocab, stream = read_training_corpus(path, vocab, min_count=min_count, max_size=max_vocab,
                                             tokenizer=tokenizer)
    elif vocab is None:
        raise ValueError("a stream needs its vocabulary")
    meta = training_meta(str(path) if path else stream.source, len(stream), order, smoothing,
                         vocab, thresholds)
    if smoothing == "addk":
        if not k > 0:
            raise LmlabError(f"add-k needs k > 0, got {k}")
        tables = count_ngrams(stream, order, len(vocab))
        return AddKModel(vocab, [t.keys for t in tables], [t.counts for t in tables],
                         {**meta, "k": k})
    method = make_smoothing(smoothing, **options)
    method.verbose = verbose  # warnings (e.g. fallback discounts) are kept in meta either way
    with tqdm(total=3, desc=f"{smoothing} {order}-gram", unit="stage", disable=not progress,
              delay=0.5, leave=False) as bar:
        def step(stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update()

        arrays = estimate(stream, vocab, order, method, progress=step, prune=thresholds)
    fitted_meta(meta, method)
    return NGramModel(vocab, arrays["keys"], arrays["logp"], arrays["bow"], meta)


def training_meta(source: str, tokens: int, order: int, smoothing: str, vocab: Vocabulary,
                  thresholds: list[int] | None) -> dict:
    """What a trained model records about its training (in the in-memory and the out-of-core
    estimator alike)."""
    meta = {"order": order, "smoothing": smoothing, "trained_on": source, "tokens": tokens}
    if not vocab.tokenizer.is_default:
        meta["tokenizer"] = vocab.tokenizer.describe()
    if thresholds:
        meta["prune"] = thresholds
    return meta


def fitted_meta(meta: dict, method) -> None:
    """Add the fitted smoothing's discounts and warnings to ``meta``."""
    meta["discounts"] = {str(n): d for n, d in method.discounts.items()}
    if method.warnings:
        meta["warnings"] = method.warnings


# -- file format: a zip (npz) of arrays plus a JSON header, no pickle ------------------------------
def check_model_output(path: str | os.PathLike) -> None:
    """A one-line error unless ``path`` can be an lmlab model file (:func:`check_output_path`,
    and not ``.gz``: the file is a zip that loading reads by seeking in it)."""
    check_output_path(path)
    if os.fspath(path).lower().endswith(".gz"):
        raise LmlabError("an lmlab model file cannot be gzip-compressed (it is a zip of arrays "
                         "already); name it .lm", path)


def save_arrays(path: str | os.PathLike, vocab: Vocabulary, meta: dict,
                arrays: dict[str, list]) -> None:
    """Write the model file: ``arrays`` are array-likes (numpy arrays, a binary model's
    :class:`~lmlab.ngram.packed.DecodedArray`) or objects with ``write_npy(out)`` (as
    :class:`lmlab.ngram.build.Spilled`) and ``len()``."""
    check_model_output(path)
    header = {"format": FORMAT, "version": 1 if vocab.tokenizer.is_default else 2, "meta": meta,
              "arrays": {name: len(v) for name, v in arrays.items()}}
    flat = {f"{name}{i}": a for name, v in arrays.items() for i, a in enumerate(v)}
    flat["vocab_counts"] = vocab.counts
    with atomic_output(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(_entry("header.json"), json.dumps(header))
            z.writestr(_entry("vocab.txt"), "\n".join(vocab.itos))
            for spec in tokenizer_record(vocab).values():
                z.writestr(_entry("tokenizer.json"), json.dumps(spec))
            for name, a in flat.items():
                with z.open(_entry(f"{name}.npy"), "w", force_zip64=True) as out:
                    if hasattr(a, "write_npy"):  # on disk (out-of-core): copied, not loaded
                        a.write_npy(out)
                    else:  # (np.asarray: a binary model's decoded arrays too)
                        np.lib.format.write_array(out, np.ascontiguousarray(np.asarray(a)),
                                                  allow_pickle=False)


def _entry(name: str) -> zipfile.ZipInfo:
    """A member of a model file, dated 1980-01-01 (zip's first day) rather than now: the same
    model is the same bytes, whenever and however it was written."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16  # (-rw-r--r-- when unzipped)
    return info


def is_ngram_file(path: str | os.PathLike) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return "header.json" in z.namelist() and \
                json.loads(z.read("header.json")).get("format") == FORMAT
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def load_ngram(path: str | os.PathLike) -> NGramModel | AddKModel:
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read("header.json"))
            if header.get("format") != FORMAT:
                raise LmlabError("not an lmlab n-gram model", path)
            if not isinstance(header.get("version"), int) or not isinstance(
                    header.get("arrays"), dict) or not isinstance(header.get("meta"), dict):
                raise LmlabError("corrupt n-gram model header", path)
            if header["version"] > FORMAT_VERSION:
                raise LmlabError(f"model format version {header['version']} is newer than this "
                                 "lmlab supports; upgrade lmlab", path)
            words = z.read("vocab.txt").decode("utf-8").split("\n")

            def read(name):
                with z.open(f"{name}.npy") as f:
                    return np.lib.format.read_array(f, allow_pickle=False)

            arrays = {name: [read(f"{name}{i}") for i in range(n)]
                      for name, n in header["arrays"].items()}
            spec = json.loads(z.read("tokenizer.json")) if "tokenizer.json" in z.namelist() \
                else None
            vocab = Vocabulary(words, read("vocab_counts"), tokenizer_from_spec(spec, path))
    except LmlabError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, OSError,
            EOFError) as err:
        raise LmlabError(f"corrupt or truncated n-gram model ({type(err).__name__}: {err})",
                         path) from None
    meta = header["meta"]
    _check_consistent(path, vocab, arrays)
    if meta.get("smoothing") == "addk":
        return AddKModel(vocab, arrays["keys"], arrays["counts"], meta)
    return NGramModel(vocab, arrays["keys"], arrays["logp"], arrays["bow"], meta)


def _check_consistent(path, vocab: Vocabulary, arrays: dict) -> None:
    keys = arrays["keys"]
    if not keys or len(keys[0]) != len(vocab):
        raise LmlabError("corrupt n-gram model: vocabulary and unigram table differ in size", path)
    for name, values in arrays.items():
        if len(values) != len(keys) or any(len(a) != len(k) for a, k in
                                           zip(values, keys, strict=True)):
            raise LmlabError(f"corrupt n-gram model: {name} arrays do not match the n-grams", path)
    for n in range(1, len(keys) + 1):
        problem = keys_problem(keys[n - 1], len(keys[n - 2]) if n > 1 else 1, len(vocab), n)
        if problem:
            raise LmlabError(f"corrupt n-gram model: the {n}-gram {problem}", path)


def require_backoff_form(model, purpose: str) -> NGramModel:
    """``model`` if it is a backoff-form n-gram model (probabilities and backoffs: what ARPA,
    the binary format, entropy pruning and KenLM's API need); else the one error every one of
    them gives, ``purpose`` saying what it cannot do."""
    if isinstance(model, NGramModel):
        return model
    meta = getattr(model, "meta", None) or {}
    what = "addk model" if meta.get("smoothing") == "addk" else type(model).__name__
    raise LmlabError(f"{what} is not a backoff n-gram model (it has no backoff form): {purpose}; "
                     "give a backoff-form model (of any smoothing but addk: an lmlab n-gram "
                     "model or an ARPA file)")


__all__ = ["NGramModel", "AddKModel", "train_ngram", "load_ngram", "is_ngram_file",
           "require_backoff_form"]
