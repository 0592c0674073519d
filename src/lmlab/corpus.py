"""Reading corpora, the vocabulary, and the token stream every model is evaluated on.

The evaluation convention (shared by every model in lmlab, see :mod:`lmlab.metrics`):
a corpus is plain UTF-8 text (optionally gzip-compressed), one sentence per line, cut into tokens
by the model's tokenizer (:mod:`lmlab.tokenizers`; by default, words separated by whitespace).
Each line's words *plus one end-of-sentence token* ``</s>`` (a.k.a. ``<eos>``) are predicted;
the start symbol ``<s>`` is context only and never predicted. Empty lines count too: they
predict just ``</s>``. Words outside the vocabulary map to ``<unk>`` and are predicted as ``<unk>``.
This gives the standard counts: 82,430 predicted tokens on PTB test, 245,569 on WikiText-2 test.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lmlab.errors import LmlabError
from lmlab.fileio import atomic_output, open_binary, strip_bom
from lmlab.textlines import Span, line_chunks
from lmlab.tokenizers import WHITESPACE, Tokenizer

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = (UNK, BOS, EOS)
# Sentence boundaries are added by lmlab; a literal one inside a line would silently change what is
# counted, so it is an input error. "<eos>" is accepted as a spelling of "</s>" in vocabulary files.
RESERVED = frozenset({BOS, EOS})
# Streamed scoring (iter_corpus): bytes read at once, tokens scored at once.
STREAM_BYTES = 2**20
STREAM_TOKENS = 2**16


def check_words(words: Sequence[str], path: str | os.PathLike | None = None,
                line: int | None = None) -> None:
    """Raise :class:`LmlabError` if a sentence boundary is written among ``words`` (lmlab adds
    them itself; a literal one would change what is counted)."""
    word = next((t for t in words if t in RESERVED), None)
    if word:
        raise LmlabError(f"reserved token {word!r} inside a sentence; lmlab adds sentence "
                         "boundaries itself", path, line)


def _check_reserved(path, first: int, lines: list[str]) -> None:
    for i, line in enumerate(lines):
        check_words(line.split(), path, first + i + 1)


def iter_sentences(path: str | os.PathLike, tokenizer: Tokenizer = WHITESPACE
                   ) -> Iterator[list[str]]:
    """Yield the tokens of each line of ``path`` (plain or gzip), streaming.

    Raises :class:`LmlabError` naming the file and line for binary data (NUL bytes), invalid UTF-8,
    a reserved boundary token inside a line, or a line longer than ``MAX_LINE_BYTES``.
    """
    for first, lines in line_chunks(path, errors=tokenizer.errors):
        for i, tokens in enumerate(tokenizer.split_lines(lines)):
            if RESERVED.intersection(tokens):
                check_words(tokens, path, first + i + 1)
            yield tokens


class _MissingIsMinusOne(dict):
    def __missing__(self, key: str) -> int:
        return -1


class Vocabulary:
    """Word <-> id map. Ids 0, 1, 2 are ``<unk>``, ``<s>``, ``</s>``; words follow by frequency.

    A literal ``<unk>`` in training text (PTB, WikiText-2) is the unknown word itself and is counted
    like any other word; a model then estimates its probability from those counts.
    ``tokenizer`` cuts raw text into these words (:mod:`lmlab.tokenizers`; default whitespace).
    """

    def __init__(self, words: Sequence[str], counts: Sequence[int] | None = None,
                 tokenizer: Tokenizer = WHITESPACE) -> None:
        self.tokenizer = tokenizer
        words = list(words)
        if words[:3] != list(SPECIALS):
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        self._oov_lookup: dict[str, int] | None = None
        if len(self.stoi) != len(words):
            raise LmlabError("vocabulary contains duplicate words")
        self.counts = np.zeros(len(words), dtype=np.int64) if counts is None else \
            np.asarray(counts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos and \
            self.tokenizer == other.tokenizer

    def id(self, word: str) -> int:
        return self.stoi.get(word, UNK_ID)

    def word(self, index: int) -> str:
        return self.itos[index]

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int = 1,
              max_size: int | None = None, tokenizer: Tokenizer = WHITESPACE) -> Vocabulary:
        """Vocabulary of the words seen at least ``min_count`` times, at most ``max_size`` words
        (specials included), most frequent first, ties broken alphabetically (deterministic)."""
        counter: Counter[str] = Counter()
        for tokens in sentences:
            counter.update(tokens)
        return cls.from_counts(counter, min_count, max_size, tokenizer)

    @classmethod
    def from_counts(cls, counter: Counter[str], min_count: int = 1,
                    max_size: int | None = None, tokenizer: Tokenizer = WHITESPACE
                    ) -> Vocabulary:
        """Like :meth:`build`, from word counts already made (e.g. by :func:`count_words`).
        A tokenizer with a closed set of tokens (byte) has all of them, seen or not."""
        if min_count < 1:
            raise LmlabError(f"min-count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 4:
            raise LmlabError(f"max vocabulary size must be >= 4, got {max_size}")
        kept = sorted(((c, w) for w, c in counter.items() if c >= min_count and w != UNK),
                      key=lambda cw: (-cw[0], cw[1]))
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        words = [w for _, w in kept]
        counts = [0, 0, 0] + [c for c, _ in kept]
        # Everything not kept (and any literal <unk>) is counted as <unk>.
        counts[UNK_ID] = sum(counter.values()) - sum(counts)
        # a closed set's tokens never seen enter too (dropped ones by min_count or max_size stay
        # dropped: their counts went to <unk>)
        unseen = [w for w in tokenizer.fixed_vocabulary or () if w not in counter]
        return cls(list(SPECIALS) + words + unseen, counts + [0] * len(unseen), tokenizer)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``word<TAB>count`` lines (specials first), atomically."""
        with atomic_output(path, "w") as f:
            for w, c in zip(self.itos, self.counts, strict=True):
                f.write(f"{w}\t{int(c)}\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary file: one word per line, optionally followed by a tab and a count."""
        words, counts = [], []
        seen: set[str] = set()
        for lineno, raw in enumerate(_read_text_lines(path), 1):
            parts = raw.rstrip("\r\n").split("\t")
            if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
                raise LmlabError("expected 'word' or 'word<TAB>count'", path, lineno)
            # No token holds ASCII whitespace (whitespace-ascii ones may hold a no-break space):
            # such a word never matches, and every word of the text would be <unk>.
            if any(c in " \f\v\r" for c in parts[0]):
                raise LmlabError(f"{parts[0]!r} holds a space: expected one word per line, or "
                                 "'word<TAB>count' (a tab before the count)", path, lineno)
            word = EOS if parts[0] == "<eos>" else parts[0]
            if word in seen:
                raise LmlabError(f"word {word!r} listed twice", path, lineno)
            seen.add(word)
            words.append(word)
            counts.append(int(parts[1]) if len(parts) == 2 else 0)
        if not words:
            raise LmlabError("empty vocabulary file", path)
        if words[:3] != list(SPECIALS):
            extra = [(w, c) for w, c in zip(words, counts, strict=True) if w not in SPECIALS]
            words = list(SPECIALS) + [w for w, _ in extra]
            counts = [0, 0, 0] + [c for _, c in extra]
        return cls(words, counts)

    def oov_lookup(self) -> dict[str, int]:
        """word -> id, with -1 (not ``<unk>``) for words outside the vocabulary, so OOV tokens
        can be flagged; built once, used with ``map`` for C-speed encoding."""
        if self._oov_lookup is None:
            self._oov_lookup = _MissingIsMinusOne(self.stoi)
        return self._oov_lookup

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        get = self.stoi.get
        return np.fromiter((get(t, UNK_ID) for t in tokens), dtype=np.int32, count=len(tokens))


def _read_text_lines(path: str | os.PathLike) -> Iterator[str]:
    with open_binary(path) as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except (OSError, EOFError) as err:
                raise LmlabError(f"truncated or corrupt file: cannot read past line {lineno} "
                                 f"({err})", path, lineno + 1) from None
            if not line:
                return
            lineno += 1
            if lineno == 1:
                line = strip_bom(line)
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise LmlabError("not valid UTF-8 text", path, lineno) from None


TEXT_COLUMNS = ("characters", "bytes", "words", "unicode_spaces")
# What Python's str.split takes for whitespace and KenLM (ASCII space, tab, CR, LF, FF, VT) does
# not: the no-break space U+00A0, the ideographic space U+3000, ... (the two tools' words differ)
UNICODE_SPACES = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
                            "\u3000]")


def text_counts(lines: Sequence[str], words: np.ndarray | None = None) -> np.ndarray:
    """Per line of raw text: its characters and UTF-8 bytes, each counting the line's end as
    one, its whitespace words (``str.split``) and its :data:`UNICODE_SPACES`;
    ``int64[lines, 4]``. What the metrics that compare tokenizations divide by
    (:mod:`lmlab.metrics`); ``words`` if already known."""
    n = len(lines)
    out = np.zeros((n, 4), dtype=np.int64)
    chars = np.fromiter(map(len, lines), dtype=np.int64, count=n)
    out[:, 0] = chars + 1
    text = "\n".join(lines)  # whole-chunk work: a few C calls, not one per line
    ascii = text.isascii()
    if ascii:
        out[:, 1] = out[:, 0]
    else:  # bytes per line: between the line ends of the chunk's UTF-8
        data = np.frombuffer(text.encode("utf-8", "surrogateescape"), dtype=np.uint8)
        ends = np.flatnonzero(data == 10)
        if len(ends) == n - 1:
            out[:, 1] = np.diff(ends, prepend=-1, append=len(data))
        else:  # a sentence given in Python may hold a "\n" of its own
            out[:, 1] = np.fromiter((len(s.encode("utf-8", "surrogateescape")) for s in lines),
                                    dtype=np.int64, count=n) + 1
    out[:, 2] = words if words is not None else np.fromiter(
        (len(s.split()) for s in lines), dtype=np.int64, count=n)
    if any(c in text for c in "\x1c\x1d\x1e\x1f") if ascii else UNICODE_SPACES.search(text):
        out[:, 3] = np.fromiter((len(UNICODE_SPACES.findall(s)) for s in lines),
                                dtype=np.int64, count=n)
    return out


@dataclass
class TokenStream:
    """A corpus as the ids every model predicts: each sentence's words then ``</s>``.

    ``offsets[i]:offsets[i+1]`` are the predicted tokens of sentence ``i`` (its last is ``</s>``);
    ``oov`` marks words absent from the vocabulary (mapped to ``<unk>``); ``text`` holds the
    raw text's :func:`text_counts` per sentence (``None`` where no text was read).
    """

    ids: np.ndarray  # int32, predicted tokens
    offsets: np.ndarray  # int64, len = sentences + 1
    oov: np.ndarray  # bool, same length as ids
    source: str = "<memory>"
    text: np.ndarray | None = None  # int64[sentences, 4]: TEXT_COLUMNS

    @property
    def n_sentences(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.ids)

    def with_bos(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids with ``<s>`` before each sentence, and the position of each ``<s>`` in that array."""
        starts = self.offsets[:-1]
        seq = np.insert(self.ids, starts, BOS_ID)
        return seq, starts + np.arange(len(starts))

    def sentence_index(self) -> np.ndarray:
        """For each predicted token, the index of its sentence."""
        return np.repeat(np.arange(self.n_sentences), np.diff(self.offsets))

    def lines(self, start: int, stop: int) -> TokenStream:
        """The stream of sentences ``start:stop``."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return TokenStream(self.ids[a:b], self.offsets[start:stop + 1] - a, self.oov[a:b],
                           self.source, None if self.text is None else self.text[start:stop])

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]], vocab: Vocabulary,
                       source: str = "<memory>") -> TokenStream:
        """The stream of already-tokenized sentences; their text is the tokenizer's
        ``join`` of the tokens."""
        get = vocab.stoi.get
        ids: list[int] = []
        lengths: list[int] = []
        texts: list[str] = []
        for tokens in sentences:
            ids.extend([get(t, -1) for t in tokens])
            ids.append(EOS_ID)
            lengths.append(len(tokens) + 1)
            texts.append(vocab.tokenizer.join(tokens))
        arr = np.asarray(ids, dtype=np.int32)
        oov = arr < 0
        arr[oov] = UNK_ID
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(arr, offsets, oov, source, text_counts(texts))


def read_corpus(path: str | os.PathLike, vocab: Vocabulary) -> TokenStream:
    """Read and encode ``path`` with ``vocab`` (and its tokenizer); an empty file is an error.

    Encodes a whole chunk of lines at once: the lines are joined with an end-of-sentence marker
    and split once, so each token costs one dict lookup and no per-line Python work.
    """
    parts = [_encode(path, first, lines, vocab)
             for first, lines in line_chunks(path, errors=vocab.tokenizer.errors) if lines]
    if not parts:
        raise LmlabError("empty corpus (no lines)", path)
    return _stream_of(np.concatenate([p[0] for p in parts]),
                      np.concatenate([p[1] for p in parts]), path=os.fspath(path))


def iter_corpus(path: str | os.PathLike, vocab: Vocabulary, chunk_tokens: int = STREAM_TOKENS,
                chunk_bytes: int = STREAM_BYTES, span: Span | None = None
                ) -> Iterator[tuple[int, TokenStream]]:
    """:func:`read_corpus` in pieces, for scoring in bounded memory: yield ``(number of lines
    before, stream of whole lines)``, each piece closed at the first line end at or past
    ``chunk_tokens`` predicted tokens (``chunk_tokens=1``: one line per piece). Concatenated, the
    pieces are exactly :func:`read_corpus`'s stream; a bad line raises as there, after the pieces
    before it were yielded. An empty file is an error. ``span``: only that piece of the file."""
    if chunk_tokens < 1:
        raise LmlabError(f"chunk size must be >= 1 token, got {chunk_tokens}")
    for first, lines in iter_lines(path, chunk_bytes, vocab.tokenizer, span):
        stream = encode_lines(lines, vocab, path, first)
        ends = stream.offsets[1:]
        start, line = 0, 0
        while line < len(ends):
            # the first line end at or past chunk_tokens tokens from the piece's start
            stop = min(int(np.searchsorted(ends, start + chunk_tokens)), len(ends) - 1) + 1
            yield first + line, stream.lines(line, stop)
            start, line = int(ends[stop - 1]), stop


def iter_lines(path: str | os.PathLike, chunk_bytes: int = STREAM_BYTES,
               tokenizer: Tokenizer = WHITESPACE, span: Span | None = None
               ) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(number of lines before, lines)`` of ``path`` (plain or gzip; ``-``: standard
    input), about ``chunk_bytes`` at a time, checked as :func:`read_corpus` checks them (for
    ``tokenizer``: the byte tokenizer takes invalid UTF-8); an empty file is an error.
    :func:`encode_lines` makes a chunk a stream."""
    empty = True
    for first, lines in line_chunks(path, chunk_bytes, once=True, errors=tokenizer.errors,
                                     span=span):
        if lines:
            empty = False
            yield first, lines
    if empty and span is None:
        raise LmlabError("empty corpus (no lines)", path)


def encode_lines(lines: list[str], vocab: Vocabulary, path: str | os.PathLike = "<memory>",
                 first: int = 0) -> TokenStream:
    """The stream of raw text ``lines`` (lines ``first + 1 ...`` of ``path``, named in errors: a
    sentence boundary written inside a line), cut by ``vocab.tokenizer``."""
    return _stream_of(*_encode(path, first, lines, vocab), path=os.fspath(path))


def _encode(path, first: int, lines: list[str], vocab: Vocabulary
            ) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of ``lines``, each line's then ``</s>``, -1 for a word outside ``vocab``; and the
    lines' :func:`text_counts`."""
    tokens = _joined_tokens(path, first, lines, vocab.tokenizer)
    tokens.append(EOS)
    ids = np.fromiter(map(vocab.oov_lookup().__getitem__, tokens), dtype=np.int32,
                      count=len(tokens))
    words = None
    if vocab.tokenizer.is_default:  # its tokens are the whitespace words
        ends = np.flatnonzero(ids == EOS_ID)
        words = np.diff(ends, prepend=-1) - 1
    return ids, text_counts(lines, words)


def _stream_of(ids: np.ndarray, text: np.ndarray | None = None, *, path: str = "<memory>"
               ) -> TokenStream:
    """The stream of encoded lines ``ids`` (-1 marks OOV; changed in place to ``<unk>``)."""
    oov = ids < 0
    ids[oov] = UNK_ID
    offsets = np.concatenate([[0], np.flatnonzero(ids == EOS_ID) + 1]).astype(np.int64)
    return TokenStream(ids, offsets, oov, path, text)


def _joined_tokens(path, first: int, lines: list[str], tokenizer: Tokenizer = WHITESPACE
                   ) -> list[str]:
    """All tokens of a chunk of lines with ``</s>`` between lines. The whitespace tokenizer
    splits the joined text in one call; others cut each line and are checked the same way."""
    if not tokenizer.is_default:  # (its tokens may hold what str.split takes for a space)
        out: list[str] = []
        for i, tokens in enumerate(tokenizer.split_lines(lines)):
            if RESERVED.intersection(tokens):
                check_words(tokens, path, first + i + 1)
            out += tokens
            out.append(EOS)
        return out[:-1]
    text = f" {EOS} ".join(lines)
    if BOS in text or text.count(EOS) != len(lines) - 1:
        _check_reserved(path, first, lines)  # a substring match may be part of a longer word
    return text.split()


def count_words(path: str | os.PathLike, tokenizer: Tokenizer = WHITESPACE,
                chunk_bytes: int | None = None, span: Span | None = None) -> Counter[str]:
    """Token counts of a text file (or of its ``span``), streaming ``chunk_bytes`` at a time
    (``</s>`` not counted)."""
    counter: Counter[str] = Counter()
    for first, lines in line_chunks(path, chunk_bytes, errors=tokenizer.errors, span=span):
        counter.update(_joined_tokens(path, first, lines, tokenizer))
    counter.pop(EOS, None)
    return counter


def fit_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> Tokenizer:
    """Train a subword ``tokenizer`` on the text of ``path`` (others are returned as they are)."""
    if tokenizer.trainable and tokenizer.model is None:
        def lines() -> Iterator[str]:
            for _, chunk in line_chunks(path, errors=tokenizer.errors):
                yield from chunk

        tokenizer.fit(lines(), os.fspath(path))
    return tokenizer


def read_training_corpus(path: str | os.PathLike, vocab: Vocabulary | None = None,
                         min_count: int = 1, max_size: int | None = None,
                         tokenizer: Tokenizer = WHITESPACE) -> tuple[Vocabulary, TokenStream]:
    """Build the vocabulary from ``path`` (unless given) in a first streaming pass, then encode
    the file; only the int32 ids are held in memory, never the words. ``tokenizer`` (untrained
    subword tokenizers are trained on ``path`` first) cuts the text, unless ``vocab`` is given:
    then its own does."""
    vocab = training_vocabulary(path, vocab, min_count, max_size, tokenizer)
    stream = read_corpus(path, vocab)
    check_has_words(path, stream)
    return vocab, stream


def training_vocabulary(path: str | os.PathLike, vocab: Vocabulary | None = None,
                        min_count: int = 1, max_size: int | None = None,
                        tokenizer: Tokenizer = WHITESPACE,
                        chunk_bytes: int | None = None,
                        word_counts: Callable[[], Counter[str]] | None = None) -> Vocabulary:
    """The first, streaming pass of :func:`read_training_corpus`: ``vocab`` checked, or built
    (reading ``chunk_bytes`` of text at a time, or from ``word_counts()``: the same counts made
    elsewhere, e.g. by workers each counting a span)."""
    if vocab is not None and vocab.tokenizer.trainable and vocab.tokenizer.model is None:
        raise LmlabError(f"a vocabulary file cannot go with the {vocab.tokenizer.name} "
                         "tokenizer: its vocabulary is the one it learns from the training text")
    if vocab is None:
        fit_tokenizer(tokenizer, path)
        counts = word_counts() if word_counts else count_words(path, tokenizer, chunk_bytes)
        vocab = Vocabulary.from_counts(counts, min_count=min_count,
                                       max_size=max_size, tokenizer=tokenizer)
    return vocab


def check_has_words(path: str | os.PathLike, stream: TokenStream) -> None:
    """A training text of empty lines only is an error (nothing to estimate from)."""
    if (stream.ids != EOS_ID).sum() == 0:
        raise LmlabError("training corpus contains no words", path)
