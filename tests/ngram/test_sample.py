"""Fast backoff sampling (lmlab.ngram.sample): the sentences it draws follow the model's own
next-word distributions (a z-test per context and word, on the rejection path and on the exact
fallback), the same seed gives the same text, and models it cannot sample are refused."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

import lmlab
from lmlab.corpus import BOS_ID, EOS_ID
from lmlab.errors import LmlabError
from lmlab.ngram import sample as sample_module
from lmlab.ngram.sample import BackoffSampler, sample_sentences

SENTENCES = (["a b c", "a b d", "b c a", "c a b a", "a c", "d d a b", "b a c d"] * 3
             + ["a a a", "c b"])
# contexts stored (<s> a, a b, ...) and not (b b: the backoff path, with rejection of b b's
# stored continuations at order 2)
CONTEXTS = [("<s>",), ("<s>", "a"), ("a", "b"), ("b", "c"), ("d", "a"), ("a", "a"), ("b", "b")]


def train(order: int, smoothing: str = "mkn"):
    import warnings

    with warnings.catch_warnings():  # (fallback discounts on such tiny data)
        warnings.simplefilter("ignore", lmlab.LmlabWarning)
        return lmlab.train_ngram(SENTENCES, order=order, smoothing=smoothing)


@pytest.fixture(scope="module")
def model():
    return train(3)


def worst_z(model, n_sentences: int, seed: int, contexts=None) -> float:
    """The largest |z| of a sampled next-word frequency against the model's probability, over
    ``contexts`` (default: every context of order - 1 words seen more than 2000 times)."""
    counts: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    itos, m = model.vocab.itos, model.order - 1
    for s in itertools.islice(sample_sentences(model, seed=seed, streams=512), n_sentences):
        words = ["<s>", *(itos[i] for i in s), "</s>"]
        for i in range(1, len(words)):
            counts[tuple(words[max(0, i - m):i])][words[i]] += 1
    if contexts is None:
        contexts = [ctx for ctx, c in counts.items() if sum(c.values()) > 2000]
        assert len(contexts) >= 5
    worst = 0.0
    for ctx in contexts:
        c, n = counts[ctx], sum(counts[ctx].values())
        assert n > 2000, ctx
        p = np.exp(model.next_logprobs([w for w in ctx if w != "<s>"]))
        for w in itos:
            if w == "<s>":
                continue
            expected = p[model.vocab.id(w)]
            se = max((expected * (1 - expected) / n) ** 0.5, 1e-9)
            worst = max(worst, abs(c[w] / n - expected) / se)
    return worst


def test_samples_follow_the_model(model):
    assert worst_z(model, 120_000, seed=1, contexts=CONTEXTS) < 4.5  # |z| < 4.5 unless wrong


@pytest.mark.parametrize("order", [2, 4])
def test_samples_follow_models_of_other_orders(order):
    assert worst_z(train(order), 80_000, seed=3) < 5


def test_exact_fallback_follows_the_model(model, monkeypatch):
    monkeypatch.setattr(sample_module, "REJECTION_ROUNDS", 0)  # every backoff draw exact
    assert worst_z(model, 60_000, seed=2, contexts=CONTEXTS) < 4.5


def test_same_seed_same_text(model):
    def first(seed, streams=64):
        return [s.tolist() for s in itertools.islice(
            sample_sentences(model, seed=seed, streams=streams), 300)]

    assert first(5) == first(5)
    assert first(5) != first(6)


def test_a_unigram_model_samples(model):
    uni = train(1)
    sentences = list(itertools.islice(sample_sentences(uni, seed=0, streams=8), 50))
    drawn = {w for s in sentences for w in s.tolist()}
    assert BOS_ID not in drawn and EOS_ID not in drawn and len(drawn) > 3


def test_stupid_backoff_is_refused():
    stupid = train(2, "stupid")
    with pytest.raises(LmlabError, match="stupid backoff"):
        BackoffSampler(stupid)
