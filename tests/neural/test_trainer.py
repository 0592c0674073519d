"""The trainer: truncated BPTT over a stream, schedules, NaN rollback, bit-for-bit resume,
reproducibility, side files, and one-line errors for bad options and data. Tiny models only."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.metrics import summarize
from lmlab.neural.checkpoint import load_checkpoint
from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import DataError, batchify, load_corpus
from lmlab.neural.lm import load_neural
from lmlab.neural.run_files import sidecar_paths
from lmlab.neural.trainer import Trainer, TrainingInterrupted, check_train_options
from lmlab.synth import MarkovSource, sample_splits, write_splits
from tests.neural.faults import nan_at

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    write_splits(MarkovSource(order=2, vocab_size=10, seed=5), d,
                 {"train": 120, "valid": 20, "test": 20}, seed=1)
    return d


@pytest.fixture(scope="module")
def corpus(data_dir):
    return load_corpus(data_dir)


def cfg(model="lstm", **train) -> RunConfig:
    t = dict(epochs=2, bptt=6, batch_size=4, lr=0.5, optimizer="adam", clip=1.0, seed=7,
             device="cpu", threads=1, decay_start=1, lr_decay=0.8)
    t.update(train)
    return RunConfig(ModelConfig(model=model, emsize=8, hidden=8, layers=2, dropout=0.2,
                                 window=3),
                     TrainConfig(**t))


def train(config, corpus, out, max_steps=None, **kw):
    kw.setdefault("plot", False)
    trainer = Trainer(config, corpus, out, **kw)
    try:
        result = trainer.train(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer, result


def assert_same_run(a: Trainer, b: Trainer) -> None:
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(),
                                 strict=True):
        assert torch.equal(p, q), name
    assert a.history["epochs"] == b.history["epochs"]
    assert a.history["step_loss"] == b.history["step_loss"]
    assert a.history["grad_norm"] == b.history["grad_norm"]
    assert a.lr == b.lr and a.step == b.step and a.epoch == b.epoch
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for k in sa:
        for name, v in sa[k].items():
            assert torch.equal(v, sb[k][name]), (k, name)


def test_batches_cover_stream_and_windows(corpus, tmp_path):
    trainer = Trainer(cfg(), corpus, tmp_path / "never-written.pt")
    x, y = batchify(corpus.train, 4)
    assert trainer.inputs.shape == x.shape == (len(corpus.train) // 4, 4)
    assert trainer.windows[0] == (0, 6) and trainer.windows[-1][1] == x.size(0)
    trainer.close()


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_resume_after_max_steps_is_bit_for_bit(corpus, tmp_path, model):
    full, res = train(cfg(model), corpus, tmp_path / "full.pt")
    n = len(full.windows)
    assert res.status == "finished" and full.step == 2 * n
    k = n + n // 2  # mid second epoch: hidden state, running sums and RNG carried
    part, res = train(cfg(model), corpus, tmp_path / "part.pt", max_steps=k)
    assert res.status == "max_steps" and part.step == k
    data = load_checkpoint(tmp_path / "part.pt")
    assert data["progress"]["step"] == k and data["progress"]["state"] is not None
    resumed, res = train(cfg(model), corpus, tmp_path / "part.pt", resume=True)
    assert res.status == "finished"
    assert_same_run(full, resumed)
    # the saved files agree too
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "part.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name])
    assert a["history"]["epochs"] == b["history"]["epochs"]
    steps = [json.loads(line) for line in sidecar_paths(tmp_path / "part.pt")["metrics"]
             .read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == list(range(1, 2 * n + 1))
    # every record has the fields of the uninterrupted run's (tokens per second and an epoch's
    # seconds, which the checkpoint does not keep, were lost by the resume's rewrite)
    whole = [json.loads(line) for line in sidecar_paths(tmp_path / "full.pt")["metrics"]
             .read_text().splitlines()]
    extra = [r for r in steps if r.get("event") == "resume" or r.get("when") == "end"]
    assert [sorted(r) for r in steps if r not in extra] == [sorted(r) for r in whole]


def test_interrupt_saves_and_resumes_bit_for_bit(corpus, tmp_path):
    full, _ = train(cfg(), corpus, tmp_path / "full.pt")

    def ctrl_c(trainer, step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg(), corpus, tmp_path / "int.pt", step_hook=ctrl_c)
    assert "checkpoint saved to" in str(stop.value) and "--resume" in str(stop.value)
    assert load_checkpoint(tmp_path / "int.pt")["progress"]["step"] == 5
    resumed, _ = train(cfg(), corpus, tmp_path / "int.pt", resume=True)
    assert_same_run(full, resumed)


def test_resume_at_epoch_boundary_and_repeated(corpus, tmp_path):
    full, _ = train(cfg(epochs=3), corpus, tmp_path / "full.pt")
    n = len(full.windows)
    out = tmp_path / "p.pt"
    train(cfg(epochs=3), corpus, out, max_steps=n)  # exactly one epoch, before validation
    train(cfg(epochs=3), corpus, out, max_steps=n + 3, resume=True)
    resumed, _ = train(cfg(epochs=3), corpus, out, resume=True)
    assert_same_run(full, resumed)


def test_same_seed_same_parameters_other_seed_differs(corpus, tmp_path):
    a, _ = train(cfg(epochs=1), corpus, tmp_path / "a.pt")
    b, _ = train(cfg(epochs=1), corpus, tmp_path / "b.pt")
    c, _ = train(cfg(epochs=1, seed=8), corpus, tmp_path / "c.pt")
    assert_same_run(a, b)
    assert not torch.equal(next(a.model.parameters()), next(c.model.parameters()))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("model", ["nnlm", "rnn_tanh", "irnn"])
def test_optimisers_and_models_train(corpus, tmp_path, optimizer, model):
    config = cfg(model, optimizer=optimizer, epochs=1, weight_decay=0.01)
    if model != "nnlm":
        config.model.layers = 1
    trainer, result = train(config, corpus, tmp_path / "m.pt")
    assert result.status == "finished"
    assert all(math.isfinite(x) for x in trainer.history["step_loss"])
    assert math.isfinite(result.epochs[0]["valid_ppl"])


def test_validation_uses_the_shared_protocol(corpus, tmp_path):
    trainer, result = train(cfg(epochs=1), corpus, tmp_path / "m.pt")
    lm = load_neural(tmp_path / "m.pt")
    lp = lm.logprobs(corpus.valid)
    assert len(lp) == len(corpus.valid)  # every token, the first one too
    expected = summarize(lp, corpus.valid).perplexity
    assert result.epochs[0]["valid_ppl"] == pytest.approx(expected, rel=1e-9)
    test = trainer.evaluate_test()
    assert test["tokens"] == len(corpus.test)
    assert load_checkpoint(tmp_path / "m.pt")["history"]["test"]["perplexity"] == \
        pytest.approx(test["perplexity"])


def test_zaremba_decay_schedule(corpus, tmp_path):
    trainer, result = train(cfg(epochs=4, decay_start=2, lr_decay=0.5, lr=0.4), corpus,
                            tmp_path / "m.pt")
    assert [e["lr"] for e in result.epochs] == [0.4, 0.4, 0.2, 0.1]
    assert trainer.lr == 0.05


def fake_valid(monkeypatch, values):
    seq = iter(values)
    monkeypatch.setattr(Trainer, "evaluate", lambda self, stream: next(seq))


def test_plateau_decay_and_early_stop(corpus, tmp_path, monkeypatch):
    fake_valid(monkeypatch, [10.0, 11.0, 9.0, 9.5, 9.6, 9.7, 9.8])
    config = cfg(epochs=7, decay_start=0, lr_decay=0.5, lr=0.4, early_stop=3)
    trainer, result = train(config, corpus, tmp_path / "m.pt")
    # plateau patience 1 (decay_start 0): decay after every epoch without improvement
    assert [e["lr"] for e in result.epochs] == [0.4, 0.4, 0.2, 0.2, 0.1, 0.05]
    assert result.status == "early_stop" and result.epoch == 6
    assert result.best_valid_ppl == 9.0
    again, result2 = train(config, corpus, tmp_path / "m.pt", resume=True)
    assert result2.status == "early_stop" and again.step == trainer.step


def test_grad_norm_logged_before_clipping(corpus, tmp_path):
    config = cfg(optimizer="sgd", lr=1.0, clip=1e-3, epochs=1)
    config.model.dropout = 0.0
    seen = []

    def hook(trainer, step):
        if step == 1:
            seen.append([p.detach().clone() for p in trainer.model.parameters()])

    trainer = Trainer(config, corpus, tmp_path / "m.pt", step_hook=hook, plot=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    trainer.close()
    norms = trainer.history["grad_norm"]
    assert len(norms) == trainer.step and all(n > 1e-3 for n in norms)  # pre-clip norms
    moved = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(seen[0], before,
                                                                      strict=True)))
    assert moved == pytest.approx(1e-3, rel=1e-3)  # SGD step of lr * clipped norm
    lines = sidecar_paths(tmp_path / "m.pt")["metrics"].read_text().splitlines()
    assert json.loads(lines[0])["grad_norm"] == norms[0]


def test_nan_loss_rolls_back_and_lowers_lr(corpus, tmp_path):
    config = cfg(epochs=2, decay_start=0, lr_decay=1.0, nan_lr_factor=0.5, lr=0.4)
    trainer = Trainer(config, corpus, tmp_path / "m.pt", plot=False)
    n = len(trainer.windows)
    nan_at({n + 3})(trainer)  # third step of epoch 2: back to the end-of-epoch-1 checkpoint
    result = trainer.train()
    trainer.close()
    assert result.status == "finished"
    assert trainer.nan_events == 1
    event = trainer.history["events"][0]
    assert event["event"] == "nan_rollback" and event["to_step"] == n and event["lr"] == 0.2
    assert trainer.step == 2 * n  # the rolled-back steps were redone
    assert [e["lr"] for e in result.epochs] == [0.4, 0.2]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nan_gradient_rolls_back(corpus, tmp_path):
    config = cfg(epochs=1, nan_lr_factor=0.25, lr=0.4, decay_start=0, lr_decay=1.0)
    trainer = Trainer(config, corpus, tmp_path / "m.pt", plot=False)
    weight = next(trainer.model.parameters())
    fired = []

    def poison(grad):
        if not fired:
            fired.append(1)
            return grad * float("inf")
        return grad

    weight.register_hook(poison)
    result = trainer.train()
    trainer.close()
    assert result.status == "finished" and trainer.nan_events == 1
    assert trainer.history["events"][0]["what"] == "gradient norm"
    assert trainer.lr == pytest.approx(0.1)


def test_persistent_nan_gives_up(corpus, tmp_path):
    config = cfg(epochs=1, max_nan_retries=2)
    trainer = Trainer(config, corpus, tmp_path / "m.pt", plot=False)
    nan_at(set(range(1, 1000)))(trainer)
    with pytest.raises(LmlabError, match="training diverged.*after 2 rollback"):
        trainer.train()
    trainer.close()
    assert load_checkpoint(tmp_path / "m.pt")["progress"]["step"] == 0  # still loadable


def test_side_files(corpus, tmp_path):
    out = tmp_path / "run.pt"
    trainer, _ = train(cfg(epochs=2), corpus, out, plot=True)
    paths = sidecar_paths(out)
    config = json.loads(paths["config"].read_text())
    assert config["config"]["model"]["hidden"] == 8
    assert config["config"]["model"]["vocab_size"] == len(corpus.vocab)
    records = [json.loads(line) for line in paths["metrics"].read_text().splitlines()]
    assert sum("grad_norm" in r for r in records) == trainer.step
    assert [r["epoch"] for r in records if "valid_ppl" in r] == [1, 2]
    assert paths["curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = load_checkpoint(out)
    assert data["vocab"] == corpus.vocab.itos
    assert set(data) >= {"config", "vocab", "model", "optimizer", "schedule", "rng", "progress",
                         "history", "format", "version"}


def test_refuses_to_clobber_without_resume(corpus, tmp_path):
    train(cfg(epochs=1), corpus, tmp_path / "m.pt")
    with pytest.raises(LmlabError, match="exists.*--resume"):
        Trainer(cfg(epochs=1), corpus, tmp_path / "m.pt")
    Trainer(cfg(epochs=1), corpus, tmp_path / "m.pt", overwrite=True).close()


def test_resume_mismatches(corpus, tmp_path, data_dir):
    out = tmp_path / "m.pt"
    train(cfg(epochs=1), corpus, out, max_steps=3)
    with pytest.raises(LmlabError, match="model type lstm, not gru"):
        Trainer(cfg("gru", epochs=1), corpus, out, resume=True)
    other = cfg(epochs=1)
    other.model.hidden = 12
    with pytest.raises(LmlabError, match="--hidden 12 differs"):
        Trainer(other, corpus, out, resume=True)
    small = sample_splits(MarkovSource(order=2, vocab_size=6, seed=5),
                          {"train": 100, "valid": 10}, seed=2)
    d = tmp_path / "other"
    d.mkdir()
    for name, c in small.items():
        c.write(d / f"{name}.txt")
    with pytest.raises(LmlabError, match="vocabulary .* differs"):
        Trainer(cfg(epochs=1), load_corpus(d), out, resume=True)
    with pytest.raises(LmlabError, match="no such file"):
        Trainer(cfg(epochs=1), corpus, tmp_path / "none.pt", resume=True)
    # allowed change: more epochs
    t, result = train(cfg(epochs=2), corpus, out, resume=True)
    assert result.epoch == 2


@pytest.mark.parametrize("section,key,value,match", [
    ("train", "epochs", 0, "--epochs must be an integer >= 1"),
    ("train", "bptt", 0, "--bptt"),
    ("train", "lr", -1.0, "--lr must be a positive"),
    ("train", "lr", float("nan"), "--lr"),
    ("train", "clip", -1.0, "--clip"),
    ("train", "clip", float("inf"), "--clip must be a finite"),
    ("train", "weight_decay", float("nan"), "--weight-decay"),
    ("train", "seed", -1, "--seed must be an integer >= 0"),
    ("train", "threads", -2, "--threads"),
    ("train", "lr_decay", 1.5, "--lr-decay"),
    ("train", "nan_lr_factor", 1.0, "--nan-lr-factor"),
    ("train", "optimizer", "rmsprop", "--optimizer"),
    ("train", "early_stop", -1, "--early-stop"),
    ("train", "device", "tpu", "--device must be"),
    ("train", "batch_size", 2.5, "batch_size must be of type int"),
    ("train", "lr", "fast", "lr must be of type float"),
    ("model", "dropout", 1.0, "--dropout"),
    ("model", "dropout", float("nan"), "--dropout"),
    ("model", "init_range", float("inf"), "--init-range"),
    ("model", "hidden", 0, "--hidden"),
    ("model", "tied", "yes", "tied must be of type bool"),
])
def test_out_of_range_options(corpus, tmp_path, section, key, value, match):
    config = cfg()
    setattr(getattr(config, section), key, value)
    with pytest.raises(LmlabError, match=match):
        check_train_options(config)
        Trainer(config, corpus, tmp_path / "m.pt", plot=False)
    assert not (tmp_path / "m.pt").exists()


def write(d, **files):
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.txt").write_text(text)
    return d


@pytest.mark.parametrize("files,match", [
    ({"train": "", "valid": "a b\n"}, "empty corpus"),
    ({"train": "\n\n\n", "valid": "a\n"}, "no words"),
    ({"train": "a b\n", "valid": ""}, "empty corpus"),
    ({"valid": "a b\n"}, "no train.txt"),
    ({"train": "a b\n"}, "no valid.txt"),
])
def test_data_without_tokens(tmp_path, files, match):
    with pytest.raises(LmlabError, match=match):
        load_corpus(write(tmp_path / "d", **files))


def test_too_little_data_for_a_batch(tmp_path):
    corpus = load_corpus(write(tmp_path / "d", train="a b\n", valid="a\n"))
    with pytest.raises(DataError, match="cannot fill a batch of 4 rows"):
        Trainer(cfg(), corpus, tmp_path / "m.pt")
    with pytest.raises(LmlabError, match="no such data directory"):
        load_corpus(tmp_path / "missing")


def test_bidirectional_trains_and_resumes(corpus, tmp_path):
    config = cfg(epochs=2)
    config.model.bidirectional = True
    full, result = train(config, corpus, tmp_path / "full.pt")
    assert all(math.isfinite(e["train_ppl"]) and math.isfinite(e["valid_ppl"])
               for e in result.epochs)
    config = cfg(epochs=2)
    config.model.bidirectional = True
    train(config, corpus, tmp_path / "part.pt", max_steps=len(full.windows) + 2)
    resumed, _ = train(config, corpus, tmp_path / "part.pt", resume=True)
    assert_same_run(full, resumed)
    lm = load_neural(tmp_path / "part.pt")
    assert "forward direction only" in lm.describe()["summary"]
    record = json.loads(sidecar_paths(tmp_path / "full.pt")["metrics"].read_text()
                        .splitlines()[0])
    assert {"forward", "backward", "cloze"} <= set(record)


def test_library_trainer_leaves_process_settings_alone(corpus, tmp_path, monkeypatch):
    """From Python, the run's thread count holds only while it computes; glibc's thresholds and
    cuDNN's flags are left as the caller had them."""
    from lmlab.neural import heap

    monkeypatch.setattr(heap, "_applied", None)  # (None: keep_freed_memory never called)
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    threads = torch.get_num_threads()
    seen = []
    trainer = Trainer(cfg(epochs=1, threads=threads + 1), corpus, tmp_path / "m.pt",
                      plot=False, step_hook=lambda t, step: seen.append(torch.get_num_threads()))
    assert torch.get_num_threads() == threads
    trainer.train(max_steps=3)
    trainer.evaluate_test()
    trainer.close()
    assert seen == [threads + 1] * 3  # the run's own while it trains
    assert torch.get_num_threads() == threads
    assert heap._applied is None
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)
    # on CUDA, cuDNN is deterministic while the trainer computes, and as it was afterwards
    trainer.device = torch.device("cuda")
    with trainer._run_settings():
        assert (cudnn.benchmark, cudnn.deterministic) == (False, True)
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)


def test_process_settings_opt_in(corpus, tmp_path, monkeypatch):
    """What `lmlab train` asks for: the thread count and glibc's thresholds for good."""
    from lmlab.neural import heap

    monkeypatch.setattr(heap, "_applied", None)
    threads = torch.get_num_threads()
    try:
        Trainer(cfg(epochs=1, threads=threads + 1), corpus, tmp_path / "m.pt", plot=False,
                process_settings=True).close()
        assert torch.get_num_threads() == threads + 1
        assert heap._applied is not None  # (True on glibc)
    finally:
        torch.set_num_threads(threads)


def test_short_run_validates_at_its_end(corpus, tmp_path):
    out = tmp_path / "m.pt"
    trainer, result = train(cfg(), corpus, out, max_steps=5, plot=True)
    n = len(trainer.windows)
    assert result.status == "max_steps" and result.epochs == [] and result.best_valid_ppl is None
    expected = summarize(load_neural(out).logprobs(corpus.valid), corpus.valid).perplexity
    assert result.valid == {"step": 5, "epoch": round(5 / n, 4),
                            "valid_ppl": pytest.approx(expected, rel=1e-9), "when": "end"}
    assert load_checkpoint(out)["history"]["valid"] == [result.valid]
    records = [json.loads(line) for line in sidecar_paths(out)["metrics"].read_text()
               .splitlines()]
    assert records[-1] == result.valid and records[-2]["step"] == 5
    assert sidecar_paths(out)["curve"].read_bytes()[:4] == b"\x89PNG"
    # resumed to the end: no second validation at the last epoch's end
    resumed, result = train(cfg(), corpus, out, resume=True)
    assert [v["when"] for v in resumed.history["valid"]] == ["end", "epoch", "epoch"]
    assert result.valid == resumed.history["valid"][-1]
    assert result.valid["epoch"] == 2 and result.valid["step"] == 2 * n
    assert result.best_valid_epoch in (1, 2)
    assert result.best_valid_ppl == result.epochs[result.best_valid_epoch - 1]["valid_ppl"]
    # resumed with nothing left to do: the same last validation, not a new one
    again, result2 = train(cfg(), corpus, out, resume=True)
    assert again.history["valid"] == resumed.history["valid"] and result2.valid == result.valid


def test_eval_every_only_watches(corpus, tmp_path):
    """Validations every N steps are recorded at their step and epoch, and change nothing else:
    same weights and history as without them, and resume bit for bit."""
    plain, _ = train(cfg(), corpus, tmp_path / "plain.pt")
    watched, result = train(cfg(eval_every=4), corpus, tmp_path / "w.pt")
    assert_same_run(plain, watched)
    n = len(plain.windows)
    every = [v for v in watched.history["valid"] if v["when"] == "every"]
    assert [v["step"] for v in every] == [s for s in range(4, 2 * n, 4) if s != n]
    assert all(v["epoch"] == round(v["step"] / n, 4) for v in every)
    assert [v for v in watched.history["valid"] if v["when"] == "epoch"] == [
        {"step": e["step"], "epoch": e["epoch"], "valid_ppl": e["valid_ppl"], "when": "epoch"}
        for e in result.epochs]
    records = [json.loads(line) for line in sidecar_paths(tmp_path / "w.pt")["metrics"]
               .read_text().splitlines()]
    assert [r for r in records if r.get("when") == "every"] == every
    # stopped between two validations and resumed: the same run (plus the stop's validation)
    part = tmp_path / "part.pt"
    train(cfg(eval_every=4), corpus, part, max_steps=n + 3)
    resumed, _ = train(cfg(eval_every=4), corpus, part, resume=True)
    assert_same_run(watched, resumed)
    assert [v for v in resumed.history["valid"] if v["when"] != "end"] == \
        watched.history["valid"]
    logged = [json.loads(line) for line in sidecar_paths(part)["metrics"].read_text()
              .splitlines()]
    assert [r["step"] for r in logged if r.get("when") == "end"] == [n + 3]


def test_checkpoint_from_before_validation_records_resumes(corpus, tmp_path):
    """A checkpoint written before eval_every, max_steps and history["valid"] existed."""
    from lmlab.neural.checkpoint import save_checkpoint

    full, _ = train(cfg(), corpus, tmp_path / "full.pt")
    out = tmp_path / "old.pt"
    n = len(full.windows)
    train(cfg(), corpus, out, max_steps=n + 2)
    data = load_checkpoint(out)
    for key in ("eval_every", "max_steps"):
        del data["config"]["train"][key]
    del data["history"]["valid"]
    save_checkpoint(out, {k: v for k, v in data.items() if k not in ("format", "version")})
    resumed, result = train(cfg(), corpus, out, resume=True)
    assert_same_run(full, resumed)
    assert [v["when"] for v in resumed.history["valid"]] == ["epoch", "epoch"]
    assert result.valid["step"] == 2 * n


def test_max_steps_in_the_configuration(corpus, tmp_path):
    out = tmp_path / "m.pt"
    trainer, result = train(cfg(max_steps=5), corpus, out)
    assert result.status == "max_steps" and trainer.step == 5
    assert load_checkpoint(out)["config"]["train"]["max_steps"] == 5
    again, result = train(cfg(max_steps=5), corpus, out, resume=True)
    assert result.status == "max_steps" and again.step == 5  # at its limit: nothing to do
    done, result = train(cfg(max_steps=5), corpus, out, resume=True, max_steps=0)  # no limit
    assert result.status == "finished" and done.step == 2 * len(done.windows)
