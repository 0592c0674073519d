"""Reading a text file as chunks of whole lines: the one reader under every corpus reader of
:mod:`lmlab.corpus` and every ``--jobs``/cluster worker.

:func:`raw_chunks` reads about ``chunk_bytes`` of whole lines at a time, as bytes (what a main
process hands to workers); :func:`decode_chunk` decodes and checks them (NUL bytes, invalid
UTF-8, over-long lines: one-line errors naming the line), wherever it runs; :func:`line_chunks`
is both. :func:`line_spans` cuts a plain file into spans of whole lines that workers read
themselves (:func:`open_span`), their lines numbered as in the whole file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import IO

import numpy as np

from lmlab.errors import LmlabError
from lmlab.fileio import is_pipe, is_stdin, open_binary, strip_bom

MAX_LINE_BYTES = 16 * 2**20
CHUNK_BYTES = 8 * 2**20  # read at a time by default

Span = tuple[int, int, int]  # (first byte, end byte, lines before): a piece of a file, whole lines


def open_span(path: str | os.PathLike, span: Span) -> IO[bytes]:
    """The bytes ``span`` of a plain file (a piece of a corpus read by one worker), read as
    they are asked for: a span may be as large as the file (one without line ends)."""
    start, end, _ = span
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with the reader
        f.seek(start)
    except OSError as err:
        raise LmlabError(f"cannot read ({err.strerror or err})", path) from None
    return io.BufferedReader(_Bounded(f, end - start))


class _Bounded(io.RawIOBase):
    """The next ``size`` bytes of an unbuffered file, then end of file."""

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        self.raw, self.left = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[: self.left]
        n = self.raw.readinto(view) or 0
        self.left -= n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def line_chunks(path: str | os.PathLike, chunk_bytes: int | None = None, once: bool = False,
                errors: str = "strict", span: Span | None = None
               ) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(number of lines before, decoded lines)`` chunks of about ``chunk_bytes`` of
    ``path`` (plain or gzip; ``-`` is standard input). A leading UTF-8 byte-order mark is dropped;
    a CRLF line end is one line end (its CR is dropped with the LF).

    Validates as it streams: binary data (NUL bytes), invalid UTF-8 and over-long lines raise
    :class:`LmlabError` naming the file and line. ``once``: this is the only pass over the text
    (standard input is then streamed, not held in memory). ``errors="surrogateescape"``: invalid
    UTF-8 is kept as escaped bytes instead (the byte tokenizer reads any bytes). ``span``: only
    that piece of a plain file (:func:`line_spans`), its lines numbered as in the whole file.
    """
    for lineno, data in raw_chunks(path, chunk_bytes, once, span):
        yield lineno, decode_chunk(data, path, lineno, errors)


def raw_chunks(path: str | os.PathLike, chunk_bytes: int | None = None, once: bool = False,
               span: Span | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(number of lines before, bytes)``: about ``chunk_bytes`` of whole lines of ``path``
    at a time, not yet decoded or checked (:func:`decode_chunk` does both, wherever it runs). A
    leading UTF-8 byte-order mark is dropped: an encoding signature, not part of a word."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES  # (read here: tests make chunks tiny)
    lineno = 0 if span is None else span[2]
    first = span is None or span[0] == 0
    with open_binary(path, once=once) if span is None else open_span(path, span) as f:
        while True:
            try:
                data = f.read(chunk_bytes)
                if data and not data.endswith(b"\n"):  # on to the line's end, but no further
                    tail = f.readline(MAX_LINE_BYTES + 1)  # than a line may be long
                    data += tail
                    if len(tail) > MAX_LINE_BYTES and not tail.endswith(b"\n"):
                        raise _long_line(path, lineno + data.count(b"\n") + 1)
            except (OSError, EOFError) as err:
                # standard input streamed once cannot be read again: count what was read
                good = lineno if once and is_stdin(path) else _readable_lines(path)
                raise LmlabError(f"truncated or corrupt data after line {good} ({err})", path,
                                 good + 1) from None
            if not data:
                return
            if first:
                data, first = strip_bom(data), False
                if not data:  # (the file is a byte-order mark alone: no lines)
                    continue
            yield lineno, data
            lineno += data.count(b"\n") + (not data.endswith(b"\n"))


def decode_chunk(data: bytes, path: str | os.PathLike, lineno: int, errors: str = "strict"
                 ) -> list[str]:
    """The lines of a :func:`raw_chunks` chunk (lines ``lineno + 1 ...`` of ``path``), checked:
    NUL bytes, invalid UTF-8 (unless ``errors="surrogateescape"``) and over-long lines raise
    :class:`LmlabError` naming the line. A line ending in CRLF loses its CR too."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise LmlabError("binary data (NUL byte); expected UTF-8 text, one sentence per line",
                         path, lineno + data.count(b"\n", 0, nul) + 1)
    if len(data) > MAX_LINE_BYTES:  # (else no line can be too long)
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
        lengths = np.diff(np.concatenate(([-1], ends, [len(data)]))) - 1  # in bytes
        if lengths.max() > MAX_LINE_BYTES:
            raise _long_line(path, lineno + int(np.argmax(lengths > MAX_LINE_BYTES)) + 1)
    try:
        text = data.decode("utf-8", errors)
    except UnicodeDecodeError as err:
        raise LmlabError("not valid UTF-8 text", path,
                         lineno + data.count(b"\n", 0, err.start) + 1) from None
    if "\r" in text:  # CRLF line ends: the CR is part of the line end (not a character token)
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _long_line(path: str | os.PathLike, line: int) -> LmlabError:
    return LmlabError(f"line longer than {MAX_LINE_BYTES // 2**20} MiB; expected one sentence per "
                      "line", path, line)


def line_spans(path: str | os.PathLike, span_bytes: int) -> tuple[list[Span], int] | None:
    """Cut a plain (uncompressed, seekable) text file into spans of whole lines of about
    ``span_bytes`` each, in one pass; returns them and the number of lines. None for standard
    input, a pipe and gzip, which can only be read from the start."""
    if is_stdin(path) or is_pipe(path):
        return None
    with open_binary(path) as f:
        if not isinstance(f, io.BufferedReader):
            return None
        spans: list[Span] = []
        start = first = lines = pos = 0
        cut, last = span_bytes, b"\n"
        while block := f.read(2**24):
            while cut < pos + len(block):
                i = block.find(b"\n", max(cut - pos, 0))
                if i < 0:
                    break
                end = pos + i + 1
                spans.append((start, end, first))
                start, first = end, lines + block.count(b"\n", 0, i + 1)
                cut = end + span_bytes
            lines += block.count(b"\n")
            pos += len(block)
            last = block[-1:]
    if pos > start:
        spans.append((start, pos, first))
    return spans, lines + (last != b"\n")


def _readable_lines(path: str | os.PathLike) -> int:
    """How many complete lines can be read before the data breaks (error path only)."""
    count = 0
    with open_binary(path) as f:
        try:
            for line in f:
                count += line.endswith(b"\n")
        except (OSError, EOFError):
            pass
    return count
