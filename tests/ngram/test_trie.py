"""The trie layout of the binary format (``build-binary --layout trie``) and the bit packing under
it: lossless packing, float32 scores, lookups equal to the keys', the keys never rebuilt to score,
and a crafted file that cannot read out of bounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmlab.corpus import TokenStream
from lmlab.errors import LmlabError
from lmlab.models import load_model
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.binary import load_binary, write_binary
from lmlab.ngram.model import train_ngram
from lmlab.ngram.packed import (
    PackedFloats,
    PackedInts,
    QuantizedArray,
    float_bits,
    pack,
    packed_words,
)
from lmlab.ngram.trie import TrieIndex, TrieKeys
from tests.cli_helpers import fails, ok
from tests.ngram.test_binary import TEST, fit, mapped, rewrite_header, score

FLOAT32 = 1e-6  # log10 scores of float32 values: within a few float32 ulps of the float64 ones


# -- bit packing -----------------------------------------------------------------------------------
@given(st.integers(1, 32).flatmap(lambda bits: st.tuples(
    st.just(bits), st.lists(st.integers(0, 2**bits - 1), max_size=300))))
def test_pack_round_trip(case):
    bits, values = case
    packed = pack(np.array(values, dtype=np.uint64), bits)
    assert len(packed) == packed_words(len(values), bits)
    a = PackedInts(packed, bits, len(values))
    assert np.array_equal(np.asarray(a), np.array(values, dtype=np.int64))
    if values:
        assert a[-1] == values[-1] and a[0] == values[0]
        assert np.array_equal(a[1::3], np.array(values[1::3], dtype=np.int64))
        mask = np.arange(len(values)) % 2 == 0
        assert np.array_equal(a[mask], np.array(values, dtype=np.int64)[mask])


def test_packed_index_errors():
    a = PackedInts(pack(np.arange(10, dtype=np.uint64), 4), 4, 10)
    with pytest.raises(IndexError):
        a[np.array([10])]
    with pytest.raises(IndexError):
        a[np.ones(3, dtype=bool)]
    with pytest.raises(ValueError):
        pack(np.arange(3), 33)


def test_float_bits_drop_the_sign_only_when_none_is_positive():
    logp = np.array([0.0, -0.0, -1.5, -np.inf, -1e-30, -3.3])
    raw, bits = float_bits(logp)
    assert bits == 31
    back = np.asarray(PackedFloats(pack(raw, bits), bits, len(logp)))
    assert np.array_equal(back, logp.astype(np.float32).astype(np.float64))
    assert not np.signbit(back[:2]).any()  # a stored 0 reads as +0.0
    bow = np.array([0.25, -1.5, 0.0])
    raw, bits = float_bits(bow)
    assert bits == 32
    assert np.array_equal(np.asarray(PackedFloats(pack(raw, bits), bits, 3)), bow)


# -- the layout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,order", [("mkn", 3), ("mkn", 5), ("kn", 4), ("katz", 3),
                                          ("wb", 3), ("stupid", 3), ("mkn", 1), ("mkn", 2)])
def test_trie_scores_as_its_source_in_float32(tmp_path, method, order):
    model = fit(method, order)
    write_binary(model, tmp_path / "m.trie", layout="trie")
    trie = load_model(tmp_path / "m.trie")
    assert trie.layout == "trie" and trie.describe()["layout"] == "trie"
    assert trie.vocab == model.vocab and trie.meta == model.meta
    assert trie.normalised == model.normalised
    assert np.allclose(score(trie), score(model), rtol=0, atol=FLOAT32)
    for n in range(1, order + 1):
        assert np.array_equal(np.asarray(trie.keys[n - 1]), model.keys[n - 1])
        assert np.array_equal(np.asarray(trie.logp[n - 1]),
                              model.logp[n - 1].astype(np.float32).astype(np.float64))
    for context in ([], ["the"], ["the", "cat"], ["bird", "a"]):
        assert np.allclose(trie.next_logprobs(context), model.next_logprobs(context),
                           rtol=0, atol=FLOAT32)
    write_arpa(trie, tmp_path / "t.arpa")  # ARPA export rebuilds the keys
    assert np.allclose(score(read_arpa(tmp_path / "t.arpa")), score(model), rtol=0,
                       atol=FLOAT32)
    write_binary(trie, tmp_path / "again.trie", layout="trie")  # float32 is a fixed point
    assert (tmp_path / "again.trie").read_bytes() == (tmp_path / "m.trie").read_bytes()


def test_trie_from_arpa_and_short_sentences(tmp_path):
    write_arpa(fit("mkn", 4), tmp_path / "m.arpa.gz")
    source = read_arpa(tmp_path / "m.arpa.gz")
    write_binary(source, tmp_path / "m.trie", layout="trie")
    assert np.allclose(score(load_binary(tmp_path / "m.trie")), score(source), atol=FLOAT32)
    model = fit("mkn", 5, [["a", "b"], ["b"], ["a"]])  # no 4- or 5-grams
    write_binary(model, tmp_path / "s.trie", layout="trie")
    trie = load_binary(tmp_path / "s.trie")
    assert [len(k) for k in trie.keys] == [len(k) for k in model.keys]
    sentences = [["a", "b", "a", "b"], ["c"]]
    assert np.allclose(score(trie, sentences), score(model, sentences), atol=FLOAT32)


def test_trie_lookups_equal_the_keys_and_build_nothing_to_score(tmp_path):
    model = fit("mkn", 4)
    write_binary(model, tmp_path / "m.trie", layout="trie")
    trie = load_binary(tmp_path / "m.trie")
    score(trie)
    trie.next_logprobs(["the"])
    for n in range(2, 5):
        assert isinstance(trie.keys[n - 1], TrieKeys)
        assert "_keys" not in trie.keys[n - 1].__dict__  # scoring never rebuilt the keys
        index = trie.key_index(n)
        assert isinstance(index, TrieIndex) and mapped(index.words.packed)
        keys = model.keys[n - 1]
        absent = np.setdiff1d(np.arange(keys.max() + 50), keys)
        assert np.array_equal(index.find(keys), np.arange(len(keys)))
        assert (index.find(absent) == -1).all()
        assert (index.find(np.array([-5, len(model.keys[n - 2]) * len(model.vocab)])) == -1).all()
        for c in range(len(model.keys[n - 2])):
            words, rows = trie.children(n, c)
            expected_words, expected_rows = model.children(n, c)
            assert np.array_equal(words, expected_words) and rows == expected_rows
    assert mapped(trie.logp[1].ints.packed)


def test_quantized_trie(tmp_path):
    model = fit("mkn", 4)
    write_binary(model, tmp_path / "q.trie", layout="trie", quantize_bits=8)
    q = load_binary(tmp_path / "q.trie")
    assert isinstance(q.logp[2], QuantizedArray) and isinstance(q.logp[0], PackedFloats)
    assert np.allclose(score(q), score(model), atol=0.02)
    zero = np.asarray(model.bow[1]) == 0
    assert np.array_equal(np.asarray(q.bow[1]) == 0, zero)
    assert q.describe()["quantize"] == 8


def test_trie_is_smaller_than_probing(tmp_path):
    model = fit("mkn", 5)
    sizes = {}
    for layout in ("probing", "trie"):
        for bits in (None, 8):
            path = tmp_path / f"{layout}{bits}.bin"
            write_binary(model, path, quantize_bits=bits, layout=layout)
            sizes[layout, bits] = path.stat().st_size
    assert sizes["trie", None] < sizes["probing", None]
    assert sizes["trie", 8] < sizes["probing", 8]


# -- the command line and broken files -------------------------------------------------------------
@pytest.fixture
def tries(tmp_path, capsys):
    fit("mkn", 3).save(tmp_path / "m.lm")
    (tmp_path / "test.txt").write_text("\n".join(" ".join(s) for s in TEST) + "\n")
    ok(capsys, "ngram", "build-binary", tmp_path / "m.lm", tmp_path / "t.bin", "--layout", "trie",
       "--verify")
    ok(capsys, "ngram", "build-binary", tmp_path / "m.lm", tmp_path / "tq.bin", "--layout",
       "trie", "--quantize", "8")
    return tmp_path


@pytest.mark.parametrize("name", ["t.bin", "tq.bin"])
def test_every_command_reads_a_trie(tries, capsys, name):
    model = tries / name
    report = json.loads(ok(capsys, "eval", model, tries / "test.txt", "--json", "--jobs", "2"))
    reference = json.loads(ok(capsys, "eval", tries / "m.lm", tries / "test.txt", "--json"))
    rel = 1e-6 if name == "t.bin" else 0.05
    assert report["perplexity"] == pytest.approx(reference["perplexity"], rel=rel)
    if name == "t.bin":
        next_words = json.loads(ok(capsys, "ngram", "next", model, "the", "--json"))
        expected = json.loads(ok(capsys, "ngram", "next", tries / "m.lm", "the", "--json"))
        assert [r["word"] for r in next_words] == [r["word"] for r in expected]
    ok(capsys, "score", model, "the cat sat")
    ok(capsys, "generate", model, "--words", "20", "--seed", "3")
    ok(capsys, "ngram", "prune", model, tries / "p.arpa", "--entropy", "1e-3")
    ok(capsys, "ngram", "build-binary", model, tries / "again.bin")
    assert ok(capsys, "ngram", "build-binary", "--verify", model).startswith("ok ")
    from lmlab.kenlm import Model

    assert Model(str(model)).score("the cat sat") == pytest.approx(
        Model(str(tries / "m.lm")).score("the cat sat"), abs=0.02)


def test_layout_mistakes(tries, capsys):
    line = fails(capsys, "ngram", "build-binary", "--verify", tries / "t.bin", "--layout", "trie")
    assert "--layout need an output" in line
    with pytest.raises(LmlabError, match="unknown binary layout 'tree'"):
        write_binary(fit(), tries / "x.bin", layout="tree")
    assert not (tries / "x.bin").exists()


def test_broken_trie_is_one_line(tries, capsys):
    def broken(change, what):
        path = tries / "broken.bin"
        path.write_bytes((tries / "t.bin").read_bytes())
        rewrite_header(path, change)
        assert what in fails(capsys, "eval", path, tries / "test.txt")

    broken(lambda h: h.pop("counts"), "lacks the trie's n-gram counts")
    broken(lambda h: h["bits"].pop("words2"), "bad bit width None for section words2")
    broken(lambda h: h["bits"].update(words2=40), "bad bit width 40 for section words2")
    # word ids wider than the vocabulary's: a word >= V could be read
    broken(lambda h: h["bits"].update(words3=h["bits"]["words3"] + 1), "for section words3")
    broken(lambda h: h.update(vocab_size=10**12), "section vocab_counts holds")
    broken(lambda h: h.update(layout="probing"), "header lacks its fields")  # version 3

    def wider(h):
        h["bits"]["next1"] += 5

    broken(wider, "section next1 holds")


def test_crafted_runs_cannot_read_past_the_words(tries, capsys):
    """Run starts that point past the n-grams are clipped: wrong scores for a damaged file (the
    checksum tells), never an out-of-bounds read; rebuilding the keys says it is corrupt."""
    path = tries / "t.bin"
    model = load_binary(path)
    index = model.key_index(2)
    starts = index.starts
    huge = pack(np.full(starts.count, 2**starts.bits - 1, dtype=np.uint64), starts.bits)
    data = bytearray(path.read_bytes())
    offset = np.asarray(starts.packed).ctypes.data - np.frombuffer(
        model._mmap, dtype=np.uint8).ctypes.data
    data[offset:offset + huge.nbytes] = huge.tobytes()
    path.write_bytes(bytes(data))
    crafted = load_binary(path)
    crafted.log10probs(TokenStream.from_sentences(TEST, crafted.vocab))
    assert "do not hold together" in fails(capsys, "ngram", "prune", path, tries / "p.arpa",
                                        "--entropy", "1e-3")
    assert "checksum mismatch" in fails(capsys, "ngram", "build-binary", "--verify", path)


def test_crafted_words_beyond_the_vocabulary(tries, capsys):
    """A stored word id >= V (damage only the checksum sees) is an error wherever a run or a
    whole table is read (next words, sampling, pruning, ARPA), not an index out of range."""
    path = tries / "t.bin"
    model = load_binary(path)
    words = model.key_index(3).words
    values = np.asarray(words).astype(np.uint64)
    values[-1] = 2**words.bits - 1  # (>= V: bits is the width of V - 1)
    assert values[-1] >= len(model.vocab)
    data = bytearray(path.read_bytes())
    offset = np.asarray(words.packed).ctypes.data - np.frombuffer(
        model._mmap, dtype=np.uint8).ctypes.data
    crafted = pack(values, words.bits)
    data[offset:offset + crafted.nbytes] = crafted.tobytes()
    path.write_bytes(bytes(data))
    bad = load_binary(path)
    starts = np.asarray(bad.key_index(3).starts)
    last = int(np.searchsorted(starts, len(values) - 1, side="right")) - 1
    with pytest.raises(LmlabError, match="do not hold together"):
        bad.children(3, last)
    for cmd in (["ngram", "prune", path, tries / "p.arpa", "--entropy", "1e-3"],
                ["ngram", "build-binary", path, tries / "p.bin"], ["generate", path]):
        assert "do not hold together" in fails(capsys, *cmd)


def test_ptb_5gram_trie(data_root, tmp_path):
    train, test = data_root / "ptb" / "train.txt", data_root / "ptb" / "test.txt"
    if not train.exists():
        pytest.skip(f"PTB not found in {data_root}")
    model = train_ngram(train, order=5, verbose=False)
    write_binary(model, tmp_path / "ptb5.trie", layout="trie")
    write_binary(model, tmp_path / "ptb5q.trie", layout="trie", quantize_bits=8)
    exact = model.perplexity(test).perplexity
    assert load_model(tmp_path / "ptb5.trie").perplexity(test).perplexity == \
        pytest.approx(exact, rel=1e-7)
    q8 = load_model(tmp_path / "ptb5q.trie").perplexity(test).perplexity
    assert abs(q8 / exact - 1) < 0.002  # KenLM -q 8 -b 8 trie: 141.19 -> 141.11
