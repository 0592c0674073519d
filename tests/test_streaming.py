"""Streaming, bounded-memory scoring (issue 19): `lmlab eval`/`lmlab score --text` read the text in
pieces, optionally with several processes, and give exactly the numbers of the whole-file path;
`--per-line` writes one JSON record per input line, in input order, atomically."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lmlab import fileio
from lmlab.cli import main
from lmlab.corpus import iter_corpus, read_corpus
from lmlab.errors import LmlabError
from lmlab.metrics import LN10, evaluate, evaluate_file, score_lines, sentence_logprobs
from lmlab.models import load_model
from tests.conftest import TRAIN_WORDS, UNSEEN_WORDS, random_sentences, write_lines


@pytest.fixture(scope="module")
def files(train_file, tmp_path_factory) -> dict[str, Path]:
    """A trigram model, an add-k model, a mixture of the two, and a 300-line text with OOV words
    and empty lines (plain and gzip)."""
    d = tmp_path_factory.mktemp("streaming")
    for name, smoothing in (("m.lm", "mkn"), ("addk.lm", "addk")):
        assert main(["ngram", "train", str(train_file), "--order", "3", "-s", smoothing,
                     "-o", str(d / name)]) == 0
    (d / "mix.json").write_text(json.dumps({"format": "lmlab-mixture", "version": 1,
                                            "models": ["m.lm", "addk.lm"],
                                            "weights": [0.7, 0.3]}))
    text = write_lines(d / "text.txt", random_sentences(7, 300, TRAIN_WORDS + UNSEEN_WORDS,
                                                        max_len=12, allow_empty=True))
    (d / "text.txt.gz").write_bytes(gzip.compress(text.read_bytes()))
    return {"model": d / "m.lm", "addk": d / "addk.lm", "mix": d / "mix.json", "text": text,
            "gz": d / "text.txt.gz"}


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- exactness and invariance ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["model", "addk", "mix"])
def test_pieces_are_the_whole_stream(files, kind):
    """Per-token log-probs of the pieces are the whole-file ones, bit for bit."""
    model = load_model(files[kind])
    whole = read_corpus(files["text"], model.vocab)
    want = model.logprobs(whole)
    for chunk in (1, 7, 10**9):
        pieces = list(iter_corpus(files["text"], model.vocab, chunk_tokens=chunk, chunk_bytes=50))
        assert [first for first, _ in pieces] == list(np.cumsum(
            [0] + [p.n_sentences for _, p in pieces[:-1]]))
        assert np.array_equal(np.concatenate([p.ids for _, p in pieces]), whole.ids)
        assert np.array_equal(np.concatenate([p.oov for _, p in pieces]), whole.oov)
        got = np.concatenate([model.logprobs(p) for _, p in pieces])
        assert np.array_equal(got, want)
        if chunk == 1:
            assert all(p.n_sentences == 1 for _, p in pieces)


@pytest.mark.parametrize("kind", ["model", "mix"])
def test_result_does_not_depend_on_chunks_or_jobs(files, kind):
    model = load_model(files[kind])
    want = evaluate(model, files["text"])[0]
    for chunk_tokens, chunk_bytes in ((1, 1), (7, 100), (10**9, 2**20)):
        got = evaluate_file(model, files["text"], chunk_tokens=chunk_tokens,
                            chunk_bytes=chunk_bytes)
        assert got == want, (chunk_tokens, chunk_bytes)
    for chunk_bytes in (100, 2**20):  # several chunks, and one, in flight to the workers
        got = evaluate_file(model, files["text"], jobs=2, model_path=files[kind],
                            chunk_bytes=chunk_bytes)
        assert got == want
    assert model.perplexity(files["text"]) == want  # the Python API streams too
    lines = files["text"].read_text(encoding="utf-8").splitlines()
    assert model.perplexity(lines) == want


def test_per_line_records_in_input_order(capsys, files, tmp_path):
    model = load_model(files["model"])
    _, logprobs, stream = evaluate(model, files["text"])
    want = sentence_logprobs(logprobs, stream)
    lines = files["text"].read_text(encoding="utf-8").splitlines()
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}.jsonl"
        rc, stdout, _ = run(capsys, "score", files["model"], "--text", files["text"],
                            "--per-line", out, "--jobs", jobs, "--json")
        assert rc == 0
        summary = json.loads(stdout)
        outs[jobs] = out.read_bytes()
        rows = read_jsonl(out)
        assert [r["line"] for r in rows] == list(range(1, len(lines) + 1))
        assert [r["tokens"] for r in rows] == [len(line.split()) + 1 for line in lines]
        assert [r["oov"] for r in rows] == [sum(w in UNSEEN_WORDS for w in line.split())
                                            for line in lines]
        assert [r["logprob"] for r in rows] == want.tolist()
        for r in rows:
            assert r["log10prob"] == r["logprob"] / LN10
            assert r["perplexity"] == pytest.approx(math.exp(-r["logprob"] / r["tokens"]),
                                                    rel=1e-12)
        assert summary["tokens"] == sum(r["tokens"] for r in rows)
        assert summary["logprob"] == evaluate(model, files["text"])[0].logprob
    assert outs[1] == outs[2]
    # eval --per-line writes the same file
    rc, _, _ = run(capsys, "eval", files["model"], files["text"], "--per-line",
                   tmp_path / "eval.jsonl")
    assert rc == 0 and (tmp_path / "eval.jsonl").read_bytes() == outs[1]


def test_score_text_to_stdout_gzip_and_stdin(capsys, files, tmp_path, monkeypatch):
    rc, plain, err = run(capsys, "score", files["model"], "--text", files["text"])
    assert rc == 0 and "perplexity" in err  # records on stdout, the report on stderr
    rows = [json.loads(line) for line in plain.splitlines()]
    assert len(rows) == 300
    rc, packed, _ = run(capsys, "score", files["model"], "--text", files["gz"], "-j", "2")
    assert rc == 0 and packed == plain
    monkeypatch.setattr(fileio, "_stdin_data", None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(files["gz"].read_bytes())))
    rc, piped, _ = run(capsys, "score", files["model"], "--text", "-")
    assert rc == 0 and piped == plain
    # scoring streams standard input (one pass, not held in memory): it is used up now
    assert fileio._stdin_data is None
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(files["gz"].read_bytes())))
    rc, out, _ = run(capsys, "eval", files["model"], "-", "--json")
    assert rc == 0 and json.loads(out)["tokens"] == sum(r["tokens"] for r in rows)


def test_stdin_with_jobs_in_a_real_process(files, tmp_path):
    """Spawned workers, standard input, a .gz output: as a user runs it."""
    out = tmp_path / "lines.jsonl.gz"
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "score", str(files["model"]),
                           "--text", "-", "--jobs", "2", "--per-line", str(out), "--json"],
                          input=files["text"].read_bytes(), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    want = evaluate(load_model(files["model"]), files["text"])[0]
    assert json.loads(proc.stdout)["logprob"] == want.logprob
    rows = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 301))


# -- the sentence mode stays; the file mode is explicit -------------------------------------------

def test_sentence_on_the_command_line_still_works(capsys, files):
    rc, out, _ = run(capsys, "score", files["model"], "w1 w2 w3", "--json")
    assert rc == 0 and [r["token"] for r in json.loads(out)] == ["w1", "w2", "w3", "</s>"]
    rc, out, _ = run(capsys, "score", files["model"], "w1", "w2")
    assert rc == 0 and "total" in out
    # a file name as the sentence is scored as a word, with a hint about --text
    rc, out, err = run(capsys, "score", files["model"], files["text"])
    assert rc == 0 and "--text" in err and err.startswith("lmlab: warning: ")


@pytest.mark.parametrize("argv", [
    ["score", "MODEL"],
    ["score", "MODEL", "w1", "--text", "TEXT"],
    ["score", "MODEL", "w1", "--per-line", "x.jsonl"],
    ["score", "MODEL", "w1", "--jobs", "2"],
    ["eval", "MODEL", "TEXT", "--jobs", "0"],
])
def test_option_mistakes(capsys, files, tmp_path, argv):
    argv = [{"MODEL": files["model"], "TEXT": files["text"]}.get(a, a) for a in argv]
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("lmlab: error: ")


class _Stateful:
    """A model that does not declare its sentences independent (as a neural model)."""

    def __init__(self, model) -> None:
        self.model, self.vocab = model, model.vocab

    def logprobs(self, stream):
        return self.model.logprobs(stream)


def test_a_stateful_model_is_scored_whole(files):
    model = load_model(files["model"])
    wrapped = _Stateful(model)
    assert len(list(score_lines(wrapped, files["text"], chunk_tokens=1))) == 1
    assert evaluate_file(wrapped, files["text"], chunk_tokens=1) == \
        evaluate(model, files["text"])[0]
    with pytest.raises(Exception, match="--jobs N and --cluster need an n-gram model"):
        evaluate_file(wrapped, files["text"], jobs=2, model_path=files["model"])


# -- bad input in the middle of a file ------------------------------------------------------------

def _bad_texts(files, d: Path) -> list[tuple[Path, int]]:
    lines = files["text"].read_bytes().splitlines(keepends=True)
    utf8 = d / "bad_utf8.txt"
    utf8.write_bytes(b"".join(lines[:250]) + b"w1 \xff\xfe w2\n" + b"".join(lines[250:]))
    reserved = d / "reserved.txt"
    reserved.write_bytes(b"".join(lines[:180]) + b"w1 <s> w2\n" + b"".join(lines[180:]))
    big = d / "big.txt"
    big.write_bytes(b"".join(lines) * 40)
    data = gzip.compress(big.read_bytes())
    truncated = d / "truncated.txt.gz"
    truncated.write_bytes(data[:len(data) // 2])
    return [(utf8, 251), (reserved, 181), (truncated, None)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_bad_line_in_the_middle(capsys, files, tmp_path, jobs):
    for path, line in _bad_texts(files, tmp_path):
        for cmd in (["eval", files["model"], path], ["score", files["model"], "--text", path]):
            out = tmp_path / "out" / "lines.jsonl"
            rc, _, err = run(capsys, *cmd, "--per-line", out, "--jobs", jobs)
            assert rc == 2 and len(err.splitlines()) == 1, err
            where = f"lmlab: error: {path}:{line}: " if line else f"lmlab: error: {path}:"
            assert err.startswith(where), err
            assert not (tmp_path / "out").exists()  # no file, no temporary, no folder


def test_worker_processes_decode_and_check_what_they_get(capsys, files, tmp_path):
    """With --jobs the main process only reads bytes: the workers decode and check them, with the
    same line numbers, the same byte-order-mark rule and the same empty-text error."""
    lines = files["text"].read_bytes().splitlines(keepends=True)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + b"".join(lines))
    want = evaluate_file(load_model(files["model"]), files["text"])
    for chunk in (40, 2**20):
        got = evaluate_file(load_model(files["model"]), bom, jobs=2, model_path=files["model"],
                            chunk_bytes=chunk)
        assert got == want
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"".join(lines[:120]) + b"w1 \0 w2\n" + b"".join(lines[120:]))
    only_bom = tmp_path / "only-bom.txt"
    only_bom.write_bytes(b"\xef\xbb\xbf")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for path, what in ((nul, f"{nul}:121: binary data (NUL byte)"),
                       (only_bom, f"{only_bom}: empty corpus"), (empty, f"{empty}: empty corpus")):
        for jobs in (1, 2):
            rc, _, err = run(capsys, "eval", files["model"], path, "--jobs", jobs)
            assert rc == 2 and what in err, err


def test_empty_and_all_oov_texts_write_nothing(capsys, files, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    oov = write_lines(tmp_path / "oov.txt", [["zz1", "zz2"], ["zz3"]])
    for text in (empty, oov):
        out = tmp_path / "lines.jsonl"
        rc, _, err = run(capsys, "score", files["model"], "--text", text, "--per-line", out)
        assert rc == 2 and err.startswith(f"lmlab: error: {text}: ")
        assert not out.exists()


# -- memory ---------------------------------------------------------------------------------------

# VmHWM, the peak RSS of this process's memory: ru_maxrss would carry over the peak of the
# (large) pytest process across fork and exec
_MEASURE = textwrap.dedent("""
    import sys
    from lmlab.models import load_model
    from lmlab.metrics import evaluate, evaluate_file
    model = load_model(sys.argv[1])
    if sys.argv[3] == "whole":
        evaluate(model, sys.argv[2])
    else:
        evaluate_file(model, sys.argv[2], per_line=sys.argv[4], chunk_bytes=2**16)
    with open("/proc/self/status") as f:
        print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))  # KiB
""")


def _peak_kib(*argv, stdin: Path | None = None) -> int:
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as given:
        proc = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, argv)],
                              capture_output=True, stdin=given, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_peak_memory_is_flat_when_the_text_grows_tenfold(files, tmp_path):
    """Pieces of 64 KiB here (1 MiB by default), so that 1x (~1 MiB) already has many."""
    one = write_lines(tmp_path / "x1.txt", random_sentences(11, 20_000, TRAIN_WORDS, max_len=14))
    ten = tmp_path / "x10.txt"
    ten.write_bytes(one.read_bytes() * 10)  # ~1.5M tokens
    small = _peak_kib(files["model"], one, "stream", tmp_path / "a.jsonl")
    large = _peak_kib(files["model"], ten, "stream", tmp_path / "b.jsonl")
    whole = _peak_kib(files["model"], ten, "whole")
    assert large - small < 8 * 1024, (small, large)
    assert whole - large > 64 * 1024, (large, whole)  # the measurement can see the difference
    piped = _peak_kib(files["model"], "-", "stream", tmp_path / "c.jsonl", stdin=ten)
    assert piped - small < 8 * 1024, (small, piped)  # standard input streams too
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_worker_processes_say_why_they_cannot_score(files, tmp_path):
    """A worker that cannot load the model, or loads another one, ends the job with that one
    line (not "a worker process died")."""
    model = load_model(files["model"])
    with pytest.raises(LmlabError, match="missing.lm: no such file"):
        evaluate_file(model, files["text"], jobs=2, model_path=tmp_path / "missing.lm")
    with pytest.raises(LmlabError, match="not the model being scored"):  # same words and order
        evaluate_file(model, files["text"], jobs=2, model_path=files["addk"])
