"""Tokenizers (:mod:`lmlab.tokenizers`): lossless round trips, the metrics that compare
tokenizations (characters, bytes, words counted from the raw text), normalised distributions,
the byte tokenizer's closed vocabulary, persistence in every model format, the CLI end to end,
and bad input as one error line.
"""

from __future__ import annotations

import json
import math
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmlab
from lmlab.corpus import BOS, EOS, EOS_ID
from lmlab.errors import LmlabError
from lmlab.ngram.arpa import companion_path
from lmlab.tokenizers import (
    SPACE,
    WHITESPACE,
    make_tokenizer,
    tokenizer_from_spec,
)
from tests.cli_helpers import fails, ok

# small texts: fallback discounts and OOV shares are expected, not the subject here
_QUIET = ("small or artificial data", "falls back to", "outside the model's vocabulary")
pytestmark = [pytest.mark.filterwarnings(f"ignore:.*{m}:lmlab.errors.LmlabWarning")
              for m in _QUIET]

quick = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ASCII_WS = " \t\n\r\f\v"

# A small training text: English words, accented words and Chinese, a few odd spaces.
_WORDS = ("the cat sat on a mat while dog ran to big red house and small blue car under green "
          "tree café naïve résumé 北京 天安门 我们 喜欢").split()


def _sentences(seed: int, n: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 9))) for _ in range(n)]


TRAIN_LINES = _sentences(1, 200)
TEST_LINES = _sentences(2, 25) + ["", "the  cat\tsat", "北京天安门"]
ZH_LINES = ["我们喜欢北京", "北京天安门", "我喜欢天安门", "天安门在北京", "我们在北京"] * 8


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tok_texts")
    return {"train": _write(d / "train.txt", TRAIN_LINES),
            "test": _write(d / "test.txt", TEST_LINES),
            "zh": _write(d / "zh.txt", ZH_LINES),
            "dir": d}


@pytest.fixture(scope="module")
def models(texts) -> dict:
    """One model per tokenizer on the same training text, trained once for the module."""
    return {"whitespace": lmlab.train_ngram(texts["train"], order=2, smoothing="kn"),
           "char": lmlab.train_ngram(texts["train"], order=3, smoothing="kn", tokenizer="char"),
           "byte": lmlab.train_ngram(texts["train"], order=3, smoothing="kn", tokenizer="byte")}


def _tokens_ok(tokens: list[str]) -> None:
    for t in tokens:
        assert t, tokens
        assert not any(c.isspace() for c in t), tokens
        assert t not in (BOS, EOS), tokens


def _subword(name: str, vocab_size: int, lines=TRAIN_LINES):
    pytest.importorskip("tokenizers" if name == "bpe" else "sentencepiece")
    tok = make_tokenizer(name, vocab_size)
    tok.fit(iter(lines), "train.txt")
    return tok


# vocabulary sizes the training text allows (byte fallback / the byte alphabet take 256)
SUBWORD_SIZES = {"sentencepiece": 300, "sentencepiece-bpe": 320, "bpe": 300}


# -- 1. round trips -------------------------------------------------------------------------------
@quick
@given(st.text(alphabet=st.characters(blacklist_characters=SPACE, blacklist_categories=("Cs",))))
def test_char_round_trip(s):
    # a literal "▁" or "<U+XXXX>" in the text: see test_round_trip_of_literal_escapes
    if re.search(r"<U\+[0-9A-F]{4,6}>", s):
        return
    tok = make_tokenizer("char")
    tokens = tok.split(s)
    assert tok.join(tokens) == s
    assert len(tokens) == len(s)
    _tokens_ok(tokens)


@pytest.mark.parametrize("name", ["char", "jieba"])
@pytest.mark.parametrize("text", ["a\u2581b", "x<U+0009>y"])
def test_round_trip_of_literal_escapes(name, text):
    if name == "jieba":
        pytest.importorskip("jieba")
    tok = make_tokenizer(name)
    assert tok.join(tok.split(text)) == text


def test_char_join_of_out_of_range_escape_text():
    tok = make_tokenizer("char")
    assert tok.join(tok.split("<U+110000>")) == "<U+110000>"


@quick
@given(st.text())
def test_byte_round_trip(s):
    tok = make_tokenizer("byte")
    tokens = tok.split(s)
    assert tok.join(tokens) == s
    assert len(tokens) == len(s.encode("utf-8"))
    assert set(tokens) <= set(tok.fixed_vocabulary)
    _tokens_ok(tokens)


@quick
@given(st.binary())
def test_byte_tokens_of_any_bytes(data):
    """Invalid UTF-8, read with surrogateescape (as the byte tokenizer reads files): one token
    per byte, and the token's place in the fixed vocabulary is the byte."""
    tok = make_tokenizer("byte")
    s = data.decode("utf-8", "surrogateescape")
    tokens = tok.split(s)
    vocab = tok.fixed_vocabulary
    assert bytes(vocab.index(t) for t in tokens) == data
    _tokens_ok(tokens)


def test_byte_join_inverts_invalid_utf8():
    tok = make_tokenizer("byte")
    s = b"ab\xff\xc3 c".decode("utf-8", "surrogateescape")
    assert tok.join(tok.split(s)) == s


MIXED = ["我爱北京天安门", "the cat sat on the mat", "hello 世界  two  spaces\tand a tab",
         "  leading and trailing  ", "café naïve 北京 ok"]


def test_jieba_round_trip():
    pytest.importorskip("jieba")
    tok = make_tokenizer("jieba")
    assert tok.split("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    for line in MIXED:
        tokens = tok.split(line)
        assert tok.join(tokens) == line
        _tokens_ok(tokens)
    assert tokenizer_from_spec(tok.spec()) == tok


@pytest.mark.parametrize("name", sorted(SUBWORD_SIZES))
def test_subword_round_trip(name):
    tok = _subword(name, SUBWORD_SIZES[name])
    assert tok.model
    for line in MIXED + TEST_LINES + ["unseen ÿ text 🙂", "<s> x </s>"]:
        tokens = tok.split(line)
        assert tok.join(tokens) == line, (line, tokens)
        _tokens_ok(tokens)
    assert tok.split_lines(MIXED) == [tok.split(line) for line in MIXED]
    again = tokenizer_from_spec(json.loads(json.dumps(tok.spec())))
    assert again == tok and again.split(MIXED[4]) == tok.split(MIXED[4])


# -- 2. whitespace vs whitespace-ascii ------------------------------------------------------------
def test_whitespace_vs_whitespace_ascii():
    s = "a\u00a0b c\u3000d\te\u2003f"
    assert make_tokenizer("whitespace").split(s) == ["a", "b", "c", "d", "e", "f"]
    assert make_tokenizer("whitespace-ascii").split(s) == ["a\u00a0b", "c\u3000d", "e\u2003f"]
    assert make_tokenizer("whitespace") is WHITESPACE and WHITESPACE.is_default
    assert not make_tokenizer("whitespace-ascii").is_default


@quick
@given(st.text(alphabet=st.sampled_from(list("ab \t\n\r\f\v") + ["\u00a0", "\u3000", "\u2003",
                                                                  "\x1c", "\x85", "é"])))
def test_whitespace_ascii_splits_on_ascii_whitespace_only(s):
    tok = make_tokenizer("whitespace-ascii")
    assert tok.split(s) == [t for t in re.split(f"[{ASCII_WS}]+", s) if t]
    # bytes.split() separates on exactly the ASCII whitespace: an independent oracle
    assert tok.split(s) == [w.decode("utf-8") for w in s.encode("utf-8").split()]


def test_whitespace_ascii_model_keeps_nbsp_words(tmp_path):
    path = _write(tmp_path / "t.txt", ["a\u00a0b c", "c\u3000d e"])
    lm = lmlab.train_ngram(path, order=2, smoothing="mle", tokenizer="whitespace-ascii")
    assert "a\u00a0b" in lm.vocab and "c\u3000d" in lm.vocab
    assert lm.perplexity(path).oov == 0


def test_whitespace_ascii_scoring_agrees_with_token_logprobs():
    lm = lmlab.train_ngram(["a\u00a0b c", "c\u3000d e"], order=2, smoothing="mle",
                           tokenizer="whitespace-ascii")
    assert [t.token for t in lm.token_logprobs("a\u00a0b c")] == ["a\u00a0b", "c", EOS]
    r = lm.perplexity(["a\u00a0b c"])
    assert r.oov == 0 and r.tokens == 3


def test_whitespace_ascii_arpa_round_trip(tmp_path):
    from lmlab.ngram.arpa import read_arpa, write_arpa

    lm = lmlab.train_ngram(["a\u00a0b c", "c\u3000d e"], order=2, smoothing="kn",
                           tokenizer="whitespace-ascii")
    write_arpa(lm, tmp_path / "m.arpa")
    back = read_arpa(tmp_path / "m.arpa")
    assert back.vocab.itos == lm.vocab.itos
    assert back.vocab.tokenizer == lm.vocab.tokenizer


# -- 3. totals across tokenizations ---------------------------------------------------------------
def test_counts_are_those_of_the_raw_text(models, texts):
    results = {name: m.perplexity(texts["test"]) for name, m in models.items()}
    raw = texts["test"].read_text(encoding="utf-8").splitlines()
    want = (sum(len(s) + 1 for s in raw), sum(len(s.encode("utf-8")) + 1 for s in raw),
            sum(len(s.split()) for s in raw), len(raw))
    for name, r in results.items():
        assert (r.characters, r.bytes, r.words, r.sentences) == want, name
        assert r.bits_per_character * r.characters == pytest.approx(r.total_bits, rel=1e-12)
        assert r.bits_per_byte * r.bytes == pytest.approx(r.total_bits, rel=1e-12)
        assert r.total_bits == pytest.approx(-r.logprob / math.log(2), rel=1e-12)
        assert math.isfinite(r.total_bits) and r.total_bits > 0
        d = r.to_dict()
        assert d["bits_per_character"] == r.bits_per_character
        assert d["word_perplexity"] == r.word_perplexity
    assert results["whitespace"].word_perplexity == pytest.approx(
        results["whitespace"].perplexity, rel=1e-12)
    char, byte = results["char"], results["byte"]
    assert char.tokens == char.characters  # one token per character, </s> per line end
    assert char.bits_per_token == pytest.approx(char.bits_per_character, rel=1e-12)
    assert byte.tokens == byte.bytes
    assert byte.bits_per_token == pytest.approx(byte.bits_per_byte, rel=1e-12)
    for r in (char, byte):  # comparable with the word model's perplexity
        n = r.words + r.sentences
        assert r.word_perplexity == pytest.approx(math.exp(-r.logprob / n), rel=1e-12)


def test_hand_counted_characters_and_bytes(models, tmp_path):
    # "é a": 3 characters + end = 4, bytes 2 + 1 + 1 + end = 5; "北京": 2 + 1, 6 + 1;
    # the empty line: its end only
    path = tmp_path / "tiny.txt"
    path.write_bytes("é a\n北京\n\n".encode())
    for name, lm in models.items():
        r = lm.perplexity(path)
        assert (r.characters, r.bytes, r.words, r.sentences) == (8, 13, 3, 3), name
    assert models["char"].perplexity(path).tokens == 8
    assert models["byte"].perplexity(path).tokens == 13


def test_crlf_and_last_line_without_newline(models, tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"the\r\ncat")  # "the" (4 with its end: CRLF is one line end), "cat" (4)
    for lm in models.values():
        r = lm.perplexity(path)
        assert (r.characters, r.bytes, r.words, r.sentences) == (8, 8, 2, 2)


def test_byte_model_token_list_counts_bytes(models):
    r = models["byte"].perplexity([["a", "<0xFF>"]])
    assert r.bytes == 3  # two bytes and the line end


# -- 4. distributions sum to one ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["char", "byte"])
@pytest.mark.parametrize("smoothing", ["mle", "addk", "katz", "wb", "kn", "mkn"])
def test_distributions_sum_to_one(texts, name, smoothing):
    lm = lmlab.train_ngram(texts["train"], order=3, smoothing=smoothing, tokenizer=name)
    tok = lm.vocab.tokenizer
    for context in ["", "th", "the c", "北", "caf", "zq"]:
        logp = lm.next_logprobs(tok.split(context))
        assert len(logp) == len(lm.vocab)
        assert math.isclose(np.exp(logp).sum(), 1.0, rel_tol=1e-9), (context, smoothing)
    probs = dict(lm.next_words("the c", k=len(lm.vocab)))
    assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)


# -- 5. the byte tokenizer's closed vocabulary ----------------------------------------------------
def test_byte_vocabulary_holds_all_bytes(tmp_path):
    path = _write(tmp_path / "ab.txt", ["ab ba", "abab"])
    lm = lmlab.train_ngram(path, order=3, smoothing="kn", tokenizer="byte")
    byte_tokens = make_tokenizer("byte").fixed_vocabulary
    assert len(set(byte_tokens)) == 256
    assert set(byte_tokens) <= set(lm.vocab.itos)
    assert len(lm.vocab) == 256 + 3
    r = lm.perplexity(["ÿ€ xyz 🙂 \t!", "ab"])
    assert r.oov == 0 and math.isfinite(r.perplexity) and r.perplexity > 1
    assert math.isclose(np.exp(lm.next_logprobs([])).sum(), 1.0, rel_tol=1e-9)


def test_byte_model_scores_invalid_utf8(models, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"the \xff\xfe cat\n\xc3\nok\n")
    r = models["byte"].perplexity(path)
    assert r.oov == 0 and math.isfinite(r.perplexity)
    assert r.bytes == len(b"the \xff\xfe cat\n\xc3\nok\n")
    assert r.tokens == r.bytes and r.sentences == 3


def test_byte_and_char_training_on_tiny_text_in_memory():
    lm = lmlab.train_ngram(["ab"], order=2, smoothing="addk", tokenizer="byte")
    assert len(lm.vocab) == 259
    assert lm.perplexity(["zz"]).oov == 0


# -- 6. persistence -------------------------------------------------------------------------------
def _same(a, b, path) -> None:
    assert b.vocab.tokenizer == a.vocab.tokenizer
    assert b.vocab.itos == a.vocab.itos
    ra, rb = a.perplexity(path), b.perplexity(path)
    assert ra == rb  # bit for bit, characters and bytes included


def _persist_ngram(lm, d: Path, test: Path) -> None:
    from lmlab.ngram.arpa import read_arpa, write_arpa
    from lmlab.ngram.binary import load_binary, write_binary

    lm.save(d / "m.lm")
    _same(lm, lmlab.load(d / "m.lm"), test)
    write_binary(lm, d / "m.bin")
    binary = load_binary(d / "m.bin")
    _same(lm, binary, test)
    _same(lm, lmlab.load(d / "m.bin"), test)
    write_arpa(lm, d / "m.arpa")
    assert Path(companion_path(d / "m.arpa")).exists()
    arpa = read_arpa(d / "m.arpa")
    assert arpa.vocab.tokenizer == lm.vocab.tokenizer
    assert lmlab.load(d / "m.arpa").vocab.tokenizer == lm.vocab.tokenizer
    # ARPA keeps 8 significant digits: close, and the same text counts
    ra, rb = lm.perplexity(test), arpa.perplexity(test)
    assert (ra.tokens, ra.oov, ra.characters, ra.bytes, ra.words) == \
        (rb.tokens, rb.oov, rb.characters, rb.bytes, rb.words)
    assert rb.perplexity == pytest.approx(ra.perplexity, rel=1e-6)
    # the ARPA file read back and written again: the same model, bit for bit
    write_arpa(arpa, d / "again.arpa")
    _same(arpa, read_arpa(d / "again.arpa"), test)


def test_char_model_persistence(texts, tmp_path):
    lm = lmlab.train_ngram(texts["train"], order=3, smoothing="mkn", tokenizer="char")
    _persist_ngram(lm, tmp_path, texts["test"])
    with zipfile.ZipFile(tmp_path / "m.lm") as z:
        assert json.loads(z.read("tokenizer.json")) == {"name": "char"}


@pytest.mark.parametrize("name", ["sentencepiece", "bpe"])
def test_subword_model_persistence(texts, tmp_path, name):
    pytest.importorskip("tokenizers" if name == "bpe" else "sentencepiece")
    lm = lmlab.train_ngram(texts["train"], order=3, smoothing="kn", tokenizer=name,
                           vocab_size=SUBWORD_SIZES[name])
    assert lm.vocab.tokenizer.model
    _persist_ngram(lm, tmp_path, texts["test"])


def test_whitespace_files_unchanged(texts, tmp_path):
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.binary import write_binary

    lm = lmlab.train_ngram(texts["train"], order=2, smoothing="kn")
    lm.save(tmp_path / "w.lm")
    with zipfile.ZipFile(tmp_path / "w.lm") as z:
        assert "tokenizer.json" not in z.namelist()
    write_binary(lm, tmp_path / "w.bin")
    assert lmlab.load(tmp_path / "w.bin").vocab.tokenizer is WHITESPACE
    # an ARPA path that held a char model: its companion goes with the whitespace model
    char = lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="char")
    arpa = tmp_path / "m.arpa"
    write_arpa(char, arpa)
    assert Path(companion_path(arpa)).exists()
    write_arpa(lm, arpa)
    assert not Path(companion_path(arpa)).exists()
    assert lmlab.load(arpa).vocab.tokenizer is WHITESPACE
    _same(lm, lmlab.load(tmp_path / "w.lm"), texts["test"])


def test_neural_checkpoint_keeps_tokenizer(texts, tmp_path):
    pytest.importorskip("torch")
    d = tmp_path / "data"
    d.mkdir()
    _write(d / "train.txt", TRAIN_LINES[:60])
    _write(d / "valid.txt", TRAIN_LINES[60:70])
    nn = lmlab.train("gru", d, tokenizer="char", hidden=8, emsize=8, layers=1, epochs=1, seed=0)
    assert nn.vocab.tokenizer == make_tokenizer("char")
    nn.save(tmp_path / "ck.pt")
    loaded = lmlab.load(tmp_path / "ck.pt")
    _same(nn, loaded, texts["test"])
    r = loaded.perplexity(texts["test"])
    assert r.tokens == r.characters
    assert r.bits_per_token == pytest.approx(r.bits_per_character, rel=1e-12)
    text = " ".join(loaded.generate(30, seed=1))
    assert SPACE not in text


# -- 7. the CLI end to end ------------------------------------------------------------------------
def test_cli_char_model(capsys, texts, tmp_path):
    m, a = tmp_path / "m.lm", tmp_path / "m.arpa"
    ok(capsys, "ngram", "train", texts["train"], "-n", "3", "--tokenizer", "char", "-o", m,
       "--arpa", a)
    assert Path(companion_path(a)).exists()
    d = json.loads(ok(capsys, "eval", m, texts["test"], "--json"))
    want = lmlab.load(m).perplexity(texts["test"])
    assert d["bits_per_character"] == pytest.approx(want.bits_per_character, rel=1e-12)
    assert d["characters"] == want.characters and d["bytes"] == want.bytes
    assert d["bits_per_character"] == pytest.approx(d["cross_entropy_bits"], rel=1e-12)
    d_arpa = json.loads(ok(capsys, "eval", a, texts["test"], "--json"))
    assert d_arpa["bits_per_character"] == pytest.approx(d["bits_per_character"], rel=1e-6)

    # a raw context: cut into characters by the model's tokenizer
    rows = json.loads(ok(capsys, "ngram", "next", m, "the", "c", "--json"))
    assert rows and all(len(r["word"]) == 1 or r["word"] == EOS for r in rows)
    want_next = lmlab.load(m).next_words("the c", k=10)
    assert [(r["word"], r["prob"]) for r in rows] == [(w, p) for w, p in want_next]
    assert rows[0]["word"] == "a"  # only "cat" and "car" follow "the c" in the text

    # score: tokens are characters, "▁" for a space
    rows = json.loads(ok(capsys, "score", m, "the cat", "--json"))
    assert [r["token"] for r in rows] == ["t", "h", "e", SPACE, "c", "a", "t", EOS]

    out = ok(capsys, "generate", m, "--words", "200", "--seed", "3")
    assert " " in out and SPACE not in out
    # characters of the training text, and <unk> (a model's own token) where it was sampled
    assert set(out.replace("<unk>", "")) - {"\n"} <= set("".join(TRAIN_LINES))


def test_cli_chinese_char_model_generates_no_spaces(capsys, texts, tmp_path):
    m = tmp_path / "zh.lm"
    ok(capsys, "ngram", "train", texts["zh"], "-n", "3", "--tokenizer", "char", "-o", m)
    out = ok(capsys, "generate", m, "--words", "60", "--seed", "1")
    lines = out.splitlines()
    assert sum(map(len, lines)) > 20  # (an empty sentence is a possible sample)
    assert " " not in out and SPACE not in out
    assert set("".join(lines).replace("<unk>", "")) <= set("".join(ZH_LINES))


def test_cli_prune_and_build_binary_keep_the_tokenizer(capsys, texts, tmp_path):
    m = tmp_path / "m.lm"
    ok(capsys, "ngram", "train", texts["train"], "-n", "3", "--tokenizer", "char", "-o", m,
       "--arpa", tmp_path / "m.arpa")
    ok(capsys, "ngram", "prune", m, tmp_path / "p.arpa", "--entropy", "1e-4")
    ok(capsys, "ngram", "prune", m, tmp_path / "p.lm", "--entropy", "1e-4")
    ok(capsys, "ngram", "build-binary", tmp_path / "m.arpa", tmp_path / "m.bin")
    char = make_tokenizer("char")
    for name in ("p.arpa", "p.lm", "m.bin"):
        assert lmlab.load(tmp_path / name).vocab.tokenizer == char, name
    assert Path(companion_path(tmp_path / "p.arpa")).exists()


def test_cli_interpolate_needs_one_tokenizer(capsys, texts, tmp_path):
    for name in ("char", "whitespace"):
        ok(capsys, "ngram", "train", texts["train"], "-n", "2", "--tokenizer", name,
           "-o", tmp_path / f"{name}.lm")
    msg = fails(capsys, "interpolate", tmp_path / "char.lm", tmp_path / "whitespace.lm",
                "--valid", texts["test"], "-o", tmp_path / "mix.json")
    assert "tokenizer" in msg
    assert not (tmp_path / "mix.json").exists()


def test_cli_byte_and_whitespace_eval_agree_on_counts(capsys, texts, tmp_path):
    got = {}
    for name in ("whitespace", "byte"):
        m = tmp_path / f"{name}.lm"
        ok(capsys, "ngram", "train", texts["train"], "-n", "2", "--tokenizer", name, "-o", m)
        got[name] = json.loads(ok(capsys, "eval", m, texts["test"], "--json"))
    keys = ("characters", "bytes", "words", "sentences")
    assert [got["byte"][k] for k in keys] == [got["whitespace"][k] for k in keys]
    assert got["whitespace"]["word_perplexity"] == pytest.approx(
        got["whitespace"]["perplexity"], rel=1e-12)
    assert got["byte"]["bits_per_byte"] == pytest.approx(got["byte"]["cross_entropy_bits"],
                                                         rel=1e-12)


def test_cli_neural_char_model(capsys, texts, tmp_path):
    pytest.importorskip("torch")
    d = tmp_path / "data"
    d.mkdir()
    _write(d / "train.txt", TRAIN_LINES[:40])
    _write(d / "valid.txt", TRAIN_LINES[40:45])
    ck = tmp_path / "ck.pt"
    ok(capsys, "train", "gru", "--data", d, "-o", ck, "--tokenizer", "char", "--hidden", "8",
       "--emsize", "8", "--layers", "1", "--epochs", "1")
    assert lmlab.load(ck).vocab.tokenizer == make_tokenizer("char")
    r = json.loads(ok(capsys, "eval", ck, texts["test"], "--json"))
    assert r["tokens"] == r["characters"]
    assert r["bits_per_character"] == pytest.approx(r["cross_entropy_bits"], rel=1e-9)


# -- 8. bad input ---------------------------------------------------------------------------------
def test_char_training_on_invalid_utf8_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\nbad \xff line\n")
    msg = fails(capsys, "ngram", "train", bad, "-n", "2", "--tokenizer", "char",
                "-o", tmp_path / "m.lm")
    assert f"{bad}:2:" in msg and "UTF-8" in msg
    assert not (tmp_path / "m.lm").exists()
    with pytest.raises(LmlabError, match="UTF-8"):
        lmlab.train_ngram(bad, order=2, tokenizer="char")


@pytest.mark.parametrize("name", ["char", "byte", "whitespace", "jieba"])
def test_vocab_size_needs_a_subword_tokenizer(capsys, texts, tmp_path, name):
    msg = fails(capsys, "ngram", "train", texts["train"], "--tokenizer", name, "--vocab-size",
                "300", "-o", tmp_path / "m.lm")
    assert "--vocab-size" in msg and name in msg
    assert not (tmp_path / "m.lm").exists()
    with pytest.raises(LmlabError, match="vocab-size"):
        lmlab.train_ngram(texts["train"], tokenizer=name, vocab_size=300)


def test_vocab_size_alone_is_an_error(capsys, texts, tmp_path):
    msg = fails(capsys, "ngram", "train", texts["train"], "--vocab-size", "300",
                "-o", tmp_path / "m.lm")
    assert "--vocab-size" in msg


@pytest.mark.parametrize("name,size", [("sentencepiece", 100000), ("sentencepiece", 20),
                                       ("sentencepiece-bpe", 100000), ("bpe", 100000),
                                       ("bpe", 20), ("bpe", 0)])
def test_subword_vocab_size_the_text_does_not_allow(capsys, texts, tmp_path, name, size):
    pytest.importorskip("tokenizers" if name == "bpe" else "sentencepiece")
    msg = fails(capsys, "ngram", "train", texts["train"], "--tokenizer", name, "--vocab-size",
                size, "-o", tmp_path / "m.lm")
    assert str(size) in msg
    assert not (tmp_path / "m.lm").exists()


def test_sentencepiece_training_is_quiet_on_stderr(texts, tmp_path):
    pytest.importorskip("sentencepiece")
    import subprocess

    # a fresh process: sentencepiece logs this once per process, whatever ran before
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "ngram", "train",
                           str(texts["train"]), "-n", "2", "--tokenizer", "sentencepiece",
                           "--vocab-size", "300", "-o", str(tmp_path / "m.lm")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trained "), proc.stderr


def _rewrite_tokenizer(path: Path, spec: dict) -> None:
    with zipfile.ZipFile(path) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    entries["tokenizer.json"] = json.dumps(spec).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)


def test_unknown_tokenizer_in_model_file(capsys, texts, tmp_path):
    m = tmp_path / "m.lm"
    lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="char").save(m)
    assert lmlab.load(m).vocab.tokenizer.name == "char"  # the rewritten zip is still readable
    _rewrite_tokenizer(m, {"name": "nosuch"})
    for argv in (("eval", m, texts["test"]), ("generate", m), ("ngram", "next", m, "a")):
        msg = fails(capsys, *argv)
        assert "nosuch" in msg and "upgrade" in msg and str(m) in msg
    with pytest.raises(LmlabError, match="upgrade"):
        lmlab.load(m)


def test_corrupt_tokenizer_record(capsys, texts, tmp_path):
    m = tmp_path / "m.lm"
    lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="char").save(m)
    _rewrite_tokenizer(m, {"name": "sentencepiece"})  # its model is missing
    msg = fails(capsys, "eval", m, texts["test"])
    assert "corrupt" in msg and "sentencepiece" in msg
    _rewrite_tokenizer(m, ["char"])
    assert "corrupt" in fails(capsys, "eval", m, texts["test"])


def test_unknown_tokenizer_in_arpa_companion(capsys, texts, tmp_path):
    from lmlab.ngram.arpa import write_arpa

    a = tmp_path / "m.arpa"
    write_arpa(lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="char"), a)
    Path(companion_path(a)).write_text(json.dumps({"format": "lmlab-tokenizer",
                                                   "tokenizer": {"name": "nosuch"}}))
    msg = fails(capsys, "eval", a, texts["test"])
    assert "nosuch" in msg and "upgrade" in msg


@pytest.mark.parametrize("module,tokenizer,extra", [("jieba", "jieba", "zh"),
                                                    ("sentencepiece", "sentencepiece", "subword"),
                                                    ("tokenizers", "bpe", "subword")])
def test_missing_optional_package(capsys, monkeypatch, texts, tmp_path, module, tokenizer,
                                  extra):
    monkeypatch.setitem(sys.modules, module, None)  # import then raises ImportError
    msg = fails(capsys, "ngram", "train", texts["train"], "--tokenizer", tokenizer,
                "-o", tmp_path / "m.lm")
    assert f"lmlab[{extra}]" in msg and module in msg
    with pytest.raises(LmlabError, match=re.escape(f"lmlab[{extra}]")):
        lmlab.train_ngram(["a b"], tokenizer=tokenizer)


def test_loading_a_jieba_model_without_jieba(capsys, monkeypatch, texts, tmp_path):
    pytest.importorskip("jieba")
    m = tmp_path / "zh.lm"
    lm = lmlab.train_ngram(texts["zh"], order=2, smoothing="kn", tokenizer="jieba")
    assert "北京" in lm.vocab
    lm.save(m)
    monkeypatch.setitem(sys.modules, "jieba", None)
    msg = fails(capsys, "eval", m, texts["zh"])
    assert "lmlab[zh]" in msg


def test_unknown_tokenizer_name_in_api():
    with pytest.raises(LmlabError, match="nosuch"):
        make_tokenizer("nosuch")
    with pytest.raises(LmlabError, match="vocab-size"):
        make_tokenizer("bpe", 0)


# -- 9. the Python API ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["char", "byte", "whitespace-ascii"])
def test_train_from_sentences_equals_train_from_file(texts, name):
    from_file = lmlab.train_ngram(texts["train"], order=3, smoothing="mkn", tokenizer=name)
    from_list = lmlab.train_ngram(TRAIN_LINES, order=3, smoothing="mkn", tokenizer=name)
    assert from_list.vocab == from_file.vocab
    assert from_list.perplexity(texts["test"]) == from_file.perplexity(texts["test"])


def test_sentencepiece_from_sentences_equals_from_file(texts):
    pytest.importorskip("sentencepiece")
    kw = dict(order=3, smoothing="kn", tokenizer="sentencepiece", vocab_size=300)
    from_file = lmlab.train_ngram(texts["train"], **kw)
    from_list = lmlab.train_ngram(TRAIN_LINES, **kw)
    assert from_list.vocab.tokenizer.split(MIXED[4]) == from_file.vocab.tokenizer.split(MIXED[4])
    assert from_list.vocab.itos == from_file.vocab.itos
    assert from_list.perplexity(texts["test"]).perplexity == pytest.approx(
        from_file.perplexity(texts["test"]).perplexity, rel=1e-12)


def test_raw_sentences_are_scored_as_a_file(models, tmp_path):
    line = "the cat  sat\tcafé 北京"
    path = _write(tmp_path / "one.txt", [line])
    for name, lm in models.items():
        r = lm.perplexity([line])
        assert r == lm.perplexity(path), name
        assert r.logprob == pytest.approx(lm.logprob(line), rel=1e-12)
        assert (r.characters, r.bytes) == (len(line) + 1, len(line.encode()) + 1)
    char = models["char"]
    assert [t.token for t in char.token_logprobs("a b")] == ["a", SPACE, "b", EOS]
    # a list of tokens is taken as tokens, and counted as the text they join into
    r = char.perplexity([["a", SPACE, "b"]])
    assert r == char.perplexity(["a b"])


def test_generate_and_next_words_use_the_tokenizer(models):
    char = models["char"]
    text = char.generate(80, seed=2)
    assert text and all(SPACE not in s for s in text) and any(" " in s for s in text)
    assert char.generate(80, seed=2) == text
    words = dict(char.next_words("the c", k=5))
    assert max(words, key=words.get) == "a"
    prefixed = char.generate(5, seed=0, prefix="the ca")
    assert prefixed[0].startswith("the ca")
    byte = models["byte"]
    assert all(isinstance(s, str) and SPACE not in s for s in byte.generate(60, seed=4))


def test_model_eos_is_the_line_end(models):
    for lm in models.values():
        stream_lp = lm.token_logprobs("")
        assert [t.token for t in stream_lp] == [EOS]
        assert lm.vocab.id(EOS) == EOS_ID


# -- from the review of the change ----------------------------------------------------------------
def test_a_python_sentence_holding_a_newline():
    lm = lmlab.train_ngram(["é\nb", "c"], order=2, smoothing="kn")  # no traceback
    r = lm.perplexity(["é\nb"])
    assert (r.characters, r.bytes) == (4, 5)  # "é", "\n", "b" and the line end


def test_files_holding_a_tokenizer_have_a_newer_version(texts, tmp_path):
    from lmlab.ngram.binary import PREFIX, write_binary

    char = lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="char")
    word = lmlab.train_ngram(texts["train"], order=2, smoothing="kn")
    for lm, version in ((char, 2), (word, 1)):  # an older lmlab refuses, not misreads
        lm.save(tmp_path / "m.lm")
        with zipfile.ZipFile(tmp_path / "m.lm") as z:
            assert json.loads(z.read("header.json"))["version"] == version
        write_binary(lm, tmp_path / "m.bin")
        assert PREFIX.unpack((tmp_path / "m.bin").read_bytes()[:PREFIX.size])[1] == version


def test_min_count_and_max_vocab_hold_for_a_closed_vocabulary(texts):
    byte = lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="byte",
                             max_vocab=10)
    seen = set(make_tokenizer("byte").split(" ".join(TRAIN_LINES)))
    assert len(byte.vocab) == 10 + 256 - len(seen)  # kept, plus the bytes never seen


def test_vocabulary_file_with_a_subword_tokenizer(capsys, texts, tmp_path):
    pytest.importorskip("sentencepiece")
    vocab = tmp_path / "v.txt"
    vocab.write_text("the\ncat\n", encoding="utf-8")
    err = fails(capsys, "ngram", "train", str(texts["train"]), "--vocab", str(vocab),
                "--tokenizer", "sentencepiece", "-o", str(tmp_path / "m.lm"))
    assert "vocabulary file cannot go with the sentencepiece tokenizer" in err


def test_compare_tells_two_subword_models_apart(texts, tmp_path):
    pytest.importorskip("sentencepiece")
    a = lmlab.train_ngram(texts["train"], order=2, smoothing="kn",
                          tokenizer="sentencepiece-bpe", vocab_size=320)
    b = lmlab.train_ngram(_write(tmp_path / "other.txt", TRAIN_LINES[::-1][:120]), order=2,
                          smoothing="kn", tokenizer="sentencepiece-bpe", vocab_size=300)
    b.vocab.tokenizer.vocab_size = 320  # the same description, another trained model
    assert a.vocab.tokenizer.describe() == b.vocab.tokenizer.describe()
    c = lmlab.compare([a, b], texts["test"])
    assert c.by_characters and c.pairs == []


def test_kenlm_api_refuses_a_char_model(texts, tmp_path):
    from lmlab.kenlm import Model
    from lmlab.ngram.arpa import write_arpa

    char = lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer="char")
    write_arpa(char, tmp_path / "c.arpa")
    with pytest.raises(LmlabError, match="char tokenizer"):
        Model(tmp_path / "c.arpa")


def test_resume_keeps_its_tokenizer(capsys, texts, tmp_path):
    err = fails(capsys, "train", "gru", "--data", str(texts["dir"]), "-o",
                str(tmp_path / "x.pt"), "--resume", "--vocab-size", "300")
    assert "a resumed run keeps its tokenizer" in err


def test_the_callers_tokenizer_object_is_not_trained_in_place(texts):
    pytest.importorskip("sentencepiece")
    tok = make_tokenizer("sentencepiece-bpe", 320)
    lm = lmlab.train_ngram(texts["train"], order=2, smoothing="kn", tokenizer=tok)
    assert tok.model is None and lm.vocab.tokenizer.model is not None
