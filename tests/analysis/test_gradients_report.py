"""``lmlab gradients`` (lmlab.analysis.gradients_report and the command): a fresh model or a
checkpoint is analysed on real text and the report written as JSON and PNG; user errors are one
line, exit code 2; the command module imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmlab.analysis import gradients_cli
from lmlab.analysis.gradients import BOUND_CELLS
from lmlab.analysis.gradients_report import fresh_model
from lmlab.analysis.recurrence import CELLS
from lmlab.cli import main

torch.set_num_threads(1)


def test_cli_module_is_light():
    assert gradients_cli.CELLS == CELLS
    code = ("import sys, lmlab.analysis.gradients_cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("grad") / "text.txt"
    rng = np.random.default_rng(0)
    lines = [" ".join(f"w{i}" for i in rng.integers(0, 12, size=rng.integers(3, 12)))
             for _ in range(200)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["gradients", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


SMALL = ["--hidden", "6", "--seq-len", "25", "--sequences", "2", "--targets", "2",
         "--threads", "1"]


@pytest.mark.parametrize("cell,extra", [("rnn_tanh", []), ("irnn", ["--spectral-radius", "1.5"]),
                                        ("lstm", ["--residual", "--layers", "2"]), ("gru", [])])
def test_cli_writes_json_and_png(capsys, tmp_path, text, cell, extra):
    out = tmp_path / "res"
    rc, stdout, err = run_cli(capsys, "--cell", cell, "--text", text, "--out", out, *SMALL,
                              *extra)
    assert rc == 0, err
    assert "decay rate" in stdout
    report = json.loads((out / "gradients.json").read_text())
    png = (out / "gradients.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["cell"] == cell and len(report["measured"]) == 25
    assert all(v is None or isinstance(v, float) for v in report["measured"])
    if cell in BOUND_CELLS:
        assert len(report["bound"]) == 25
        assert report["per_layer"][0]["bound_violations"] == 0
    else:
        assert report["bound"] is None
    if cell == "lstm":
        assert report["residual"] and report["num_layers"] == 2
        assert all("cell_state" in e for e in report["per_layer"])
    if extra[:1] == ["--spectral-radius"]:
        assert report["decay_rate"] > 0
    assert report["reproduction_max_abs_diff"] < 1e-4


def test_cli_checkpoint(capsys, tmp_path, text):
    from lmlab.corpus import read_training_corpus
    from lmlab.neural.checkpoint import save_checkpoint
    from lmlab.neural.config import ModelConfig, RunConfig

    vocab, _ = read_training_corpus(text)
    config = RunConfig(model=ModelConfig(model="gru", vocab_size=len(vocab), emsize=5, hidden=5,
                                         layers=2))
    model = fresh_model("gru", len(vocab), hidden=5, layers=2, seed=3)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"config": config.to_dict(), "vocab": vocab.itos,
                           "model": model.state_dict()})
    out = tmp_path / "o"
    rc, _, err = run_cli(capsys, "--checkpoint", ckpt, "--text", text, "--out", out,
                         "--seq-len", "20", "--sequences", "2", "--targets", "2")
    assert rc == 0, err
    report = json.loads((out / "gradients.json").read_text())
    assert report["cell"] == "gru" and report["num_layers"] == 2 and report["hidden"] == 5
    assert report["source"]["checkpoint"] == str(ckpt)
    for bad, msg in ((["--cell", "lstm"], "--cell lstm disagrees"),
                     (["--hidden", "7"], "--hidden 7 disagrees")):
        rc, _, err = run_cli(capsys, "--checkpoint", ckpt, "--text", text, "--out", out, *bad)
        assert rc == 2 and msg in err and "Traceback" not in err


def test_cli_user_errors(capsys, tmp_path, text):
    for argv, msg in (
        (["--text", text, "--out", tmp_path], "give --cell"),
        (["--cell", "gru", "--text", tmp_path / "nope.txt", "--out", tmp_path], "no such file"),
        (["--cell", "gru", "--text", text, "--out", tmp_path, "--seq-len", "401"],
         "2..400"),
        (["--cell", "gru", "--text", text, "--out", tmp_path, "--spectral-radius", "0"],
         "positive"),
        (["--cell", "gru", "--text", text, "--out", tmp_path, "--hidden", "0"], ">= 1"),
    ):
        rc, _, err = run_cli(capsys, *argv)
        assert rc == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], err
