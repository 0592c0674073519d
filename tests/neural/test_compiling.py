"""``--compile`` (lmlab.neural.compiling): what it compiles, the one-warning fallback to eager on
any compile failure, and the trainer and CLI around it. The compiled cell's numbers against the
float64 reference are in test_cells.py."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lmlab.cli import main
from lmlab.errors import LmlabWarning
from lmlab.neural.cells import VariantLSTM
from lmlab.neural.compiling import compile_model, compiled_cells, is_compiled
from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import load_corpus
from lmlab.neural.trainer import Trainer
from lmlab.synth import MarkovSource, write_splits

torch.set_num_threads(1)


class TwoCells(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = VariantLSTM(3, 4, 2, variant="cifg")
        self.b = VariantLSTM(4, 4, 1, variant="fgr")

    def forward(self, x):
        out, _ = self.a(x)
        return self.b(out)[0]


class Fused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 4)
        self.np = VariantLSTM(4, 4, variant="np")  # np runs on torch's fused LSTM: not a cell

    def forward(self, x):
        return self.np(self.rnn(x)[0])[0]


@pytest.fixture
def failing_compile(monkeypatch):
    """torch.compile whose backend fails, as it does without a C compiler for inductor."""
    real = torch.compile

    def backend(gm, example_inputs):
        raise RuntimeError("no C compiler found\n(second line)")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend=backend))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_what_is_compiled():
    model = TwoCells()
    assert compiled_cells(model) == [model.a, model.b]
    what, seconds = compile_model(model)
    assert what == "the LSTM cell step (2 cell(s))" and seconds is None
    assert is_compiled(model) and "forward" not in model.__dict__
    fused = Fused()
    assert compiled_cells(fused) == []
    what, _ = compile_model(fused)
    assert what == "the model's forward" and is_compiled(fused)
    assert set(fused.state_dict()) == set(Fused().state_dict())  # checkpoints unchanged


@pytest.mark.parametrize("make", [TwoCells, Fused])
def test_compile_failure_falls_back_to_eager_with_one_warning(make, failing_compile):
    torch.manual_seed(0)
    model = make()
    x = torch.randn(5, 2, 3)
    want = model(x)

    def probe():
        model(x).sum().backward()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _, seconds = compile_model(model, probe)
        got = model(x)
        compile_model(model)  # and failing in the middle of a forward call: that call goes on
        first = model(x)
        assert not is_compiled(model)
        torch.testing.assert_close(first, want)  # (the per-step loop: rounding differs)
    mine = [w for w in seen if issubclass(w.category, LmlabWarning)]
    assert len(mine) == 2, [str(w.message) for w in mine]  # one per compile, however many parts
    assert mine[0].message.args == mine[1].message.args
    message = str(mine[0].message)
    assert "\n" not in message and "no C compiler found" in message
    assert message.startswith("--compile: torch.compile failed (") and "running eagerly" in message
    assert seconds is None and not is_compiled(model)
    assert all(cell.step_fn is None for cell in compiled_cells(model))  # back on the Function
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_probe_times_the_first_use():
    torch._dynamo.reset()
    model = VariantLSTM(3, 4, 1)
    x = torch.randn(2, 2, 3)
    calls = []

    def probe():
        calls.append(1)
        model(x)[0].sum().backward()

    _, seconds = compile_model(model, probe)
    assert calls == [1] and seconds > 0 and is_compiled(model)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    write_splits(MarkovSource(order=2, vocab_size=8, seed=4), d,
                 {"train": 60, "valid": 10, "test": 10}, seed=0)
    return d


def test_trainer_compile_changes_nothing_but_speed(data_dir, tmp_path):
    """compile=True: the first use is logged with its time, the probe leaves the run as it was
    (RNG, gradients: dropout draws the same masks), and the weights match an eager run's to
    float32 rounding; compile may change on resume."""
    torch._dynamo.reset()
    corpus = load_corpus(data_dir)

    def run(compile_: bool, out):
        config = RunConfig(ModelConfig(model="lstm", variant="vanilla", emsize=6, hidden=6,
                                       layers=2, dropout=0.3),
                           TrainConfig(epochs=1, bptt=4, batch_size=3, lr=0.01, optimizer="adam",
                                       seed=2, device="cpu", threads=1, max_steps=4,
                                       compile=compile_))
        lines = []
        trainer = Trainer(config, corpus, out, plot=False, log=lines.append)
        try:
            trainer.train()
        finally:
            trainer.close()
        return trainer, lines

    eager, eager_lines = run(False, tmp_path / "eager.pt")
    compiled, lines = run(True, tmp_path / "compiled.pt")
    assert not any("torch.compile" in line for line in eager_lines)
    first = [line for line in lines if line.startswith("compiled ")]
    assert len(first) == 1 and "the LSTM cell step (1 cell(s)) with torch.compile" in first[0]
    assert is_compiled(compiled.model)
    for (name, p), q in zip(eager.model.named_parameters(), compiled.model.parameters(),
                            strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)
    # compile is a resumable change: on, then off
    config = RunConfig.from_dict(compiled.config.to_dict())
    config.train.compile, config.train.max_steps = False, 5
    trainer = Trainer(config, corpus, tmp_path / "compiled.pt", resume=True, plot=False)
    try:
        assert trainer.train().step == 5 and not is_compiled(trainer.model)
    finally:
        trainer.close()


def test_cli_compile_failure_is_one_warning_line(data_dir, tmp_path, capsys, failing_compile):
    rc = main(["train", "gru", "--data", str(data_dir), "-o", str(tmp_path / "m.pt"),
               "--emsize", "6", "--hidden", "6", "--layers", "1", "--bptt", "4",
               "--batch-size", "3", "--threads", "1", "--device", "cpu", "--max-steps", "2",
               "--compile"])
    err = capsys.readouterr().err
    assert rc == 0
    warned = [line for line in err.splitlines() if line.startswith("lmlab: warning: ")]
    assert len(warned) == 1 and warned[0].startswith("lmlab: warning: --compile: torch.compile "
                                                     "failed (")
    assert "no C compiler found" in warned[0]


def test_python_api_option_reaches_the_configuration():
    from lmlab.api import _run_config

    assert _run_config("lstm", {"compile": True}).train.compile is True
    assert _run_config("lstm", {}).train.compile is False  # default: eager


def test_every_cell_has_its_own_compile_cache(monkeypatch):
    """Dynamo allows 8 graphs per code object and then silently runs eagerly: cells of several
    variants, trained and evaluated in one process, must each stay compiled."""
    import torch._dynamo.config as dynamo_config

    torch._dynamo.reset()
    monkeypatch.setattr(dynamo_config, "fail_on_recompile_limit_hit", True)  # raise, not eager
    models = [VariantLSTM(3, 4, 2, variant=v) for v in ("vanilla", "nig", "cifg")]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for model in models:
            compile_model(model)
            model(torch.randn(2, 2, 3))[0].sum().backward()  # h0 without, then h with grad
            with torch.no_grad():
                model(torch.randn(2, 1, 3))
    assert not [w for w in seen if issubclass(w.category, LmlabWarning)]
    assert all(is_compiled(m) for m in models)
