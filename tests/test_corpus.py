"""Reading corpora and vocabularies: the token-counting convention and one-line input errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.corpus import (
    BOS_ID,
    EOS,
    EOS_ID,
    SPECIALS,
    UNK,
    UNK_ID,
    TokenStream,
    Vocabulary,
    iter_sentences,
    read_corpus,
    read_training_corpus,
)
from lmlab.errors import LmlabError

# A hand-made file: 3 + 0 + 4 + 1 words on 4 lines -> 8 words + 4 </s> = 12 predicted tokens.
SMALL = "the cat sat\n\na  dog\tbarked   loudly\nthe\n"
SMALL_SENTENCES = [["the", "cat", "sat"], [], ["a", "dog", "barked", "loudly"], ["the"]]


def check_error(excinfo, path: Path, line: int | None = None) -> str:
    """The message names the file (and ``file:line:`` when a line is known); returns the problem
    after that prefix (the tmp path itself holds the test's name: never match words in it)."""
    msg = str(excinfo.value)
    prefix = f"{path}:{line}: " if line is not None else f"{path}:"
    assert msg.startswith(prefix), msg
    if line is not None:
        assert excinfo.value.line == line
    assert "\n" not in msg
    return msg[len(prefix):]


@pytest.fixture
def small(tmp_path) -> Path:
    p = tmp_path / "small.txt"
    p.write_text(SMALL, encoding="utf-8")
    return p


# -- iter_sentences ------------------------------------------------------------------------------
def test_iter_sentences_plain(small):
    assert list(iter_sentences(small)) == SMALL_SENTENCES


def test_iter_sentences_gzip_detected_by_content(tmp_path):
    # gzip content under a .txt name is decompressed; plain content under a .gz name is read as is
    gz_named_txt = tmp_path / "corpus.txt"
    gz_named_txt.write_bytes(gzip.compress(SMALL.encode()))
    plain_named_gz = tmp_path / "plain.gz"
    plain_named_gz.write_text(SMALL, encoding="utf-8")
    assert list(iter_sentences(gz_named_txt)) == SMALL_SENTENCES
    assert list(iter_sentences(plain_named_gz)) == SMALL_SENTENCES


def test_no_final_newline_and_crlf(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"x y\r\n\r\nz")
    assert list(iter_sentences(p)) == [["x", "y"], [], ["z"]]


def test_empty_lines_predict_only_eos(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("a\n\n\nb c\n", encoding="utf-8")
    vocab = Vocabulary(["a", "b", "c"])
    stream = read_corpus(p, vocab)
    assert stream.n_sentences == 4
    assert stream.offsets.tolist() == [0, 2, 3, 4, 7]
    assert stream.ids[2] == EOS_ID and stream.ids[3] == EOS_ID
    assert (np.diff(stream.offsets) >= 1).all()


def test_token_counts_small_file(small):
    vocab = Vocabulary.build(iter_sentences(small))
    stream = read_corpus(small, vocab)
    assert len(stream) == 12
    assert stream.n_sentences == 4
    assert stream.offsets.tolist() == [0, 4, 5, 10, 12]
    assert int(stream.oov.sum()) == 0
    decoded = [vocab.word(i) for i in stream.ids]
    assert decoded == ["the", "cat", "sat", EOS, EOS, "a", "dog", "barked", "loudly", EOS,
                       "the", EOS]
    assert stream.sentence_index().tolist() == [0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 3, 3]


OOV_WORDS = ("c", "zz", "x</s>y", "<s>z", "</s>.")  # look-alikes of boundaries are plain words


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "<unk>", *OOV_WORDS]), max_size=6),
                min_size=1, max_size=8),
       st.sampled_from([" ", "  ", "\t", " \t "]))
def test_token_counts_match_naive(tmp_path_factory, sentences, sep):
    """Tokens = words + one </s> per line; OOV = words not in the vocabulary (<unk> is in it)."""
    p = tmp_path_factory.mktemp("h") / "t.txt"
    p.write_text("".join(sep.join(s) + "\n" for s in sentences), encoding="utf-8")
    vocab = Vocabulary(["a", "b"])
    stream = read_corpus(p, vocab)
    assert len(stream) == sum(len(s) + 1 for s in sentences)
    assert int(stream.oov.sum()) == sum(w in OOV_WORDS for s in sentences for w in s)
    expected = [vocab.stoi.get(w, UNK_ID) for s in sentences for w in s + [EOS]]
    assert stream.ids.tolist() == expected
    assert stream.offsets.tolist() == np.cumsum([0] + [len(s) + 1 for s in sentences]).tolist()
    # the streaming reader and the in-memory encoder agree token for token
    other = TokenStream.from_sentences(iter_sentences(p), vocab)
    assert other.ids.tolist() == stream.ids.tolist()
    assert other.oov.tolist() == stream.oov.tolist()
    assert other.offsets.tolist() == stream.offsets.tolist()


# -- TokenStream ---------------------------------------------------------------------------------
def test_token_stream_offsets_oov_with_bos():
    vocab = Vocabulary(["a", "b"])  # ids a=3, b=4
    stream = TokenStream.from_sentences([["a", "zz", "b"], [], ["<unk>"]], vocab)
    assert stream.ids.tolist() == [3, UNK_ID, 4, EOS_ID, EOS_ID, UNK_ID, EOS_ID]
    assert stream.offsets.tolist() == [0, 4, 5, 7]
    assert stream.oov.tolist() == [False, True, False, False, False, False, False]
    seq, bos = stream.with_bos()
    assert seq.tolist() == [BOS_ID, 3, UNK_ID, 4, EOS_ID, BOS_ID, EOS_ID, BOS_ID, UNK_ID, EOS_ID]
    assert bos.tolist() == [0, 5, 7]
    assert (seq[bos] == BOS_ID).all()
    assert len(seq) == len(stream) + stream.n_sentences


# -- Vocabulary ----------------------------------------------------------------------------------
SENTS = [["b", "a", "c", "b", "a", "d", "e", "e", "f"], ["g", "<unk>", "<unk>", "<unk>"]]
# counts: a2 b2 e2 c1 d1 f1 g1, literal <unk> 3


def test_vocabulary_build_order_and_counts():
    v = Vocabulary.build(SENTS)
    assert v.itos == [*SPECIALS, "a", "b", "e", "c", "d", "f", "g"]  # by count, ties alphabetical
    assert v.counts.tolist() == [3, 0, 0, 2, 2, 2, 1, 1, 1, 1]
    assert v.id("zz") == UNK_ID and v.id("<unk>") == UNK_ID
    assert "a" in v and "zz" not in v


def test_vocabulary_build_min_count():
    v = Vocabulary.build(SENTS, min_count=2)
    assert v.itos == [*SPECIALS, "a", "b", "e"]
    assert v.counts.tolist() == [3 + 4, 0, 0, 2, 2, 2]  # literal <unk> + c, d, f, g
    assert v.counts.sum() == sum(len(s) for s in SENTS)


def test_vocabulary_build_max_size_deterministic():
    v = Vocabulary.build(SENTS, max_size=5)
    assert v.itos == [*SPECIALS, "a", "b"]
    assert v.counts.tolist() == [3 + 2 + 4, 0, 0, 2, 2]
    # input order does not matter
    assert Vocabulary.build([list(reversed(s)) for s in reversed(SENTS)], max_size=5) == v


@pytest.mark.parametrize("kwargs", [{"min_count": 0}, {"max_size": 3}])
def test_vocabulary_build_bad_options(kwargs):
    with pytest.raises(LmlabError):
        Vocabulary.build(SENTS, **kwargs)


def test_literal_unk_counted_not_oov(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("a <unk> b\n<unk> a\n", encoding="utf-8")
    vocab, stream = read_training_corpus(train)
    assert vocab.counts[UNK_ID] == 2
    assert stream.oov.sum() == 0
    test = tmp_path / "test.txt"
    test.write_text("<unk> a zz\n", encoding="utf-8")
    ts = read_corpus(test, vocab)
    assert ts.ids.tolist() == [UNK_ID, vocab.id("a"), UNK_ID, EOS_ID]
    assert ts.oov.tolist() == [False, False, True, False]  # only the real unknown word is OOV


def test_vocabulary_save_load_round_trip(tmp_path):
    v = Vocabulary.build(SENTS)
    path = tmp_path / "v.tsv"
    v.save(path)
    assert path.read_text(encoding="utf-8").splitlines()[:4] == ["<unk>\t3", "<s>\t0", "</s>\t0",
                                                                  "a\t2"]
    w = Vocabulary.load(path)
    assert w == v
    assert w.counts.tolist() == v.counts.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["v.tsv"]  # no temp file left


def test_vocabulary_load_eos_spelling_and_missing_specials(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("<unk>\n<s>\n<eos>\nhello\nworld\n", encoding="utf-8")
    v = Vocabulary.load(p)
    assert v.itos == [UNK, "<s>", EOS, "hello", "world"]
    p.write_text("world\t5\n<eos>\t7\nhello\t2\n", encoding="utf-8")
    v = Vocabulary.load(p)
    assert v.itos == [*SPECIALS, "world", "hello"]
    assert v.counts.tolist() == [0, 0, 0, 5, 2]


def test_vocabulary_load_crlf(tmp_path):
    p = tmp_path / "v.txt"
    p.write_bytes(b"hello\t3\r\nworld\r\n")
    assert Vocabulary.load(p).itos == [*SPECIALS, "hello", "world"]


@pytest.mark.parametrize("content, line", [
    (b"a\nb\tx\n", 2),
    (b"a\nb\nc\td\te\n", 3),
    (b"a\n\n", 2),
    (b"a\nb\na\n", 3),  # duplicate word
    (b"a\nb\n\xff\n", 3),
    (b"a\nthe 5\n", 2),  # a count after a space (KenLM's vocab dumps use one word per line)
    (b"a\nb c\td\n", 2),
])
def test_vocabulary_load_errors(tmp_path, content, line):
    p = tmp_path / "v.txt"
    p.write_bytes(content)
    with pytest.raises(LmlabError) as e:
        Vocabulary.load(p)
    check_error(e, p, line)


def test_vocabulary_load_truncated_gzip(tmp_path):
    p = tmp_path / "v.txt.gz"
    data = gzip.compress("".join(f"word{i}\t{i}\n" for i in range(5000)).encode())
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmlabError) as e:
        Vocabulary.load(p)
    check_error(e, p)


# -- bad input: one LmlabError naming the file and the line ---------------------------------------
def _all_readers(path):
    vocab = Vocabulary(["a", "b"])
    return [lambda: list(iter_sentences(path)), lambda: read_corpus(path, vocab),
            lambda: read_training_corpus(path)]


@pytest.mark.parametrize("content, line, words", [
    (b"a b\nb a\n\xff\xfe a\nb\n", 3, "UTF-8"),
    (b"a b\nb\x00a\n", 2, "binary"),
    (b"a b\nb a\nb <s> a\n", 3, "<s>"),
    (b"a </s>\n", 1, "</s>"),
])
def test_bad_content_names_file_and_line(tmp_path, content, line, words):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    for read in _all_readers(p):
        with pytest.raises(LmlabError) as e:
            read()
        assert words in check_error(e, p, line)


def test_bad_content_gzipped_names_line(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"a\nb\n\xc3\x28\n"))
    with pytest.raises(LmlabError) as e:
        list(iter_sentences(p))
    check_error(e, p, 3)


def test_bad_line_found_beyond_first_chunk(tmp_path, monkeypatch):
    import lmlab.textlines

    monkeypatch.setattr(lmlab.textlines, "CHUNK_BYTES", 16)  # many chunks: numbers carry over
    p = tmp_path / "bad.txt"
    good = b"a b zz d\n\n" * 5
    for bad in (b"a \xff\n", b"a <s> b\n", b"\x00\n"):
        p.write_bytes(good + bad + good)
        for read in _all_readers(p):
            with pytest.raises(LmlabError) as e:
                read()
            check_error(e, p, 11)
    p.write_bytes(good * 3)
    stream = read_corpus(p, Vocabulary(["a", "b", "d"]))
    assert len(stream) == 15 * (5 + 1) and stream.n_sentences == 30
    assert stream.offsets.tolist() == [0, *np.cumsum([5, 1] * 15).tolist()]
    assert int(stream.oov.sum()) == 15


@pytest.mark.parametrize("reader", ["corpus", "training"])
def test_empty_file(tmp_path, reader):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    with pytest.raises(LmlabError) as e:
        if reader == "corpus":
            read_corpus(p, Vocabulary(["a"]))
        else:
            read_training_corpus(p)
    assert "empty" in check_error(e, p)


def test_only_empty_lines(tmp_path):
    p = tmp_path / "blank.txt"
    p.write_text("\n\n  \n\t\n", encoding="utf-8")
    with pytest.raises(LmlabError) as e:
        read_training_corpus(p)
    assert "no words" in check_error(e, p)
    # as evaluation text it is valid: four sentences predicting </s> only
    stream = read_corpus(p, Vocabulary(["a"]))
    assert stream.ids.tolist() == [EOS_ID] * 4


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.txt"
    for read in _all_readers(missing):
        with pytest.raises(LmlabError) as e:
            read()
        assert "no such file" in check_error(e, missing)
    for read in _all_readers(tmp_path):
        with pytest.raises(LmlabError) as e:
            read()
        assert "directory" in check_error(e, tmp_path)


def test_truncated_gzip(tmp_path):
    lines = [f"w{i % 7} w{i % 5} w{i % 3}" for i in range(20000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    p = tmp_path / "cut.txt.gz"
    p.write_bytes(data[: len(data) // 2])
    for read in _all_readers(p):
        with pytest.raises(LmlabError) as e:
            read()
        # the line reported is the first one that could not be read, after complete ones
        line = e.value.line
        assert line is not None and 1 < line <= len(lines)
        assert "truncated" in check_error(e, p, line)


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(("a b c\n" * 1000 + "d e\n" * 1000).encode()))
    for i in range(20, min(60, len(data) - 10)):
        data[i] ^= 0x5A
    p = tmp_path / "bad.gz"
    p.write_bytes(bytes(data))
    for read in _all_readers(p):
        with pytest.raises(LmlabError) as e:
            read()
        check_error(e, p)


@pytest.mark.parametrize("chunk", [1, 10, 11, 64, 4096])
def test_line_length_limit_is_in_bytes(tmp_path, monkeypatch, chunk):
    """A line over the limit in bytes is an error however the text is cut, even when it has
    fewer characters than the limit (multi-byte UTF-8), and is never split into two lines."""
    import lmlab.corpus
    import lmlab.textlines

    monkeypatch.setattr(lmlab.textlines, "MAX_LINE_BYTES", 100)
    ok = tmp_path / "ok.txt"
    ok.write_text("a b\n" + "x" * 100 + "\n" + "€" * 33 + "\nc d", encoding="utf-8")
    assert [line for _, lines in lmlab.corpus.iter_lines(ok, chunk) for line in lines] == \
        ["a b", "x" * 100, "€" * 33, "c d"]
    for long in ("€" * 60, "y" * 101, "€" * 400):  # 180 bytes in 60 characters; 101; 1,200
        path = tmp_path / "long.txt"
        path.write_text(f"a b\n{long}\nc d\n", encoding="utf-8")
        with pytest.raises(LmlabError, match=r"long\.txt:2: line longer than"):
            list(lmlab.corpus.iter_lines(path, chunk))


@pytest.mark.parametrize("span_bytes", [1, 7, 30, 10**6])
def test_line_spans_cover_the_file_in_whole_lines(tmp_path, span_bytes):
    """Spans (what each worker reads) are whole lines that tile the file, numbered as in it;
    read in chunks of any size they give back the file's bytes."""
    from lmlab.textlines import line_spans, raw_chunks

    p = tmp_path / "t.txt"
    p.write_bytes(b"x y\n" * 10 + b"\n" + "€ z\n".encode() * 5 + b"last")
    spans, lines = line_spans(p, span_bytes)
    assert lines == 17 and spans[0][0] == 0 and spans[-1][1] == p.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    data = p.read_bytes()
    for start, end, before in spans:
        assert data.count(b"\n", 0, start) == before
        assert start == 0 or data[start - 1:start] == b"\n"
        chunks = list(raw_chunks(p, 3, span=(start, end, before)))
        assert b"".join(d for _, d in chunks) == data[start:end]
        assert chunks[0][0] == before


def test_span_without_line_ends_is_read_as_asked(tmp_path, monkeypatch):
    """A file without line ends is one span as large as the file: a worker reads it in chunks
    up to the line-length limit (then one error line), not whole into memory."""
    import lmlab.textlines
    from lmlab.textlines import line_spans, open_span, raw_chunks

    monkeypatch.setattr(lmlab.textlines, "MAX_LINE_BYTES", 100)
    p = tmp_path / "flat.txt"
    p.write_bytes(b"a " * 10**5)
    spans, _ = line_spans(p, 64)
    assert spans == [(0, 2 * 10**5, 0)]
    with pytest.raises(LmlabError, match=r"flat\.txt:1: line longer than"):
        next(raw_chunks(p, 16, span=spans[0]))
    with open_span(p, (10, 2 * 10**5, 0)) as f:
        assert f.read(16) == b"a " * 8
        assert f.raw.raw.tell() < 2 * 10**4  # (one buffer's worth, not the span)
    with open_span(p, (10, 30, 0)) as f:
        assert f.read() == b"a " * 10  # and never past the span's end
