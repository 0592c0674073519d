"""The evaluation protocol: numbers from a hand-made log-prob array, and a model with a known
perplexity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmlab.corpus import BOS_ID, EOS_ID, TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.metrics import (
    EvalResult,
    LanguageModel,
    evaluate,
    sentence_logprobs,
    summarize,
    token_table,
)

VOCAB = Vocabulary(["a", "b", "c"])  # |V| = 6 with <unk>, <s>, </s>


@pytest.fixture
def stream() -> TokenStream:
    # sentences: "a zz b" (zz OOV), "" , "c"  -> 4 + 1 + 2 = 7 tokens, 1 OOV
    return TokenStream.from_sentences([["a", "zz", "b"], [], ["c"]], VOCAB)


LOGPROBS = np.log([0.5, 0.01, 0.25, 0.8, 0.9, 0.125, 0.5])


def test_summarize_hand_made(stream):
    r = summarize(LOGPROBS, stream)
    assert (r.tokens, r.oov, r.sentences) == (7, 1, 3)
    total = sum(math.log(p) for p in [0.5, 0.01, 0.25, 0.8, 0.9, 0.125, 0.5])
    assert r.logprob == pytest.approx(total, rel=1e-12)
    assert r.logprob_excl_oov == pytest.approx(total - math.log(0.01), rel=1e-12)
    assert r.cross_entropy_nats == pytest.approx(-total / 7, rel=1e-12)
    assert r.cross_entropy_bits == pytest.approx(-total / 7 / math.log(2), rel=1e-12)
    assert r.perplexity == pytest.approx(math.exp(-total / 7), rel=1e-12)
    # geometric mean of 1/p, computed another way
    geo = np.prod([1 / p for p in [0.5, 0.01, 0.25, 0.8, 0.9, 0.125, 0.5]]) ** (1 / 7)
    assert r.perplexity == pytest.approx(geo, rel=1e-12)
    excl = np.prod([1 / p for p in [0.5, 0.25, 0.8, 0.9, 0.125, 0.5]]) ** (1 / 6)
    assert r.perplexity_excl_oov == pytest.approx(excl, rel=1e-12)
    assert r.log10_prob == pytest.approx(math.log10(0.5 * 0.01 * 0.25 * 0.8 * 0.9 * 0.125 * 0.5),
                                         rel=1e-12)
    d = r.to_dict()
    for key in ("tokens", "oov", "sentences", "logprob", "logprob_excl_oov", "cross_entropy_nats",
                "cross_entropy_bits", "perplexity", "perplexity_excl_oov", "log10_prob"):
        assert key in d
    assert d["perplexity"] == r.perplexity


def test_uniform_bits_exact():
    r = EvalResult(tokens=4, oov=0, sentences=1, logprob=4 * math.log(1 / 8),
                   logprob_excl_oov=4 * math.log(1 / 8))
    assert r.cross_entropy_bits == pytest.approx(3.0, rel=1e-12)
    assert r.perplexity == pytest.approx(8.0, rel=1e-12)


def test_zero_probability_gives_infinite_perplexity(stream):
    lp = LOGPROBS.copy()
    lp[2] = -np.inf
    r = summarize(lp, stream)
    assert r.perplexity == math.inf and r.perplexity_excl_oov == math.inf


def test_huge_cross_entropy_does_not_overflow():
    r = EvalResult(tokens=1, oov=0, sentences=1, logprob=-1e6, logprob_excl_oov=-1e6)
    assert r.perplexity == math.inf


def test_summarize_length_mismatch(stream):
    with pytest.raises(ValueError):
        summarize(LOGPROBS[:-1], stream)


def test_sentence_logprobs_chain_rule(stream):
    sent = sentence_logprobs(LOGPROBS, stream)
    expected = [math.log(0.5 * 0.01 * 0.25 * 0.8), math.log(0.9), math.log(0.125 * 0.5)]
    assert sent == pytest.approx(expected, rel=1e-12)
    assert sent.sum() == pytest.approx(LOGPROBS.sum(), rel=1e-12)


class UniformModel:
    """p(w | h) = 1 / (|V| - 1) for every word but <s> (<unk> and </s> included)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def logprobs(self, stream: TokenStream) -> np.ndarray:
        assert not (stream.ids == BOS_ID).any()
        return np.full(len(stream), -math.log(len(self.vocab) - 1))

    def next_logprobs(self, context: list[str]) -> np.ndarray:
        out = np.full(len(self.vocab), -math.log(len(self.vocab) - 1))
        out[BOS_ID] = -np.inf
        return out

    def describe(self) -> dict:
        return {"type": "uniform"}


def test_uniform_model_perplexity_is_vocab_minus_one(tmp_path):
    model: LanguageModel = UniformModel(VOCAB)
    assert np.exp(model.next_logprobs([])).sum() == pytest.approx(1.0)
    p = tmp_path / "t.txt"
    p.write_text("a b c\nzz a\n\nb\n", encoding="utf-8")
    result, logprobs, stream = evaluate(model, p)
    assert (result.tokens, result.oov, result.sentences) == (3 + 1 + 2 + 1 + 1 + 2, 1, 4)
    assert result.perplexity == pytest.approx(len(VOCAB) - 1, rel=1e-12)
    assert result.perplexity_excl_oov == pytest.approx(len(VOCAB) - 1, rel=1e-12)
    assert result.cross_entropy_bits == pytest.approx(math.log2(5), rel=1e-12)
    assert len(logprobs) == len(stream) == result.tokens


def test_evaluate_oov_only_text_raises(tmp_path):
    p = tmp_path / "oov.txt"
    p.write_text("xx yy\nzz\n", encoding="utf-8")
    with pytest.raises(LmlabError) as e:
        evaluate(UniformModel(VOCAB), p)
    assert str(e.value).startswith(f"{p}: ")
    assert "outside the model's vocabulary" in str(e.value)[len(str(p)):]


def test_evaluate_empty_lines_only_is_fine(tmp_path):
    p = tmp_path / "blank.txt"
    p.write_text("\n\n", encoding="utf-8")
    result, _, stream = evaluate(UniformModel(VOCAB), p)
    assert result.tokens == 2 and (stream.ids == EOS_ID).all()


def test_evaluate_empty_file_raises(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("", encoding="utf-8")
    with pytest.raises(LmlabError) as e:
        evaluate(UniformModel(VOCAB), p)
    assert str(e.value).startswith(f"{p}: ")
    assert "empty" in str(e.value)[len(str(p)):]


def test_token_table():
    rows = token_table(UniformModel(VOCAB), ["a", "zz"])
    assert [r["token"] for r in rows] == ["a", "zz", "</s>"]
    assert [r["oov"] for r in rows] == [False, True, False]
    for r in rows:
        assert r["logprob"] == pytest.approx(-math.log(5))
        assert r["log10prob"] == pytest.approx(-math.log10(5))
        assert r["bits"] == pytest.approx(math.log2(5))


@pytest.mark.parametrize("word", ["<s>", "</s>"])
def test_token_table_rejects_boundary_tokens(word):
    with pytest.raises(LmlabError, match="reserved"):
        token_table(UniformModel(VOCAB), ["a", word, "b"])
