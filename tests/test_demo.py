"""``lmlab demo``: every model of both synthetic languages, n-grams and the small LSTM, scored by
one protocol; none beats the source's true perplexity beyond sampling noise (a model that did
would be seeing the word it predicts), and the LSTM sees past the n-gram horizon."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from lmlab.demo import run_demo
from tests.cli_helpers import fails, ok


@pytest.fixture(scope="module")
def rows():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run_demo(n_sentences=3000, seed=1, as_json=True) == 0
    return json.loads(buf.getvalue())


def test_every_model_on_both_sources(rows):
    models = {(r["source"], r["model"].rstrip("*")) for r in rows}
    assert ("markov-3", "3-gram mkn") in models and ("long-range-d4", "6-gram mkn") in models
    assert ("markov-3", "LSTM 1x64") in models and ("long-range-d4", "LSTM 1x64") in models
    for r in rows:
        assert r["test_tokens"] > 0 and r["seconds"] >= 0
        if r["model"].startswith("LSTM") or r["source"] == "markov-3 as text":
            assert r["best_ngram_perplexity"] is None
        else:
            assert r["best_ngram_perplexity"] >= r["true_perplexity"] * (1 - 1e-12)


def test_no_model_beats_the_truth(rows):
    for r in rows:
        assert r["perplexity"] >= 0.97 * r["true_perplexity"], r


def test_lstm_sees_past_the_ngram_horizon(rows):
    long = {r["model"].rstrip("*"): r for r in rows if r["source"] == "long-range-d4"}
    lstm = long["LSTM 1x64"]["perplexity"]
    assert lstm < long["4-gram mkn"]["best_ngram_perplexity"]  # no 4-gram can get there
    assert lstm < 1.1 * long["4-gram mkn"]["true_perplexity"]


def test_word_and_char_models_compare_by_bits_per_character(rows):
    word, char = (r for r in rows if r["source"] == "markov-3 as text")
    assert word["model"].startswith("word") and char["model"].startswith("char")
    assert word["true_bits_per_character"] == char["true_bits_per_character"]
    for r in (word, char):  # both near the truth, per character, whatever their tokens
        assert abs(r["bits_per_character"] / r["true_bits_per_character"] - 1) < 0.05, r
    assert word["perplexity"] > 2 * char["perplexity"]  # per token: not comparable


def test_cli_text_and_no_neural(capsys):
    out = ok(capsys, "demo", "--sentences", "500", "--no-neural")
    assert "3-gram mkn" in out and "LSTM" not in out
    assert "bits per character" in out
    assert "--sentences" in fails(capsys, "demo", "--sentences", "0")
