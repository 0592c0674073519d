"""Word-vector files: the word2vec format, text or binary (gzip ok), as the original C tool and
gensim read and write it (``KeyedVectors.load_word2vec_format`` / ``save_word2vec_format``), and
the ``vectors.tsv`` + ``metadata.tsv`` pair that the TensorFlow Embedding Projector
(projector.tensorflow.org) loads.

:func:`export` writes :class:`~lmlab.analysis.vectors.Embeddings` in any of :data:`FORMATS`;
:func:`read_word2vec` and :func:`read_tsv` read them back, float32 exactly (the text formats
write ``%.9g``), with one-line errors for malformed files. Words must be non-empty and free of
whitespace. :func:`lmlab.analysis.embeddings.load_embeddings` tells these files from checkpoints
by content and reads them here. numpy only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmlab.analysis.vectors import Embeddings
from lmlab.errors import LmlabError

FORMATS = ("word2vec", "word2vec-binary", "tsv")


# ----------------------------------------------------------------------------------------------
# word2vec files
# ----------------------------------------------------------------------------------------------


def _check_words(emb: Embeddings) -> None:
    for w in emb.words:
        if not w or any(ch.isspace() for ch in w):
            raise LmlabError(f"word {w!r} is empty or contains whitespace and cannot be "
                             "written to a vector file", emb.source)


def write_word2vec(emb: Embeddings, path: str | os.PathLike, binary: bool = False) -> None:
    """The word2vec format (as the original C tool and gensim read and write it): a header line
    ``COUNT DIM``, then per word either ``word v1 v2 ...`` (text; ``%.9g`` round-trips float32
    exactly) or ``word`` + space + DIM little-endian float32 + newline (binary). Atomic; a
    ``.gz`` name is compressed."""
    from lmlab.fileio import atomic_output

    _check_words(emb)
    header = f"{len(emb)} {emb.dim}\n".encode()
    with atomic_output(path, "wb") as f:
        f.write(header)
        if binary:
            data = emb.vectors.astype("<f4")
            for word, row in zip(emb.words, data, strict=True):
                f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
        else:
            fmt = " ".join(["%.9g"] * emb.dim)
            for word, row in zip(emb.words, emb.vectors.tolist(), strict=True):
                f.write(f"{word} {fmt % tuple(row)}\n".encode())


def read_word2vec(path: str | os.PathLike) -> Embeddings:
    """Read a word2vec file, text or binary (told apart by content), plain or gzip."""
    from lmlab.fileio import open_binary, strip_bom

    with open_binary(path) as f:
        try:
            data = strip_bom(f.read())
        except (OSError, EOFError) as err:
            raise LmlabError(f"truncated or corrupt file ({err})", path) from None
    end = data.find(b"\n")
    header = data[:end if end >= 0 else len(data)]
    parts = header.split()
    try:
        count, dim = (int(p) for p in parts)
    except (ValueError, UnicodeDecodeError):
        count = dim = -1
    if len(parts) != 2 or count < 1 or dim < 1:
        raise LmlabError("not a checkpoint or word-vector file: a word2vec file starts with a "
                         "line 'COUNT DIM' (two positive integers)", path, 1)
    body = data[end + 1:] if end >= 0 else b""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        try:
            words, vectors = _parse_text(text, count, dim, path)
            return Embeddings(words, vectors, os.fspath(path), "word2vec",
                              {"format": "word2vec", "summary": "word2vec vectors"})
        except LmlabError as text_error:
            try:  # all-zero or otherwise UTF-8-looking binary data
                words, vectors = _parse_binary(body, count, dim, path)
            except LmlabError:
                raise text_error from None
    else:
        words, vectors = _parse_binary(body, count, dim, path)
    return Embeddings(words, vectors, os.fspath(path), "word2vec",
                      {"format": "word2vec-binary", "summary": "word2vec vectors"})


def _check_vectors(words: list[str], vectors: np.ndarray, path) -> None:
    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        if w in seen:
            raise LmlabError(f"word {w!r} appears twice (vectors {seen[w] + 1} and {i + 1})",
                             path)
        seen[w] = i
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise LmlabError(f"vector of {words[bad[0]]!r} has a non-finite value", path)


def _parse_text(text: str, count: int, dim: int, path) -> tuple[list[str], np.ndarray]:
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != count:
        raise LmlabError(f"header says {count} vectors but {len(lines)} lines follow", path)
    words: list[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    for i, line in enumerate(lines):
        fields = line.rstrip("\r").rstrip(" ").split(" ")
        if len(fields) != dim + 1 or not fields[0]:
            raise LmlabError(f"expected a word and {dim} numbers, got {len(fields) - 1} values",
                             path, i + 2)
        try:
            vectors[i] = np.asarray(fields[1:], dtype=np.float32)
        except ValueError:
            raise LmlabError("not a number among the values", path, i + 2) from None
        words.append(fields[0])
    _check_vectors(words, vectors, path)
    return words, vectors


def _parse_binary(body: bytes, count: int, dim: int, path) -> tuple[list[str], np.ndarray]:
    width = 4 * dim
    words: list[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    pos, n = 0, len(body)
    for i in range(count):
        while pos < n and body[pos] in b"\n\r\t ":
            pos += 1
        space = body.find(b" ", pos)
        if space < 0 or space + 1 + width > n:
            raise LmlabError(f"truncated binary word2vec file: vector {i + 1} of {count} is "
                             "incomplete", path)
        try:
            word = body[pos:space].decode("utf-8")
        except UnicodeDecodeError:
            raise LmlabError(f"word {i + 1} is not valid UTF-8 (a binary word2vec file with a "
                             "wrong header?)", path) from None
        if not word or "\n" in word:
            raise LmlabError(f"malformed binary word2vec file at vector {i + 1}", path)
        words.append(word)
        vectors[i] = np.frombuffer(body, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + width
    if body[pos:].strip():
        raise LmlabError(f"data after the {count} vectors the header announces", path)
    _check_vectors(words, vectors, path)
    return words, vectors


# ----------------------------------------------------------------------------------------------
# Projector TSV pair
# ----------------------------------------------------------------------------------------------


def write_tsv(emb: Embeddings, folder: str | os.PathLike) -> tuple[Path, Path]:
    """``folder/vectors.tsv`` (one tab-separated vector per line, no header) and
    ``folder/metadata.tsv`` (one word per line; a single column has no header), the pair the
    TensorFlow Embedding Projector (projector.tensorflow.org) loads. ``folder`` and missing
    folders above it are created."""
    from lmlab.fileio import atomic_output, check_output_path, output_group

    _check_words(emb)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LmlabError("exists and is not a directory (--format tsv writes a folder)", folder)
    check_output_path(folder / "vectors.tsv")
    vec_path, meta_path = folder / "vectors.tsv", folder / "metadata.tsv"
    fmt = "\t".join(["%.9g"] * emb.dim)
    with output_group():  # (the pair, or neither)
        with atomic_output(vec_path, "w") as f:
            for row in emb.vectors.tolist():
                f.write(fmt % tuple(row) + "\n")
        with atomic_output(meta_path, "w") as f:
            for w in emb.words:
                f.write(w + "\n")
    return vec_path, meta_path


def read_tsv(folder: str | os.PathLike) -> Embeddings:
    """Read the pair :func:`write_tsv` writes (a one-column metadata file, no header)."""
    folder = Path(folder)
    vec_path, meta_path = folder / "vectors.tsv", folder / "metadata.tsv"
    if not meta_path.exists():
        raise LmlabError("vectors.tsv without metadata.tsv (the words)", folder)
    words = [w.rstrip("\r") for w in meta_path.read_text(encoding="utf-8-sig").split("\n")]
    while words and not words[-1]:
        words.pop()
    rows = [r for r in vec_path.read_text(encoding="utf-8-sig").split("\n") if r.strip()]
    if len(rows) != len(words):
        raise LmlabError(f"{len(rows)} vectors but {len(words)} words in metadata.tsv", folder)
    if not rows:
        raise LmlabError("empty vectors.tsv", vec_path)
    dim = len(rows[0].split("\t"))
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    for i, r in enumerate(rows):
        fields = r.split("\t")
        if len(fields) != dim:
            raise LmlabError(f"expected {dim} values, got {len(fields)}", vec_path, i + 1)
        try:
            vectors[i] = np.asarray(fields, dtype=np.float32)
        except ValueError:
            raise LmlabError("not a number among the values", vec_path, i + 1) from None
    _check_vectors(words, vectors, folder)
    return Embeddings(words, vectors, os.fspath(folder), "tsv", {"summary": "TSV vectors"})


def export(emb: Embeddings, out: str | os.PathLike, fmt: str) -> list[Path]:
    """Write ``emb`` as ``fmt`` (word2vec, word2vec-binary or tsv); the files written."""
    if fmt == "word2vec":
        write_word2vec(emb, out)
    elif fmt == "word2vec-binary":
        write_word2vec(emb, out, binary=True)
    elif fmt == "tsv":
        return list(write_tsv(emb, out))
    else:
        raise LmlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return [Path(out)]


__all__ = ["FORMATS", "export", "read_tsv", "read_word2vec", "write_tsv", "write_word2vec"]
