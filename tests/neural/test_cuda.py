"""The CUDA path: every cell on the GPU matches the same model on the CPU, a run trained on the GPU
resumes bit for bit there and loads and scores on the CPU, and evaluation on the GPU follows the
shared protocol. Skipped where no GPU is present (run on a lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.metrics import summarize
from lmlab.neural.cells import VARIANTS, VariantLSTM
from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import load_corpus
from lmlab.neural.lm import load_neural
from lmlab.neural.models import build_model
from lmlab.neural.trainer import Trainer
from lmlab.synth import MarkovSource, write_splits
from tests.neural.lstm_reference import reference_lstm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: run on a machine with an NVIDIA GPU and a "
                                "CUDA build of torch")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    write_splits(MarkovSource(order=2, vocab_size=10, seed=5), d,
                 {"train": 150, "valid": 20, "test": 20}, seed=1)
    return load_corpus(d)


def check_cell_on_gpu(variant: str, compiled: bool = False) -> None:
    """The variant on the GPU (float64; through ``--compile`` if ``compiled``, then nothing may
    fall back to eager): outputs and parameter gradients against the reference on the CPU."""
    from lmlab.neural.compiling import compile_model, is_compiled

    torch.manual_seed(0)
    model = VariantLSTM(5, 8, 2, variant=variant).double()
    x = torch.randn(7, 3, 5, dtype=torch.float64, requires_grad=True)
    ref_out, _ = reference_lstm(x, None, model.gate_params(), variant)
    ref_out.square().sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    gpu = model.cuda()
    if compiled:
        torch._dynamo.reset()
        compile_model(gpu)
    xg = x.detach().cuda().requires_grad_()
    out, _ = gpu(xg)
    out.square().sum().backward()
    assert is_compiled(gpu) == compiled
    torch.testing.assert_close(out.cpu(), ref_out.detach(), rtol=1e-9, atol=1e-9)
    for p, g in zip(gpu.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad.cpu(), g, rtol=1e-8, atol=1e-9)


@pytest.mark.filterwarnings("error")  # e.g. cuDNN's weight-compaction warning for np
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_cell_on_gpu_matches_reference(variant):
    check_cell_on_gpu(variant)


@pytest.mark.parametrize("variant", ["vanilla", "cifg", "fgr", "np"])
def test_compiled_variant_cell_on_gpu_matches_reference(variant):
    """``--compile`` on the GPU (inductor's generated kernels), on a tiny shape."""
    check_cell_on_gpu(variant, compiled=True)


@pytest.mark.parametrize("model", ["nnlm", "rnn_tanh", "irnn", "lstm", "gru"])
def test_models_on_gpu_match_cpu(model):
    config = ModelConfig(model=model, vocab_size=30, emsize=8, hidden=8, layers=2, window=3)
    torch.manual_seed(0)
    cpu = build_model(config)
    gpu = build_model(config)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.randint(0, 30, (9, 4))
    y = torch.randint(0, 30, (9, 4))
    loss_cpu, _ = cpu.loss(x, y, cpu.init_state(4, torch.device("cpu")))
    loss_gpu, _ = gpu.loss(x.cuda(), y.cuda(), gpu.init_state(4, torch.device("cuda")))
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-4, atol=1e-5)


def _config(model="lstm", **model_kw) -> RunConfig:
    return RunConfig(ModelConfig(model=model, emsize=8, hidden=8, layers=2, **model_kw),
                     TrainConfig(epochs=2, bptt=6, batch_size=4, lr=0.01, optimizer="adam",
                                 clip=1.0, seed=3, device="cuda"))


@pytest.mark.parametrize("kw", [{}, {"variant": "cifg"}, {"bidirectional": True}],
                         ids=["lstm", "cifg", "bidirectional"])
def test_train_on_gpu_resume_bit_for_bit_and_score_on_cpu(corpus, tmp_path, kw):
    full = Trainer(_config(**kw), corpus, tmp_path / "full.pt", plot=False)
    full.train()
    full.close()
    part = Trainer(_config(**kw), corpus, tmp_path / "part.pt", plot=False)
    part.train(max_steps=5)
    part.close()
    resumed = Trainer(_config(**kw), corpus, tmp_path / "part.pt", resume=True, plot=False)
    resumed.train()
    resumed.close()
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert full.model.parameters().__next__().device.type == "cuda"
    lm_gpu = load_neural(tmp_path / "full.pt", device="cuda")
    lm_cpu = load_neural(tmp_path / "full.pt", device="cpu")
    a, b = lm_gpu.logprobs(corpus.test), lm_cpu.logprobs(corpus.test)
    assert len(a) == len(corpus.test)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert summarize(a, corpus.test).perplexity == pytest.approx(
        summarize(b, corpus.test).perplexity, rel=1e-4)


def test_gpu_eval_independent_of_chunk(corpus, tmp_path):
    t = Trainer(_config(), corpus, tmp_path / "m.pt", plot=False)
    t.train(max_steps=3)
    t.close()
    a = load_neural(tmp_path / "m.pt", device="cuda", chunk=5).logprobs(corpus.valid)
    b = load_neural(tmp_path / "m.pt", device="cuda", chunk=1000).logprobs(corpus.valid)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
