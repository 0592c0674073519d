"""Seeded synthetic corpora whose true per-token entropy is known exactly.

They are lmlab's built-in data: a model's cross-entropy on them can be compared with the entropy of
the source itself, the floor no model can beat. Entropies follow lmlab's evaluation convention
(:mod:`lmlab.metrics`): each sentence starts fresh from ``<s>``, its words *and* one ``</s>`` are
predicted, and the per-token entropy is E[-ln p(sentence)] / E[words + 1] (renewal-reward: the
ratio of expectations, which is what the average over a long corpus converges to). Nats; bits = nats
/ ln 2.

Sentences may be empty (an immediate ``</s>``); they are written as empty lines, which
:mod:`lmlab.corpus` reads back as sentences predicting only ``</s>``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from lmlab.corpus import BOS, EOS
from lmlab.errors import LmlabError
from lmlab.fileio import atomic_output

MAX_STATES = 20_000  # contexts of a MarkovSource
MAX_TABLE = 4_000_000  # contexts x (vocabulary + 1) probabilities held in memory
_DENSE_MAX = 4_000  # above this many states the visit equations are solved iteratively
_SAMPLE_SALT = 0x5EED  # keeps sample streams apart from the stream that built the source


class SynthError(LmlabError, ValueError):
    """A bad synthetic-source argument: a ValueError for Python callers, one line for the CLI."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SynthError(message)


def _int_arg(name: str, value: object, minimum: int) -> int:
    _check(isinstance(value, numbers.Integral) and not isinstance(value, bool)
           and value >= minimum, f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _sample_rng(source_seed: int, seed: int | None) -> np.random.Generator:
    seed = 0 if seed is None else _int_arg("sample seed", seed, 0)
    return np.random.default_rng([_SAMPLE_SALT, source_seed, seed])


@dataclass(frozen=True)
class SyntheticCorpus:
    """Sentences drawn from a source, with that source's exact per-token entropy."""

    name: str
    sentences: list[list[str]]  # tokens, no <s>/</s>
    entropy_nats: float  # exact true per-token entropy of the source (nats)

    @property
    def entropy_bits(self) -> float:
        return self.entropy_nats / math.log(2)

    @property
    def perplexity(self) -> float:
        """exp(entropy): the perplexity an ideal model reaches on a long sample."""
        return math.exp(self.entropy_nats)

    @property
    def n_tokens(self) -> int:
        """Predicted tokens: words plus one end token per sentence."""
        return sum(map(len, self.sentences)) + len(self.sentences)

    def write(self, path: str | os.PathLike) -> None:
        """One sentence per line, space separated, UTF-8; atomic (``.gz`` compresses)."""
        with atomic_output(path, "w") as f:
            f.write("".join(" ".join(s) + "\n" for s in self.sentences))


def _row_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a probability table, with 0 ln 0 = 0."""
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=1)


class MarkovSource:
    """Random order-k Markov source over ``vocab_size`` words plus an end-of-sentence symbol.

    ``order`` is the n-gram order: the next symbol depends on the previous ``order - 1`` symbols of
    the sentence, left-padded with ``<s>`` as an n-gram model pads (order 1: a unigram source, order
    2: a bigram source). So an n-gram model of order >= ``order`` can reach the true entropy.
    In every context ``</s>`` has probability 1/(mean_length + 1), which makes sentence lengths
    geometric with mean ``mean_length`` words; the rest is split over the words ``w0``, ``w1``...
    by a Dirichlet(``concentration``) draw per context (small concentration: peaked, predictable
    rows). The same ``seed`` gives the same source; :meth:`from_probs` takes explicit tables.
    """

    def __init__(self, order: int = 2, vocab_size: int = 20, seed: int = 0,
                 concentration: float = 0.5, mean_length: float = 12.0) -> None:
        order, vocab_size = _int_arg("order", order, 1), _int_arg("vocab_size", vocab_size, 2)
        seed = _int_arg("seed", seed, 0)
        _check(concentration > 0 and math.isfinite(concentration),
               f"concentration must be positive, got {concentration}")
        _check(mean_length > 0 and math.isfinite(mean_length),
               f"mean_length must be positive, got {mean_length}")
        contexts = _enumerate_contexts(vocab_size, order - 1)
        rng = np.random.default_rng(seed)
        words = rng.dirichlet(np.full(vocab_size, float(concentration)), size=len(contexts))
        # Tiny concentrations can underflow a whole row; renormalise (or fall back to uniform).
        words = np.nan_to_num(words)
        sums = words.sum(axis=1, keepdims=True)
        words = np.where(sums > 0, words / np.where(sums > 0, sums, 1), 1.0 / vocab_size)
        p_end = 1.0 / (mean_length + 1.0)
        probs = np.hstack([words * (1.0 - p_end), np.full((len(contexts), 1), p_end)])
        self.seed, self.concentration, self.mean_length = seed, float(concentration), mean_length
        self.name = f"markov-o{order}-v{vocab_size}-s{seed}"
        self._setup([f"w{i}" for i in range(vocab_size)], contexts, probs)

    @classmethod
    def from_probs(cls, probs: Mapping[tuple[str, ...], Mapping[str, float]],
                   name: str = "markov-custom") -> MarkovSource:
        """A source with explicit probabilities: ``{context: {next: p}}``.

        Every context is a tuple of the previous ``order - 1`` symbols, ``<s>``-padded on the left
        (``()`` for a unigram source), and every possible context must be given. Next symbols are
        words or ``</s>``; missing ones have probability 0; each row must sum to 1. A bigram::

            MarkovSource.from_probs({("<s>",): {"a": 1.0}, ("a",): {"a": 0.5, "</s>": 0.5}})
        """
        _check(len(probs) > 0, "probability table is empty")
        lengths = {len(c) for c in probs}
        _check(len(lengths) == 1, "all contexts must have the same length (order - 1)")
        m = lengths.pop()
        words: dict[str, None] = {}  # insertion-ordered set: first appearance fixes the word ids
        for ctx, dist in probs.items():
            for w in (*ctx, *dist):
                if w not in (BOS, EOS):
                    words.setdefault(w)
        _check(len(words) >= 1, "probability table has no words")
        vocab = list(words)
        contexts = _enumerate_contexts(len(vocab), m)
        names = [BOS, *vocab]
        table = np.zeros((len(contexts), len(vocab) + 1))
        col = {w: i for i, w in enumerate([*vocab, EOS])}
        for i, row in enumerate(contexts.tolist()):
            key = tuple(names[c] for c in row)
            _check(key in probs, f"no probabilities given for context {key}")
            for w, p in probs[key].items():
                _check(w != BOS, f"context {key}: {BOS} cannot be predicted")
                table[i, col[w]] = p
        _check(len(probs) == len(contexts),
               f"{len(probs) - len(contexts)} context(s) are impossible (<s> after a word?)")
        _check(bool(np.all(table >= 0)), "probabilities must be non-negative")
        bad = np.flatnonzero(np.abs(table.sum(axis=1) - 1) > 1e-9)
        _check(bad.size == 0, "probabilities of each context must sum to 1"
               + (f" ({tuple(names[c] for c in contexts[bad[0]])} does not)" if bad.size else ""))
        self = cls.__new__(cls)
        self.seed, self.concentration, self.name = 0, math.nan, name
        self._setup(vocab, contexts, table / table.sum(axis=1, keepdims=True))
        self.mean_length = self.expected_length()
        return self

    def _setup(self, words: list[str], contexts: np.ndarray, probs: np.ndarray) -> None:
        """Index the states. ``contexts`` codes symbols as 0 = ``<s>``, 1 + i = word i; next-symbol
        columns of ``probs`` are word i at i and ``</s>`` last; state 0 is the sentence start."""
        n, m = contexts.shape
        V = len(words)
        self.order, self.vocab_size, self.words = m + 1, V, words
        self._contexts, self._probs = contexts, probs
        self._ctx_id = {BOS: 0} | {w: i + 1 for i, w in enumerate(words)}
        self._col = {w: i for i, w in enumerate(words)} | {EOS: V}
        self._state = {tuple(row): i for i, row in enumerate(contexts.tolist())}
        # next[s, w]: the state after emitting word w in state s (shift the context left, append w),
        # found by base-(V+1) codes so the whole table is built without a Python loop over it.
        if m == 0:
            self._next = np.zeros((n, V), dtype=np.int64)
        else:
            base = V + 1
            codes = contexts @ (base ** np.arange(m - 1, -1, -1, dtype=np.int64))
            nxt = (codes % base ** (m - 1))[:, None] * base + np.arange(1, V + 1)
            order = np.argsort(codes)
            self._next = order[np.searchsorted(codes[order], nxt)]
        self._visits_cache: np.ndarray | None = None

    # -- exact quantities ---------------------------------------------------------------------

    def expected_visits(self, method: str = "auto") -> np.ndarray:
        """Expected number of visits to each state in one sentence (each visit predicts one token).

        Solves the absorbing-chain equations v = e_start + Q^T v (Q: word transitions between
        states, ``</s>`` absorbs): densely for small chains, else by summing the series
        e_start Q^t until the remaining mass is below 1e-15 of the total (same equations, to
        machine precision, without an n x n matrix). ``method``: "auto", "dense" or "iterative".
        """
        if method == "auto" and self._visits_cache is not None:
            return self._visits_cache
        _check(method in ("auto", "dense", "iterative"), f"unknown method {method!r}")
        n, V = len(self._probs), self.vocab_size
        P, end = self._probs[:, :V], self._probs[:, V]
        reach = self._reachable_terminating()
        v = np.zeros(n)
        if method == "dense" or (method == "auto" and reach.sum() <= _DENSE_MAX):
            # Solve on reachable states only: unreachable ones may form loops that never end.
            sub = np.flatnonzero(reach)
            pos = np.full(n, -1)
            pos[sub] = np.arange(sub.size)
            A = np.eye(sub.size)
            rows = np.repeat(np.arange(sub.size), V)
            np.add.at(A, (rows, pos[self._next[sub]].ravel()), -P[sub].ravel())
            start = np.zeros(sub.size)
            start[0] = 1.0  # state 0 (the start) is always reachable and first
            v[sub] = np.linalg.solve(A.T, start)
        else:
            min_end = end[reach].min()
            _check(min_end > 0, "chain too large for an exact solve with states that cannot end")
            x = np.zeros(n)
            x[0] = 1.0
            flat_next = self._next.ravel()
            # Remaining visits after this point are at most x.sum() / min_end.
            while x.sum() > 1e-15 * min_end * v.sum():
                v += x
                x = np.bincount(flat_next, weights=(x[:, None] * P).ravel(), minlength=n)
        v.setflags(write=False)  # cached and shared: callers must not edit it in place
        if method == "auto":
            self._visits_cache = v
        return v

    def _reachable_terminating(self) -> np.ndarray:
        """States reachable from the start; raises if some of them can never reach ``</s>``."""
        n, V = self._probs.shape[0], self.vocab_size
        live = self._probs[:, :V] > 0
        reach = _closure(np.arange(n) == 0, lambda r: np.bincount(
            self._next[live & r[:, None]], minlength=n) > 0)
        can_end = _closure(self._probs[:, V] > 0, lambda c: (live & c[self._next]).any(axis=1))
        stuck = np.flatnonzero(reach & ~can_end)
        _check(stuck.size == 0, f"sentences reaching context {self._context_names(stuck[0])} "
               "never end" if stuck.size else "")
        return reach

    def _context_names(self, state: int) -> tuple[str, ...]:
        names = [BOS, *self.words]
        return tuple(names[c] for c in self._contexts[state])

    def entropy_nats(self) -> float:
        """Exact true per-token entropy: sum_s v_s H(next | s) / sum_s v_s (renewal-reward)."""
        v = self.expected_visits()
        return float(v @ _row_entropy(self._probs) / v.sum())

    def entropy_bits(self) -> float:
        return self.entropy_nats() / math.log(2)

    def expected_length(self) -> float:
        """Expected words per sentence (predicted tokens minus the end token)."""
        return float(self.expected_visits().sum() - 1.0)

    def ngram_entropy_nats(self, order: int) -> float:
        """Best per-token cross-entropy an n-gram model of ``order`` can reach (infinite data).

        The best n-gram prediction in a shortened context c is the source's next-symbol
        distribution pooled over all states ending in c, weighted by their expected visits.
        Equals :meth:`entropy_nats` for ``order >= self.order``.
        """
        order = _int_arg("order", order, 1)
        m, k = self.order - 1, order - 1
        if k >= m:
            return self.entropy_nats()
        v, P = self.expected_visits(), self._probs
        suffix = self._contexts[:, m - k:] @ ((self.vocab_size + 1) ** np.arange(k - 1, -1, -1))
        _, group = np.unique(suffix, return_inverse=True)
        group = group.ravel()
        pooled = np.zeros((group.max() + 1, P.shape[1]))
        np.add.at(pooled, group, v[:, None] * P)
        pooled /= np.maximum(pooled.sum(axis=1, keepdims=True), 1e-300)
        q = pooled[group]
        cross = -(v[:, None] * P * np.log(np.where(P > 0, q, 1.0))).sum()
        return float(cross / v.sum())

    def logprob(self, context: Sequence[str], word: str) -> float:
        """True ln p(word | context); ``word`` may be ``</s>``.

        ``context`` is the sentence so far (its words, without ``<s>``; a leading ``<s>`` is
        tolerated). Only its last ``order - 1`` symbols matter; a shorter one is left-padded with
        ``<s>``, so ``logprob([], w)`` is the probability of w starting a sentence.
        """
        m = self.order - 1
        tail = list(context)[len(context) - m:] if m else []
        try:
            key = (0,) * (m - len(tail)) + tuple(self._ctx_id[w] for w in tail)
            p = self._probs[self._state[key], self._col[word]]
        except KeyError as err:
            raise SynthError(f"unknown word or impossible context: {err.args[0]!r}") from None
        return math.log(p) if p > 0 else -math.inf

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """ln p of a whole sentence: its words and the end token."""
        return sum(self.logprob(words[:i], w) for i, w in enumerate([*words, EOS]))

    # -- sampling -----------------------------------------------------------------------------

    def sample(self, n_sentences: int, seed: int | None = None) -> SyntheticCorpus:
        """``n_sentences`` independent sentences; the same (source, seed) gives the same corpus.
        Use different seeds for training and test data."""
        n_sentences = _int_arg("n_sentences", n_sentences, 0)
        rng = _sample_rng(self.seed, seed)
        n, V = self._probs.shape[0], self.vocab_size
        # Inverse-CDF sampling for all live sentences at once: row s of the cumulative table is
        # shifted by s so the flattened table is sorted and one searchsorted serves every state.
        # (The shift costs ~1e-12 of resolution; zero-probability symbols are never drawn.)
        cum = np.cumsum(self._probs, axis=1)
        cum[:, -1] = 1.0
        flat = (cum + np.arange(n)[:, None]).ravel()
        last = V - np.argmax(self._probs[:, ::-1] > 0, axis=1)  # last possible symbol per state
        out: list[list[str]] = [[] for _ in range(n_sentences)]
        alive = np.arange(n_sentences)
        state = np.zeros(n_sentences, dtype=np.int64)
        while alive.size:
            sym = np.searchsorted(flat, state + rng.random(alive.size), side="right")
            sym = np.minimum(sym - state * (V + 1), last[state])
            go = sym < V
            for i, w in zip(alive[go].tolist(), sym[go].tolist(), strict=True):
                out[i].append(self.words[w])
            alive, state = alive[go], self._next[state[go], sym[go]]
        tag = "" if seed is None else f"-seed{seed}"
        return SyntheticCorpus(f"{self.name}{tag}", out, self.entropy_nats())


def _closure(mask: np.ndarray, step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Grow a boolean state set by ``mask |= step(mask)`` until it stops changing."""
    while not np.array_equal(grown := mask | step(mask), mask):
        mask = grown
    return mask


def _enumerate_contexts(vocab_size: int, m: int) -> np.ndarray:
    """All contexts of ``m`` symbols reachable in a sentence, start first: ``<s>``-padded prefixes
    (0 = ``<s>``, 1 + i = word i), then full contexts. Refuses state spaces over MAX_STATES."""
    n = sum(vocab_size**t for t in range(m + 1))
    _check(n <= MAX_STATES, f"order {m + 1} with {vocab_size} words gives {n} contexts; at most "
           f"{MAX_STATES} are supported (lower the order or the vocabulary)")
    _check(n * (vocab_size + 1) <= MAX_TABLE, f"{n} contexts x {vocab_size + 1} symbols exceeds "
           f"{MAX_TABLE} probabilities (lower the order or the vocabulary)")
    blocks = []
    for t in range(m + 1):
        tails = np.array(list(product(range(1, vocab_size + 1), repeat=t)), dtype=np.int64)
        blocks.append(np.hstack([np.zeros((len(tails), m - t), dtype=np.int64),
                                 tails.reshape(len(tails), t)]))
    return np.vstack(blocks)


def _pool(count: float, total: float) -> float:
    """count * ln(total / count): the cost of ``count`` outcomes predicted with probability
    count / total; 0 when the outcome never occurs."""
    return count * math.log(total / count) if count > 0 else 0.0


class LongRangeSource:
    """A token at position i determines the token d positions later.

    Each sentence is a key ``k_j`` (j uniform over ``n_keys``), then d - 1 fillers i.i.d. uniform
    over ``f0``.. ``f{n_fillers-1}``, then the value ``v_j`` exactly d positions after the key, then
    a tail of L i.i.d. uniform fillers, then ``</s>``, where P(L = l) = (1 - q)^l q with
    q = 1 / (tail_mean + 1) (tail_mean 0: no tail). With H_b the binary entropy, the exact
    per-token entropy is

        [ln K + (d - 1) ln F + (H_b(q) + (1 - q) ln F) / q]  /  (d + 1 + 1/q)

    (the tail is 1/q predictions of "another filler or the end"; the value costs nothing given the
    key). An n-gram of order <= d cannot see the key when predicting the value, so it pays more:
    :meth:`ngram_entropy_nats`.
    """

    def __init__(self, distance: int = 10, n_keys: int = 10, n_fillers: int = 20, seed: int = 0,
                 tail_mean: float = 2.0) -> None:
        distance, n_keys = _int_arg("distance", distance, 1), _int_arg("n_keys", n_keys, 2)
        n_fillers, seed = _int_arg("n_fillers", n_fillers, 1), _int_arg("seed", seed, 0)
        _check(tail_mean >= 0 and math.isfinite(tail_mean),
               f"tail_mean must be >= 0, got {tail_mean}")
        self.distance, self.n_keys, self.n_fillers = distance, n_keys, n_fillers
        self.seed, self.tail_mean = seed, float(tail_mean)
        self._q = 1.0 / (self.tail_mean + 1.0)  # P(</s>) at each tail step
        self.name = f"longrange-d{distance}-k{n_keys}-f{n_fillers}-s{seed}"

    def _tokens_per_sentence(self) -> float:
        return self.distance + 1 + 1 / self._q

    def _tail_step_entropy(self) -> float:
        q = self._q
        return _pool(q, 1.0) + _pool(1 - q, 1.0) + (1 - q) * math.log(self.n_fillers)

    def entropy_nats(self) -> float:
        """Exact per-token entropy (closed form in the class docstring)."""
        d, q = self.distance, self._q
        total = (math.log(self.n_keys) + (d - 1) * math.log(self.n_fillers)
                 + self._tail_step_entropy() / q)
        return total / self._tokens_per_sentence()

    def entropy_bits(self) -> float:
        return self.entropy_nats() / math.log(2)

    def ngram_entropy_nats(self, order: int) -> float:
        """Best per-token cross-entropy of an n-gram model of ``order`` (infinite data), exact.

        With m = order - 1 >= 1 context symbols, a context holding ``<s>``, the key or the value
        tells the position, and the prediction is as good as the source's. Only all-filler
        contexts are ambiguous: per sentence, A = max(d - m, 0) such positions come before the value
        (the last one predicts the value, the others a filler) and W = (1-q)^m / q in the tail
        (each predicts the end with probability q). The best model pools them, so its
        probabilities are the expected outcome counts over T = A + W. Order 1 pools every token.
        Equals :meth:`entropy_nats` when ``order > distance``.
        """
        order = _int_arg("order", order, 1)
        d, q, m = self.distance, self._q, order - 1
        K, F, N = self.n_keys, self.n_fillers, self._tokens_per_sentence()
        lnK, lnF = math.log(K), math.log(F)
        if m == 0:  # unigram: each token costs ln(N / its expected count per sentence)
            fillers = d - 1 + (1 - q) / q
            return (2 * (lnK + math.log(N)) + fillers * lnF + _pool(fillers, N) + math.log(N)) / N
        cost = lnK + min(m, d - 1) * lnF  # the key, then fillers whose position is known
        cost += self._tail_step_entropy() * sum((1 - q) ** j for j in range(m))  # value in view
        A, W = max(d - m, 0), (1 - q) ** m / q
        c_value, c_filler, c_end = (1.0 if A else 0.0), max(A - 1, 0) + (1 - q) * W, q * W
        T = A + W
        cost += c_value * lnK + _pool(c_value, T) + c_filler * lnF + _pool(c_filler, T)
        cost += _pool(c_end, T)
        return cost / N

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """True ln p of a sentence (its words and the end token); -inf if impossible."""
        d, q = self.distance, self._q
        keys = {f"k{j}": f"v{j}" for j in range(self.n_keys)}
        fillers = {f"f{i}" for i in range(self.n_fillers)}
        tail = len(words) - d - 1
        ok = (tail >= 0 and words[0] in keys and words[d] == keys[words[0]]
              and all(w in fillers for w in [*words[1:d], *words[d + 1:]]) and (tail == 0 or q < 1))
        if not ok:
            return -math.inf
        lnF = math.log(self.n_fillers)
        tail_cost = tail * (lnF - math.log1p(-q)) if tail else 0.0
        return -(math.log(self.n_keys) + (d - 1) * lnF + tail_cost - math.log(q))

    def sample(self, n_sentences: int, seed: int | None = None) -> SyntheticCorpus:
        """``n_sentences`` independent sentences; the same (source, seed) gives the same corpus.
        Use different seeds for training and test data."""
        n_sentences = _int_arg("n_sentences", n_sentences, 0)
        rng = _sample_rng(self.seed, seed)
        d, F = self.distance, self.n_fillers
        keys = rng.integers(self.n_keys, size=n_sentences)
        middle = rng.integers(F, size=(n_sentences, d - 1))
        tails = rng.geometric(self._q, size=n_sentences) - 1  # fillers before </s>
        tail_fill = rng.integers(F, size=int(tails.sum()))
        out, at = [], 0
        for j, mid, t in zip(keys.tolist(), middle.tolist(), tails.tolist(), strict=True):
            out.append([f"k{j}", *(f"f{i}" for i in mid), f"v{j}",
                        *(f"f{i}" for i in tail_fill[at:at + t].tolist())])
            at += t
        tag = "" if seed is None else f"-seed{seed}"
        return SyntheticCorpus(f"{self.name}{tag}", out, self.entropy_nats())


def sample_splits(source: MarkovSource | LongRangeSource, sizes: Mapping[str, int],
                  seed: int = 0) -> dict[str, SyntheticCorpus]:
    """Independent samples for each split, e.g. ``{"train": 5000, "valid": 500, "test": 500}``;
    each split gets its own seed (derived from ``seed`` and its position) so none overlaps."""
    seed = _int_arg("seed", seed, 0)
    return {name: source.sample(n, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
            for i, (name, n) in enumerate(sizes.items())}


def write_splits(source: MarkovSource | LongRangeSource, folder: str | os.PathLike,
                 sizes: Mapping[str, int], seed: int = 0) -> dict[str, SyntheticCorpus]:
    """:func:`sample_splits`, each split written to ``folder/NAME.txt`` (the layout every lmlab
    training command reads); returns the splits."""
    os.makedirs(folder, exist_ok=True)
    splits = sample_splits(source, sizes, seed=seed)
    for name, corpus in splits.items():
        corpus.write(os.path.join(folder, f"{name}.txt"))
    return splits
