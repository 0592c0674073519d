"""Count pruning with ``lmplz --prune``'s semantics: exact parity with KenLM, hand-computed values,
normalisation for every method that accepts it, and bad thresholds refused before any work."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lmlab
from lmlab.cli import main
from lmlab.corpus import TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.metrics import evaluate
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.counts import count_ngrams
from lmlab.ngram.model import load_ngram, train_ngram
from lmlab.ngram.prune import kept_ngrams, prune_thresholds
from lmlab.ngram.smoothing import ALL_METHODS
from tests.ngram.test_kenlm_parity import _entries

PRUNED_ARPA = "ptb-valid-UNK.o5.prune01111.arpa.gz"
# From ../shared/reference/kenlm/README.md (lmplz -o 5 --prune ..., scored by query).
PRUNED_COUNTS_O5 = [6024, 8552, 4837, 2103, 1076]
PRUNED_PPL_O5 = (306.7920, 245.9413)
# Full PTB train -> test, order 5. KenLM lists 10002 unigrams: its own <unk> entry beside the
# corpus word that stood for <unk>; lmlab's <unk> is that word, so it has one unigram fewer.
FULL_PTB = {(0, 0, 1, 1, 1): (147.40, [10001, 264990, 81305, 43110, 22983]),
            (0, 1, 1, 1, 1): (158.50, [10001, 88482, 81305, 43110, 22983])}


@pytest.fixture(scope="module")
def pruned_reference(kenlm_reference):
    path = kenlm_reference / PRUNED_ARPA
    if not path.exists():
        pytest.skip(f"KenLM reference {PRUNED_ARPA} (lmplz -o 5 --prune 0 1 1 1 1) not found in "
                    f"{kenlm_reference}")
    return path


@pytest.fixture(scope="module")
def pruned_valid(ptb_unk):
    return train_ngram(ptb_unk / "valid.txt", order=5, smoothing="mkn", prune=[0, 1, 1, 1, 1])


def test_every_pruned_arpa_entry_matches_lmplz(pruned_valid, pruned_reference):
    ref = read_arpa(pruned_reference)
    assert [len(k) for k in pruned_valid.keys] == PRUNED_COUNTS_O5
    assert [len(k) for k in ref.keys] == PRUNED_COUNTS_O5
    mine, theirs = _entries(pruned_valid), _entries(ref)
    assert mine.keys() == theirs.keys()  # the same n-grams survive
    keys = [k for k in mine if k != "<s>"]  # <s> is never predicted: KenLM writes 0, lmlab -99
    a = np.array([mine[k] for k in keys])
    b = np.array([theirs[k] for k in keys])
    # KenLM computes in float32 and prints ~7 significant digits (measured: <= 4.2e-7 apart).
    assert np.abs(a - b).max() < 1e-6


def test_pruned_perplexity_matches_query(pruned_valid, ptb_unk):
    result, _, _ = evaluate(pruned_valid, ptb_unk / "test.txt")
    assert result.tokens == 82430 and result.oov == 3368
    assert result.perplexity == pytest.approx(PRUNED_PPL_O5[0], abs=1e-4)
    assert result.perplexity_excl_oov == pytest.approx(PRUNED_PPL_O5[1], abs=1e-4)


def test_pruned_model_survives_arpa_and_lm_round_trip(pruned_valid, ptb_unk, tmp_path):
    write_arpa(pruned_valid, tmp_path / "p.arpa")
    pruned_valid.save(tmp_path / "p.lm")
    want = evaluate(pruned_valid, ptb_unk / "test.txt")[0].perplexity
    for path in (tmp_path / "p.arpa", tmp_path / "p.lm"):
        model = read_arpa(path) if path.suffix == ".arpa" else load_ngram(path)
        assert [len(k) for k in model.keys] == PRUNED_COUNTS_O5
        assert evaluate(model, ptb_unk / "test.txt")[0].perplexity == pytest.approx(want,
                                                                                   rel=1e-6)
    assert load_ngram(tmp_path / "p.lm").meta["prune"] == [0, 1, 1, 1, 1]


@pytest.mark.parametrize("prune", list(FULL_PTB))
def test_full_ptb_pruned_matches_kenlm(data_root, prune):
    ptb = data_root / "ptb"
    if not (ptb / "train.txt").exists():
        pytest.skip(f"PTB not found in {data_root}: put ptb/train.txt and test.txt under "
                    "$LMLAB_DATA (see `lmlab data`)")
    want_ppl, want_counts = FULL_PTB[prune]
    model = train_ngram(ptb / "train.txt", order=5, smoothing="mkn", prune=list(prune))
    assert [len(k) for k in model.keys] == want_counts
    result, _, _ = evaluate(model, ptb / "test.txt")
    assert result.perplexity == pytest.approx(want_ppl, abs=0.005)


# -- hand-computed ---------------------------------------------------------------------------
TINY = ["a b", "a b", "a c"]


def _tiny(**kw):
    return lmlab.train_ngram(TINY, order=2, smoothing="mkn", **kw)


def test_tiny_bigram_model_by_hand():
    """<s> a b </s> (x2), <s> a c </s>. Bigram raw counts: <s> a 3, a b 2, b </s> 2, a c 1,
    c </s> 1; --prune 0 1 drops a c and c </s>. Discounts are KenLM's fallback 0.5 / 1 / 1.5
    (too little data). Unigrams (adjusted counts a b c 1, </s> 2; total 5; gamma 0.5, uniform
    1/5): p(a) = p(b) = p(c) = 0.2, p(</s>) = 0.3, p(<unk>) = 0.1.
    Context a, total 3: kept b keeps D(2) = 1, pruned c gives back all its count 1, so
    gamma(a) = (1 + 1) / 3 and p(b|a) = (2 - 1)/3 + 2/3 * 0.2 = 7/15 (unpruned: gamma 0.5).
    Context c: its only follower is pruned, so all mass backs off: backoff exactly 1."""
    with pytest.warns(lmlab.LmlabWarning, match="fallback"):
        lm = _tiny(prune=[0, 1])
    itos = lm.vocab.itos
    bigrams = {(itos[k // len(itos)], itos[k % len(itos)]): p
               for k, p in zip(lm.keys[1], lm.logp[1], strict=True)}
    assert bigrams == pytest.approx({("<s>", "a"): math.log10(0.6), ("a", "b"): math.log10(7 / 15),
                                     ("b", "</s>"): math.log10(0.65)})
    bow = dict(zip(itos, lm.bow[0], strict=True))
    assert bow["a"] == pytest.approx(math.log10(2 / 3))
    assert bow["c"] == 0.0 and bow["b"] == pytest.approx(math.log10(0.5))
    after_a = np.exp(lm.next_logprobs(["a"]))
    want = {"a": 2 / 15, "b": 7 / 15, "c": 2 / 15, "</s>": 0.2, "<unk>": 1 / 15, "<s>": 0.0}
    assert dict(zip(itos, after_a, strict=True)) == pytest.approx(want)


def test_zero_thresholds_change_nothing():
    with pytest.warns(lmlab.LmlabWarning):
        plain, zeros = _tiny(), _tiny(prune=[0, 0])
    assert "prune" not in zeros.meta
    for a, b in zip(plain.logp + plain.bow, zeros.logp + zeros.bow, strict=True):
        assert np.array_equal(a, b)


def test_short_list_repeats_its_last_value():
    assert prune_thresholds([0, 1], 5) == [0, 1, 1, 1, 1]
    assert prune_thresholds([0, 0, 2], 4) == [0, 0, 2, 2]
    assert prune_thresholds([0], 3) is None and prune_thresholds(None, 3) is None


def test_kept_ngrams_keeps_contexts_and_suffixes_of_kept_ones():
    """Raw counts with non-decreasing thresholds already give a closed set; the closure is checked
    with thresholds validation would refuse (order 2 pruned harder than order 3)."""
    words = "x a b c x a b c x a b d".split()
    vocab = Vocabulary.build([words])
    tables = count_ngrams(TokenStream.from_sentences([words], vocab), 3, len(vocab))
    keep = kept_ngrams(tables, [0, 5, 1], len(vocab))
    assert not (tables[1].counts > 5).any()  # the threshold alone would drop every bigram
    kept = tables[2].keys[keep[2]]  # x a b, a b c, b c x, c x a
    assert len(kept) == 4
    assert keep[1][kept // len(vocab)].all() and keep[1][tables[2].suffix[keep[2]]].all()
    assert 0 < keep[1].sum() < len(tables[1])  # bigrams no kept trigram needs are still pruned


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m not in ("addk", "stupid")])
def test_pruned_models_stay_normalised(method, train_file):
    lm = train_ngram(train_file, order=3, smoothing=method, prune=[0, 1, 2], verbose=False)
    full = train_ngram(train_file, order=3, smoothing=method, verbose=False)
    assert sum(map(len, lm.keys)) < sum(map(len, full.keys))
    for context in ([], ["w1"], ["w1", "w2"], ["w5", "w6"], ["zz", "w3"]):
        p = np.exp(lm.next_logprobs(context))
        assert p.sum() == pytest.approx(1.0, abs=1e-9), context


def test_stupid_backoff_prunes_too(train_file):
    lm = train_ngram(train_file, order=3, smoothing="stupid", prune=[0, 1])
    full = train_ngram(train_file, order=3, smoothing="stupid")
    assert len(lm.keys[2]) < len(full.keys[2]) and np.isfinite(lm.next_logprobs(["w1"])).any()


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("prune,message", [
    ([0, 1, 1, 1, 1, 1], "6 thresholds but the model has order 5"),
    ([0, 2, 1], "non-decreasing"),
    ([1, 1], "first threshold must be 0"),
    ([0, -1], ">= 0"),
    ([], "at least one threshold"),
    ([0, 1.5], "whole numbers"),
])
def test_bad_thresholds_fail_before_reading_anything(tmp_path, prune, message):
    missing = tmp_path / "no-such-file.txt"  # never opened: the thresholds fail first
    with pytest.raises(LmlabError, match=message) as err:
        lmlab.train_ngram(missing, order=5, prune=prune)
    assert "\n" not in str(err.value)
    with pytest.raises(LmlabError, match=message):
        train_ngram(missing, order=5, prune=prune)


def test_addk_refuses_pruning(train_file):
    with pytest.raises(LmlabError, match="addk"):
        lmlab.train_ngram(train_file, order=3, smoothing="addk", prune=[0, 1])


@pytest.mark.parametrize("prune,message", [(["0", "2", "1"], "non-decreasing"),
                                           (["0", "1", "1", "1"], "order 3"),
                                           (["0", "-1"], ">= 0")])
def test_cli_bad_prune_is_one_line_and_writes_nothing(tmp_path, capsys, prune, message):
    out = tmp_path / "m.lm"
    rc = main(["ngram", "train", str(tmp_path / "missing.txt"), "-n", "3", "--prune", *prune,
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and not out.exists()


def test_cli_prune_trains_and_reports_sizes(train_file, tmp_path, capsys):
    out = tmp_path / "m.lm"
    assert main(["ngram", "train", str(train_file), "-n", "3", "--prune", "0", "1",
                 "-o", str(out)]) == 0
    model = load_ngram(out)
    assert model.meta["prune"] == [0, 1, 1]
    sizes = " ".join(f"{n}:{len(k)}" for n, k in enumerate(model.keys, 1))
    assert sizes in capsys.readouterr().err
