"""The binary n-gram format (``lmlab ngram build-binary``): exact round trips, every command on a
binary model, memory-mapped loading, and broken files as one error line."""

from __future__ import annotations

import gzip
import json
import mmap
import pickle
import struct

import numpy as np
import pytest

from lmlab.corpus import TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.models import detect_format, load_model
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.binary import (
    ALIGN,
    PREFIX,
    VERSION,
    BinaryNGramModel,
    load_binary,
    verify_binary,
    write_binary,
)
from lmlab.ngram.model import save_arrays, train_ngram
from lmlab.ngram.packed import QuantizedArray, quantize
from tests.cli_helpers import fails, ok

TRAIN = [s.split() for s in [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog",
    "the cat saw the dog", "on the mat sat a cat", "the log", "a dog sat",
    "the dog saw a cat on the mat", "a cat sat on a dog"]]
TEST = [s.split() for s in ["the cat sat on the log", "a bird sat", "dog dog dog", "",
                            "the mat saw the cat and the dog"]]


def fit(method="mkn", order=3, sentences=TRAIN):
    vocab = Vocabulary.build(sentences)
    return train_ngram(stream=TokenStream.from_sentences(sentences, vocab), vocab=vocab,
                       order=order, smoothing=method, verbose=False)


def score(model, sentences=TEST):
    return model.log10probs(TokenStream.from_sentences(sentences, model.vocab))


def arpa_text(model, path) -> bytes:
    write_arpa(model, path)
    return path.read_bytes()


def mapped(array) -> bool:
    """Whether ``array`` is a view of a memory mapping (not a copy in memory)."""
    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None) if not isinstance(array, memoryview) else array.obj
    return isinstance(array, mmap.mmap)


@pytest.mark.parametrize("method,order", [("mkn", 3), ("mkn", 5), ("kn", 4), ("katz", 3),
                                          ("wb", 3), ("absdisc", 2), ("mle", 3),
                                          ("stupid", 3), ("mkn", 1)])
def test_lm_round_trip_is_exact(tmp_path, method, order):
    model = fit(method, order)
    model.save(tmp_path / "m.lm")
    source = load_model(tmp_path / "m.lm")
    write_binary(source, tmp_path / "m.bin")
    binary = load_model(tmp_path / "m.bin")
    assert isinstance(binary, BinaryNGramModel)
    assert binary.vocab == model.vocab and binary.meta == source.meta
    assert np.array_equal(binary.vocab.counts, model.vocab.counts)
    assert np.array_equal(score(binary), score(model))
    assert binary.normalised == model.normalised
    assert arpa_text(binary, tmp_path / "b.arpa") == arpa_text(model, tmp_path / "m.arpa")
    for context in ([], ["the"], ["the", "cat"], ["bird", "a"]):
        assert np.array_equal(binary.next_logprobs(context), model.next_logprobs(context))
    # and back to .lm: the same model again
    binary.save(tmp_path / "again.lm")
    assert np.array_equal(score(load_model(tmp_path / "again.lm")), score(model))


@pytest.mark.parametrize("suffix", [".arpa", ".arpa.gz"])
def test_arpa_round_trip_is_exact(tmp_path, suffix):
    write_arpa(fit("mkn", 4), tmp_path / f"m{suffix}")
    from_arpa = read_arpa(tmp_path / f"m{suffix}")
    write_binary(from_arpa, tmp_path / "m.bin")
    binary = load_binary(tmp_path / "m.bin")
    assert np.array_equal(score(binary), score(from_arpa))
    assert arpa_text(binary, tmp_path / "b.arpa") == arpa_text(from_arpa, tmp_path / "a.arpa")


def test_short_sentences_leave_empty_tables(tmp_path):
    model = fit("mkn", 5, [["a", "b"], ["b"], ["a"]])
    assert len(model.keys[4]) == 0
    write_binary(model, tmp_path / "m.bin")
    binary = load_binary(tmp_path / "m.bin")
    assert [len(k) for k in binary.keys] == [len(k) for k in model.keys]
    assert np.array_equal(score(binary, [["a", "b", "a", "b"], ["c"]]),
                          score(model, [["a", "b", "a", "b"], ["c"]]))


def test_load_maps_the_file_and_reads_no_array(tmp_path):
    write_binary(fit("mkn", 4), tmp_path / "m.bin")
    binary = load_binary(tmp_path / "m.bin")
    for n in range(4):
        assert "_checked" not in binary.keys[n].__dict__  # (checked on a whole read)
        for array in (binary.keys[n].raw, binary.logp[n]):
            assert mapped(array) and not array.flags.writeable
        if n < 3:
            assert mapped(binary.bow[n])
    assert mapped(binary.vocab.counts)
    for n in range(2, 5):  # the hash indexes come from the file, not built at load
        assert mapped(binary.key_index(n).table)
    assert "_key_index" not in binary.__dict__


def test_stored_index_finds_what_the_keys_hold(tmp_path):
    model = fit("mkn", 4)
    write_binary(model, tmp_path / "m.bin")
    binary = load_binary(tmp_path / "m.bin")
    for n in range(2, 5):
        keys = np.asarray(model.keys[n - 1])
        absent = np.setdiff1d(np.arange(keys.max() + 50), keys)
        assert np.array_equal(binary.key_index(n).find(keys), np.arange(len(keys)))
        assert (binary.key_index(n).find(absent) == -1).all()


def test_pickled_model_maps_the_file_again(tmp_path):
    write_binary(fit(), tmp_path / "m.bin")
    binary = load_binary(tmp_path / "m.bin")
    again = pickle.loads(pickle.dumps(binary))
    assert isinstance(again, BinaryNGramModel) and mapped(again.keys[1].raw)
    assert np.array_equal(score(again), score(binary))


def test_detected_by_content(tmp_path):
    write_binary(fit(), tmp_path / "model.lm")  # the name does not matter
    assert detect_format(tmp_path / "model.lm") == "binary"
    assert isinstance(load_model(tmp_path / "model.lm"), BinaryNGramModel)


def test_kenlm_api_reads_a_binary_model(tmp_path):
    from lmlab.kenlm import Model

    model = fit("mkn", 3)
    write_arpa(model, tmp_path / "m.arpa")
    write_binary(read_arpa(tmp_path / "m.arpa"), tmp_path / "m.bin")
    a, b = Model(tmp_path / "m.arpa"), Model(tmp_path / "m.bin")
    for sentence in ("the cat sat on the log", "a bird sat", ""):
        assert a.score(sentence) == b.score(sentence)
        assert list(a.full_scores(sentence)) == list(b.full_scores(sentence))


# -- quantisation ----------------------------------------------------------------------------------
def test_quantize_keeps_exact_values_exact():
    values = np.array([0.0, -np.inf, -0.5, -1.0, 0.0, -3.25, -2.0])
    codes, bins = quantize(values, (0.0, -np.inf))
    assert bins[codes][0] == 0.0 and bins[codes][4] == 0.0 and bins[codes][1] == -np.inf
    assert np.array_equal(bins[codes][2:], values[2:])  # fewer values than bins: exact
    many = -np.random.default_rng(0).random(10000) * 5
    codes, bins = quantize(many, (-np.inf,))
    assert np.abs(bins[codes] - many).max() < 0.05


def test_quantized_model_scores_close_and_works_everywhere(tmp_path):
    model = fit("mkn", 4)
    write_binary(model, tmp_path / "q.bin", quantize_bits=8)
    q = load_binary(tmp_path / "q.bin")
    assert isinstance(q.logp[2], QuantizedArray) and mapped(q.logp[2].codes)
    assert np.array_equal(q.logp[0], model.logp[0])  # unigrams stay exact
    assert np.allclose(score(q), score(model), atol=0.02)
    assert q.describe()["quantize"] == 8
    write_arpa(q, tmp_path / "q.arpa")
    assert np.allclose(score(read_arpa(tmp_path / "q.arpa")), score(q), atol=1e-6)
    zero = np.asarray(model.bow[1]) == 0
    assert np.array_equal(np.asarray(q.bow[1]) == 0, zero)  # zero backoffs stay zero


def test_quantize_bits_out_of_range(tmp_path, capsys):
    with pytest.raises(LmlabError, match="supports 8 bits, got 4"):
        write_binary(fit(), tmp_path / "m.bin", quantize_bits=4)
    fit().save(tmp_path / "m.lm")
    assert "supports 8 bits, got 16" in fails(capsys, "ngram", "build-binary", tmp_path / "m.lm",
                                              tmp_path / "m.bin", "--quantize", "16")
    assert not (tmp_path / "m.bin").exists()


# -- the command line ------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path, capsys):
    """A .lm model, its binary and 8-bit binary (made by the CLI), and a text."""
    model = fit("mkn", 3)
    model.save(tmp_path / "m.lm")
    (tmp_path / "test.txt").write_text("\n".join(" ".join(s) for s in TEST) + "\n")
    ok(capsys, "ngram", "build-binary", tmp_path / "m.lm", tmp_path / "m.bin")
    ok(capsys, "ngram", "build-binary", tmp_path / "m.lm", tmp_path / "q.bin", "--quantize", "8",
       "--verify")
    return tmp_path


@pytest.mark.parametrize("name", ["m.bin", "q.bin"])
def test_every_command_reads_a_binary_model(files, capsys, name):
    model = files / name
    report = json.loads(ok(capsys, "eval", model, files / "test.txt", "--json"))
    reference = json.loads(ok(capsys, "eval", files / "m.lm", files / "test.txt", "--json"))
    if name == "m.bin":
        assert report["perplexity"] == reference["perplexity"]
        assert ok(capsys, "score", model, "the cat sat", "--json") == \
            ok(capsys, "score", files / "m.lm", "the cat sat", "--json")
        assert ok(capsys, "ngram", "next", model, "the", "--json") == \
            ok(capsys, "ngram", "next", files / "m.lm", "the", "--json")
        assert ok(capsys, "generate", model, "--words", "20", "--seed", "3") == \
            ok(capsys, "generate", files / "m.lm", "--words", "20", "--seed", "3")
    else:
        assert report["perplexity"] == pytest.approx(reference["perplexity"], rel=0.05)
        ok(capsys, "score", model, "the cat sat")
        ok(capsys, "ngram", "next", model, "the", "-k", "3")
        ok(capsys, "generate", model, "--words", "20")
    ok(capsys, "compare", model, files / "m.lm", "--text", files / "test.txt")
    ok(capsys, "interpolate", model, files / "m.lm", "--valid", files / "test.txt", "-o",
       files / "mix.json")
    ok(capsys, "eval", files / "mix.json", files / "test.txt")
    ok(capsys, "ngram", "prune", model, files / "p.arpa", "--entropy", "1e-3")
    ok(capsys, "ngram", "prune", model, files / "p.lm", "--entropy", "1e-3")
    ok(capsys, "ngram", "build-binary", model, files / "again.bin")
    out = ok(capsys, "ngram", "build-binary", "--verify", files / "again.bin")
    assert out.startswith(f"ok {files / 'again.bin'}:")
    assert np.array_equal(score(load_model(files / "again.bin")), score(load_model(model)))


def test_rebuild_and_quantize_a_binary_but_not_in_place(files, capsys):
    """Rebuilding IN into IN would replace the input (with --quantize or --layout trie, by a
    lossy copy of it): refused, like every command's output that is one of its inputs."""
    data = (files / "m.bin").read_bytes()
    assert "would be overwritten" in fails(capsys, "ngram", "build-binary", files / "m.bin",
                                           files / "m.bin", "--quantize", "8")
    assert (files / "m.bin").read_bytes() == data
    ok(capsys, "ngram", "build-binary", files / "m.bin", files / "m2.bin")
    assert np.array_equal(score(load_model(files / "m2.bin")), score(load_model(files / "m.bin")))
    ok(capsys, "ngram", "build-binary", files / "m.bin", files / "q2.bin", "--quantize", "8")
    assert (files / "q2.bin").read_bytes() == (files / "q.bin").read_bytes()


def test_arpa_on_standard_input(tmp_path, capsys, monkeypatch):
    import io
    import sys

    import lmlab.fileio

    model = fit("mkn", 3)
    write_arpa(model, tmp_path / "m.arpa.gz")
    data = (tmp_path / "m.arpa.gz").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    monkeypatch.setattr(lmlab.fileio, "_stdin_data", None)
    ok(capsys, "ngram", "build-binary", "-", tmp_path / "m.bin")
    assert np.array_equal(score(load_binary(tmp_path / "m.bin")),
                          score(read_arpa(tmp_path / "m.arpa.gz")))


def test_output_mistakes(files, capsys):
    assert "give the binary model to write" in fails(capsys, "ngram", "build-binary",
                                                     files / "m.lm")
    line = fails(capsys, "ngram", "build-binary", files / "m.lm", files / "m.bin.gz")
    assert "cannot be compressed" in line and "m.bin.gz" in line
    assert "not standard output" in fails(capsys, "ngram", "build-binary", files / "m.lm", "-")
    fit("addk").save(files / "a.lm")
    assert "no backoff form" in fails(capsys, "ngram", "build-binary", files / "a.lm",
                                      files / "a.bin")
    assert not (files / "m.bin.gz").exists() and not (files / "a.bin").exists()
    assert "no such file" in fails(capsys, "ngram", "build-binary", files / "nope.lm",
                                   files / "x.bin")
    assert sorted(p.name for p in files.iterdir()) == ["a.lm", "m.bin", "m.lm", "q.bin",
                                                       "test.txt"]


# -- broken files ----------------------------------------------------------------------------------
def rewrite_header(path, change) -> None:
    """Apply ``change`` to the JSON header of a binary model, keeping the file's size."""
    data = bytearray(path.read_bytes())
    magic, version, hlen, size, digest = PREFIX.unpack(bytes(data[:ALIGN]))
    header = json.loads(bytes(data[ALIGN:ALIGN + hlen]))
    room = min(s[2] for s in header["sections"]) - ALIGN
    change(header)
    text = json.dumps(header).encode()
    assert len(text) <= room
    data[ALIGN:ALIGN + room] = text + bytes(room - len(text))
    data[:ALIGN] = PREFIX.pack(magic, version, len(text), size, digest)
    path.write_bytes(bytes(data))


def broken(files, capsys, data_or_change, what: str) -> None:
    """The broken binary fails as one error line naming it, through load_model and the CLI."""
    path = files / "broken.bin"
    if callable(data_or_change):
        path.write_bytes((files / "m.bin").read_bytes())
        rewrite_header(path, data_or_change)
    else:
        path.write_bytes(data_or_change)
    with pytest.raises(LmlabError, match=what) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: ")
    line = fails(capsys, "eval", path, files / "test.txt")
    assert str(path) in line and what in line


@pytest.mark.parametrize("cut", [3, 8, 40, 64, 100, 1000, -4096, -1])
def test_truncated_file(files, capsys, cut):
    data = (files / "m.bin").read_bytes()
    broken(files, capsys, data[:cut], "truncated binary model")


def test_foreign_and_future_files(files, capsys):
    data = (files / "m.bin").read_bytes()
    broken(files, capsys, b"LMLABBIX" + data[8:], "not a model lmlab can read")
    magic, version, hlen, size, digest = PREFIX.unpack(data[:ALIGN])
    future = PREFIX.pack(magic, VERSION + 1, hlen, size, digest) + data[ALIGN:]
    broken(files, capsys, future,
           f"format version {VERSION + 1} is newer than this lmlab supports")
    broken(files, capsys, data + b"\0" * 64, "corrupt binary model")
    broken(files, capsys, data[:ALIGN] + b"{not json" + data[ALIGN + 9:], "unreadable header")
    broken(files, capsys, gzip.compress(data), "gzip-compressed")
    with pytest.raises(LmlabError, match="not an lmlab binary model"):
        load_binary(files / "m.lm")


def test_bad_section_table(files, capsys):
    def past_end(h):
        h["sections"][-1][3] += 10**6

    def misaligned(h):
        h["sections"][2][2] += 8

    def missing(h):
        h["sections"] = [s for s in h["sections"] if s[0] != "logp2"]

    def wrong_length(h):
        for s in h["sections"]:
            if s[0] == "logp2":
                s[3] -= 1

    def wrong_type(h):
        for s in h["sections"]:
            if s[0] == "keys2":
                s[1] = "<f8"

    def garbage(h):
        h["sections"][0] = ["vocab", "object", 0, 1]

    def no_order(h):
        del h["order"]

    broken(files, capsys, past_end, "lies past the end of the file")
    broken(files, capsys, misaligned, "at a bad offset")
    broken(files, capsys, missing, "no logp2 section")
    broken(files, capsys, wrong_length, "section logp2 holds")
    broken(files, capsys, wrong_type, "section keys2 has type")
    broken(files, capsys, garbage, "malformed section table")
    broken(files, capsys, no_order, "header lacks its fields")


def test_verify_catches_damage_loading_does_not_read(files, capsys):
    assert verify_binary(files / "m.bin")["bytes"] == (files / "m.bin").stat().st_size
    data = bytearray((files / "m.bin").read_bytes())
    data[-70] ^= 0xFF  # inside the last section
    (files / "d.bin").write_bytes(bytes(data))
    load_binary(files / "d.bin")  # loading reads no section: it cannot know
    line = fails(capsys, "ngram", "build-binary", "--verify", files / "d.bin")
    assert "checksum mismatch" in line and str(files / "d.bin") in line


def test_header_layout(files):
    data = (files / "m.bin").read_bytes()
    magic, version, hlen, size, _ = PREFIX.unpack(data[:ALIGN])
    assert (magic, version, size) == (b"LMLABBIN", 1, len(data))
    header = json.loads(data[ALIGN:ALIGN + hlen])
    assert all(offset % ALIGN == 0 for _, _, offset, _ in header["sections"])
    assert struct.unpack("<Q", data[16:24])[0] == len(data)


# -- real data -------------------------------------------------------------------------------------
def test_ptb_5gram_binary_scores_exactly(data_root, tmp_path):
    train, test = data_root / "ptb" / "train.txt", data_root / "ptb" / "test.txt"
    if not train.exists():
        pytest.skip(f"PTB not found in {data_root}")
    model = train_ngram(train, order=5, verbose=False)
    write_binary(model, tmp_path / "ptb5.bin")
    write_binary(model, tmp_path / "ptb5q.bin", quantize_bits=8)
    exact = model.perplexity(test).perplexity
    assert load_model(tmp_path / "ptb5.bin").perplexity(test).perplexity == exact
    assert exact == pytest.approx(141.19, abs=0.01)  # KenLM's figure
    q8 = load_model(tmp_path / "ptb5q.bin").perplexity(test).perplexity
    assert abs(q8 / exact - 1) < 0.002  # KenLM -q 8 -b 8: 141.19 -> 141.11


def test_crafted_index_cannot_hang_or_read_past_its_ngrams(files, capsys):
    """A probe count beyond the table would loop (almost) for ever on a full table; a slot that
    points past the n-grams would index out of bounds: both are one-line errors."""
    def endless(h):
        h["probes"]["2"] = 2**62

    broken(files, capsys, endless, "bad index of the 2-grams")
    path = files / "broken.bin"
    path.write_bytes((files / "m.bin").read_bytes())
    model = load_model(path)
    table = model.key_index(2).table
    data = bytearray(path.read_bytes())
    hlen = PREFIX.unpack(bytes(data[:ALIGN]))[2]
    sections = json.loads(bytes(data[ALIGN:ALIGN + hlen]))["sections"]
    start = next(s[2] for s in sections if s[0] == "index2")  # (name, dtype, offset, count)
    slots = np.frombuffer(data, dtype=table.dtype, count=len(table), offset=start).copy()
    slots[slots >= 0] = len(model.keys[1]) + 5
    data[start:start + slots.nbytes] = slots.tobytes()
    path.write_bytes(bytes(data))
    assert "points past its n-grams" in fails(capsys, "eval", path, files / "test.txt")


def keys_offset(path, n: int) -> int:
    data = path.read_bytes()
    hlen = PREFIX.unpack(data[:ALIGN])[2]
    sections = json.loads(data[ALIGN:ALIGN + hlen])["sections"]
    return next(s[2] for s in sections if s[0] == f"keys{n}")  # (name, dtype, offset, count)


@pytest.mark.parametrize("damage", ["out of range", "not sorted"])
def test_damaged_keys_are_one_error_line_for_whole_table_readers(files, capsys, damage):
    """A crafted probing file whose keys lie past the n-grams below, or out of order, made ARPA
    export fail with an IndexError (and a trie built from it hold nonsense). Whole-table readers
    now check the table first; scoring, which goes through the index, reads nothing more at
    load and still works where the damage does not reach."""
    path = files / "broken.bin"
    data = bytearray((files / "m.bin").read_bytes())
    model = load_model(files / "m.bin")
    keys = np.asarray(model.keys[2]).copy()
    if damage == "out of range":
        keys[-1] = len(model.keys[1]) * len(model.vocab) + 7
    else:
        keys[[0, 1]] = keys[[1, 0]]
    start = keys_offset(files / "m.bin", 3)
    data[start:start + keys.nbytes] = keys.tobytes()
    path.write_bytes(bytes(data))
    for argv in (("ngram", "prune", path, files / "p.arpa", "--entropy", "1e-3"),
                 ("ngram", "build-binary", path, files / "t.bin", "--layout", "trie")):
        assert f"broken.bin: corrupt binary model: the 3-gram keys {damage}" in \
            fails(capsys, *argv)
    broken_model = load_model(path)
    for write in (lambda: write_arpa(broken_model, files / "b.arpa"),
                  lambda: broken_model.save(files / "b.lm")):
        with pytest.raises(LmlabError, match=f"the 3-gram keys {damage}"):
            write()
    assert sorted(p.name for p in files.iterdir()) == ["broken.bin", "m.bin", "m.lm", "q.bin",
                                                       "test.txt"]
    ok(capsys, "eval", path, files / "test.txt")
    ok(capsys, "ngram", "next", path, "the")
    # the same damage in a .lm file is found when it is read
    arrays = {"keys": [np.asarray(k) for k in model.keys], "logp": list(model.logp),
              "bow": list(model.bow)}
    arrays["keys"][2] = keys
    save_arrays(files / "b.lm", model.vocab, dict(model.meta), arrays)
    assert f"corrupt n-gram model: the 3-gram keys {damage}" in \
        fails(capsys, "eval", files / "b.lm", files / "test.txt")


@pytest.mark.parametrize("bad", ["strings", "2-D", "floats", "unigrams"])
def test_lm_file_with_keys_of_the_wrong_kind(files, capsys, bad):
    """Keys that are no 1-D integer array, or unigram keys that are not the word ids: one error
    line at load (a string array made the sortedness check raise a TypeError)."""
    model = load_model(files / "m.lm")
    keys = [np.asarray(k) for k in model.keys]
    if bad == "strings":
        keys[2] = keys[2].astype(str)
    elif bad == "2-D":
        keys[2] = np.stack([keys[2], keys[2]])[:, : len(keys[2]) // 2].reshape(-1, 2)
    elif bad == "floats":
        keys[2] = keys[2].astype(float)
    else:
        keys[0] = keys[0][::-1].copy()
    arrays = {"keys": keys, "logp": list(model.logp), "bow": list(model.bow)}
    if bad == "2-D":
        arrays = {name: [a[: len(k)] for a, k in zip(v, keys, strict=True)]
                  for name, v in arrays.items()}
    save_arrays(files / "b.lm", model.vocab, dict(model.meta), arrays)
    order = "1" if bad == "unigrams" else "3"
    line = fails(capsys, "eval", files / "b.lm", files / "test.txt")
    assert f"b.lm: corrupt n-gram model: the {order}-gram keys are not" in line


@pytest.mark.parametrize("options", [(), ("--quantize", "8"), ("--layout", "trie")])
def test_binary_model_saves_as_lm(files, capsys, options):
    """``load("x.bin").save("x.lm")`` failed (AttributeError) for a trie or 8-bit binary: their
    arrays are decoded on read, and saving now reads them. The model still maps its file
    afterwards, and a pickle of it maps that file again (not the .lm it was saved to)."""
    ok(capsys, "ngram", "build-binary", files / "m.lm", files / "x.bin", *options)
    binary = load_model(files / "x.bin")
    binary.save(files / "x.lm")
    assert np.array_equal(score(load_model(files / "x.lm")), score(binary))
    assert binary.path == str(files / "x.lm")
    assert np.array_equal(score(pickle.loads(pickle.dumps(binary))), score(binary))
