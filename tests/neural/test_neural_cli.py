"""``lmlab train`` and the model-agnostic commands (eval, score, generate, ngram next) on a tiny
trained checkpoint, through the real command line: one-line errors, resume, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmlab.cli import main
from lmlab.errors import LmlabError
from lmlab.neural.checkpoint import load_checkpoint
from lmlab.neural.lm import load_neural
from lmlab.neural.run_files import sidecar_paths
from lmlab.synth import MarkovSource, write_splits
from tests.cli_helpers import fails, ok

torch.set_num_threads(1)

TINY = ["--emsize", "8", "--hidden", "8", "--layers", "1", "--bptt", "5", "--batch-size", "4",
        "--threads", "1", "--device", "cpu", "--seed", "3", "--optimizer", "adam", "--lr",
        "0.01"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write_splits(MarkovSource(order=2, vocab_size=8, seed=4), d,
                 {"train": 80, "valid": 10, "test": 15}, seed=0)
    return d


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "lstm.pt"
    rc = main(["train", "lstm", "--data", str(data_dir), "--out", str(out), "--epochs", "2",
               "--json", *TINY])
    assert rc == 0
    return out


def test_train_reports_test_perplexity_like_eval(trained, data_dir, capsys):
    report = json.loads(ok(capsys, "train", "lstm", "--data", data_dir, "--out", trained,
                           "--resume", "--json", "--epochs", "2"))
    assert report["status"] == "finished" and report["epochs"] == 2
    ev = json.loads(ok(capsys, "eval", trained, data_dir / "test.txt", "--json"))
    assert ev["perplexity"] == pytest.approx(report["test"]["perplexity"], rel=1e-12)
    assert ev["tokens"] == report["test"]["tokens"]
    text = ok(capsys, "eval", trained, data_dir / "test.txt")
    assert "lstm, 1x8" in text and "perplexity" in text


def test_score_generate_next(trained, capsys):
    rows = json.loads(ok(capsys, "score", trained, "w1 w2 w3", "--json"))
    assert [r["token"] for r in rows] == ["w1", "w2", "w3", "</s>"]
    assert all(r["logprob"] < 0 for r in rows)
    assert "total" in ok(capsys, "score", trained, "w1", "zz")
    a = ok(capsys, "generate", trained, "--words", "15", "--seed", "5", "--temperature", "0.8")
    b = ok(capsys, "generate", trained, "--words", "15", "--seed", "5", "--temperature", "0.8")
    assert a == b and len(a.split()) >= 15
    nxt = json.loads(ok(capsys, "ngram", "next", trained, "w1", "--top", "3", "--json"))
    assert len(nxt) == 3 and nxt[0]["prob"] >= nxt[1]["prob"]
    every = json.loads(ok(capsys, "ngram", "next", trained, "w1", "--top", "1000", "--json"))
    words = [r["word"] for r in every]
    assert "<s>" not in words and "</s>" in words  # <s> is never a next word
    assert len(words) == len(load_neural(trained).vocab) - 1


def test_flags_override_config_file(data_dir, tmp_path, capsys):
    conf = tmp_path / "run.toml"
    conf.write_text('[model]\nhidden = 12\nemsize = 12\ndropout = 0.1\n'
                    '[train]\nepochs = 1\nbatch_size = 2\nlr_decay = 0.9\n')
    out = tmp_path / "m.pt"
    ok(capsys, "train", "gru", "--data", data_dir, "--out", out, "--config", conf, "--hidden",
       "8", "--emsize", "8", "--threads", "1", "--device", "cpu")
    c = load_checkpoint(out)["config"]
    assert c["model"]["hidden"] == 8 and c["model"]["dropout"] == 0.1
    assert c["model"]["model"] == "gru"
    assert c["train"]["batch_size"] == 2 and c["train"]["lr_decay"] == 0.9
    assert json.loads(sidecar_paths(out)["config"].read_text())["config"] == c


def test_irnn_and_nnlm_train(data_dir, tmp_path, capsys):
    for model in ("irnn", "nnlm"):
        out = tmp_path / f"{model}.pt"
        window = ["--window", "3"] if model == "nnlm" else []  # (nnlm's alone)
        ok(capsys, "train", model, "--data", data_dir, "--out", out, "--epochs", "1", *window,
           *TINY)
        assert load_checkpoint(out)["config"]["model"]["model"] == model


def test_resume_cli_matches_uninterrupted(data_dir, tmp_path, capsys):
    args = ["--data", data_dir, "--epochs", "2", "--dropout", "0.3", *TINY]
    ok(capsys, "train", "lstm", "--out", tmp_path / "full.pt", *args)
    ok(capsys, "train", "lstm", "--out", tmp_path / "part.pt", "--max-steps", "7", *args)
    assert load_checkpoint(tmp_path / "part.pt")["progress"]["step"] == 7
    # (a resumed run keeps its --max-steps 7: 0 lifts the limit)
    ok(capsys, "train", "lstm", "--out", tmp_path / "part.pt", "--resume", "--max-steps", "0",
       *args)
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "part.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert a["history"]["epochs"] == b["history"]["epochs"]
    assert a["history"]["test"] == b["history"]["test"]
    assert torch.equal(a["history"]["step_loss"], b["history"]["step_loss"])


@pytest.mark.parametrize("argv,needle", [
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--bptt", "0"], "--bptt"),
    (["--batch-size", "0"], "--batch-size"),
    (["--clip", "-2"], "--clip"),
    (["--lr-decay", "0"], "--lr-decay"),
    (["--emsize", "8", "--hidden", "16", "--tied"], "--tied needs --emsize == --hidden"),
    (["--device", "quantum"], "--device must be"),
    (["--max-steps", "-1"], "--max-steps"),
    (["--batch-size", "100000"], "cannot fill a batch"),
    (["--seed", str(2**64)], "--seed must be below 2**64"),  # (was a traceback)
    (["--threads", "100000"], "far more than this machine"),  # (torch hung or crashed)
    (["--config", "."], "is a directory, expected a TOML file"),
    (["--window", "3"], "--window applies to nnlm only, not lstm"),  # (were silently ignored)
    (["--direct"], "--direct applies to nnlm only"),
])
def test_bad_options_are_one_line_errors(data_dir, tmp_path, capsys, argv, needle):
    out = tmp_path / "m.pt"
    msg = fails(capsys, "train", "lstm", "--data", data_dir, "--out", out, *argv)
    assert needle in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []
    if argv == ["--window", "3"]:  # (and the LSTM-only option on another model)
        assert "--forget-bias applies to lstm only, not gru" in fails(
            capsys, "train", "gru", "--data", data_dir, "--out", out, "--forget-bias", "1")


def test_cuda_missing_is_one_line_error(data_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present, so the missing-CUDA error cannot happen here "
                    "(run on a machine without one, or with CUDA_VISIBLE_DEVICES='')")
    assert "CUDA is not available" in fails(capsys, "train", "lstm", "--data", data_dir,
                                            "--out", tmp_path / "m.pt", "--device", "cuda")


@pytest.mark.parametrize("toml,needle", [
    ("[model]\nhidden = 'big'\n", "hidden must be of type int"),
    ("[model]\nhiden = 3\n", "unknown option(s) ['hiden']"),
    ("[optim]\nlr = 3\n", "unknown section"),
    ("[model\n", "invalid TOML"),
    ("model = 3\n", "invalid configuration"),
])
def test_bad_config_files(data_dir, tmp_path, capsys, toml, needle):
    conf = tmp_path / "c.toml"
    conf.write_text(toml)
    assert needle in fails(capsys, "train", "lstm", "--data", data_dir, "--out",
                           tmp_path / "m.pt", "--config", conf)


def test_data_and_checkpoint_errors(data_dir, trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.txt").write_text("")
    (empty / "valid.txt").write_text("a\n")
    assert "empty corpus" in fails(capsys, "train", "lstm", "--data", empty, "--out",
                                   tmp_path / "m.pt")
    assert "no such data directory" in fails(capsys, "train", "lstm", "--data",
                                             tmp_path / "nope", "--out", tmp_path / "m.pt")
    assert "model type lstm, not gru" in fails(capsys, "train", "gru", "--data", data_dir,
                                               "--out", trained, "--resume")
    assert "--hidden 16 differs" in fails(capsys, "train", "lstm", "--data", data_dir,
                                          "--out", trained, "--resume", "--hidden", "16")
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.txt").write_text("x y z\n" * 30)
    (other / "valid.txt").write_text("x y\n")
    assert "vocabulary" in fails(capsys, "train", "lstm", "--data", other, "--out", trained,
                                 "--resume")
    assert "exists" in fails(capsys, "train", "lstm", "--data", data_dir, "--out", trained)
    valid = (data_dir / "valid.txt").read_bytes()  # the checkpoint may not replace the data
    assert "valid.txt: is read by this command" in fails(
        capsys, "train", "lstm", "--data", data_dir, "--out", data_dir / "valid.txt",
        "--overwrite", *TINY)
    assert (data_dir / "valid.txt").read_bytes() == valid
    (other / "test.txt").write_text("x y z\n")
    assert "outside the model's vocabulary" in fails(capsys, "eval", trained,
                                                     other / "test.txt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(trained.read_bytes()[:2000])
    assert "truncated or corrupt" in fails(capsys, "eval", trunc, data_dir / "test.txt")
    assert "truncated or corrupt" in fails(capsys, "train", "lstm", "--data", data_dir, "--out",
                                           trunc, "--resume")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(300))
    assert "not a model lmlab can read" in fails(capsys, "score", garbage, "w1")


def test_a_new_run_keeps_other_runs_files(data_dir, tmp_path, capsys):
    """`-o runs/m` and `-o runs/m.pt` share runs/m.metrics.jsonl (and .config.json, .curve.png):
    a new run replaced the other run's without --overwrite. Nor may the Python API's
    overwrite=True put a checkpoint over a data file (the CLI refuses it before)."""
    import lmlab

    ok(capsys, "train", "gru", "--data", data_dir, "-o", tmp_path / "m", "--max-steps", "3",
       *TINY)
    log = (tmp_path / "m.metrics.jsonl").read_bytes()
    line = fails(capsys, "train", "lstm", "--data", data_dir, "-o", tmp_path / "m.pt",
                 "--max-steps", "3", *TINY)
    assert "m.config.json: exists, a file of another run" in line
    assert (tmp_path / "m.metrics.jsonl").read_bytes() == log
    assert not (tmp_path / "m.pt").exists()
    ok(capsys, "train", "lstm", "--data", data_dir, "-o", tmp_path / "m.pt", "--max-steps", "3",
       "--overwrite", *TINY)
    copy = tmp_path / "data"
    copy.mkdir()
    for f in data_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    valid = (copy / "valid.txt").read_bytes()
    with pytest.raises(LmlabError, match="valid.txt: is read by this command"):
        lmlab.train("lstm", copy, output=copy / "valid.txt", overwrite=True, emsize=8,
                    hidden=8, layers=1, bptt=5, batch_size=4, max_steps=2, device="cpu")
    assert (copy / "valid.txt").read_bytes() == valid


def test_checkpoint_named_like_its_model_type_resumes(data_dir, trained, tmp_path, capsys,
                                                      monkeypatch):
    """``-o lstm`` names a file, and ``lstm`` the model type: no clash (the type is a choice,
    not a file the command reads)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lstm").write_bytes(trained.read_bytes())
    ok(capsys, "train", "lstm", "--data", data_dir, "-o", "lstm", "--resume")


def test_ctrl_c_saves_checkpoint_and_resumes(data_dir, tmp_path):
    """A real `lmlab train` process gets SIGINT mid-run: it saves, says how to resume, exits."""
    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "lmlab.cli", "train", "lstm", "--data", str(data_dir),
           "--out", str(out), "--epochs", "100000", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = sidecar_paths(out)["metrics"]
    deadline = time.monotonic() + 60
    try:
        while not (metrics.exists() and metrics.read_text().count("\n") >= 30):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert f"lmlab: interrupted; checkpoint saved to {out}; resume with --resume" in stderr
    assert "Traceback" not in stderr
    data = load_checkpoint(out)
    step = data["progress"]["step"]
    assert step >= 30
    logged = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert max(r["step"] for r in logged if "loss" in r) == step  # nothing lost, nothing extra
    rc = main(["train", "lstm", "--data", str(data_dir), "--out", str(out), "--resume",
               "--epochs", str(data["progress"]["epoch"] + 1), *TINY])
    assert rc == 0
    assert load_checkpoint(out)["progress"]["step"] > step
    assert not Path(f"{out.parent}/.{out.name}.tmp").exists()


def test_flags_not_given_are_none():
    """build_config tells a flag given from one left out by None: no config flag may have a
    parser default, or a resumed run would take it for an override."""
    from lmlab.cli import build_parser
    from lmlab.neural.cli import FLAGS

    args = build_parser().parse_args(["train", "lstm", "--data", "d", "-o", "m.pt"])
    assert {dest: getattr(args, dest) for dest in FLAGS} == dict.fromkeys(FLAGS)


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_resume_keeps_every_option_and_says_so(data_dir, tmp_path, capsys, monkeypatch):
    """`train --max-steps 12 --epochs 3 ...`, Ctrl-C at step 5, then `train --resume` alone: the
    resumed run keeps every option (the step limit and the epochs too), prints them, and ends
    as the run never stopped does; the command line overrides only what it names."""
    from lmlab.neural.trainer import Trainer

    first = ["--max-steps", "12", "--epochs", "3", "--dropout", "0.3", *TINY]
    rc, _, _ = run(capsys, "train", "lstm", "--data", data_dir, "-o", tmp_path / "full.pt",
                   *first)
    assert rc == 0
    out = tmp_path / "m.pt"
    step = Trainer._train_step

    def ctrl_c_at_5(self, bar):  # what the first Ctrl-C does: stop after this step
        step(self, bar)
        if self.step == 5:
            self.stop.requested = True

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_at_5)
    rc, _, err = run(capsys, "train", "lstm", "--data", data_dir, "-o", out, *first)
    assert rc == 130 and "resume with --resume" in err
    monkeypatch.undo()
    assert load_checkpoint(out)["progress"]["step"] == 5

    rc, stdout, err = run(capsys, "train", "lstm", "--data", data_dir, "-o", out, "--resume")
    assert rc == 0
    line = next(x for x in err.splitlines() if x.startswith("resumed with "))
    assert line == ("resumed with --emsize 8 --hidden 8 --layers 1 --dropout 0.3 --epochs 3 "
                    "--bptt 5 --batch-size 4 --lr 0.01 --optimizer adam --seed 3 --device cpu "
                    "--threads 1 --max-steps 12")
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(out)
    assert b["progress"]["step"] == 12 and b["config"] == a["config"]
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    # shorter than an epoch: validated at its end, labelled
    assert stdout.startswith("max_steps: 0 epoch(s), 12 steps")
    assert "valid perplexity " in stdout and " at step 12 (epoch 0." in stdout
    assert "best" not in stdout

    # at its limit already: nothing to do, and it says how to go on
    rc, _, err = run(capsys, "train", "lstm", "--data", data_dir, "-o", out, "--resume")
    assert rc == 0 and "at its --max-steps 12 already" in err
    assert load_checkpoint(out)["progress"]["step"] == 12

    # overrides: named, and only they change
    rc, stdout, err = run(capsys, "train", "lstm", "--data", data_dir, "-o", out, "--resume",
                          "--max-steps", "0", "--eval-every", "20", "--json")
    assert rc == 0
    assert "changed here: --eval-every 0 -> 20, --max-steps 12 -> 0" in err
    report = json.loads(stdout)
    saved = load_checkpoint(out)
    assert report["status"] == "finished" and report["epochs"] == 3
    assert saved["config"]["train"]["epochs"] == 3 and saved["config"]["model"]["dropout"] == 0.3
    steps = saved["progress"]["step"]
    assert (report["valid_step"], report["valid_epoch"]) == (steps, 3)
    assert report["valid_ppl"] == saved["history"]["epochs"][-1]["valid_ppl"]
    assert report["best_valid_epoch"] in (1, 2, 3)
    valid = saved["history"]["valid"]
    assert [(v["step"], v["when"]) for v in valid if v["when"] != "epoch"] == \
        [(12, "end")] + [(s, "every") for s in range(20, steps, 20) if s % (steps // 3)]
