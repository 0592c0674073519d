"""The trie layout of lmlab's binary n-gram format (``build-binary --layout trie``): KenLM's
``trie`` idea in NumPy, for the smallest files.

An order-n n-gram's key ``context_index * V + word`` is not stored. Its table is sorted by
context, then word, so the n-grams extending one (n-1)-gram are a run: the (n-1)-gram stores
where its run starts (``next{n-1}``, one more entry than n-grams, the last the count of the next
order), and the n-gram stores only its last word (``words{n}``). Both are bit-packed in just the
bits their largest value needs, and log-probabilities and backoffs are float32 (31 bits when
none is positive: the sign is implied), or 8-bit codes with ``--quantize 8``.

A lookup reads the context's run and binary-searches the word in it, all queries at once. Runs are
short except after frequent words, so most queries finish in a few rounds. The keys themselves are
rebuilt only where a whole table is read (ARPA export, pruning, sampling).
"""

from __future__ import annotations

import functools

import numpy as np

from lmlab.ngram.packed import (
    DecodedArray,
    PackedFloats,
    PackedInts,
    bit_width,
    float_bits,
    pack,
    packed_words,
    quantized_array,
    quantized_sections,
    value_tables,
)

DAMAGED = ("the trie's tables do not hold together (check it with lmlab ngram build-binary "
           "--verify)")


def trie_sections(model, quantize_bits: int | None) -> tuple[list[tuple[str, np.ndarray]], dict]:
    """The trie's sections of ``model`` (after the vocabulary) and its header fields: the n-gram
    counts and the bit width of every packed section."""
    V, N = len(model.vocab), model.order
    keys = [np.asarray(k, dtype=np.int64) for k in model.keys]
    counts = [len(k) for k in keys]
    arrays: list[tuple[str, np.ndarray]] = []
    bits: dict[str, int] = {}

    def packed(name: str, values: np.ndarray, width: int) -> None:
        arrays.append((name, pack(values, width)))
        bits[name] = width

    for n in range(1, N + 1):
        if n >= 2:
            packed(f"words{n}", keys[n - 1] % V, bit_width(V - 1))
        if n < N:
            starts = np.searchsorted(keys[n], np.arange(counts[n - 1] + 1, dtype=np.int64) * V)
            packed(f"next{n}", starts, bit_width(counts[n]))
        for name, values in value_tables(model, n):
            if quantize_bits and n > 1:  # unigrams stay float32, as in KenLM
                arrays += quantized_sections(name, n, values)
            else:
                packed(f"{name}{n}", *float_bits(values))
    return arrays, {"counts": counts, "bits": bits}


def assemble_trie(header: dict, present, get, corrupt) -> tuple[list, list, list, dict]:
    """Per order, the keys, log-probabilities and backoffs of a trie file and its lookups.
    ``present``: the names of its sections; ``get(name, length, dtypes)`` returns a checked
    section; ``corrupt(what)`` an error to raise."""
    N, V, q = header["order"], header["vocab_size"], header["quantize"]
    counts, bits = header.get("counts"), header.get("bits")
    if not (isinstance(counts, list) and len(counts) == N and counts[0] == V and
            all(isinstance(c, int) and c >= 0 for c in counts) and isinstance(bits, dict)):
        raise corrupt("header lacks the trie's n-gram counts")

    def packed(name: str, count: int) -> tuple[np.ndarray, int]:
        width = bits.get(name)
        widest = bit_width(V - 1) if name.startswith("words") else 32  # (no word id >= V fits)
        if not isinstance(width, int) or not 1 <= width <= widest:
            raise corrupt(f"bad bit width {width!r} for section {name}")
        return get(name, packed_words(count, width), ("<u8",)), width

    def values(name: str, n: int):
        if q and n > 1:
            return quantized_array(get, name, n, counts[n - 1])
        return PackedFloats(*packed(f"{name}{n}", counts[n - 1]), counts[n - 1])

    keys: list = [np.arange(V, dtype=np.int64)]  # (unigrams: the key is the word id)
    logp, bow, indexes = [], [], {}
    starts = None
    for n in range(1, N + 1):
        if n >= 2:
            words = PackedInts(*packed(f"words{n}", counts[n - 1]), counts[n - 1])
            indexes[n] = TrieIndex(words, starts, V, corrupt)
            keys.append(TrieKeys(indexes[n]))
        if n < N:
            starts = PackedInts(*packed(f"next{n}", counts[n - 1] + 1), counts[n - 1] + 1)
        logp.append(values("logp", n))
        bow.append(values("bow", n) if n < N or f"bow{n}" in present else
                   np.broadcast_to(np.float64(0.0), (counts[n - 1],)))
    return keys, logp, bow, indexes


class TrieIndex:
    """The order-n n-grams of a trie: ``find`` as :class:`~lmlab.ngram.keyindex.KeyIndex`'s,
    and the run of words after one context (``children``)."""

    def __init__(self, words: PackedInts, starts: PackedInts, V: int, corrupt) -> None:
        self.words, self.starts, self.V, self.corrupt = words, starts, V, corrupt

    def runs(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each context's run begins and ends, clipped to the table (a crafted file then
        gives wrong answers, never a read out of bounds or a long loop)."""
        count = len(self.words)
        end = np.minimum(self.starts.take(contexts + 1), count)
        return np.minimum(self.starts.take(contexts), end), end

    def find(self, query: np.ndarray) -> np.ndarray:
        """Position of each query key ``context * V + word``, -1 where absent."""
        query = np.asarray(query, dtype=np.int64)
        out = np.full(len(query), -1, dtype=np.int64)
        context, word = np.divmod(query, self.V)
        known = np.flatnonzero((context >= 0) & (context < len(self.starts) - 1))
        if not len(known) or not len(self.words):
            return out
        lo, end = self.runs(context[known])
        word = word[known]
        # Per query, the last position of its run holding a word <= its own: halve the part of
        # the run left (n) each round. A finished query (n == 1) probes its own position again
        # and stays put, so the active set is compacted only now and then, not every round.
        base, n = lo, end - lo
        rows = np.flatnonzero(n > 1)
        b, m, w = base[rows], n[rows], word[rows]
        while len(rows):
            half = m >> 1
            probe = b + half
            b = np.where(self.words.take(probe) <= w, probe, b)
            m -= half
            going = m > 1
            if going.sum() <= len(rows) // 2:
                base[rows] = b
                rows, b, m, w = rows[going], b[going], m[going], w[going]
        inside = np.flatnonzero(n > 0)
        hit = inside[self.words.take(base[inside]) == word[inside]]
        out[known[hit]] = base[hit]
        return out

    def children(self, context: int) -> tuple[np.ndarray, slice]:
        """The words stored after ``context`` and the slice of their rows."""
        lo, hi = (int(x[0]) for x in self.runs(np.array([context], dtype=np.int64)))
        words = self.words[lo:hi]
        if len(words) and words.max() >= self.V:
            raise self.corrupt(DAMAGED)
        return words, slice(lo, hi)


class TrieKeys(DecodedArray):
    """An order's sorted keys ``context * V + word``, rebuilt from the trie on first use."""

    dtype = np.dtype(np.int64)

    def __init__(self, index: TrieIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index.words)

    @functools.cached_property
    def _keys(self) -> np.ndarray:
        starts, words = np.asarray(self.index.starts), np.asarray(self.index.words)
        runs = np.diff(starts)
        if (runs < 0).any() or starts[0] != 0 or starts[-1] != len(self) or \
                (len(words) and words.max() >= self.index.V):
            raise self.index.corrupt(DAMAGED)
        context = np.repeat(np.arange(len(runs), dtype=np.int64), runs)
        return context * self.index.V + words

    def _decode(self, index) -> np.ndarray:
        return self._keys[index]
