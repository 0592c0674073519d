"""``lmlab eval`` of a bidirectional checkpoint: the shared keys hold the FORWARD (left-to-right)
perplexity; backward and cloze numbers are added beside it, under their own names."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmlab.cli import main
from lmlab.corpus import read_corpus
from lmlab.metrics import summarize
from lmlab.models import load_model
from lmlab.neural.bidirectional import BidirectionalLM
from lmlab.neural.data import stream_tensors
from lmlab.synth import MarkovSource, write_splits

torch.set_num_threads(1)

TINY = ["--emsize", "8", "--hidden", "8", "--layers", "1", "--bptt", "5", "--batch-size", "4",
        "--threads", "1", "--device", "cpu", "--seed", "3", "--optimizer", "adam", "--lr",
        "0.01", "--epochs", "1"]
EXTRA = ("backward_perplexity", "cloze_accuracy", "cloze_perplexity")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bieval")
    write_splits(MarkovSource(order=2, vocab_size=8, seed=4), d,
                 {"train": 60, "valid": 10, "test": 15}, seed=0)
    return d


def _train(data_dir, out, *flags) -> None:
    assert main(["train", "lstm", "--data", str(data_dir), "--out", str(out), "--json", *TINY,
                 *flags]) == 0


@pytest.fixture(scope="module")
def bi_ckpt(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bi") / "bi.pt"
    _train(data_dir, out, "--bidirectional")
    return out


def _eval_json(capsys, ckpt, text) -> dict:
    capsys.readouterr()
    assert main(["eval", str(ckpt), str(text), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_json_forward_perplexity_and_extra_keys(bi_ckpt, data_dir, capsys):
    text = data_dir / "test.txt"
    report = _eval_json(capsys, bi_ckpt, text)
    for key in ("perplexity", "tokens", "oov", "cross_entropy_bits", *EXTRA):
        assert key in report, key

    lm = load_model(bi_ckpt)
    assert isinstance(lm.model, BidirectionalLM)
    stream = read_corpus(text, lm.vocab)
    forward = summarize(lm.logprobs(stream), stream)
    assert report["perplexity"] == pytest.approx(forward.perplexity, rel=1e-12)
    assert report["tokens"] == forward.tokens == len(stream)

    assert 0.0 <= report["cloze_accuracy"] <= 1.0
    assert report["backward_perplexity"] > 1 and report["cloze_perplexity"] > 1
    # the same numbers straight from BidirectionalLM over the same stream
    _, targets = stream_tensors(stream)
    backward = lm.model.backward_logprobs(targets).double()
    logp, pred = lm.model.cloze_scores(targets)
    assert len(backward) == len(logp) == len(stream)
    assert report["backward_perplexity"] == pytest.approx(math.exp(-backward.mean().item()))
    assert report["cloze_perplexity"] == pytest.approx(math.exp(-logp.double().mean().item()))
    assert report["cloze_accuracy"] == pytest.approx((pred == targets).double().mean().item())


def test_extra_metrics_do_not_change_forward_scores(bi_ckpt, data_dir):
    lm = load_model(bi_ckpt)
    stream = read_corpus(data_dir / "test.txt", lm.vocab)
    before, mode = lm.logprobs(stream), lm.model.training
    extra = lm.extra_metrics(stream)
    assert set(extra) == set(EXTRA)
    np.testing.assert_array_equal(lm.logprobs(stream), before)
    assert lm.model.training == mode  # the training flag is left as it was


def test_text_report_says_backward_and_cloze_are_not_lm_scores(bi_ckpt, data_dir, capsys):
    capsys.readouterr()
    assert main(["eval", str(bi_ckpt), str(data_dir / "test.txt")]) == 0
    out = capsys.readouterr().out
    assert "forward (left-to-right)" in out
    assert "backward" in out and "cloze" in out
    assert "NOT left-to-right LM scores" in out


def test_unidirectional_checkpoint_has_no_extra_keys(data_dir, tmp_path, capsys):
    out = tmp_path / "uni.pt"
    _train(data_dir, out)
    report = _eval_json(capsys, out, data_dir / "test.txt")
    assert not set(EXTRA) & set(report)
    lm = load_model(out)
    assert lm.extra_metrics(read_corpus(data_dir / "test.txt", lm.vocab)) == {}
