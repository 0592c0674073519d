"""Exact parity with KenLM's lmplz (modified Kneser-Ney) and interoperability with kenlm.Model."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.corpus import read_corpus
from lmlab.metrics import LN10, evaluate, sentence_logprobs
from lmlab.ngram.arpa import ngram_word_ids, read_arpa, write_arpa
from lmlab.ngram.model import train_ngram

# From ../shared/reference/kenlm/README.md (KenLM lmplz -o N, scored by query).
FIXTURE = {3: (271.9586, 215.0525), 5: (268.0503, 211.9405)}
DISCOUNTS_O5 = {1: (0.479348, 1.24412, 1.9582), 2: (0.792484, 1.22263, 1.54662),
                3: (0.915105, 1.37439, 1.26812), 4: (0.968383, 1.38349, 1.77582),
                5: (0.974168, 1.57677, 1.3204)}
COUNTS_O5 = [6024, 38515, 58346, 62572, 61490]
KENLM_MISSING = "the kenlm Python module is not installed: pip install kenlm (or .[test])"


@pytest.fixture(scope="module", params=[3, 5])
def valid_model(request, ptb_unk):
    return request.param, train_ngram(ptb_unk / "valid.txt", order=request.param,
                                      smoothing="mkn")


def test_counts_and_discounts_match_lmplz(ptb_unk):
    model = train_ngram(ptb_unk / "valid.txt", order=5, smoothing="mkn")
    assert [len(k) for k in model.keys] == COUNTS_O5
    for n, want in DISCOUNTS_O5.items():
        assert np.allclose(model.meta["discounts"][str(n)], want, rtol=2e-5)


def test_perplexity_matches_query(valid_model, ptb_unk):
    order, model = valid_model
    result, _, _ = evaluate(model, ptb_unk / "test.txt")
    assert result.tokens == 82430 and result.oov == 3368
    ppl, ppl_excl = FIXTURE[order]
    assert result.perplexity == pytest.approx(ppl, rel=1e-6)
    assert result.perplexity_excl_oov == pytest.approx(ppl_excl, rel=1e-6)


def _entries(model) -> dict[str, tuple[float, float]]:
    out = {}
    for n, rows in enumerate(ngram_word_ids(model), 1):
        words = np.array(model.vocab.itos, dtype=object)[rows]
        bows = model.bow[n - 1] if n < model.order else np.zeros(len(rows))
        for w, p, b in zip(words, model.logp[n - 1], bows, strict=True):
            out[" ".join(w)] = (p, b)
    return out


def test_every_arpa_entry_matches_lmplz(valid_model, ptb_unk, kenlm_reference):
    order, model = valid_model
    ref = read_arpa(kenlm_reference / f"ptb-valid-UNK.o{order}.arpa.gz")
    mine, theirs = _entries(model), _entries(ref)
    assert mine.keys() == theirs.keys()
    keys = [k for k in mine if k != "<s>"]  # <s> is never predicted: KenLM writes 0, lmlab -99
    a = np.array([mine[k] for k in keys])
    b = np.array([theirs[k] for k in keys])
    # KenLM computes in float32 and prints ~7-8 significant digits.
    assert np.allclose(a, b, rtol=1e-5, atol=2e-6)


def test_kenlm_loads_our_arpa_and_agrees(tmp_path, ptb_unk):
    kenlm = pytest.importorskip("kenlm", reason=KENLM_MISSING)
    model = train_ngram(ptb_unk / "valid.txt", order=4, smoothing="mkn")
    arpa = tmp_path / "ours.arpa.gz"
    write_arpa(model, arpa)
    km = kenlm.Model(str(arpa))
    stream = read_corpus(ptb_unk / "test.txt", model.vocab)
    ours = sentence_logprobs(model.logprobs(stream), stream) / LN10
    lines = (ptb_unk / "test.txt").read_text().splitlines()
    theirs = np.array([km.score(line, bos=True, eos=True) for line in lines])
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("method", ["wb", "kn", "katz", "absdisc", "stupid"])
def test_kenlm_scores_other_methods_identically(tmp_path, ptb_unk, method):
    """Any backoff-form model written as ARPA scores the same in KenLM."""
    kenlm = pytest.importorskip("kenlm", reason=KENLM_MISSING)
    model = train_ngram(ptb_unk / "valid.txt", order=3, smoothing=method)
    arpa = tmp_path / f"{method}.arpa"
    write_arpa(model, arpa)
    km = kenlm.Model(str(arpa))
    lines = (ptb_unk / "test.txt").read_text().splitlines()[:300]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    stream = read_corpus(tmp_path / "t.txt", model.vocab)
    ours = sentence_logprobs(model.logprobs(stream), stream) / LN10
    theirs = np.array([km.score(line, bos=True, eos=True) for line in lines])
    zero = np.isneginf(ours)  # probability zero (e.g. Katz contexts with no mass left): -99 in ARPA
    assert (theirs[zero] <= -99).all()
    assert np.abs(ours[~zero] - theirs[~zero]).max() < 1e-4


@pytest.mark.parametrize("order,want", [(5, 141.19), (3, 148.28)])
def test_full_ptb_perplexity_matches_kenlm(data_root, order, want):
    """The standard PTB figures: <unk> estimated from its counts like any word."""
    ptb = data_root / "ptb"
    model = train_ngram(ptb / "train.txt", order=order, smoothing="mkn")
    result, _, _ = evaluate(model, ptb / "test.txt")
    assert result.tokens == 82430 and result.oov == 0
    assert result.perplexity == pytest.approx(want, rel=1e-3)
    assert result.perplexity == pytest.approx(want, abs=0.01)
