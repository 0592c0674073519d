"""The command line, in-process (``lmlab.cli.main``) plus one real subprocess for the console path.

Every user mistake must end as exactly one ``lmlab: error: ...`` line on stderr, a non-zero exit
status, no traceback, and no half-written output.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lmlab.cli import main

SMOOTHINGS = ["mle", "addk", "katz", "wb", "absdisc", "kn", "mkn", "stupid"]


def run_ok(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in err
    return out


def run_json(capsys, *argv):
    return json.loads(run_ok(capsys, *argv, "--json"))


def run_err(capsys, *argv, name: str | Path | None = None, line: int | None = None) -> str:
    """Run a failing command; check the one-line error starts with ``name:`` (``name:line:``)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    msg = lines[0]
    assert msg.startswith("lmlab: error: ")
    msg = msg[len("lmlab: error: "):]
    if name is None:
        return msg
    # the problem after "FILE:" or "FILE:LINE:" (the tmp path holds the test's name: never match
    # words in it)
    prefix = f"{name}:{line}: " if line is not None else f"{name}:"
    assert msg.startswith(prefix), msg
    return msg[len(prefix):]


def naive_tokens(path: Path, known: set[str]) -> tuple[int, int]:
    """(predicted tokens, OOV tokens) by the documented convention, computed independently."""
    tokens = oov = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        tokens += len(words) + 1
        oov += sum(w not in known for w in words)
    return tokens, oov


@pytest.fixture(scope="module")
def models(train_file, tmp_path_factory) -> dict[str, Path]:
    """A trigram mkn model saved both ways, trained once for the module."""
    d = tmp_path_factory.mktemp("models")
    m, a = d / "m.lm", d / "m.arpa"
    assert main(["ngram", "train", str(train_file), "--order", "3", "--smoothing", "mkn",
                 "-o", str(m), "--arpa", str(a)]) == 0
    return {"model": m, "arpa": a}


def train_words(train_file: Path) -> set[str]:
    return {w for line in train_file.read_text(encoding="utf-8").splitlines() for w in line.split()}


# -- train and eval ------------------------------------------------------------------------------
def test_train_eval_json(capsys, models, train_file, test_file):
    assert models["model"].exists() and models["arpa"].exists()
    d = run_json(capsys, "eval", models["model"], test_file)
    for key in ("perplexity", "perplexity_excl_oov", "cross_entropy_bits", "tokens", "oov"):
        assert key in d
    tokens, oov = naive_tokens(test_file, train_words(train_file))
    assert (d["tokens"], d["oov"]) == (tokens, oov)
    assert oov > 0
    assert d["sentences"] == len(test_file.read_text().splitlines())
    assert d["perplexity"] == pytest.approx(math.exp(-d["logprob"] / tokens), rel=1e-12)
    assert d["cross_entropy_bits"] == pytest.approx(math.log2(d["perplexity"]), rel=1e-9)
    assert d["perplexity_excl_oov"] == pytest.approx(
        math.exp(-d["logprob_excl_oov"] / (tokens - oov)), rel=1e-12)
    # 30 words + <unk> + </s> can be predicted: a smoothed model is far from uniform but finite
    assert 1 < d["perplexity"] < 32 * 4
    a = run_json(capsys, "eval", models["arpa"], test_file)
    assert a["perplexity"] == pytest.approx(d["perplexity"], rel=1e-6)
    assert a["perplexity_excl_oov"] == pytest.approx(d["perplexity_excl_oov"], rel=1e-6)
    assert (a["tokens"], a["oov"]) == (tokens, oov)


def test_eval_text_report_and_per_line(capsys, models, test_file, tmp_path):
    out_file = tmp_path / "lines.jsonl"
    out = run_ok(capsys, "eval", models["model"], test_file, "--per-line", out_file)
    assert "perplexity" in out and "OOV" in out
    d = run_json(capsys, "eval", models["model"], test_file)
    rows = [json.loads(r) for r in out_file.read_text().splitlines()]
    assert set(rows[0]) == {"line", "tokens", "oov", "log10prob", "logprob", "perplexity",
                            "characters", "bytes"}
    assert [r["line"] for r in rows] == list(range(1, d["sentences"] + 1))
    assert sum(r["tokens"] for r in rows) == d["tokens"]
    assert sum(r["oov"] for r in rows) == d["oov"]
    assert math.fsum(r["log10prob"] for r in rows) == pytest.approx(d["log10_prob"], rel=1e-12)
    # the old TSV option names its replacement
    msg = run_err(capsys, "eval", models["model"], test_file, "--per-sentence", tmp_path / "x")
    assert "--per-line" in msg
    assert not (tmp_path / "x").exists()


def test_eval_gzip_text(capsys, models, test_file, tmp_path):
    gz = tmp_path / "test.txt.gz"
    gz.write_bytes(gzip.compress(test_file.read_bytes()))
    plain = run_json(capsys, "eval", models["model"], test_file)
    packed = run_json(capsys, "eval", models["model"], gz)
    assert packed["perplexity"] == plain["perplexity"]


def test_unigram_mle_known_answer(capsys, tmp_path, train_file):
    """Order-1 MLE on its own training text: p(w) = c(w) / N over words and </s>."""
    counts = Counter()
    for line in train_file.read_text().splitlines():
        counts.update(line.split() + ["</s>"])
    n = sum(counts.values())
    expected = math.exp(-sum(c * math.log(c / n) for c in counts.values()) / n)
    m = tmp_path / "u.lm"
    run_ok(capsys, "ngram", "train", train_file, "--order", "1", "-s", "mle", "-o", m)
    d = run_json(capsys, "eval", m, train_file)
    assert d["tokens"] == n
    assert d["perplexity"] == pytest.approx(expected, rel=1e-9)


def test_unigram_addk_known_answer(capsys, tmp_path, train_file, test_file):
    """Order-1 add-k: p(w) = (c(w) + k) / (N + k (|V| - 1)), |V| - 1 = words + <unk> + </s>."""
    words = train_words(train_file)
    counts = Counter()
    for line in train_file.read_text().splitlines():
        counts.update(line.split() + ["</s>"])
    n, k, size = sum(counts.values()), 0.5, len(words) + 2
    total = 0.0
    for line in test_file.read_text().splitlines():
        for w in line.split() + ["</s>"]:
            c = counts[w] if (w in words or w == "</s>") else 0  # OOV -> <unk>, never seen
            total += math.log((c + k) / (n + k * size))
    m = tmp_path / "k.lm"
    run_ok(capsys, "ngram", "train", train_file, "--order", "1", "-s", "addk", "--add-k", k,
           "-o", m)
    d = run_json(capsys, "eval", m, test_file)
    assert d["logprob"] == pytest.approx(total, rel=1e-9)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_every_smoothing_trains_and_evals(capsys, tmp_path, train_file, test_file, smoothing):
    m, a = tmp_path / f"{smoothing}.lm", tmp_path / f"{smoothing}.arpa"
    argv = ["ngram", "train", train_file, "--order", "3", "-s", smoothing, "-o", m]
    if smoothing == "addk":
        msg = run_err(capsys, *argv, "--arpa", a)
        assert "ARPA" in msg
        assert sorted(os.listdir(tmp_path)) == []  # failed before writing anything
        run_ok(capsys, *argv)
    else:
        run_ok(capsys, *argv, "--arpa", a)
    on_train = run_json(capsys, "eval", m, train_file)
    assert math.isfinite(on_train["perplexity"]) and on_train["perplexity"] > 1
    if smoothing != "addk":
        via_arpa = run_json(capsys, "eval", a, train_file)
        assert via_arpa["perplexity"] == pytest.approx(on_train["perplexity"], rel=1e-6)
    d = run_json(capsys, "eval", m, test_file)
    if smoothing == "mle":  # unseen n-grams have probability 0: infinite, written as JSON null
        assert d["perplexity"] is None
    else:
        assert math.isfinite(d["perplexity"])
        assert d["normalised"] == (smoothing != "stupid")
    if smoothing not in ("stupid", "mle"):
        # a normalised model's next-word distribution sums to 1, in any context
        for context in ([], ["w1"], ["w3", "w4"], ["zz1", "w2"]):
            rows = run_json(capsys, "ngram", "next", m, *context, "-k", "100")
            assert sum(r["prob"] for r in rows) == pytest.approx(1.0, abs=1e-9)


def test_json_output_is_strict_json(capsys, tmp_path, train_file, test_file):
    m = tmp_path / "mle.lm"
    run_ok(capsys, "ngram", "train", train_file, "-s", "mle", "-o", m)
    out = run_ok(capsys, "eval", m, test_file, "--json")

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    json.loads(out, parse_constant=reject)


# -- score, next, generate, data -----------------------------------------------------------------
def test_score_and_next_agree(capsys, models):
    rows = run_json(capsys, "ngram", "next", models["model"], "w3", "-k", "3")
    assert len(rows) == 3
    probs = [r["prob"] for r in rows]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    for r in rows:
        if r["word"] == "</s>":
            table = run_json(capsys, "score", models["model"], "w3")
            got = table[-1]
        else:
            table = run_json(capsys, "score", models["model"], "w3", r["word"])
            got = table[1]
        assert got["token"] == r["word"]
        assert math.exp(got["logprob"]) == pytest.approx(r["prob"], rel=1e-9)


def test_next_splits_a_quoted_context_as_score_does(capsys, models):
    """`ngram next M "w3 w4"` = `ngram next M w3 w4`, the rule `score` uses for its sentence."""
    quoted = run_json(capsys, "ngram", "next", models["model"], "w3  w4", "-k", "5")
    separate = run_json(capsys, "ngram", "next", models["model"], "w3", "w4", "-k", "5")
    assert quoted == separate
    mixed = run_json(capsys, "ngram", "next", models["model"], " w3", "w4 ", "-k", "5")
    assert mixed == separate
    # the probability `next` gives a word is what `score` gives it after the same quoted context
    best = next(r for r in separate if r["word"] != "</s>")
    table = run_json(capsys, "score", models["model"], f"w3 w4 {best['word']}")
    assert math.exp(table[2]["logprob"]) == pytest.approx(best["prob"], rel=1e-9)


def test_options_may_come_between_the_words(capsys, models):
    """`lmlab score M --json the cat` (options before or among the words, as most tools allow)
    was an error: argparse left the words after an option over."""
    m = models["model"]
    together = run_json(capsys, "score", m, "w3", "w4")
    assert json.loads(run_ok(capsys, "score", m, "--json", "w3", "w4")) == together
    assert json.loads(run_ok(capsys, "score", m, "w3", "--json", "w4")) == together
    assert json.loads(run_ok(capsys, "ngram", "next", m, "-k", "3", "--json", "w3")) == \
        run_json(capsys, "ngram", "next", m, "w3", "-k", "3")
    with pytest.raises(SystemExit) as stop:  # (an unknown option stays an error)
        main(["score", str(m), "--bogus", "w3"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --bogus w3" in capsys.readouterr().err


def test_score_text_output(capsys, models):
    out = run_ok(capsys, "score", models["model"], "w1 zz9 w2")
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines[1:-1]] == ["w1", "zz9", "w2", "</s>"]
    assert "(OOV)" in lines[2] and "(OOV)" not in lines[1]
    table = run_json(capsys, "score", models["model"], "w1", "zz9", "w2")
    total = sum(r["log10prob"] for r in table)
    assert float(lines[-1].split()[1]) == pytest.approx(total, abs=1e-4)
    assert [r["oov"] for r in table] == [False, True, False, False]


def test_score_rejects_boundary_token(capsys, models):
    run_err(capsys, "score", models["model"], "w1 <s> w2")


def test_generate_deterministic_per_seed(capsys, models):
    a = run_ok(capsys, "generate", models["model"], "--words", "20", "--seed", "1")
    b = run_ok(capsys, "generate", models["model"], "--words", "20", "--seed", "1")
    c = run_ok(capsys, "generate", models["model"], "--words", "20", "--seed", "2")
    assert a == b
    assert a != c
    words = a.split()
    assert len(words) == 20
    assert all(w.startswith("w") or w == "<unk>" for w in words)


def test_generate_prefix_and_top_k(capsys, models):
    out = run_ok(capsys, "generate", models["model"], "--words", "5", "--prefix", "w1 w2",
                 "--top-k", "1")
    assert out.split()[:2] == ["w1", "w2"]
    # top-1 is greedy: independent of the seed
    again = run_ok(capsys, "generate", models["model"], "--words", "5", "--prefix", "w1 w2",
                   "--top-k", "1", "--seed", "7")
    assert out == again


def test_data_info(capsys):
    out = run_ok(capsys, "data", "info")
    for name in ("ptb", "wikitext-2", "ptb-char", "zh-fortunes"):
        assert f"{name}:" in out
    assert "sha256" in out
    assert "ptb:" in run_ok(capsys, "data", "info", "ptb")


def test_data_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("LMLAB_DATA", raising=False)
    run_err(capsys, "data", "verify")
    run_err(capsys, "data", "info", "nosuchcorpus")
    run_err(capsys, "data", "verify", "ptb", "--data", tmp_path / "none",
            name=tmp_path / "none")
    msg = run_err(capsys, "data", "verify", "ptb", "--data", tmp_path)
    assert "missing" in msg


# -- bad input matrix ----------------------------------------------------------------------------
@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def assert_nothing_written(directory: Path, inputs: set[str]) -> None:
    left = set(os.listdir(directory)) - inputs
    assert left == set(), f"left behind: {left}"


@pytest.mark.parametrize("content, line", [
    (None, None),  # missing file
    (b"w1 w2\nw3\nw4 \xff\xfe w5\n", 3),
    (b"w1 w2\n\x00\x01\x02\x03binary\n", 2),
    (b"", None),
    (b"\n\n\n", None),
    (b"w1 w2\nw3 </s> w4\n", 2),
])
def test_train_bad_text(capsys, work, content, line):
    src = work / "train.txt"
    if content is not None:
        src.write_bytes(content)
    out = work / "model.lm"
    run_err(capsys, "ngram", "train", src, "-o", out, "--arpa", work / "m.arpa", name=src,
            line=line)
    assert not out.exists()
    assert_nothing_written(work, {"train.txt"} if content is not None else set())


def test_train_truncated_gzip(capsys, work, train_file):
    data = gzip.compress(train_file.read_bytes() * 20)
    src = work / "train.txt.gz"
    src.write_bytes(data[: len(data) // 2])
    msg = run_err(capsys, "ngram", "train", src, "-o", work / "m.lm", name=src)
    assert "truncated" in msg
    assert_nothing_written(work, {"train.txt.gz"})


@pytest.mark.parametrize("order", ["0", "99", "-1"])
def test_train_bad_order(capsys, work, train_file, order):
    msg = run_err(capsys, "ngram", "train", train_file, "--order", order, "-o", work / "m.lm")
    assert "order" in msg
    assert_nothing_written(work, set())


@pytest.mark.parametrize("extra", [["--min-count", "0"], ["--max-vocab", "2"],
                                   ["-s", "addk", "--add-k", "0"],
                                   ["-s", "addk", "--arpa", "x.arpa"],
                                   # options that the others make idle: errors, not ignored
                                   ["--add-k", "0.5"], ["-s", "kn", "--backoff-factor", "0.5"],
                                   ["-s", "kn", "--strict-discounts"]])
def test_train_bad_options_write_nothing(capsys, work, train_file, extra, monkeypatch):
    monkeypatch.chdir(work)
    run_err(capsys, "ngram", "train", train_file, "-o", "m.lm", *extra)
    assert_nothing_written(work, set())


def test_train_bad_output_paths_fail_before_writing(capsys, work, train_file):
    m = work / "m.lm"
    (work / "afile").write_text("x")
    run_err(capsys, "ngram", "train", train_file, "-o", m, "--arpa",
            work / "afile" / "no" / "m.arpa", name=work / "afile")  # a file on the way
    run_err(capsys, "ngram", "train", train_file, "-o", work, name=work)  # a directory
    run_err(capsys, "ngram", "train", train_file)  # nothing to write
    assert_nothing_written(work, {"afile"})
    # a missing folder is created (as PyTorch tools do)
    run_ok(capsys, "ngram", "train", train_file, "-o", work / "new" / "m.lm")
    assert (work / "new" / "m.lm").is_file()


def test_train_kenlm_slips_fail_before_writing(capsys, work, train_file, monkeypatch):
    monkeypatch.chdir(work)
    msg = run_err(capsys, "ngram", "train", train_file, "-o", "5")  # lmplz -o 5: the order
    assert "--order" in msg
    run_err(capsys, "ngram", "train", train_file, "-o", "m.arpa", name="m.arpa")
    run_err(capsys, "ngram", "train", train_file, "-o", "m.ARPA.gz", name="m.ARPA.gz")
    assert_nothing_written(work, set())
    run_ok(capsys, "ngram", "train", train_file, "-o", "m.lm", "--arpa", "m.arpa")


def test_train_bad_vocab_file(capsys, work, train_file):
    v = work / "v.txt"
    v.write_text("w1\nw2\nw1\n", encoding="utf-8")
    run_err(capsys, "ngram", "train", train_file, "--vocab", v, "-o", work / "m.lm", name=v,
            line=3)
    v.write_text("w1\nw2\n", encoding="utf-8")  # given, it is not also built from the text
    for extra in (["--min-count", "2"], ["--max-vocab", "3"]):
        assert "use one or the other" in run_err(capsys, "ngram", "train", train_file, "--vocab",
                                                 v, "-o", work / "m.lm", *extra)
    assert_nothing_written(work, {"v.txt"})


def test_eval_oov_only_text(capsys, models, work):
    t = work / "oov.txt"
    t.write_text("zz1 zz2\nzz3\n", encoding="utf-8")
    msg = run_err(capsys, "eval", models["model"], t, name=t)
    assert "vocabulary" in msg


@pytest.mark.parametrize("content, line", [
    (b"", None),
    (b"w1 \xff\n", 1),
    (b"w1\nw2 <s>\n", 2),
    (None, None),
])
def test_eval_bad_text(capsys, models, work, content, line):
    t = work / "t.txt"
    if content is not None:
        t.write_bytes(content)
    run_err(capsys, "eval", models["model"], t, name=t, line=line)


def test_eval_truncated_arpa(capsys, models, work, test_file):
    data = models["arpa"].read_bytes()
    cut = work / "cut.arpa"
    cut.write_bytes(data[: len(data) // 2])  # in the middle of a line, likely
    n_lines = cut.read_bytes().count(b"\n")
    msg = run_err(capsys, "eval", cut, test_file)
    # the last, cut line is malformed (n_lines + 1) or, cut at a line end, the section is short
    assert msg.startswith((f"{cut}:{n_lines}: ", f"{cut}:{n_lines + 1}: "))
    problem = msg.split(": ", 1)[1]
    assert "truncated" in problem or "malformed" in problem


def test_eval_truncated_arpa_gz(capsys, models, work, test_file):
    data = gzip.compress(models["arpa"].read_bytes())
    cut = work / "cut.arpa.gz"
    cut.write_bytes(data[: len(data) // 2])
    run_err(capsys, "eval", cut, test_file, name=cut)


def test_eval_corrupt_arpa_number(capsys, models, work, test_file):
    lines = models["arpa"].read_text(encoding="utf-8").splitlines(keepends=True)
    target = lines.index("\\2-grams:\n") + 3  # 0-based index of the 3rd bigram line
    prob, rest = lines[target].split("\t", 1)
    lines[target] = "-0.3x7e\t" + rest
    bad = work / "bad.arpa"
    bad.write_text("".join(lines), encoding="utf-8")
    msg = run_err(capsys, "eval", bad, test_file, name=bad, line=target + 1)
    assert "number" in msg


def test_eval_non_model_files(capsys, work, train_file, test_file):
    run_err(capsys, "eval", train_file, test_file, name=train_file)  # a text file
    e = work / "empty.lm"
    e.write_bytes(b"")
    run_err(capsys, "eval", e, test_file, name=e)
    run_err(capsys, "eval", work / "missing.lm", test_file, name=work / "missing.lm")
    run_err(capsys, "eval", work, test_file, name=work)  # a directory
    g = work / "garbage.gz"
    g.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    run_err(capsys, "eval", g, test_file, name=g)


@pytest.mark.parametrize("cut", [1, 100, 5000])
def test_eval_truncated_model(capsys, models, work, test_file, cut):
    data = models["model"].read_bytes()
    t = work / "trunc.lm"
    t.write_bytes(data[:-cut])
    msg = run_err(capsys, "eval", t, test_file, name=t)
    assert "truncated" in msg or "corrupt" in msg


def test_eval_per_line_bad_path(capsys, models, work, test_file):
    run_err(capsys, "eval", models["model"], test_file, "--per-line", work, name=work)
    (work / "afile").write_text("x")
    run_err(capsys, "eval", models["model"], test_file, "--per-line",
            work / "afile" / "x.jsonl", name=work / "afile")
    assert_nothing_written(work, {"afile"})


@pytest.mark.parametrize("argv", [
    ["ngram", "next", "MODEL", "w1", "--top", "0"],
    ["generate", "MODEL", "--temperature", "0"],
    ["generate", "MODEL", "--temperature", "-1"],
    ["generate", "MODEL", "--temperature", "inf"],
    ["generate", "MODEL", "--temperature", "nan"],
    ["generate", "MODEL", "--words", "0"],
    ["generate", "MODEL", "--top-k", "0"],
])
def test_bad_options(capsys, models, argv):
    run_err(capsys, *[str(models["model"]) if a == "MODEL" else a for a in argv])


def test_console_subprocess(train_file, tmp_path):
    """The real console path: ``python -m lmlab.cli`` exits 2 with one line on a bad file."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"w1 w2\nw3\n\xff\xfe\n")
    out = tmp_path / "m.lm"
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "ngram", "train", str(bad),
                           "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"lmlab: error: {bad}:3: not valid UTF-8 text"]
    assert proc.stdout == ""
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.txt"]
