"""Synthetic sources: exact entropies against hand-computed values and against samples."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from lmlab.corpus import BOS, EOS, iter_sentences
from lmlab.synth import LongRangeSource, MarkovSource, SynthError, sample_splits

LN2 = math.log(2)


def empirical_entropy(source, corpus) -> float:
    """Average -ln p (true model) per predicted token over a sample."""
    return -sum(source.sentence_logprob(s) for s in corpus.sentences) / corpus.n_tokens


def empirical_ngram_entropy(sentences, order: int) -> float:
    """Cross-entropy of the maximum-likelihood n-gram on its own training data (lmlab padding)."""
    joint: Counter = Counter()
    for words in sentences:
        padded = [BOS] * (order - 1) + words + [EOS]
        for i in range(order - 1, len(padded)):
            joint[tuple(padded[i - order + 1:i + 1])] += 1
    context: Counter = Counter()
    for gram, c in joint.items():
        context[gram[:-1]] += c
    total = sum(joint.values())
    return -sum(c * math.log(c / context[g[:-1]]) for g, c in joint.items()) / total


# -- MarkovSource ----------------------------------------------------------------------------------

def test_markov_same_seed_same_source_and_corpus():
    a, b = MarkovSource(seed=3), MarkovSource(seed=3)
    assert a.entropy_nats() == b.entropy_nats()
    assert a.sample(50, seed=1).sentences == b.sample(50, seed=1).sentences
    assert a.sample(50).sentences == b.sample(50).sentences
    assert a.sample(50, seed=1).sentences != a.sample(50, seed=2).sentences
    assert MarkovSource(seed=4).entropy_nats() != a.entropy_nats()


@pytest.mark.parametrize("order", [1, 2, 3])
def test_markov_entropy_matches_monte_carlo(order):
    source = MarkovSource(order=order, vocab_size=8, seed=order, mean_length=6.0)
    corpus = source.sample(4000, seed=7)
    assert corpus.entropy_nats == source.entropy_nats()
    assert empirical_entropy(source, corpus) == pytest.approx(source.entropy_nats(), rel=0.03)
    # Sentence lengths are geometric with the requested mean.
    assert source.expected_length() == pytest.approx(6.0)
    mean_words = corpus.n_tokens / len(corpus.sentences) - 1
    assert mean_words == pytest.approx(6.0, rel=0.05)


def test_unigram_hand_computed():
    # One state: every token is drawn from (a: 1/2, b: 1/4, </s>: 1/4), so H = 1.5 ln 2 per token.
    source = MarkovSource.from_probs({(): {"a": 0.5, "b": 0.25, EOS: 0.25}})
    assert source.order == 1 and source.words == ["a", "b"]
    assert source.entropy_nats() == pytest.approx(1.5 * LN2, abs=1e-12)
    assert source.expected_length() == pytest.approx(3.0)
    assert source.logprob(["a", "a"], "b") == pytest.approx(math.log(0.25))


def test_bigram_hand_computed():
    # <s> -> a | b (1/2 each); a -> </s>; b -> b | </s> (1/2 each). Expected visits: <s> 1, a 1/2,
    # b 1 (entered with 1/2, stays 2 steps on average). Entropy 2 ln 2 over 2.5 tokens.
    source = MarkovSource.from_probs({
        (BOS,): {"a": 0.5, "b": 0.5},
        ("a",): {EOS: 1.0},
        ("b",): {"b": 0.5, EOS: 0.5},
    })
    assert source.expected_visits() == pytest.approx([1.0, 0.5, 1.0])
    assert source.entropy_nats() == pytest.approx(0.8 * LN2, abs=1e-12)
    assert source.logprob([], "a") == pytest.approx(-LN2)
    assert source.logprob(["b", "b"], EOS) == pytest.approx(-LN2)
    assert source.logprob(["a"], "b") == -math.inf
    assert source.sentence_logprob(["b", "b"]) == pytest.approx(3 * -LN2)
    assert all(s in (["a"],) or set(s) == {"b"} for s in source.sample(200).sentences)


def test_unreachable_loop_is_ignored_but_reachable_one_is_an_error():
    ok = MarkovSource.from_probs({
        (BOS,): {"a": 0.5, EOS: 0.5}, ("a",): {EOS: 1.0}, ("b",): {"b": 1.0},  # b unreachable
    })
    assert ok.entropy_nats() == pytest.approx(LN2 / 1.5)
    with pytest.raises(ValueError, match="never end"):
        MarkovSource.from_probs({(BOS,): {"a": 1.0}, ("a",): {"a": 1.0}})


def test_dense_and_iterative_solves_agree():
    source = MarkovSource(order=3, vocab_size=6, seed=1, mean_length=5.0)
    dense = source.expected_visits("dense")
    assert np.allclose(source.expected_visits("iterative"), dense, rtol=1e-12, atol=1e-14)
    assert dense.sum() == pytest.approx(6.0)  # 5 words + </s>


def test_markov_ngram_entropy():
    source = MarkovSource(order=3, vocab_size=3, seed=5, concentration=0.3, mean_length=5.0)
    corpus = source.sample(8000, seed=1)
    values = [source.ngram_entropy_nats(o) for o in (1, 2, 3, 4)]
    assert values[0] >= values[1] >= values[2] == values[3] == source.entropy_nats()
    for order, exact in zip((1, 2, 3), values, strict=False):
        assert empirical_ngram_entropy(corpus.sentences, order) == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("kwargs, message", [
    ({"order": 0}, "order"),
    ({"vocab_size": 1}, "vocab_size"),
    ({"concentration": 0.0}, "concentration"),
    ({"mean_length": -1.0}, "mean_length"),
    ({"order": 6, "vocab_size": 20}, "contexts"),
])
def test_markov_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        MarkovSource(**kwargs)
    assert isinstance(info.value, SynthError) and "\n" not in str(info.value)


def test_from_probs_rejects_bad_tables():
    with pytest.raises(ValueError, match="sum to 1"):
        MarkovSource.from_probs({(): {"a": 0.5, EOS: 0.4}})
    with pytest.raises(ValueError, match="no probabilities"):
        MarkovSource.from_probs({(BOS,): {"a": 0.5, EOS: 0.5}})
    with pytest.raises(ValueError, match="unknown word"):
        MarkovSource.from_probs({(): {"a": 0.5, EOS: 0.5}}).logprob([], "zzz")


# -- LongRangeSource -------------------------------------------------------------------------------

def test_longrange_structure_and_determinism():
    source = LongRangeSource(distance=4, n_keys=3, n_fillers=5, tail_mean=1.0)
    corpus = source.sample(300, seed=9)
    assert corpus.sentences == LongRangeSource(4, 3, 5, tail_mean=1.0).sample(300, 9).sentences
    for s in corpus.sentences:
        assert s[0].startswith("k") and s[4] == "v" + s[0][1:]
        assert all(w.startswith("f") for w in s[1:4] + s[5:])
    assert any(len(s) > 5 for s in corpus.sentences)
    assert source.sentence_logprob(["k0", "f0", "f1", "f2", "v1"]) == -math.inf


def test_longrange_closed_form():
    # No tail: key (ln K) + d-1 fillers (ln F each) + value + </s> over d + 2 tokens.
    source = LongRangeSource(distance=3, n_keys=4, n_fillers=2, tail_mean=0.0)
    assert source.entropy_nats() == pytest.approx((math.log(4) + 2 * LN2) / 5)
    # order 2: the value is predicted from a filler (position d or d-1, equally likely): the two
    # ambiguous positions cost ln 2 more each, and the value costs ln K.
    assert source.ngram_entropy_nats(2) == pytest.approx(
        (2 * math.log(4) + 2 * LN2 + 2 * LN2) / 5)


@pytest.mark.parametrize("tail_mean", [0.0, 1.5])
def test_longrange_entropy_matches_sample(tail_mean):
    source = LongRangeSource(distance=3, n_keys=3, n_fillers=3, tail_mean=tail_mean, seed=2)
    corpus = source.sample(12000, seed=4)
    assert empirical_entropy(source, corpus) == pytest.approx(source.entropy_nats(), rel=0.02)
    for order in range(1, 6):
        exact = source.ngram_entropy_nats(order)
        assert exact >= source.entropy_nats() - 1e-12
        if order > source.distance:
            assert exact == pytest.approx(source.entropy_nats(), abs=1e-12)
        else:
            assert exact > source.entropy_nats()
        assert empirical_ngram_entropy(corpus.sentences, order) == pytest.approx(exact, rel=0.02)


def test_longrange_default_gap():
    source = LongRangeSource()
    values = [source.ngram_entropy_nats(o) for o in range(1, 13)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[source.distance] == pytest.approx(source.entropy_nats(), abs=1e-12)
    assert values[source.distance - 1] > source.entropy_nats() + 0.1


@pytest.mark.parametrize("kwargs", [
    {"distance": 0}, {"n_keys": 1}, {"n_fillers": 0}, {"tail_mean": -1.0}, {"seed": -1},
])
def test_longrange_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        LongRangeSource(**kwargs)


# -- SyntheticCorpus -------------------------------------------------------------------------------

def test_corpus_properties_and_write_round_trip(tmp_path):
    source = MarkovSource(order=2, vocab_size=5, seed=0, mean_length=2.0)
    corpus = source.sample(200, seed=1)
    assert [] in corpus.sentences  # empty sentences occur and must survive the round trip
    assert corpus.n_tokens == sum(len(s) + 1 for s in corpus.sentences)
    assert corpus.entropy_bits == pytest.approx(corpus.entropy_nats / LN2)
    assert corpus.perplexity == pytest.approx(math.exp(corpus.entropy_nats))
    path = tmp_path / "synth.txt"
    corpus.write(path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 200
    assert list(iter_sentences(path)) == corpus.sentences
    assert [p.name for p in tmp_path.iterdir()] == ["synth.txt"]  # no temporary left behind
    corpus.write(tmp_path / "synth.txt.gz")
    assert list(iter_sentences(tmp_path / "synth.txt.gz")) == corpus.sentences


def test_sample_splits_are_distinct_and_reproducible():
    source = LongRangeSource(distance=2, n_keys=5, n_fillers=5)
    splits = sample_splits(source, {"train": 100, "test": 100}, seed=1)
    assert [len(c.sentences) for c in splits.values()] == [100, 100]
    assert splits["train"].sentences != splits["test"].sentences
    again = sample_splits(source, {"train": 100, "test": 100}, seed=1)
    assert again["test"].sentences == splits["test"].sentences
