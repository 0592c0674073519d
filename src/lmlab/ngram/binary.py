"""lmlab's binary n-gram format, made for querying (``lmlab ngram build-binary``).

A ``.lm`` model is a zip of arrays: loading reads (and copies) every array, and the hash index
scoring needs is built on first use. A binary model holds the same arrays plus that index, built
once at conversion, laid out so that loading maps the file into memory (``mmap``) and reads only
its header and vocabulary: O(1) in the number of n-grams, and every process scoring with one
model shares its pages through the page cache. The loaded model is an
:class:`~lmlab.ngram.model.NGramModel` whose arrays are read-only views of the mapping, so every
command and method works on it unchanged. Two layouts: ``probing`` (the default, described
here) scores exactly as the model it was built from; ``trie`` (:mod:`lmlab.ngram.trie`) is about
a third of its size, float32, and looks n-grams up by binary search.

Layout (all numbers little-endian)::

    offset  size  field
    0       8     magic b"LMLABBIN"
    8       4     format version (uint32)
    12      4     length H of the JSON header (uint32)
    16      8     total file size in bytes (uint64)
    24      32    SHA-256 of bytes 64 .. end (checked only by verify_binary)
    56      8     zero
    64      H     JSON header: meta, order, vocab_size, quantize, layout and the section
                  table, a list of [name, dtype, offset, count]
    ...           sections, each starting at a multiple of 64 bytes

Sections: ``vocab`` (the words, UTF-8, joined by newlines), ``vocab_counts`` (int64), per order
n ``keys{n}`` (int64, sorted, ``context_index * V + word``), ``logp{n}`` and ``bow{n}`` (float64
log10; ``bow{N}`` of the highest order only when not all zero), and for n >= 2 ``index{n}``: an
open-addressing hash table of int32 (int64 for tables past 2^31 n-grams) positions into
``keys{n}``, -1 for an empty slot, at load factor 1/2. A key's first slot is
``((key * 0x9E3779B97F4A7C15 mod 2^64) >> 32) * slots >> 32``; collisions probe the next slots
(wrapping), at most ``probes[n]`` (in the header) of them. With ``--quantize 8``, ``logp{n}`` and
``bow{n}`` are uint8 codes into ``logp_bins{n}`` / ``bow_bins{n}`` (256 float64 values per
order, for orders n >= 2: KenLM's ``-q 8 -b 8`` idea; a zero backoff and log10(0) keep codes of
their own, exact; unigrams stay float64). A trie file (format version 3) holds instead
``words{n}``, ``next{n}`` and bit-packed values, with ``counts`` and ``bits`` in the header
(:mod:`lmlab.ngram.trie`).

Loading checks the magic, the version, the header and that every section lies inside the file
and has the size the n-gram counts imply, so a truncated or foreign file is one
:class:`~lmlab.errors.LmlabError`. Reading every byte (the checksum) is left to
:func:`verify_binary` (``lmlab ngram build-binary --verify FILE``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import struct

import numpy as np

from lmlab.corpus import Vocabulary
from lmlab.errors import LmlabError
from lmlab.fileio import GZIP_MAGIC, atomic_output, check_output_path
from lmlab.models import BINARY_MAGIC
from lmlab.ngram.keyindex import GOLDEN, place
from lmlab.ngram.model import NGramModel, key_run, keys_problem, require_backoff_form
from lmlab.ngram.packed import DecodedArray, quantized_array, quantized_sections, value_tables
from lmlab.ngram.trie import assemble_trie, trie_sections
from lmlab.tokenizers import tokenizer_from_spec, tokenizer_record

MAGIC = BINARY_MAGIC  # defined where every format is told apart (lmlab.models)
# 2: the header holds a tokenizer; 3: the trie layout (a probing whitespace model is still 1)
VERSION = 3
ALIGN = 64
PREFIX = struct.Struct("<8sIIQ32s8x")  # magic, version, header length, file size, sha256
assert PREFIX.size == ALIGN
_DTYPES = {"u1": np.uint8, "<i4": np.int32, "<i8": np.int64, "<u8": np.uint64,
           "<f8": np.float64}
_CODES = {t: code for code, t in _DTYPES.items()}  # the section table's name of each type
QUANTIZE_BITS = (8,)
LAYOUTS = ("probing", "trie")


# -- the hash index ----------------------------------------------------------------------------
def _first_slot(keys: np.ndarray, slots: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (np.asarray(keys).astype(np.uint64) * GOLDEN) >> np.uint64(32)
        return ((h * np.uint64(slots)) >> np.uint64(32)).astype(np.int64)


def build_index(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """The slot table of ``keys`` (positions, -1 empty) and the longest probe it needs."""
    slots = max(8, 2 * len(keys))
    table = np.full(slots, -1, dtype=np.int32 if len(keys) < 2**31 else np.int64)
    return table, place(_first_slot(keys, slots), table)


class StoredIndex:
    """:class:`~lmlab.ngram.keyindex.KeyIndex`'s ``find`` over a slot table read from a file."""

    def __init__(self, keys: np.ndarray, table: np.ndarray, probes: int) -> None:
        self.keys, self.table, self.probes = keys, table, probes

    def find(self, query: np.ndarray) -> np.ndarray:
        """Position of each query key in ``keys``, -1 where absent."""
        query = np.asarray(query, dtype=np.int64)
        out = np.full(len(query), -1, dtype=np.int64)
        if len(self.keys) == 0:
            return out
        slots = len(self.table)
        todo = np.arange(len(query))
        slot = _first_slot(query, slots)
        for _ in range(self.probes):  # no stored key is further from its first slot
            pos = self.table[slot].astype(np.int64)
            if (pos >= len(self.keys)).any():  # a damaged or crafted file, not lmlab's writer
                raise LmlabError("corrupt binary model: an index slot points past its n-grams "
                                 "(check it with lmlab ngram build-binary --verify)")
            filled = pos >= 0
            hit = filled & (np.take(self.keys, pos, mode="clip") == query[todo])
            out[todo[hit]] = pos[hit]
            go_on = filled & ~hit  # an empty slot ends the probe: absent
            todo = todo[go_on]
            if not len(todo):
                break
            slot = slot[go_on] + 1
            slot[slot == slots] = 0
        return out


# -- writing -------------------------------------------------------------------------------------
def _vocab_sections(model) -> list[tuple[str, np.ndarray]]:
    words = "\n".join(model.vocab.itos).encode("utf-8", "surrogateescape")
    return [("vocab", np.frombuffer(words, dtype=np.uint8)),
            ("vocab_counts", np.asarray(model.vocab.counts, dtype=np.int64))]


def _probing_sections(model, quantize_bits: int | None
                      ) -> tuple[list[tuple[str, np.ndarray]], dict]:
    arrays: list[tuple[str, np.ndarray]] = []
    probes = {}
    N = model.order
    for n in range(1, N + 1):
        keys = np.asarray(model.keys[n - 1], dtype=np.int64)
        arrays.append((f"keys{n}", keys))
        for name, values in value_tables(model, n):
            if quantize_bits and n > 1:  # unigrams stay exact, as in KenLM (V values only)
                arrays += quantized_sections(name, n, values)
            else:
                arrays.append((f"{name}{n}", values))
        if n >= 2:
            table, probes[str(n)] = build_index(keys)
            arrays.append((f"index{n}", table))
    return arrays, {"probes": probes}


def check_quantize_bits(bits: int | None) -> None:
    if bits is not None and bits not in QUANTIZE_BITS:
        raise LmlabError(f"--quantize supports {', '.join(map(str, QUANTIZE_BITS))} bits, got "
                         f"{bits}")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise LmlabError(f"unknown binary layout {layout!r}; choose from {', '.join(LAYOUTS)}")


def write_binary(model, path: str | os.PathLike, quantize_bits: int | None = None,
                 layout: str = "probing") -> None:
    """Write a backoff-form n-gram model (an :class:`~lmlab.ngram.model.NGramModel`, e.g. a
    ``.lm`` model or an ARPA file loaded) as a binary model, atomically.

    ``layout``: ``"probing"`` (hash tables, float64: the fastest lookups, scores exactly as
    ``model``) or ``"trie"`` (bit-packed sorted tables, float32 as KenLM stores: the smallest
    file, lookups by binary search). ``quantize_bits``: None or 8 (8-bit codes with bins per
    order for probabilities and backoffs of orders >= 2)."""
    check_quantize_bits(quantize_bits)
    check_layout(layout)
    require_backoff_form(model, "it cannot be written as a binary model")
    if os.fspath(path) == "-":
        raise LmlabError("a binary model is memory-mapped from a file: give an output file, "
                         "not standard output")
    if os.fspath(path).endswith(".gz"):
        raise LmlabError("a binary model is memory-mapped and cannot be compressed: give a "
                         "name not ending in .gz", path)
    check_output_path(path)
    arrays, fields = (trie_sections if layout == "trie" else _probing_sections)(
        model, quantize_bits)
    arrays = _vocab_sections(model) + arrays
    table = []
    header = {"format": "lmlab-ngram-binary", "meta": model.meta, "order": model.order,
              "vocab_size": len(model.vocab), "quantize": quantize_bits or 0,
              "layout": layout, **fields, "sections": table}
    header.update(tokenizer_record(model.vocab))
    # The section offsets depend on the header's length, which depends on the offsets: lay out
    # with a generous guess for the header, then fix it.
    room = len(json.dumps(header)) + 64 * len(arrays) + 64
    start = _align(ALIGN + room)
    offset = start
    for name, a in arrays:
        table.append([name, _CODES[a.dtype.type], offset, len(a)])
        offset = _align(offset + a.nbytes)
    size = offset
    text = json.dumps(header).encode("utf-8")
    if ALIGN + len(text) > start:
        raise AssertionError("binary header larger than its room")
    digest = hashlib.sha256()
    with atomic_output(path) as f:
        f.write(bytes(ALIGN))
        body = text + bytes(start - ALIGN - len(text))
        f.write(body)
        digest.update(body)
        pos = start
        for (_, a), (_, dtype, off, _) in zip(arrays, table, strict=True):
            data = np.ascontiguousarray(a, dtype=_DTYPES[dtype])
            pad = bytes(off - pos)
            f.write(pad)
            f.write(data.data)
            digest.update(pad)
            digest.update(data.data)
            pos = off + data.nbytes
        pad = bytes(size - pos)
        f.write(pad)
        digest.update(pad)
        f.seek(0)
        version = 3 if layout == "trie" else 2 if "tokenizer" in header else 1
        f.write(PREFIX.pack(MAGIC, version, len(text), size, digest.digest()))
        f.seek(size)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# -- reading -------------------------------------------------------------------------------------
def _read_prefix(path, f) -> tuple[int, int, int, bytes, int]:
    size = os.fstat(f.fileno()).st_size
    raw = f.read(ALIGN)
    if raw[:2] == GZIP_MAGIC:
        raise LmlabError("binary model is gzip-compressed: decompress it (gunzip) first, it is "
                         "memory-mapped", path)
    if not raw.startswith(MAGIC[:len(raw)]) or not raw:
        raise LmlabError("not an lmlab binary model (wrong magic number)", path)
    if len(raw) < ALIGN:
        raise LmlabError(f"truncated binary model: {size} bytes, shorter than its header",
                         path)
    _, version, hlen, recorded, digest = PREFIX.unpack(raw)
    if version > VERSION:
        raise LmlabError(f"binary model format version {version} is newer than this lmlab "
                         f"supports ({VERSION}); upgrade lmlab", path)
    if version < 1:
        raise LmlabError(f"corrupt binary model: format version {version}", path)
    if size < recorded:
        raise LmlabError(f"truncated binary model: {size} bytes, its header says {recorded}",
                         path)
    if size > recorded:
        raise LmlabError(f"corrupt binary model: {size} bytes, its header says {recorded}",
                         path)
    if ALIGN + hlen > size:
        raise LmlabError("corrupt binary model: header runs past the end of the file", path)
    return version, hlen, size, digest, recorded


def _read_header(path, f, hlen: int, version: int) -> dict:
    try:
        header = json.loads(f.read(hlen).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LmlabError("corrupt binary model: unreadable header", path) from None
    ok = isinstance(header, dict) and isinstance(header.get("meta"), dict) and \
        isinstance(header.get("sections"), list) and isinstance(header.get("order"), int) and \
        isinstance(header.get("vocab_size"), int) and header["order"] >= 1 and \
        header.get("quantize") in (0, *QUANTIZE_BITS) and \
        header.setdefault("layout", "probing") in LAYOUTS and \
        (header["layout"] == "trie" or isinstance(header.get("probes"), dict)) and \
        (header["layout"] == "trie") == (version == 3)  # (an older lmlab must refuse a trie)
    if not ok:
        raise LmlabError("corrupt binary model: header lacks its fields", path)
    return header


def load_binary(path: str | os.PathLike):
    """Map a binary model into memory: an :class:`~lmlab.ngram.model.NGramModel` whose arrays are
    read-only views of the file. Reads only the header and the vocabulary."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, the mapping outlives it
    except FileNotFoundError:
        raise LmlabError("no such file", path) from None
    except IsADirectoryError:
        raise LmlabError("is a directory, expected a model file", path) from None
    except OSError as err:
        raise LmlabError(f"cannot read file ({err.strerror or err})", path) from None
    with f:
        version, hlen, size, _, _ = _read_prefix(path, f)
        header = _read_header(path, f, hlen, version)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    sections = _map_sections(path, mm, header, ALIGN + hlen, size)
    return _assemble(path, mm, header, sections)


def _map_sections(path, mm, header: dict, start: int, size: int) -> dict[str, np.ndarray]:
    out = {}
    for entry in header["sections"]:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and entry[1] in _DTYPES
                and all(isinstance(x, int) and x >= 0 for x in entry[2:])):
            raise LmlabError("corrupt binary model: malformed section table", path)
        name, dtype, offset, count = entry
        nbytes = count * np.dtype(_DTYPES[dtype]).itemsize
        if offset % ALIGN or offset < start:
            raise LmlabError(f"corrupt binary model: section {name} at a bad offset {offset}",
                             path)
        if offset + nbytes > size:
            raise LmlabError(f"corrupt binary model: section {name} lies past the end of the "
                             f"file ({offset + nbytes} > {size} bytes)", path)
        out[name] = np.frombuffer(mm, dtype=np.dtype(dtype), count=count, offset=offset)
    return out


def _assemble(path, mm, header: dict, sections: dict[str, np.ndarray]):
    N, V, q = header["order"], header["vocab_size"], header["quantize"]

    def get(name: str, length: int | None = None, dtypes: tuple[str, ...] = ()) -> np.ndarray:
        a = sections.get(name)
        if a is None:
            raise LmlabError(f"corrupt binary model: no {name} section", path)
        if length is not None and len(a) != length:
            raise LmlabError(f"corrupt binary model: section {name} holds {len(a)} values, "
                             f"expected {length}", path)
        if dtypes and a.dtype.str.replace("|", "") not in dtypes:
            raise LmlabError(f"corrupt binary model: section {name} has type {a.dtype}", path)
        return a

    def values(name: str, n: int, length: int):
        if not q or n == 1:
            return get(f"{name}{n}", length, ("<f8",))
        return quantized_array(get, name, n, length)

    counts = get("vocab_counts", V, ("<i8",))  # V as the file holds it, before V sizes anything

    def probing() -> tuple[list, list, list, dict]:
        keys, logp, bow, indexes = [], [], [], {}
        for n in range(1, N + 1):
            k = get(f"keys{n}", V if n == 1 else None, ("<i8",))
            keys.append(CheckedKeys(k, n, keys[-1] if keys else None, V, path))
            logp.append(values("logp", n, len(k)))
            if n < N or f"bow{n}" in sections:
                bow.append(values("bow", n, len(k)))
            else:
                bow.append(np.broadcast_to(np.float64(0.0), (len(k),)))
            if n >= 2:
                table = get(f"index{n}", None, ("<i4", "<i8"))
                probes = header["probes"].get(str(n))
                if len(table) <= len(k) or not isinstance(probes, int) or \
                        not 1 <= probes <= len(table):  # a crafted count must not loop for ever
                    raise LmlabError(f"corrupt binary model: bad index of the {n}-grams", path)
                indexes[n] = StoredIndex(k, table, probes)
        return keys, logp, bow, indexes

    if header["layout"] == "trie":
        keys, logp, bow, indexes = assemble_trie(
            header, sections, get, lambda what: LmlabError(f"corrupt binary model: {what}", path))
    else:
        keys, logp, bow, indexes = probing()
    raw = get("vocab", None, ("u1",))
    tokenizer = tokenizer_from_spec(header.get("tokenizer"), path)  # its own errors, not corrupt
    try:
        words = raw.tobytes().decode("utf-8", "surrogateescape").split("\n")
        vocab = Vocabulary(words, counts, tokenizer)
    except LmlabError as err:
        raise LmlabError(f"corrupt binary model: {err}", path) from None
    if len(vocab) != V or words[:3] != vocab.itos[:3]:  # (Vocabulary puts specials first)
        raise LmlabError("corrupt binary model: vocabulary does not match its size", path)
    return BinaryNGramModel(vocab, keys, logp, bow, header["meta"], indexes, path, mm, q,
                            header["layout"])


def verify_binary(path: str | os.PathLike) -> dict:
    """Check a binary model completely: header and sections (as loading does), then the SHA-256
    of every byte. Returns a summary; raises :class:`LmlabError` on any mismatch."""
    model = load_binary(path)
    with open(path, "rb") as f:
        _, hlen, size, digest, _ = _read_prefix(path, f)
        f.seek(ALIGN)
        h = hashlib.sha256()
        while chunk := f.read(1 << 22):
            h.update(chunk)
    if h.digest() != digest:
        raise LmlabError("corrupt binary model: checksum mismatch (the file was damaged)", path)
    return {"path": os.fspath(path), "bytes": size, "order": model.order,
            "vocab_size": len(model.vocab), "ngrams": [len(k) for k in model.keys],
            "quantize": model.quantize_bits, "layout": model.layout, "sha256": digest.hex()}


class CheckedKeys(DecodedArray):
    """A probing file's order-n keys, as mapped. Scoring never reads them through this: it goes
    through the stored hash index, which checks each position it reads, and ``children`` reads
    only a run. Whole-table readers (ARPA export, pruning, sampling, a trie) do, and the table
    is checked once before their first read (:func:`~lmlab.ngram.model.keys_problem`), so a
    damaged file is one error line there instead of an IndexError or a nonsense output."""

    dtype = np.dtype(np.int64)

    def __init__(self, raw: np.ndarray, n: int, below, V: int, path) -> None:
        self.raw, self.n, self.below, self.V, self.path = raw, n, below, V, path

    @functools.cached_property
    def _checked(self) -> np.ndarray:
        contexts = len(self.below) if self.below is not None else 1
        problem = keys_problem(self.raw, contexts, self.V, self.n)
        if problem:
            raise LmlabError(f"corrupt binary model: the {self.n}-gram {problem}", self.path)
        return self.raw

    def __len__(self) -> int:
        return len(self.raw)

    def _decode(self, index) -> np.ndarray:
        return self._checked[index]


class BinaryNGramModel(NGramModel):
    """An :class:`~lmlab.ngram.model.NGramModel` mapped from a binary file: its arrays are
    read-only views of the mapping and its hash indexes come from the file."""

    def __init__(self, vocab, keys, logp, bow, meta, indexes, path, mm, quantize_bits=0,
                 layout="probing"):
        super().__init__(vocab, keys, logp, bow, meta)
        self._indexes = indexes
        self._mmap = mm
        self.path = os.fspath(path)  # (where it was last loaded or saved, as for every model)
        self.mapped = self.path  # the file it maps: what a pickle maps again
        self.quantize_bits = quantize_bits
        self.layout = layout

    def key_index(self, n: int):
        return self._indexes[n]

    def children(self, n: int, context: int) -> tuple[np.ndarray, slice]:
        if self.layout == "trie":  # the run of the context, without rebuilding the keys
            return self._indexes[n].children(context)
        return key_run(self.keys[n - 1].raw, len(self.vocab), n, context, self.path)

    def describe(self) -> dict:
        return {**super().describe(), "binary": True, "quantize": self.quantize_bits,
                "layout": self.layout}

    def __reduce__(self):  # to another process: map the file there too, sharing its pages
        return load_binary, (self.mapped,)
