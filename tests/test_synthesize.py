"""lmlab data synthesize: a corpus of the size asked for, the same for a seed, from a model file
or the default sources; counts parsed as people write them; one-line errors."""

from __future__ import annotations

import pytest

import lmlab
from lmlab.errors import LmlabError
from lmlab.synthesize import parse_count
from tests.cli_helpers import fails, ok

PINNED = "2c173c57a0d093a4"  # sha256 prefix of the first 50 lines of test_writes_... (seed 4)


@pytest.mark.parametrize(("text", "value"), [("1000", 1000), ("100M", 100_000_000),
                                              ("1B", 10**9), ("2.5k", 2500), ("3g", 3 * 10**9),
                                              ("4.1M", 4_100_000)])
def test_counts(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "0", "-5", "10T", "many", "0.1", "1.9"])
def test_bad_counts(text):
    with pytest.raises(LmlabError, match="--tokens"):
        parse_count(text)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "m.lm"
    lmlab.train_ngram(["the cat sat on the mat", "a dog sat", "the dog ran on a mat",
                       "a cat ran"] * 5, order=3, smoothing="kn").save(path)
    return path


def test_writes_the_tokens_asked_for_and_repeats_for_a_seed(capsys, model_file, tmp_path):
    out = ok(capsys, "data", "synthesize", "-o", tmp_path / "a.txt", "--tokens", "20k",
             "--model", model_file, "--seed", "4", "--streams", "256")
    assert "20,0" in out and "tokens" in out
    lines = (tmp_path / "a.txt").read_text().splitlines()
    tokens = sum(len(line.split()) + 1 for line in lines)
    assert 20_000 <= tokens <= 20_000 + 250 and all(line.strip() for line in lines)
    # the same file for a seed, across versions too (a change here changes every benchmark
    # corpus: say so in the docs)
    import hashlib

    assert hashlib.sha256("\n".join(lines[:50]).encode()).hexdigest()[:16] == PINNED
    smaller = tmp_path / "small.txt"
    ok(capsys, "data", "synthesize", "-o", smaller, "--tokens", "5k", "--model", model_file,
       "--seed", "4", "--streams", "256")
    assert (tmp_path / "a.txt").read_text().startswith(smaller.read_text())  # a prefix
    vocab = set(lmlab.load(model_file).vocab.itos)
    assert {w for line in lines for w in line.split()} <= vocab
    ok(capsys, "data", "synthesize", "-o", tmp_path / "b.txt.gz", "--tokens", "20k",
       "--model", model_file, "--seed", "4", "--streams", "256")
    import gzip

    assert gzip.open(tmp_path / "b.txt.gz", "rt").read() == (tmp_path / "a.txt").read_text()
    ok(capsys, "data", "synthesize", "-o", tmp_path / "c.txt", "--tokens", "20k",
       "--model", model_file, "--seed", "5", "--streams", "256")
    assert (tmp_path / "c.txt").read_text() != (tmp_path / "a.txt").read_text()


def test_a_char_model_writes_text(capsys, tmp_path):
    path = tmp_path / "c.lm"
    lmlab.train_ngram(["the cat sat", "a dog ran"] * 10, order=4, smoothing="kn",
                      tokenizer="char").save(path)
    ok(capsys, "data", "synthesize", "-o", tmp_path / "c.txt", "--tokens", "2000",
       "--model", path)
    text = (tmp_path / "c.txt").read_text()
    assert "▁" not in text and " " in text  # (<unk>: the model gives it some mass too)
    assert set(text.replace("<unk>", "")) <= set("the cat sat a dog ran\n")


def test_default_source_without_corpora(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("LMLAB_DATA", raising=False)
    ok(capsys, "data", "synthesize", "-o", tmp_path / "s.txt", "--tokens", "5000",
       "--data", tmp_path)
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert sum(len(line.split()) + 1 for line in lines) >= 5000


def test_errors_are_one_line(capsys, model_file, tmp_path):
    assert "-o FILE and --tokens" in fails(capsys, "data", "synthesize", "--tokens", "10")
    assert "--tokens" in fails(capsys, "data", "synthesize", "-o", tmp_path / "x.txt",
                               "--tokens", "lots")
    assert "--seed must be >= 0" in fails(capsys, "data", "synthesize", "-o", tmp_path / "x.txt",
                                          "--tokens", "10", "--seed", "-1")
    assert "--streams" in fails(capsys, "data", "synthesize", "-o", tmp_path / "x.txt",
                                "--tokens", "10", "--streams", "0")
    assert "no corpus name" in fails(capsys, "data", "synthesize", "ptb", "-o",
                                     tmp_path / "x.txt", "--tokens", "10")
    (tmp_path / "keep.txt").write_text("old\n")
    assert "no such file" in fails(capsys, "data", "synthesize", "-o", tmp_path / "keep.txt",
                                   "--tokens", "10", "--model", tmp_path / "none.lm")
    assert (tmp_path / "keep.txt").read_text() == "old\n"
