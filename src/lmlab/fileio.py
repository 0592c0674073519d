"""Small file helpers shared by every writer and reader: gzip transparency, standard input as
``-``, byte-order marks, and atomic writes with the umask's permissions."""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import io
import math
import os
import stat
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from lmlab.errors import LmlabError

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some editors put at the start of a text file
STDIN = "-"  # the path that means standard input wherever lmlab reads a text file
STDOUT = "-"  # ... and standard output wherever it writes one

_stdin_data: bytes | None = None  # standard input, read once, served to every later open


def is_stdin(path: str | os.PathLike) -> bool:
    """Whether ``path`` is ``-``, standard input."""
    return isinstance(path, str | os.PathLike) and os.fspath(path) == STDIN


def strip_bom(data: bytes) -> bytes:
    """``data`` (a text file's first line or first bytes) without a leading UTF-8 byte-order
    mark: it is an encoding signature, not part of the first word."""
    return data[len(BOM):] if data.startswith(BOM) else data


def open_binary(path: str | os.PathLike, once: bool = False) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip by content (not by file name).

    ``-`` is standard input: read whole into memory on the first open and served again on every
    later open in this process (training reads its corpus twice), gzip still told by content.
    ``once=True`` promises a single pass: standard input is then streamed, not held in memory
    (scoring a text of any length), unless an earlier open already holds it. Inside
    :func:`holding_pipes` (a CLI command), a pipe given by name (``<(zcat text.gz)``, a FIFO)
    is read like standard input.
    """
    if is_stdin(path):
        return _decompressed(_open_stdin(once))
    path = Path(path)
    held = _pipe_data.get()
    if held is not None and is_pipe(path):  # (a named pipe, `<(zcat text.gz)`)
        data = held.get(os.fspath(path))
        if data is None and not once:
            with _opened(path) as f:
                data = held[os.fspath(path)] = f.read()
        if data is not None:
            return _decompressed(io.BufferedReader(io.BytesIO(data)))
    return _decompressed(_opened(path))


# what pipes held (by path) in the holding_pipes block running: read on their first open (not
# a single-pass one) and served again after
_pipe_data: contextvars.ContextVar[dict[str, bytes] | None] = contextvars.ContextVar(
    "lmlab_pipes", default=None)


@contextlib.contextmanager
def holding_pipes() -> Iterator[None]:
    """While the block runs, a pipe given by name is held on its first open and served again,
    as standard input is (a command that reads its text twice, or detects its format first);
    afterwards it is let go, so a pipe fed again is read again."""
    token = _pipe_data.set({})
    try:
        yield
    finally:
        _pipe_data.reset(token)


def is_pipe(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a pipe or socket (its bytes can be read only once)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _opened(path: Path) -> io.BufferedReader:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
        raise LmlabError("no such file", path) from None
    except IsADirectoryError:
        raise LmlabError("is a directory, expected a file", path) from None
    except PermissionError:
        raise LmlabError("permission denied", path) from None
    return handle


def _decompressed(handle: io.BufferedReader) -> IO[bytes]:
    """``handle``, through gzip where its first bytes say it is compressed."""
    if handle.peek(2)[:2] == GZIP_MAGIC:
        return _GzipReader(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


class _Borrowed(io.RawIOBase):
    """Reads another stream without owning it: closing this leaves standard input open."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        read = getattr(self._raw, "read1", self._raw.read)
        data = read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _open_stdin(once: bool) -> io.BufferedReader:
    """Standard input: streamed for a single pass (``once``), else read whole, kept, and served
    again on every later open (as it is whenever an earlier open kept it)."""
    global _stdin_data
    if _stdin_data is None:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise LmlabError("standard input is not available", STDIN)
        if once:
            return io.BufferedReader(_Borrowed(stream))
        try:
            _stdin_data = stream.read()
        except OSError as err:
            raise LmlabError(f"cannot read standard input ({err})", STDIN) from None
    return io.BufferedReader(io.BytesIO(_stdin_data))


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


def _proc_umask() -> int | None:
    """The umask as Linux reports it in /proc/self/status (no process state touched), or None."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


_HAVE_PROC_UMASK = _proc_umask() is not None  # this system reports the umask as it is now


def _read_umask() -> int:
    """The process umask: from /proc where the system says it; elsewhere set and restored once,
    at import (``os.umask`` is the only portable reader, and it is process-wide: done once,
    before lmlab starts any thread, it cannot race with one of ours)."""
    mask = _proc_umask()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


UMASK = _read_umask()


def created_mode(umask: int | None = None) -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file: 0o666 less the
    umask (the current one where /proc tells it, else the one at import, unless given)."""
    if umask is None:
        umask = _proc_umask()
    return 0o666 & ~(UMASK if umask is None else umask)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb", *,
                  temp: str | os.PathLike | None = None) -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only on success.

    A crash, an exception or Ctrl-C half way leaves the previous file (if any) untouched and no
    partial output behind. ``path`` ending in ``.gz`` is gzip-compressed. Missing parent folders
    are created (as ``mkdir -p``); the file gets the permissions of any new file (0o666 less the
    umask), not the owner-only ones of a temporary file. ``temp`` fixes the temporary file's
    name (a leftover of a killed process is then overwritten, not accumulated); by default it
    is a fresh unique name.

    What cannot be replaced is written through instead: ``-`` (standard output), an open
    descriptor (``/dev/stdout``, ``/dev/fd/3``: whatever it is open on, in its mode, so
    ``>> log`` appends), and a device, pipe or socket (``/dev/null``, a FIFO). Another symbolic
    link is followed: the file it points to is replaced, and the link stays. A consumer of
    standard output that stops reading (``| head``) ends that output quietly.
    """
    fd = _descriptor(path)
    if os.fspath(path) == STDOUT or fd is not None:
        sys.stdout.flush()  # (what was printed before comes first)
        try:
            target = sys.stdout.buffer if fd is None else os.fdopen(os.dup(fd), "wb")
        except OSError as err:
            raise LmlabError(f"cannot write ({err.strerror or err})", path) from None
        with contextlib.suppress(BrokenPipeError):
            yield from _write_through(target, path, mode, borrowed=fd is None)
        return
    path = Path(path)
    check_output_path(path)
    if path.exists() and not path.is_file():
        # a device, pipe or socket (/dev/null, /dev/stdout, a FIFO): written through, as
        # `> /dev/null` does; a file renamed over it would replace the device itself
        try:
            target = open(path, "wb")  # noqa: SIM115 - closed by _write_through
        except OSError as err:
            raise LmlabError(f"cannot write ({err.strerror or err})", path) from None
        yield from _write_through(target, path, mode)
        return
    if path.is_symlink():  # write the file it points to; the link stays a link
        path = Path(os.path.realpath(path))
    directory = path.parent if str(path.parent) else Path(".")
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if temp is None:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        else:
            tmp = os.fspath(temp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as err:
        _remove_empty(created)
        raise LmlabError(f"cannot write here ({err.strerror or err})", directory) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            with contextlib.suppress(OSError):  # e.g. a file system without permissions
                os.fchmod(raw.fileno(), created_mode())
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                    yield from _yield_stream(gz, mode)
            else:
                yield from _yield_stream(raw, mode)
            raw.flush()
            os.fsync(raw.fileno())
        pending = _PENDING.get()
        if pending is not None:  # (renamed with the rest of its output_group)
            pending.append((tmp, path, created))
            return
        _rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _remove_empty(created)
        raise
    _fsync_dir(directory)


def _descriptor(path: str | os.PathLike) -> int | None:
    """The descriptor of this process a path names (``/dev/stdout``, ``/dev/stderr``,
    ``/dev/fd/N``, ``/proc/self/fd/N``), or None."""
    name = os.fspath(path)
    named = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
    if name in named:
        return named[name]
    for prefix in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


# the files an output_group will rename into place: (temporary file, path, folders created)
_PENDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("lmlab_outputs",
                                                                      default=None)


@contextlib.contextmanager
def output_group() -> Iterator[None]:
    """Every :func:`atomic_output` inside the block is renamed into place at its end, together,
    and only if the whole block succeeds: a command that writes a model and its ARPA file
    leaves both previous files as they were (and no new one) when it fails or is interrupted
    half way. A group inside another is part of it."""
    if _PENDING.get() is not None:
        yield
        return
    pending: list = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _, created in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            _remove_empty(created)
        raise
    finally:
        _PENDING.reset(token)
    for k, (tmp, path, _) in enumerate(pending):
        try:
            _rename(tmp, path)
        except BaseException:
            for rest, _, _ in pending[k + 1:]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(rest)
            raise
        _fsync_dir(path.parent if str(path.parent) else Path("."))


def _rename(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise LmlabError(f"cannot write file ({err.strerror or err})", path) from None


def _write_through(target: IO[bytes], path, mode: str, borrowed: bool = False) -> Iterator[IO]:
    """:func:`atomic_output` to a stream that cannot be replaced (standard output, a device): no
    temporary file, so a failure half way leaves what was written."""
    try:
        if Path(path).suffix == ".gz":
            with gzip.GzipFile(fileobj=target, mode="wb", compresslevel=6, mtime=0) as gz:
                yield from _yield_stream(gz, mode)
        else:
            yield from _yield_stream(target, mode)
        target.flush()
    finally:
        if not borrowed:
            with contextlib.suppress(OSError):
                target.close()


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write created (deepest first), leaving no litter behind."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_path(path: str | os.PathLike) -> None:
    """Raise :class:`LmlabError` unless ``path`` can be an output file: it is not a folder, and
    its folder exists or can be created (no part of the way is a file). Writers call it first, so
    a long job does not fail only at the end; it creates nothing (:func:`atomic_output` creates
    missing folders when it writes)."""
    path = Path(path)
    if path.is_dir():
        raise LmlabError("is a directory, expected an output file name", path)
    directory = path.parent if str(path.parent) else Path(".")
    ancestor = directory
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise LmlabError("is a broken symbolic link, expected a folder", ancestor)
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise LmlabError("is a file, not a folder: cannot write output inside it", ancestor)


def check_not_overwriting(outputs: Iterable[str | os.PathLike | None],
                          inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise :class:`LmlabError` if an output names the same file as an input (the input would
    be replaced, and lost, by the output) or as another output. Files are compared as the file
    system sees them (``os.path.samefile``: symbolic and hard links to one file are one file);
    an input ``-`` is the file standard input reads, if it reads one (``< file``). Outputs that
    do not exist yet never clash with an input."""
    outputs = [os.fspath(o) for o in outputs if o is not None]
    if outputs.count(STDOUT) > 1:
        raise LmlabError("standard output (-) is given twice as an output; name a file for "
                         "all but one")
    outputs = [o for o in outputs if o != STDOUT]
    inputs = [os.fspath(i) for i in inputs if i is not None]
    existing = [os.stat(i) for i in inputs if i != "-" and os.path.isfile(i)]
    if "-" in inputs and _has_fd(sys.stdin):
        with contextlib.suppress(OSError):
            existing.append(os.fstat(sys.stdin.fileno()))
    for k, out in enumerate(outputs):
        if any(_same_file(out, other) for other in outputs[:k]):
            raise LmlabError("is given twice as an output; name each output file once", out)
        if os.path.isfile(out) and any(os.path.samestat(os.stat(out), i) for i in existing):
            raise LmlabError("is read by this command and would be overwritten by its output: "
                             "choose another output file", out)


def _has_fd(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _same_file(a: str, b: str) -> bool:
    """Whether outputs ``a`` and ``b`` are one file (a device twice, /dev/null, is no clash)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.isfile(a) and os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


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
    if isinstance(obj, np.generic):  # numpy scalars (np.float64 is a float already)
        return json_safe(obj.item())
    return obj
