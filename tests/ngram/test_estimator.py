"""The vectorised estimator against a transparent dict-based reference, and normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmlab.corpus import BOS_ID, TokenStream, Vocabulary
from lmlab.ngram.model import train_ngram
from lmlab.ngram.smoothing import ALL_METHODS
from tests.ngram.naive import NaiveNGram

NORMALISED = [m for m in ALL_METHODS if m != "stupid"]
WORDS = ["a", "b", "c", "d", "e"]

sentences_st = st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=8),
                        min_size=1, max_size=25).filter(lambda ss: any(ss))
slow = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fit(sentences, order, method, **kw):
    vocab = Vocabulary.build(sentences)
    stream = TokenStream.from_sentences(sentences, vocab)
    return train_ngram(stream=stream, vocab=vocab, order=order, smoothing=method, **kw)


def naive_for(model, sentences, order, method):
    discounts = None
    if method in ("mkn", "kn", "absdisc"):
        discounts = {int(n): d for n, d in model.meta["discounts"].items()}
    return NaiveNGram(sentences, model.vocab.itos, order, method, discounts=discounts)


@pytest.mark.parametrize("method", ALL_METHODS)
@given(train=sentences_st, test=sentences_st, order=st.integers(1, 4))
# katz: (k+1) n_6 = n_1 for unigrams: every Good-Turing d_r divides by zero (found by hypothesis)
@example(train=[[], ["a"], ["a"], ["a"], ["a", "d"], ["a", "b", "a"], ["b", "a", "c"],
                ["a", "a", "b", "a", "b", "c", "a"], ["b", "a", "c"]], test=[["a"]], order=2)
@slow
def test_matches_naive_reference(method, train, test, order):
    model = fit(train, order, method)
    naive = naive_for(model, train, order, method)
    test = [s + ["zz"] for s in test[:5]]  # an OOV word in every sentence
    stream = TokenStream.from_sentences(test, model.vocab)
    got = model.logprobs(stream)
    want = np.concatenate([naive.sentence_logprobs(s) for s in test])
    assert np.allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=False) or \
        np.array_equal(np.isinf(got), np.isinf(want)) and np.allclose(
            got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", NORMALISED)
@given(train=sentences_st, order=st.integers(1, 4),
       context=st.lists(st.sampled_from(WORDS + ["zz"]), max_size=4))
@slow
def test_distribution_sums_to_one(method, train, order, context):
    model = fit(train, order, method)
    logp = model.next_logprobs(context)
    assert logp[BOS_ID] == -np.inf
    assert math.isclose(np.exp(logp).sum(), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize("method", ALL_METHODS)
@given(train=sentences_st, order=st.integers(1, 4),
       context=st.lists(st.sampled_from(WORDS + ["zz"]), max_size=4))
@slow
def test_next_distribution_agrees_with_scoring(method, train, order, context):
    """The two code paths (whole-corpus scoring, next-word distribution) give the same numbers."""
    model = fit(train, order, method)
    logp = model.next_logprobs(context)
    for w in ["a", "</s>", "zz"]:
        stream = TokenStream.from_sentences([context + [w]], model.vocab)
        scored = model.logprobs(stream)[len(context)] if w != "</s>" else \
            model.logprobs(TokenStream.from_sentences([context], model.vocab))[-1]
        assert np.isclose(scored, logp[model.vocab.id(w)], rtol=1e-9, atol=1e-12) or \
            scored == logp[model.vocab.id(w)] == -np.inf


def test_hand_computed_bigram_mle_and_laplace():
    train = [["a", "b"], ["a", "a"]]
    # <s> a b </s>, <s> a a </s>: c(<s> a)=2, c(a b)=1, c(a a)=1, c(a </s>)=1, c(b </s>)=1
    mle = fit(train, 2, "mle")
    lp = mle.logprobs(TokenStream.from_sentences([["a", "b"]], mle.vocab))
    assert np.allclose(np.exp(lp), [1.0, 1 / 3, 1.0])
    lap = fit(train, 2, "addk", k=1.0)
    # |V| = <unk>, </s>, a, b = 4 (no <s>)
    lp = lap.logprobs(TokenStream.from_sentences([["a", "b"]], lap.vocab))
    assert np.allclose(np.exp(lp), [(2 + 1) / (2 + 4), (1 + 1) / (3 + 4), (1 + 1) / (1 + 4)])


def test_hand_computed_witten_bell_unigram():
    train = [["a", "a", "b"]]
    wb = fit(train, 1, "wb")
    # counts a=2 b=1 </s>=1, N=4, T=3; uniform over {<unk>, </s>, a, b} = 1/4
    p = np.exp(wb.next_logprobs([]))
    v = wb.vocab
    assert np.isclose(p[v.id("a")], (2 + 3 / 4) / 7)
    assert np.isclose(p[v.id("<unk>")], (3 / 4) / 7)


def test_small_data_mkn_falls_back_with_warning(capsys):
    from lmlab.errors import LmlabWarning

    with pytest.warns(LmlabWarning, match="fallback"):
        model = fit([["a", "b"]], 3, "mkn")
    assert model.meta["warnings"] and all(model.meta["discounts"][n] == [0.5, 1.0, 1.5]
                                          for n in ("1", "2", "3"))
    assert capsys.readouterr() == ("", "")  # library code warns, never prints


def test_katz_undefined_good_turing_falls_back_quietly(recwarn):
    # unigrams: (k+1) n_6 = n_1, so R = 1 and every d_r divides by zero
    train = [[], ["a"], ["a"], ["a"], ["a", "d"], ["a", "b", "a"], ["b", "a", "c"],
             ["a", "a", "b", "a", "b", "c", "a"], ["b", "a", "c"]]
    model = fit(train, 2, "katz")
    assert any("Good-Turing undefined for order 1" in w for w in model.meta["warnings"])
    assert np.isclose(np.exp(model.next_logprobs([])).sum(), 1.0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_small_data_mkn_strict_is_clear_error():
    from lmlab.errors import LmlabError

    with pytest.raises(LmlabError, match="small or artificial"):
        fit([["a", "b"]], 3, "mkn", strict=True)


def test_order_out_of_range():
    from lmlab.errors import LmlabError

    for order in (0, -1, 21, 99):
        with pytest.raises(LmlabError, match="order"):
            fit([["a"]], order, "mkn")
