"""Arrays a binary model stores in fewer bits than they are read in: 8-bit codes into bins
(quantisation), and unsigned integers or float32 values bit-packed into uint64 words (the trie
layout). Each is read like a float64/int64 array: indexing and slicing decode only what they
touch; arithmetic, numpy functions, ``copy`` and ``tolist`` decode the whole array."""

from __future__ import annotations

import numpy as np

U64 = np.uint64
SIGN = np.uint32(0x80000000)


class DecodedArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A read-only 1-D array stored encoded: subclasses give ``__len__``, ``dtype`` and
    ``_decode(index)`` (``index``: anything numpy indexes a 1-D array with)."""

    dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        raise NotImplementedError

    def _decode(self, index) -> np.ndarray:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index):
        return self._decode(index)

    def __array__(self, dtype=None, copy=None):
        out = self._decode(slice(None))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, DecodedArray) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def copy(self) -> np.ndarray:
        return np.asarray(self)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def tolist(self) -> list:
        return np.asarray(self).tolist()


# -- quantisation ----------------------------------------------------------------------------------
class QuantizedArray(DecodedArray):
    """float64 values stored as uint8 codes into 256 bin values."""

    def __init__(self, codes: np.ndarray, bins: np.ndarray) -> None:
        self.codes, self.bins = codes, bins

    def __len__(self) -> int:
        return len(self.codes)

    def _decode(self, index) -> np.ndarray:
        return self.bins[self.codes[index]]


def quantize(values: np.ndarray, exact: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """8-bit codes and 256 bin values for ``values``: each value in ``exact`` (e.g. 0, -inf)
    present gets a code of its own, the others equal-count bins whose value is their mean."""
    values = np.asarray(values, dtype=np.float64)
    codes = np.zeros(len(values), dtype=np.uint8)
    bins = np.zeros(256, dtype=np.float64)
    rest = np.ones(len(values), dtype=bool)
    next_code = 0
    for x in exact:
        is_x = values == x
        if is_x.any():
            codes[is_x], bins[next_code] = next_code, x
            rest &= ~is_x
            next_code += 1
    free = 256 - next_code
    v = values[rest]
    if len(v):
        order = np.argsort(v, kind="stable")
        chunk = np.minimum(np.arange(len(v)) * free // len(v), free - 1)
        local = np.empty(len(v), dtype=np.int64)
        local[order] = chunk
        sums = np.bincount(local, weights=v, minlength=free)
        n = np.bincount(local, minlength=free)
        centers = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
        centers = np.fmax.accumulate(centers)  # an empty bin repeats the previous value
        centers[np.isnan(centers)] = centers[~np.isnan(centers)][0]
        bins[next_code:] = centers
        # each value to its nearest bin value (KenLM's encoding), not to its own bin
        nearest = np.searchsorted((centers[1:] + centers[:-1]) / 2, v)
        codes[rest] = (nearest + next_code).astype(np.uint8)
    return codes, bins


def value_tables(model, n: int) -> list[tuple[str, np.ndarray]]:
    """What a binary file stores of order ``n``'s values, as float64: ``logp``, and ``bow``
    except for the highest order when all its backoffs are zero (they always are but in ARPA
    files that write them)."""
    bow = np.asarray(model.bow[n - 1], dtype=np.float64)
    tables = [("logp", np.asarray(model.logp[n - 1], dtype=np.float64))]
    if n < model.order or bow.any():
        tables.append(("bow", bow))
    return tables


def quantized_sections(name: str, n: int, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The sections of ``values`` quantised to 8 bits: codes ``{name}{n}`` and 256 bin values
    ``{name}_bins{n}``; log10(0) (and for backoffs, 0) keep exact codes."""
    codes, bins = quantize(values, (0.0, -np.inf) if name == "bow" else (-np.inf,))
    return [(f"{name}{n}", codes), (f"{name}_bins{n}", bins)]


def quantized_array(get, name: str, n: int, length: int) -> QuantizedArray:
    """The :func:`quantized_sections` of a loaded file (``get(name, length, dtypes)`` returns a
    checked section)."""
    return QuantizedArray(get(f"{name}{n}", length, ("u1",)),
                          get(f"{name}_bins{n}", 256, ("<f8",)))


# -- bit packing -----------------------------------------------------------------------------------
def bit_width(largest: int) -> int:
    """Bits that hold every value in ``0 .. largest``."""
    return max(1, int(largest).bit_length())


def packed_words(count: int, bits: int) -> int:
    """uint64 words :func:`pack` writes for ``count`` values of ``bits`` bits: one spare at the
    end, so a reader may always load the word after a value's first."""
    return count * bits // 64 + 2


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``values`` (each < 2**bits, bits <= 32) bit-packed: value i in bits
    ``i * bits ..`` of the little-endian stream of uint64 words."""
    if not 1 <= bits <= 32:
        raise ValueError(f"pack takes 1..32 bits, got {bits}")
    values = np.asarray(values).astype(np.uint64)
    out = np.zeros(packed_words(len(values), bits), dtype=U64)
    if not len(values):
        return out
    pos = np.arange(len(values), dtype=U64) * U64(bits)
    word, shift = (pos >> U64(6)).astype(np.intp), pos & U64(63)
    # the values sharing a word do not overlap: OR-reduce each run of one word
    starts = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
    out[word[starts]] = np.bitwise_or.reduceat(values << shift, starts)
    spill = np.flatnonzero(shift + U64(bits) > U64(64))  # (at most one per word)
    out[word[spill] + 1] |= values[spill] >> (U64(64) - shift[spill])
    return out


def unpack(packed: np.ndarray, bits: int, index: np.ndarray) -> np.ndarray:
    """The values at positions ``index`` (non-negative, in range) of a :func:`pack` result."""
    if bits in (8, 16, 32):  # whole bytes: value i is element i of the little-endian words
        return packed.view(f"<u{bits // 8}")[index]
    pos = np.asarray(index, dtype=U64) * U64(bits)
    word, shift = (pos >> U64(6)).astype(np.intp), pos & U64(63)
    # numpy defines a shift by 64 as 0 (shift == 0: the next word adds nothing)
    value = (packed[word] >> shift) | (packed[word + 1] << (U64(64) - shift))
    return value & U64((1 << bits) - 1)


def _positions(index, count: int) -> np.ndarray:
    """The positions numpy's ``a[index]`` reads from a 1-D array of ``count`` values."""
    if isinstance(index, slice):
        return np.arange(*index.indices(count), dtype=np.int64)
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (count,):
            raise IndexError(f"boolean index of shape {index.shape} for {count} values")
        return np.flatnonzero(index)
    index = index.astype(np.int64, copy=False)
    if index.size and (index.min() < -count or index.max() >= count):
        raise IndexError(f"index out of range for {count} values")
    return np.where(index < 0, index + count, index)


class PackedInts(DecodedArray):
    """Unsigned integers of ``bits`` bits each, bit-packed (:func:`pack`); read as int64."""

    dtype = np.dtype(np.int64)

    def __init__(self, packed: np.ndarray, bits: int, count: int) -> None:
        self.packed, self.bits, self.count = packed, bits, count

    def __len__(self) -> int:
        return self.count

    def _decode(self, index) -> np.ndarray:
        return self.take(_positions(index, self.count))

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The values at ``positions``, known to be in range (no checks: the fast path)."""
        return unpack(self.packed, self.bits, positions).astype(np.int64)


def float_bits(values: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 bit patterns of ``values`` to pack and their width: 31 bits when no value is
    positive (log-probabilities: the sign bit is implied, as in KenLM's trie), else 32."""
    raw = np.asarray(values, dtype=np.float64).astype(np.float32).view(np.uint32)
    if np.all((raw & SIGN) | (raw == 0)):
        return raw & ~SIGN, 31
    return raw, 32


class PackedFloats(DecodedArray):
    """float32 values bit-packed by :func:`float_bits`; read as float64."""

    def __init__(self, packed: np.ndarray, bits: int, count: int) -> None:
        self.ints = PackedInts(packed, bits, count)

    def __len__(self) -> int:
        return len(self.ints)

    def _decode(self, index) -> np.ndarray:
        raw = self.ints._decode(index).astype(np.uint32)
        if self.ints.bits == 31:
            raw |= SIGN
        # + 0.0: the sign bit made a stored 0 into -0.0
        return raw.view(np.float32).astype(np.float64) + 0.0
