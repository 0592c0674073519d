"""ARPA back-off language model files: write (plain or .gz, atomically) and read.

The ARPA format (Doug Paul; as written by SRILM and KenLM)::

    \\data\\
    ngram 1=COUNT
    ...
    \\1-grams:
    log10_prob<TAB>w1[<TAB>log10_backoff]
    ...
    \\end\\

lmlab writes ``-99`` for log10(0) (SRILM's convention), e.g. for ``<s>``, which is never predicted,
and reads any value <= -99 as probability zero.
Reading accepts tabs or spaces, missing backoffs (= 0), files without ``<unk>`` (it gets log10
probability -100, as KenLM does) and pruned files whose n-grams lack their context n-gram (the
context is inserted with its backed-off probability and backoff 0, which scores identically).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator

import numpy as np

from lmlab.corpus import BOS, EOS, SPECIALS, UNICODE_SPACES, UNK, Vocabulary
from lmlab.errors import LmlabError, LmlabWarning
from lmlab.fileio import atomic_output, open_binary, strip_bom
from lmlab.tokenizers import WHITESPACE, Tokenizer, split_ascii, tokenizer_from_spec

LOG_ZERO = -99.0
MISSING_UNK_LOGP = -100.0
_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


def ngram_word_ids(model) -> list[np.ndarray]:
    """Per order, an (n-grams x n) array of the word ids of every stored n-gram."""
    return table_word_ids(model.keys, len(model.vocab))


def table_word_ids(keys: list[np.ndarray], V: int) -> list[np.ndarray]:
    """:func:`ngram_word_ids` of per-order key tables over a vocabulary of ``V`` words."""
    rows = [np.arange(V, dtype=np.int64)[:, None]]
    for k in keys[1:]:
        k = np.asarray(k)
        rows.append(np.column_stack([rows[-1][k // V], k % V]))
    return rows


def write_arpa(model, path: str | os.PathLike) -> None:
    """Write a backoff-form model as ARPA (gzip if ``path`` ends in .gz); a tokenizer other than
    whitespace is saved beside it (:func:`lmlab.tokenizers.companion_path`)."""
    from lmlab.ngram.model import require_backoff_form

    require_backoff_form(model, "it cannot be written as ARPA")
    V = len(model.vocab)
    itos = model.vocab.itos
    with atomic_output(path, "w") as f:
        write_counts(f, [len(k) for k in model.keys])
        strings = itos
        for n in range(1, model.order + 1):
            keys = model.keys[n - 1]
            if n > 1:
                ctx, word = (keys // V).tolist(), (keys % V).tolist()
                strings = [f"{strings[c]} {itos[w]}" for c, w in zip(ctx, word, strict=True)]
            f.write(section_title(n))
            f.writelines(ngram_lines(strings, model.logp[n - 1],
                                     model.bow[n - 1] if n < model.order else None))
        f.write(ARPA_END)
        write_companion(path, model.vocab.tokenizer)  # inside: a failure here leaves no ARPA


ARPA_END = "\n\\end\\\n"


def write_counts(f, sizes: list[int]) -> None:
    """The ``\\data\\`` header: how many n-grams of each order follow."""
    f.write("\\data\\\n")
    f.writelines(f"ngram {n}={size}\n" for n, size in enumerate(sizes, 1))


def section_title(n: int) -> str:
    return f"\n\\{n}-grams:\n"


def ngram_lines(strings, logp: np.ndarray, bow: np.ndarray | None) -> Iterator[str]:
    """One ARPA line per n-gram: log10 probability, the words, the log10 backoff (none at the
    highest order); -inf is written as -99, as SRILM and KenLM do."""
    logp = np.maximum(logp, LOG_ZERO).tolist()
    if bow is None:
        return (f"{p:.8g}\t{s}\n" for p, s in zip(logp, strings, strict=True))
    bow = np.maximum(bow, LOG_ZERO).tolist()
    return (f"{p:.8g}\t{s}\t{b:.8g}\n" for p, s, b in zip(logp, strings, bow, strict=True))


class _Lines:
    """Numbered, decoded, stripped lines of a (possibly gzipped) ARPA file."""

    def __init__(self, path):
        self.path = path
        self.f = open_binary(path)
        self.lineno = 0

    def next(self) -> str | None:
        try:
            raw = self.f.readline()
        except (OSError, EOFError) as err:
            raise LmlabError(f"cannot read past line {self.lineno} ({err})", self.path) from None
        if not raw:
            return None
        self.lineno += 1
        if self.lineno == 1:
            raw = strip_bom(raw)
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise LmlabError("not valid UTF-8", self.path, self.lineno) from None

    def error(self, message: str) -> LmlabError:
        return LmlabError(message, self.path, self.lineno)


def read_arpa(path: str | os.PathLike):
    """Read an ARPA file into an :class:`~lmlab.ngram.model.NGramModel` (with the tokenizer
    saved beside it, if any)."""
    from lmlab.ngram.model import NGramModel

    tokenizer = read_companion(path)

    lines = _Lines(path)
    try:
        line = lines.next()
        while line is not None and line != "\\data\\":
            if line:
                raise lines.error("not an ARPA file (expected the \\data\\ header)")
            line = lines.next()
        if line is None:
            raise LmlabError("not an ARPA file (no \\data\\ header)", path)
        expected: dict[int, int] = {}
        while (line := lines.next()) is not None and not _SECTION.match(line):
            if not line:
                continue
            m = _COUNT.match(line)
            if not m:
                raise lines.error(f"expected 'ngram N=COUNT' in the header, got {line[:40]!r}")
            expected[int(m.group(1))] = int(m.group(2))
        order = len(expected)
        if order == 0 or sorted(expected) != list(range(1, order + 1)):
            raise lines.error("ARPA header must list ngram 1=.. up to the model's order")
        sections = []
        for n in range(1, order + 1):
            m = _SECTION.match(line or "")
            if not m or int(m.group(1)) != n:
                raise lines.error(f"expected the \\{n}-grams: section"
                                  if line is not None else "truncated ARPA file: ended early")
            sections.append(_read_section(lines, n, expected[n]))
            line = lines.next()
            while line == "":
                line = lines.next()
        if line != "\\end\\":
            raise lines.error("truncated ARPA file: no \\end\\ marker"
                              if line is None else f"expected \\end\\, got {line[:40]!r}")
    finally:
        lines.f.close()
    vocab, keys, logp, bow, missing_unk = _assemble(path, sections)
    vocab.tokenizer = tokenizer
    meta = {"order": order, "smoothing": "arpa", "trained_on": os.fspath(path)}
    if missing_unk:  # KenLM substitutes a <unk> of its own (lmlab.kenlm too)
        meta["missing_unk"] = True
    model = NGramModel(vocab, keys, logp, bow, meta)
    return model


def _read_section(lines: _Lines, n: int, count: int):
    """Read the ``count`` lines of the n-grams section in bulk: one decode and one split per
    line, numbers converted by numpy; the slow per-line checks run only to name a bad line."""
    first = lines.lineno
    try:
        raw = list(itertools.islice(lines.f, count))
    except (OSError, EOFError) as err:
        raise LmlabError(f"cannot read past line {first} ({err})", lines.path) from None
    try:
        text = b"".join(raw).decode("utf-8")
    except UnicodeDecodeError:
        bad = next(i for i, r in enumerate(raw) if not _decodes(r))
        raise LmlabError("not valid UTF-8", lines.path, first + bad + 1) from None
    lines.lineno = first + len(raw)
    split = split_ascii if UNICODE_SPACES.search(text) else str.split  # KenLM's words
    flat = split(text)
    # Every line holds n+1 or n+2 fields, so the total tells whether all lines have a backoff
    # (KenLM), none has (highest order), or some have (SRILM omits zero backoffs).
    width = n + 2 if len(flat) == count * (n + 2) else n + 1
    if len(raw) < count or len(flat) != count * width:
        parts = [split(line) for line in text.split("\n")[: len(raw)]]
        if len(parts) < count or not set(map(len, parts)) <= {n + 1, n + 2}:
            _section_error(lines, parts, first, n, count)
        parts = [p if len(p) == n + 2 else p + ["0"] for p in parts]
        width, flat = n + 2, list(itertools.chain.from_iterable(parts))
    try:
        probs = np.array(flat[0::width], dtype=np.float64)
        backoffs = np.array(flat[width - 1::width], dtype=np.float64) if width == n + 2 \
            else np.zeros(count)
    except ValueError:
        _section_error(lines, [line.split() for line in text.split("\n")[: len(raw)]], first,
                       n, count)
    bad = np.flatnonzero(~(probs <= 0) | np.isnan(backoffs))
    if len(bad):
        lines.lineno = first + int(bad[0]) + 1
        raise lines.error("invalid log10 probability (NaN or > 0)")
    grams = [flat[1 + j::width] for j in range(n)]  # word columns
    probs[probs <= LOG_ZERO] = -np.inf
    backoffs[backoffs <= LOG_ZERO] = -np.inf
    return grams, probs, backoffs


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _section_error(lines: _Lines, parts: list[list[str]], first: int, n: int, count: int):
    """Find and report the first bad line of a section (error path only)."""
    for i, p in enumerate(parts):
        lines.lineno = first + i + 1
        if not p or p[0].startswith("\\"):
            raise lines.error(f"the header promises {count} {n}-grams but the section has {i}")
        if len(p) not in (n + 1, n + 2):
            raise lines.error(f"malformed {n}-gram line (expected probability, {n} words and "
                              "optionally a backoff)")
        try:
            float(p[0])
            if len(p) == n + 2:
                float(p[-1])
        except ValueError:
            raise lines.error("malformed number in n-gram line") from None
    lines.lineno = first + len(parts)
    raise lines.error(f"truncated ARPA file: expected {count} {n}-grams, found {len(parts)}")


def _assemble(path, sections):
    (uni, uni_p, uni_b) = sections[0]
    words = uni[0]
    for special in (BOS, EOS):
        if special not in words:
            raise LmlabError(f"ARPA file has no {special} unigram", path)
    if len(set(words)) != len(words):
        twice = next(w for w, c in Counter(words).items() if c > 1)
        raise LmlabError(f"ARPA file lists the unigram {twice!r} twice", path)
    extra = [w for w in words if w not in SPECIALS]
    vocab = Vocabulary(list(SPECIALS) + extra)
    V = len(vocab)
    logp = [np.full(V, MISSING_UNK_LOGP)]
    bow = [np.zeros(V)]
    ids = np.array([vocab.stoi[w] for w in words], dtype=np.int64)
    logp[0][ids] = uni_p
    bow[0][ids] = uni_b
    missing_unk = UNK not in words
    if missing_unk:
        warnings.warn(f"{os.fspath(path)}: no <unk> unigram; OOV words get log10 "
                      f"probability {MISSING_UNK_LOGP}", LmlabWarning, stacklevel=2)
    keys = [np.arange(V, dtype=np.int64)]
    for n, (grams, probs, backoffs) in enumerate(sections[1:], 2):
        try:
            rows = np.column_stack([np.fromiter(map(vocab.stoi.__getitem__, column),
                                                dtype=np.int64, count=len(column))
                                    for column in grams])
        except KeyError as err:
            raise LmlabError(f"{n}-gram uses word {err.args[0]!r} that has no unigram",
                             path) from None
        context = lookup_rows(keys, V, rows[:, :-1])
        missing = context < 0
        if missing.any():  # (SRILM-style pruning) insert the missing contexts, backed off
            insert_ngrams(keys, logp, bow, V, rows[missing][:, :-1])
            context = lookup_rows(keys, V, rows[:, :-1])
        k = context * V + rows[:, -1]
        order = np.argsort(k, kind="stable")
        k = k[order]
        same = np.flatnonzero(np.diff(k) == 0)
        if len(same):
            twice = " ".join(vocab.itos[w] for w in rows[order[same[0]]])
            raise LmlabError(f"ARPA file lists the {n}-gram {twice!r} twice", path)
        keys.append(k)
        logp.append(probs[order])
        bow.append(backoffs[order])
    return vocab, keys, logp, bow, missing_unk


def lookup_rows(keys, V, rows) -> np.ndarray:
    """Table index of each n-gram row (words as ids), -1 where absent."""
    idx = rows[:, 0].copy()
    for m in range(1, rows.shape[1]):
        table = keys[m]
        q = np.where(idx >= 0, idx * V + rows[:, m], -1)
        pos = np.minimum(np.searchsorted(table, q), max(len(table) - 1, 0))
        ok = (idx >= 0) & (len(table) > 0)
        ok[ok] = table[pos[ok]] == q[ok]
        idx = np.where(ok, pos, -1)
    return idx


def insert_ngrams(keys, logp, bow, V, rows) -> None:
    """Add the n-grams ``rows`` (words as ids, all of one length >= 2) and every prefix of them
    that the tables lack, shortest first, each with its backed-off probability and backoff 0
    (log10 1), as KenLM does for the missing contexts and suffixes of SRILM-pruned models."""
    for m in range(2, rows.shape[1] + 1):
        prefixes = np.unique(rows[:, :m], axis=0)
        absent = prefixes[lookup_rows(keys, V, prefixes) < 0]
        if len(absent) == 0:
            continue
        scores = score_rows(keys[:m], logp[:m], bow[:m], V, absent)
        parent = lookup_rows(keys, V, absent[:, :-1])
        new_keys = parent * V + absent[:, -1]
        merged = np.concatenate([keys[m - 1], new_keys])
        order = np.argsort(merged, kind="stable")
        # Existing higher-order keys refer to indices of this table: remap them.
        remap = np.empty(len(merged), dtype=np.int64)
        remap[order] = np.arange(len(merged))
        keys[m - 1] = merged[order]
        logp[m - 1] = np.concatenate([logp[m - 1], scores])[order]
        bow[m - 1] = np.concatenate([bow[m - 1], np.zeros(len(absent))])[order]
        if m < len(keys):
            k = keys[m]
            keys[m] = remap[k // V] * V + k % V  # remap is monotonic: order is kept


def score_rows(keys, logp, bow, V, rows) -> np.ndarray:
    """log10 p(last word | the others) by ARPA backoff over the given tables (rows absent from
    the top table)."""
    m = rows.shape[1]
    total = np.zeros(len(rows))
    done = np.zeros(len(rows), dtype=bool)
    for length in range(m, 0, -1):
        sub = rows[:, m - length:]
        idx = lookup_rows(keys, V, sub) if length <= len(keys) else np.full(len(rows), -1)
        hit = ~done & (idx >= 0)
        total[hit] += logp[length - 1][idx[hit]]
        done |= hit
        if length > 1:
            ctx = lookup_rows(keys, V, sub[:, :-1])
            miss = ~done & (ctx >= 0)
            total[miss] += bow[length - 2][ctx[miss]]
    return total


# -- beside an ARPA file, which has no place for it ------------------------------------------------
def companion_path(arpa: str | os.PathLike) -> str:
    """Where the tokenizer of the ARPA file ``arpa`` is saved: ``ARPA.tokenizer.json``."""
    return os.fspath(arpa) + ".tokenizer.json"


def write_companion(arpa: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Save ``tokenizer`` beside the ARPA file ``arpa`` (none for the whitespace tokenizer, and
    a stale one from an earlier model of that name is removed; none beside standard output or
    a device)."""
    if os.fspath(arpa) == "-" or (os.path.exists(arpa) and not os.path.isfile(arpa)):
        return
    path = companion_path(arpa)
    if tokenizer.is_default:
        if os.path.exists(path):
            os.remove(path)
        return
    with atomic_output(path, "w") as f:
        json.dump({"format": "lmlab-tokenizer", "tokenizer": tokenizer.spec()}, f)


def read_companion(arpa: str | os.PathLike) -> Tokenizer:
    """The tokenizer saved beside the ARPA file ``arpa``; whitespace when there is none."""
    path = companion_path(arpa)
    if os.fspath(arpa) == "-" or not os.path.exists(path):
        return WHITESPACE
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise LmlabError(f"unreadable tokenizer file ({err})", path) from None
    if not isinstance(data, dict) or data.get("format") != "lmlab-tokenizer":
        raise LmlabError("not an lmlab tokenizer file", path)
    return tokenizer_from_spec(data.get("tokenizer"), path)
