"""``lmlab compare``: several models of any kind on one text, per-token log-probs aligned, the same
numbers as ``lmlab eval``, head-to-head shares against the first model, optional PNG."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmlab.cli import main
from lmlab.comparison import compare, format_table, head_to_head
from lmlab.corpus import read_corpus
from lmlab.errors import LmlabError
from lmlab.models import load_model
from lmlab.ngram.model import train_ngram
from lmlab.synth import MarkovSource, sample_splits

torch.set_num_threads(1)

TINY = ["--emsize", "8", "--hidden", "8", "--layers", "1", "--bptt", "5", "--batch-size", "4",
        "--threads", "1", "--device", "cpu", "--seed", "3", "--optimizer", "adam", "--lr",
        "0.01", "--epochs", "1"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A folder with train/valid/test text, two n-gram models (one also as ARPA), a mixture and a
    tiny neural checkpoint, all over the same vocabulary."""
    d = tmp_path_factory.mktemp("compare")
    for name, c in sample_splits(MarkovSource(order=2, vocab_size=8, seed=4),
                                 {"train": 80, "valid": 10, "test": 15}, seed=0).items():
        c.write(d / f"{name}.txt")
    train_ngram(d / "train.txt", order=1, smoothing="wb", verbose=False).save(d / "uni.lm")
    tri = train_ngram(d / "train.txt", order=3, smoothing="kn", verbose=False)
    tri.save(d / "tri.lm")
    from lmlab.ngram.arpa import write_arpa

    write_arpa(tri, d / "tri.arpa")
    assert main(["interpolate", str(d / "uni.lm"), str(d / "tri.lm"), "--valid",
                 str(d / "valid.txt"), "-o", str(d / "mix.json")]) == 0
    assert main(["train", "lstm", "--data", str(d), "--out", str(d / "lstm.pt"), "--json",
                 *TINY]) == 0
    return d


def run(capsys, *argv) -> str:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def fails(capsys, *argv) -> str:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), err
    return lines[0]


def test_json_matches_eval_for_every_kind(models, capsys):
    paths = [models / n for n in ("uni.lm", "tri.lm", "tri.arpa", "mix.json", "lstm.pt")]
    text = models / "test.txt"
    report = json.loads(run(capsys, "compare", *paths, "--text", text, "--json"))
    rows = report["models"]
    assert [r["model"] for r in rows] == [str(p) for p in paths]
    assert [r["type"] for r in rows] == ["ngram", "ngram", "arpa", "mixture", "neural"]
    assert report["reference"] == str(paths[0])
    n = report["tokens"]
    assert n > 0 and all(r["tokens"] == n for r in rows)
    for path, row in zip(paths, rows, strict=True):
        ev = json.loads(run(capsys, "eval", path, text, "--json"))
        for key in ("tokens", "oov", "sentences"):
            assert row[key] == ev[key], (path, key)
        for key in ("perplexity", "perplexity_excl_oov", "cross_entropy_bits"):
            assert row[key] == pytest.approx(ev[key], rel=1e-12), (path, key)
        assert row["tokens_per_s"] > 0
    # sizes: n-gram counts for n-gram models, parameters for the neural one
    assert rows[0]["ngrams"] > 0 and rows[0]["parameters"] is None
    assert rows[1]["ngrams"] == rows[2]["ngrams"] > rows[0]["ngrams"]
    assert rows[3]["ngrams"] == rows[0]["ngrams"] + rows[1]["ngrams"]
    assert rows[4]["parameters"] > 0 and rows[4]["ngrams"] is None
    # one pair per model after the first, against the first
    pairs = report["pairs"]
    assert [p["model"] for p in pairs] == [str(p) for p in paths[1:]]
    for p in pairs:
        assert p["reference"] == str(paths[0]) and p["tokens"] == n
        assert p["better"] + p["worse"] + p["tie"] == pytest.approx(1.0)
    # the ARPA copy of the trigram model scores it (within ARPA's printed precision)
    assert rows[2]["perplexity"] == pytest.approx(rows[1]["perplexity"], rel=1e-5)


def test_head_to_head_shares_are_per_token(models):
    text = models / "test.txt"
    c = compare([str(models / "uni.lm"), str(models / "tri.lm"), str(models / "lstm.pt")], text)
    ref = c.scores[0].logprobs
    stream = read_corpus(text, load_model(models / "uni.lm").vocab)
    assert len(ref) == len(stream)
    for score, pair in zip(c.scores[1:], c.pairs, strict=True):
        lp = score.logprobs
        assert len(lp) == len(ref)
        assert pair["better"] == pytest.approx(np.mean(lp > ref))
        assert pair["worse"] == pytest.approx(np.mean(lp < ref))
        gain = np.mean(lp - ref) / np.log(2)
        assert pair["mean_gain_bits"] == pytest.approx(gain)
        # cross-entropy difference = minus the mean gain (same tokens, same count)
        assert c.scores[0].cross_entropy_bits - score.cross_entropy_bits == pytest.approx(gain)
    # a model against itself: all ties
    same = head_to_head(c.scores[1], c.scores[1])
    assert same["tie"] == 1.0 and same["better"] == same["worse"] == 0.0


def test_misaligned_logprobs_are_an_error(models):
    c = compare([str(models / "uni.lm"), str(models / "tri.lm")], models / "test.txt")
    a, b = c.scores
    b.logprobs = b.logprobs[:-1]
    with pytest.raises(LmlabError, match="do not align"):
        head_to_head(a, b)


def test_text_table_and_plot(models, capsys, tmp_path):
    png = tmp_path / "cmp.png"
    out = run(capsys, "compare", models / "uni.lm", models / "tri.lm", models / "lstm.pt",
              "--text", models / "test.txt", "--plot", png)
    header = next(line for line in out.splitlines() if line.startswith("model"))
    for col in ("type", "description", "size", "tokens", "OOV", "bits/tok", "ppl",
                "ppl excl. OOV", "tok/s", "better than uni.lm"):
        assert col in header
    assert "(reference)" in out and "kn 3-gram" in out and "lstm, 1x8" in out
    assert "params" in out and "n-grams" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_model_and_format(models):
    c = compare([str(models / "tri.lm")], models / "test.txt")
    assert c.pairs == [] and "(reference)" in format_table(c)


def test_user_errors_are_one_line(models, capsys, tmp_path):
    fails(capsys, "compare", models / "tri.lm", "--text", tmp_path / "missing.txt")
    fails(capsys, "compare", models / "tri.lm", models / "test.txt", "--text",
          models / "test.txt")  # a text file is not a model
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in fails(
        capsys, "compare", models / "tri.lm", "--text", models / "test.txt", "--plot",
        tmp_path / "afile" / "such" / "dir.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_import_is_light():
    code = ("import sys, lmlab.comparison, lmlab.cli; lmlab.cli.build_parser(); "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
