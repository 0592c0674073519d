"""``lmlab embed export`` and :mod:`lmlab.analysis.embedding_formats`: word2vec files (text,
binary, gzip) and projector TSV folders round-trip float32 exactly, through gensim too, and
malformed files give one-line errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from lmlab.analysis import embedding_formats as F
from lmlab.analysis import embeddings as E
from tests.analysis.embedding_helpers import needs_gensim
from tests.cli_helpers import fails, ok


@needs_gensim
def test_export_round_trips_through_gensim(crafted, tmp_path, capsys):
    ckpt = crafted[0]
    emb = E.load_embeddings(ckpt)
    KeyedVectors = E.require_gensim()
    for fmt, name, binary in (("word2vec", "v.txt", False), ("word2vec-binary", "v.bin", True),
                              ("word2vec", "v.txt.gz", False)):
        out = tmp_path / name
        assert "wrote 16 vectors x 12" in ok(capsys, "embed", "export", ckpt, "-o", out, "--format",
                                             fmt)
        kv = KeyedVectors.load_word2vec_format(str(out), binary=binary)
        assert kv.index_to_key == emb.words
        np.testing.assert_array_equal(kv.vectors, emb.vectors)  # float32 exactly
        back = E.load_embeddings(out)
        assert back.words == emb.words and np.array_equal(back.vectors, emb.vectors)
    # files gensim wrote read back here, and the embed commands take them like a checkpoint
    for binary in (False, True):
        path = tmp_path / f"gensim{int(binary)}.w2v"
        emb.to_keyed_vectors().save_word2vec_format(str(path), binary=binary)
        back = F.read_word2vec(path)
        assert back.words == emb.words and np.array_equal(back.vectors, emb.vectors)
        assert back.meta["format"] == ("word2vec-binary" if binary else "word2vec")
    a = json.loads(ok(capsys, "embed", "neighbors", ckpt, "athens", "--json"))
    b = json.loads(ok(capsys, "embed", "neighbors", tmp_path / "gensim1.w2v", "athens", "--json"))
    assert a["neighbors"] == b["neighbors"]
    ok(capsys, "embed", "export", ckpt, "-o", tmp_path / "proj", "--format", "tsv")
    meta = (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()
    vecs = np.loadtxt(tmp_path / "proj" / "vectors.tsv", delimiter="\t", dtype=np.float32)
    assert meta == emb.words and np.array_equal(vecs, emb.vectors)
    back = E.load_embeddings(tmp_path / "proj")
    assert back.words == emb.words and np.array_equal(back.vectors, emb.vectors)


@pytest.mark.parametrize("content,needle", [
    (b"", "starts with a line 'COUNT DIM'"),
    (b"hello world\nx 1 2\n", "starts with a line 'COUNT DIM'"),
    (b"2 3\na 1 2 3\n", "header says 2 vectors but 1 lines follow"),
    (b"2 3\na 1 2 3\nb 1 2\n", ":3: expected a word and 3 numbers, got 2"),
    (b"1 2\na 1 x\n", ":2: not a number"),
    (b"2 2\na 1 2\na 3 4\n", "word 'a' appears twice"),
    (b"1 2\na nan 1\n", "non-finite"),
    (b"2 2\na \x00\x00\x80\x3f\x00\x00\x80\x3f\nb \x00\x00", "truncated binary word2vec"),
    (b"1 2\na \x00\x00\x80\x3f\x00\x00\x80\x3f\nextra stuff\xff", "data after the 1 vectors"),
])
def test_malformed_vector_files(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.w2v"
    path.write_bytes(content)
    assert needle in fails(capsys, "embed", "neighbors", path, "a")


def test_binary_file_of_zeros_and_gzip(tmp_path):
    """All-zero binary vectors decode as UTF-8: still read as binary."""
    path = tmp_path / "z.bin.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"2 2\na " + bytes(8) + b"\nb " + bytes(8))
    emb = F.read_word2vec(path)
    assert emb.words == ["a", "b"] and not emb.vectors.any()
    assert emb.neighbors("a", 1) == [("b", 0.0)]
