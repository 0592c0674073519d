"""Small file helpers shared by every writer and reader: gzip transparency and atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lmlab.errors import LmlabError

GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip by content (not by file name)."""
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
        raise LmlabError("no such file", path) from None
    except IsADirectoryError:
        raise LmlabError("is a directory, expected a file", path) from None
    except PermissionError:
        raise LmlabError("permission denied", path) from None
    if handle.peek(2)[:2] == GZIP_MAGIC:
        return _GzipReader(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


class _GzipReader(gzip.GzipFile):
    """A GzipFile whose corrupt-data errors are OSErrors: ``zlib.error`` is not one, so readers that
    turn truncation (EOFError/OSError) into an LmlabError would show a traceback for corruption."""

    def _guard(self, method, *args):
        try:
            return method(*args)
        except zlib.error as err:
            raise gzip.BadGzipFile(f"corrupt compressed data: {err}") from None

    def read(self, size=-1):
        return self._guard(super().read, size)

    def read1(self, size=-1):
        return self._guard(super().read1, size)

    def peek(self, n):
        return self._guard(super().peek, n)

    def readline(self, size=-1):
        return self._guard(super().readline, size)


def head_bytes(path: str | os.PathLike, n: int = 64) -> bytes:
    """The first ``n`` (decompressed) bytes of a file, for format detection."""
    with open_binary(path) as f:
        try:
            return f.read(n)
        except (OSError, EOFError) as err:
            raise LmlabError(f"cannot read file ({err})", path) from None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only on success.

    A crash, an exception or Ctrl-C half way leaves the previous file (if any) untouched and no
    partial output behind. ``path`` ending in ``.gz`` is gzip-compressed.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise LmlabError(f"cannot write here ({err.strerror})", directory) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                    yield from _yield_stream(gz, mode)
            else:
                yield from _yield_stream(raw, mode)
            raw.flush()
            os.fsync(raw.fileno())
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise LmlabError(f"cannot write file ({err.strerror})", path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_path(path: str | os.PathLike) -> None:
    """Raise :class:`LmlabError` unless ``path`` can be an output file: its folder exists and it is
    not itself a folder. Writers call it first, so a long job does not fail only at the end."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise LmlabError("output directory does not exist", directory)
    if path.is_dir():
        raise LmlabError("is a directory, expected an output file name", path)


def _yield_stream(binary: IO[bytes], mode: str) -> Iterator[IO]:
    if "b" in mode:
        yield binary
        return
    wrapper = io.TextIOWrapper(binary, encoding="utf-8", newline="\n", write_through=False)
    yield wrapper
    wrapper.flush()
    wrapper.detach()  # leave the binary stream open: atomic_output still fsyncs and closes it


def json_safe(obj):
    """``obj`` with every inf/nan float (not JSON) replaced by null, through dicts and lists: the
    convention of every ``--json`` output and JSON file lmlab writes."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
