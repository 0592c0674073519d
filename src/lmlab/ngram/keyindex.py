"""A vectorised open-addressing hash index from int64 n-gram keys to table positions.

``np.searchsorted`` costs ~20 dependent memory reads per query on a large table; a hash table
with linear probing at load factor <= 1/2 needs ~1.5. Both insertion and lookup process all keys
at once and loop only over probe rounds (each round handles the keys still unresolved).
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier


def place(slot: np.ndarray, table: np.ndarray) -> int:
    """Insert positions ``0..len(slot)-1`` into ``table`` (filled with -1: empty) by linear
    probing from each one's first slot ``slot`` (wrapping at the end); returns the longest probe
    sequence any needed. ``slot`` is used up."""
    pending = np.arange(len(slot))
    probes = 1
    while len(pending):
        s = slot[pending]
        free = table[s] < 0
        cand, s = pending[free], s[free]
        table[s] = cand  # among keys racing for one slot, the last write wins
        won = table[s] == cand
        placed = np.zeros(len(slot), dtype=bool)
        placed[cand[won]] = True
        pending = pending[~placed[pending]]
        if len(pending):
            probes += 1
            nxt = slot[pending] + 1
            nxt[nxt == len(table)] = 0
            slot[pending] = nxt
    return probes


class KeyIndex:
    def __init__(self, keys: np.ndarray) -> None:
        bits = max(3, int(np.ceil(np.log2(max(2 * len(keys), 1)))))
        self.shift = np.uint64(64 - bits)
        self.mask = (1 << bits) - 1
        self.slot_pos = np.full(1 << bits, -1, dtype=np.int64)
        place(self._hash(keys), self.slot_pos)
        filled = self.slot_pos >= 0
        self.slot_key = np.full(1 << bits, -1, dtype=np.int64)
        self.slot_key[filled] = keys[self.slot_pos[filled]]

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            h = (keys.astype(np.uint64) * GOLDEN) >> self.shift
        return h.astype(np.int64)

    def find(self, query: np.ndarray) -> np.ndarray:
        """Position of each query key in the original array, -1 where absent."""
        out = np.full(len(query), -1, dtype=np.int64)
        todo = np.arange(len(query))
        slot = self._hash(query)
        while len(todo):
            s = slot[todo]
            k = self.slot_key[s]
            hit = k == query[todo]
            out[todo[hit]] = self.slot_pos[s[hit]]
            go_on = ~hit & (k >= 0)  # an empty slot ends the probe: absent
            todo = todo[go_on]
            slot[todo] = (s[go_on] + 1) & self.mask
        return out
