"""NeuralLM: the shared evaluation protocol for neural models (one continuous stream, batch size 1,
every token predicted), next-word distributions, loading checkpoints through lmlab.models."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmlab.corpus import EOS_ID, TokenStream, Vocabulary, read_corpus
from lmlab.errors import LmlabError
from lmlab.metrics import evaluate
from lmlab.models import load_model
from lmlab.neural.checkpoint import load_checkpoint, save_checkpoint
from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import load_corpus
from lmlab.neural.lm import NeuralLM, load_neural, resolve_device
from lmlab.neural.models import build_model
from lmlab.neural.trainer import Trainer
from lmlab.synth import MarkovSource, sample_splits

torch.set_num_threads(1)

WORDS = [f"w{i}" for i in range(8)]


def tiny(model="lstm", dropout=0.0, **kw) -> tuple[torch.nn.Module, Vocabulary, RunConfig]:
    vocab = Vocabulary(["<unk>", "<s>", "</s>", *WORDS])
    config = RunConfig(ModelConfig(model=model, vocab_size=len(vocab), emsize=8, hidden=8,
                                   layers=2, dropout=dropout, window=3, **kw), TrainConfig())
    torch.manual_seed(0)
    return build_model(config.model), vocab, config


def stream(vocab, sentences) -> TokenStream:
    return TokenStream.from_sentences([s.split() for s in sentences], vocab)


SENTS = ["w1 w2 w3", "", "w4 w5 w6 w7 w0", "w2 zz w2", "w3 w3 w3 w3 w1 w2"] * 7


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn_tanh", "nnlm"])
def test_logprobs_every_token_independent_of_chunking(model):
    net, vocab, config = tiny(model)
    s = stream(vocab, SENTS)
    ref = NeuralLM(net, vocab, config, chunk=256).logprobs(s)
    assert ref.shape == (len(s),) and ref.dtype == np.float64
    assert np.all(ref < 0) and np.all(np.isfinite(ref))
    for chunk in (1, 7, 50):
        lp = NeuralLM(net, vocab, config, chunk=chunk).logprobs(s)
        np.testing.assert_allclose(lp, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", ["lstm", "nnlm"])
def test_next_word_accuracy_is_the_argmax_of_next_logprobs(model):
    net, vocab, config = tiny(model)
    s = stream(vocab, SENTS[:5])
    lm = NeuralLM(net, vocab, config, chunk=4)
    # the stream is continuous: sentence k's context includes every sentence before it
    words = [vocab.itos[i] for i in s.ids]
    hits = sum(int(np.argmax(lm.next_logprobs(words[:t])) == s.ids[t]) for t in range(len(s)))
    assert lm.next_word_accuracy(s) == pytest.approx(hits / len(s))
    assert math.isnan(lm.next_word_accuracy(stream(vocab, [])))


def test_first_token_is_predicted_after_eos():
    net, vocab, config = tiny()
    lm = NeuralLM(net, vocab, config)
    s = stream(vocab, ["w3 w4"])
    lp = lm.logprobs(s)
    first = lm.next_logprobs([])
    assert lp[0] == pytest.approx(first[vocab.id("w3")], abs=1e-6)
    # the distribution after </s> is the one fed by hand
    with torch.no_grad():
        logits, _ = net.eval()(torch.tensor([[EOS_ID]]), net.init_state(1, torch.device("cpu")))
    np.testing.assert_allclose(first, torch.log_softmax(logits[-1, 0].double(), -1).numpy(),
                               atol=1e-6)


def test_state_is_carried_across_sentences():
    net, vocab, config = tiny()
    lm = NeuralLM(net, vocab, config)
    alone = lm.logprobs(stream(vocab, ["w5 w6"]))
    after = lm.logprobs(stream(vocab, ["w1 w2 w3", "w5 w6"]))[-3:]
    assert not np.allclose(alone, after)  # one continuous stream, not sentence by sentence


def test_next_logprobs_matches_logprobs_and_cache():
    net, vocab, config = tiny()
    lm = NeuralLM(net, vocab, config)
    words = "w1 w4 w4 w7".split()
    lp = lm.logprobs(stream(vocab, [" ".join(words)]))
    for i, w in enumerate(words + ["</s>"]):
        dist = lm.next_logprobs(words[:i])  # consecutive calls use the one-step cache
        assert np.exp(dist).sum() == pytest.approx(1.0, abs=1e-9)
        assert dist[vocab.id(w)] == pytest.approx(lp[i], abs=1e-5)
    fresh = NeuralLM(net, vocab, config).next_logprobs(words)
    np.testing.assert_allclose(lm.next_logprobs(words), fresh, atol=1e-6)
    # an unrelated context after a cached one is recomputed, not extended
    np.testing.assert_allclose(lm.next_logprobs(["w2"]),
                               NeuralLM(net, vocab, config).next_logprobs(["w2"]), atol=1e-6)


def test_eval_mode_no_grad_and_training_flag_restored():
    net, vocab, config = tiny(dropout=0.5)
    net.train()
    lm = NeuralLM(net, vocab, config)
    s = stream(vocab, SENTS[:5])
    a, b = lm.logprobs(s), lm.logprobs(s)
    np.testing.assert_array_equal(a, b)  # dropout off
    assert net.training
    assert all(p.grad is None for p in net.parameters())


def test_empty_stream_and_describe():
    net, vocab, config = tiny()
    lm = NeuralLM(net, vocab, config)
    assert len(lm.logprobs(TokenStream.from_sentences([], vocab))) == 0
    d = lm.describe()
    assert d["type"] == "neural" and d["model"] == "lstm" and d["layers"] == 2
    assert d["parameters"] == sum(p.numel() for p in net.parameters())
    assert "lstm" in d["summary"]


def test_bidirectional_scores_forward_direction():
    net, vocab, config = tiny(bidirectional=True)
    lm = NeuralLM(net, vocab, config)
    s = stream(vocab, SENTS[:5])
    lp = lm.logprobs(s)
    assert lp.shape == (len(s),) and np.all(np.isfinite(lp))
    d = lm.describe()
    assert d["bidirectional"] and "forward" in d["scoring"]
    assert "forward direction only" in d["summary"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    for name, c in sample_splits(MarkovSource(order=2, vocab_size=8, seed=2),
                                 {"train": 80, "valid": 10, "test": 15}, seed=0).items():
        c.write(d / f"{name}.txt")
    config = RunConfig(ModelConfig(model="gru", emsize=8, hidden=8, layers=1),
                       TrainConfig(epochs=1, bptt=5, batch_size=3, lr=0.01, optimizer="adam",
                                   device="cpu", threads=1, seed=3))
    trainer = Trainer(config, load_corpus(d), d / "m.pt", plot=False)
    trainer.train()
    trainer.close()
    return d, trainer


def test_load_neural_and_load_model(checkpoint):
    d, trainer = checkpoint
    lm = load_model(d / "m.pt")
    assert isinstance(lm, NeuralLM) and lm.vocab == trainer.vocab
    for p, q in zip(lm.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)
    result, lp, s = evaluate(lm, d / "test.txt")
    assert result.tokens == len(read_corpus(d / "test.txt", lm.vocab))
    np.testing.assert_array_equal(lp, load_neural(d / "m.pt", device="auto").logprobs(s))
    assert lm.describe()["epoch"] == 1


def test_loading_leaves_the_random_stream_alone(checkpoint):
    """Loading built the model with random initial weights (then replaced) from the caller's
    torch random stream: `torch.manual_seed(5); lmlab.load(m); torch.rand(1)` differed from
    the same without the load."""
    d, _ = checkpoint
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_model(d / "m.pt")
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_weights_that_do_not_fit(checkpoint, tmp_path):
    d, _ = checkpoint
    data = load_checkpoint(d / "m.pt")
    data["config"]["model"]["hidden"] = 12
    save_checkpoint(tmp_path / "bad.pt", data)
    with pytest.raises(LmlabError, match="weights do not fit a gru model"):
        load_neural(tmp_path / "bad.pt")
    data = load_checkpoint(d / "m.pt")
    data["config"]["model"]["model"] = "transformer"
    save_checkpoint(tmp_path / "bad2.pt", data)
    with pytest.raises(LmlabError, match="invalid configuration"):
        load_model(tmp_path / "bad2.pt")
    data = load_checkpoint(d / "m.pt")
    data["vocab"] = data["vocab"][:-1]
    save_checkpoint(tmp_path / "bad3.pt", data)
    with pytest.raises(LmlabError, match="vocabulary has"):
        load_model(tmp_path / "bad3.pt")


def test_evaluating_unrelated_text_is_an_error(checkpoint, tmp_path):
    d, _ = checkpoint
    other = tmp_path / "other.txt"
    other.write_text("completely different words\nhere too\n")
    with pytest.raises(LmlabError, match="outside the model's vocabulary"):
        evaluate(load_model(d / "m.pt"), other)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LmlabError, match="--device must be"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LmlabError, match="CUDA is not available"):
            resolve_device("cuda")


def test_ngram_side_never_imports_torch():
    code = ("import sys, lmlab.cli, lmlab.models, lmlab.ngram.model; "
            "lmlab.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
