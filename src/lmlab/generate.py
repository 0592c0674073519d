"""Sampling text from any lmlab model through its next-word distribution."""

from __future__ import annotations

import numpy as np

from lmlab.corpus import BOS_ID, EOS_ID, UNK_ID
from lmlab.errors import LmlabError


def next_word_distribution(model, context: list[str], temperature: float = 1.0,
                           top_k: int | None = None, allow_unk: bool = True) -> np.ndarray:
    """Probabilities over the vocabulary for the word after ``context`` (a sentence prefix),
    sharpened or flattened by ``temperature`` and restricted to the ``top_k`` most likely words."""
    if not 0 < temperature < np.inf:
        raise LmlabError(f"temperature must be a finite number > 0, got {temperature} "
                         "(for greedy decoding use --top-k 1)")
    if top_k is not None and top_k < 1:
        raise LmlabError(f"top-k must be >= 1, got {top_k}")
    logp = np.asarray(model.next_logprobs(list(context)), dtype=np.float64) / temperature
    logp[BOS_ID] = -np.inf
    if not allow_unk:
        logp[UNK_ID] = -np.inf
    if top_k is not None and top_k < len(logp):
        cut = np.partition(logp, -top_k)[-top_k]
        logp[logp < cut] = -np.inf
    logp -= logp.max()
    p = np.exp(logp)
    return p / p.sum()


def generate(model, n_words: int, seed: int = 0, temperature: float = 1.0,
             top_k: int | None = None, prefix: list[str] | None = None,
             max_sentence: int = 200) -> list[list[str]]:
    """Sample sentences until ``n_words`` words were produced; returns the sentences' words.

    Sentences end at ``</s>`` (or after ``max_sentence`` words). Seeded: the same seed, model and
    options give the same text.
    """
    if n_words < 1:
        raise LmlabError(f"number of words must be >= 1, got {n_words}")
    rng = np.random.default_rng(seed)
    itos = model.vocab.itos
    sentences: list[list[str]] = []
    produced = 0
    current = list(prefix or [])
    while produced < n_words:
        p = next_word_distribution(model, current, temperature, top_k)
        w = int(rng.choice(len(p), p=p))
        if w == EOS_ID or len(current) >= max_sentence:
            sentences.append(current)
            current = []
            continue
        current.append(itos[w])
        produced += 1
    if current:
        sentences.append(current)
    return sentences
