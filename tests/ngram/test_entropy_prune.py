"""Relative-entropy pruning (Stolcke 1998, SRILM -prune): the vectorised pruner against a
transparent per-n-gram implementation of the same formulas, plus properties and bad input."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from lmlab.cli import main
from lmlab.corpus import BOS_ID, EOS_ID
from lmlab.errors import LmlabError
from lmlab.metrics import evaluate
from lmlab.ngram.arpa import ngram_word_ids, read_arpa
from lmlab.ngram.entropy import entropy_prune
from lmlab.ngram.model import load_ngram, train_ngram


def _tables(model):
    probs, bows = {}, {}
    for n, rows in enumerate(ngram_word_ids(model), 1):
        for r, p, b in zip(rows.tolist(), model.logp[n - 1], model.bow[n - 1], strict=True):
            probs[tuple(r)], bows[tuple(r)] = float(p), float(b)
    return probs, bows


def naive_entropy_prune(model, threshold):
    """SRILM's pruneProbs written out n-gram by n-gram, on dicts."""
    probs, bows = _tables(model)

    def score(g):  # log10 p(g[-1] | g[:-1]) by ARPA backoff
        return probs[g] if g in probs else bows.get(g[:-1], 0.0) + score(g[1:])

    def chain(h):  # log10 P(h); a leading <s> counts as </s>
        total = probs[(EOS_ID if h[0] == BOS_ID else h[0],)]
        return total + sum(probs[h[:k]] for k in range(2, len(h) + 1))

    for n in range(model.order, 1, -1):
        followers = defaultdict(list)
        for g in probs:
            if len(g) == n:
                followers[g[:-1]].append(g[-1])
        needed = {g[:-1] for g in probs if len(g) == n + 1}
        doomed = []
        for h, words in followers.items():
            num = 1 - sum(10 ** probs[h + (w,)] for w in words)
            den = 1 - sum(10 ** score(h[1:] + (w,)) for w in words)
            bow = math.log10(num / den)
            for w in words:
                p, lower = probs[h + (w,)], score(h[1:] + (w,))
                new = math.log10(num + 10 ** p) - math.log10(den + 10 ** lower)
                dh = -10 ** chain(h) * (10 ** p * (lower + new - p) + num * (new - bow))
                if 10 ** dh - 1 < threshold and h + (w,) not in needed:
                    doomed.append(h + (w,))
        for g in doomed:
            del probs[g]
    for n in range(1, model.order):  # renormalise, lowest order first
        followers = defaultdict(list)
        for g in probs:
            if len(g) == n + 1:
                followers[g[:-1]].append(g[-1])
        for h in [g for g in probs if len(g) == n]:
            words = followers.get(h, [])
            num = 1 - sum(10 ** probs[h + (w,)] for w in words)
            den = 1 - sum(10 ** score(h[1:] + (w,)) for w in words)
            bows[h] = math.log10(num / den) if words else 0.0
    return probs, {g: bows[g] for g in probs if len(g) < model.order}


@pytest.fixture(scope="module")
def small_model(train_file):
    return train_ngram(train_file, order=3, smoothing="mkn", verbose=False)


@pytest.mark.parametrize("threshold", [1e-5, 1e-4, 1e-3])
def test_matches_per_ngram_implementation(small_model, threshold):
    pruned = entropy_prune(small_model, threshold)
    want_p, want_b = naive_entropy_prune(small_model, threshold)
    got_p, got_b = _tables(pruned)
    assert got_p.keys() == want_p.keys()
    sizes = [len(k) for k in pruned.keys]
    assert sizes[1] < len(small_model.keys[1]) or sizes[2] < len(small_model.keys[2])
    assert got_p == pytest.approx(want_p, abs=1e-12)
    assert {g: b for g, b in got_b.items() if g in want_b} == pytest.approx(want_b, abs=1e-9)


def test_zero_threshold_prunes_nothing(small_model):
    same = entropy_prune(small_model, 0)
    assert [len(k) for k in same.keys] == [len(k) for k in small_model.keys]
    for a, b in zip(same.bow, small_model.bow, strict=True):
        assert np.allclose(a, b, atol=1e-9)


def test_huge_threshold_leaves_the_unigram_model(small_model, test_file):
    uni = entropy_prune(small_model, 1e6)
    assert [len(k) for k in uni.keys] == [len(small_model.keys[0]), 0, 0]
    assert not uni.bow[0].any()
    p = np.exp(uni.next_logprobs(["w1", "w2"]))
    assert np.allclose(np.log10(p[p > 0]), small_model.logp[0][p > 0])


@pytest.mark.parametrize("method", ["mkn", "kn", "wb", "katz"])
def test_pruned_model_is_normalised_and_shrinks_with_threshold(method, train_file, test_file):
    model = train_ngram(train_file, order=3, smoothing=method, verbose=False)
    sizes, ppls = [], []
    for threshold in (1e-6, 1e-4, 1e-2):
        pruned = entropy_prune(model, threshold)
        sizes.append(sum(map(len, pruned.keys)))
        ppls.append(evaluate(pruned, test_file)[0].perplexity)
        for context in ([], ["w1"], ["w3", "w4"], ["zz1", "w9"]):
            assert np.exp(pruned.next_logprobs(context)).sum() == pytest.approx(1.0, abs=1e-9)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert all(np.isfinite(ppls))


def test_prunes_a_kenlm_arpa(kenlm_reference, ptb_unk):
    ref = read_arpa(kenlm_reference / "ptb-valid-UNK.o3.arpa.gz")
    pruned = entropy_prune(ref, 1e-7)
    assert sum(map(len, pruned.keys)) < sum(map(len, ref.keys))
    full, small = (evaluate(m, ptb_unk / "test.txt")[0].perplexity for m in (ref, pruned))
    assert full < small < full * 1.05


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_threshold(small_model, bad):
    with pytest.raises(LmlabError, match="threshold must be a number >= 0"):
        entropy_prune(small_model, bad)


def test_refuses_models_without_normalised_backoff_form(train_file):
    stupid = train_ngram(train_file, order=3, smoothing="stupid")
    with pytest.raises(LmlabError, match="normalised"):
        entropy_prune(stupid, 1e-6)
    addk = train_ngram(train_file, order=3, smoothing="addk")
    with pytest.raises(LmlabError, match="backoff-form"):
        entropy_prune(addk, 1e-6)


def test_cli_prune_writes_lm_and_arpa(small_model, tmp_path, capsys, test_file):
    small_model.save(tmp_path / "m.lm")
    for out in ("p.lm", "p.arpa.gz"):
        assert main(["ngram", "prune", str(tmp_path / "m.lm"), str(tmp_path / out),
                     "--entropy", "1e-4"]) == 0
        assert "->" in capsys.readouterr().err
    a, b = load_ngram(tmp_path / "p.lm"), read_arpa(tmp_path / "p.arpa.gz")
    assert [len(k) for k in a.keys] == [len(k) for k in b.keys]
    assert evaluate(a, test_file)[0].perplexity == pytest.approx(
        evaluate(b, test_file)[0].perplexity, rel=1e-5)


def test_cli_bad_threshold_is_one_line_and_writes_nothing(small_model, tmp_path, capsys):
    small_model.save(tmp_path / "m.lm")
    rc = main(["ngram", "prune", str(tmp_path / "m.lm"), str(tmp_path / "p.lm"),
               "--entropy", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and not (tmp_path / "p.lm").exists()


def test_an_empty_order_does_not_stop_pruning_below_it(small_model):
    """A model whose top order stores nothing (as after pruning it away) still has its lower
    orders pruned."""
    from lmlab.ngram.model import NGramModel

    m = small_model
    V = len(m.vocab)
    top_empty = NGramModel(m.vocab, [*m.keys[:-1], np.zeros(0, dtype=np.int64)],
                           [*m.logp[:-1], np.zeros(0)], [*m.bow[:-1], np.zeros(0)], dict(m.meta))
    pruned = entropy_prune(top_empty, 1.0)
    assert len(pruned.keys[-1]) == 0
    assert all(len(k) == 0 for k in pruned.keys[1:]), [len(k) for k in pruned.keys]
    assert np.exp(pruned.next_logprobs([m.vocab.itos[3]])).sum() == pytest.approx(1.0)
    assert V == len(pruned.vocab)
