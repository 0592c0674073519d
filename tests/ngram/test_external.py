"""Out-of-core estimation (``lmlab ngram train --memory``): the model is the in-memory
estimator's, array for array and ARPA byte for byte, for every backoff-form method, pruned or not,
across many partitions, buckets and chunks; bad input and faults give one line and leave nothing
behind."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

import lmlab.ngram.build as build
import lmlab.ngram.external as ext
import lmlab.ngram.partition as planning
from lmlab.cli import main
from lmlab.errors import LmlabError
from lmlab.ngram.arpa import write_arpa
from lmlab.ngram.model import load_ngram, train_ngram
from tests.cli_helpers import fails, ok
from tests.conftest import random_sentences, write_lines

BACKOFF_METHODS = ("mle", "katz", "wb", "absdisc", "kn", "mkn", "stupid")
MEMORY = 64 * 2**20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3,000 sentences over 300 words: enough n-grams for a dozen partitions and buckets."""
    words = [f"v{i}" for i in range(300)]
    sentences = random_sentences(5, 3000, words, max_len=12)
    return write_lines(tmp_path_factory.mktemp("ooc") / "train.txt", sentences)


@pytest.fixture
def small_plan(monkeypatch):
    """Size chunks, partitions and buckets as if memory were tiny (64M budget: ~2k-token
    chunks, ~4k windows per partition, ~4k n-grams per bucket); records every plan made."""
    monkeypatch.setattr(planning, "FIXED_OVERHEAD", 0)
    monkeypatch.setattr(planning, "CHUNK_BYTES_PER_TOKEN", MEMORY // 2000)
    monkeypatch.setattr(planning, "PARTITION_BYTES_PER_ROW", MEMORY // 4000)
    monkeypatch.setattr(planning, "BUCKET_BYTES_PER_NGRAM", MEMORY // 4000)
    plans = []
    make_plan = planning.make_plan

    def spy(*args, **kwargs):
        plans.append(make_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(planning, "make_plan", spy)
    return plans


@pytest.fixture
def sub_batches(small_plan, monkeypatch):
    """As ``small_plan``, with partitions too small for their heaviest words: those are split
    into sub-batches by the word before (orders >= 3)."""
    monkeypatch.setattr(planning, "PARTITION_BYTES_PER_ROW", MEMORY // 600)
    return small_plan


def assert_same_model(ref, path: Path) -> None:
    got = load_ngram(path)
    assert got.meta == ref.meta
    assert got.vocab.itos == ref.vocab.itos
    for name in ("keys", "logp", "bow"):
        a, b = getattr(ref, name), getattr(got, name)
        assert len(a) == len(b)
        for n, (x, y) in enumerate(zip(a, b, strict=True), 1):
            assert x.dtype == y.dtype and np.array_equal(x, y), f"{name} order {n} differs"


@pytest.mark.parametrize("method", BACKOFF_METHODS)
def test_every_method_bit_for_bit(corpus, small_plan, tmp_path, method):
    ref = train_ngram(corpus, order=4, smoothing=method, verbose=False)
    write_arpa(ref, tmp_path / "ref.arpa")
    meta = build.train_external(corpus, 4, method, memory=MEMORY, temp=tmp_path, verbose=False,
                              output=str(tmp_path / "m.lm"), arpa=str(tmp_path / "m.arpa"))
    plan = small_plan[0]
    assert plan.parts >= 4 and plan.buckets >= 4  # the test exercises many of each
    assert meta["ngrams"] == [len(k) for k in ref.keys]
    assert_same_model(ref, tmp_path / "m.lm")
    assert (tmp_path / "m.arpa").read_bytes() == (tmp_path / "ref.arpa").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("lmlab-")] == []


@pytest.mark.parametrize(("method", "prune"), [("mkn", [0, 1, 1, 2]), ("katz", [0, 0, 1]),
                                               ("stupid", [0, 1])])
def test_pruned_bit_for_bit(corpus, small_plan, tmp_path, method, prune):
    ref = train_ngram(corpus, order=4, smoothing=method, prune=prune, verbose=False)
    build.train_external(corpus, 4, method, memory=MEMORY, prune=prune, verbose=False,
                       output=str(tmp_path / "m.lm"))
    assert_same_model(ref, tmp_path / "m.lm")


@pytest.mark.parametrize("order", [1, 2, 6])
def test_orders(corpus, small_plan, tmp_path, order):
    ref = train_ngram(corpus, order=order, verbose=False)
    build.train_external(corpus, order, "mkn", memory=MEMORY, output=str(tmp_path / "m.lm"))
    assert_same_model(ref, tmp_path / "m.lm")


def test_char_tokenizer_and_arpa_companion(corpus, small_plan, tmp_path, monkeypatch):
    from lmlab.tokenizers import tokenizer_from_spec

    # (the letter 'v' is in every word: one heavy partition)
    monkeypatch.setattr(planning, "PARTITION_BYTES_PER_ROW", MEMORY // 30_000)

    ref = train_ngram(corpus, order=5, tokenizer=tokenizer_from_spec({"name": "char"}))
    write_arpa(ref, tmp_path / "ref.arpa")
    build.train_external(corpus, 5, "mkn", memory=MEMORY, output=str(tmp_path / "m.lm"),
                       arpa=str(tmp_path / "m.arpa"),
                       tokenizer=tokenizer_from_spec({"name": "char"}))
    assert_same_model(ref, tmp_path / "m.lm")
    assert (tmp_path / "m.arpa").read_bytes() == (tmp_path / "ref.arpa").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if "m.arpa" in p.name) == \
        sorted(p.name.replace("ref", "m") for p in tmp_path.iterdir() if "ref.arpa" in p.name)


@pytest.mark.parametrize("method", ["mkn", "katz"])
def test_sub_batches_bit_for_bit(corpus, sub_batches, tmp_path, method):
    ref = train_ngram(corpus, order=5, smoothing=method, verbose=False)
    write_arpa(ref, tmp_path / "ref.arpa")
    build.train_external(corpus, 5, method, memory=MEMORY, verbose=False,
                         output=str(tmp_path / "m.lm"), arpa=str(tmp_path / "m.arpa"))
    assert sub_batches[0].subs >= 3
    assert_same_model(ref, tmp_path / "m.lm")
    assert (tmp_path / "m.arpa").read_bytes() == (tmp_path / "ref.arpa").read_bytes()


@pytest.mark.parametrize("method", ["mkn", "katz", "stupid"])
def test_pruned_ptb_with_sub_batches(data_root, sub_batches, tmp_path, method, monkeypatch):
    """Real text pruned: a pruned context's backoff must find no n-gram (an earlier version
    looked it up by position and overwrote another context's backoff)."""
    monkeypatch.setattr(planning, "PARTITION_BYTES_PER_ROW", MEMORY // 2000)
    text = data_root / "ptb" / "valid.txt"
    ref = train_ngram(text, order=5, smoothing=method, prune=[0, 1, 1, 2], verbose=False)
    build.train_external(text, 5, method, memory=MEMORY, prune=[0, 1, 1, 2], verbose=False,
                         output=str(tmp_path / "m.lm"))
    assert sub_batches[0].subs > 1
    assert_same_model(ref, tmp_path / "m.lm")


def test_ptb_five_gram_bit_for_bit(data_root, small_plan, tmp_path, monkeypatch):
    """Real text, the benchmark's method: MKN 5-gram of PTB in ~60 partitions."""
    monkeypatch.setattr(planning, "PARTITION_BYTES_PER_ROW", MEMORY // 60_000)
    train = data_root / "ptb" / "train.txt"
    ref = train_ngram(train, order=5)
    build.train_external(train, 5, "mkn", memory=MEMORY, output=str(tmp_path / "m.lm"))
    assert small_plan[0].parts > 10
    assert_same_model(ref, tmp_path / "m.lm")


# -- the command line ---------------------------------------------------------------------------
def test_cli_memory_and_temp(corpus, capsys, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ok(capsys, "ngram", "train", corpus, "-n", 3, "--memory", "200M", "--temp", scratch,
       "-o", tmp_path / "m.lm", "--arpa", tmp_path / "m.arpa.gz")
    assert list(scratch.iterdir()) == []
    assert_same_model(train_ngram(corpus, order=3), tmp_path / "m.lm")


def test_cli_goes_out_of_core_when_the_corpus_does_not_fit(corpus, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(build, "available_memory", lambda: 300 * 2**20)
    monkeypatch.setattr(build, "in_memory_need", lambda path, order: 2**40)
    assert main(["ngram", "train", str(corpus), "-n", "3", "-o", str(tmp_path / "m.lm")]) == 0
    assert "estimating out of core in 150M" in capsys.readouterr().err
    assert_same_model(train_ngram(corpus, order=3), tmp_path / "m.lm")


@pytest.mark.parametrize(("argv", "message"), [
    (["--memory", "lots"], "--memory must be a size such as"),
    (["--memory", "10M"], "give at least 128M"),
    (["--memory", "100M"], "give at least 128M"),
    (["--memory", "1G", "-s", "addk"], "addk has no backoff form"),
    (["--temp", "."], "--temp is for out-of-core estimation"),
    (["--memory", "1G", "--temp", "/nonexistent/folder"], "no such directory"),
])
def test_cli_bad_options_are_one_line(corpus, capsys, tmp_path, argv, message):
    out = tmp_path / "m.lm"
    line = fails(capsys, "ngram", "train", corpus, "-n", 3, "-o", out, *argv)
    assert message in line
    assert not out.exists()


def test_temp_that_is_a_file(corpus, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = fails(capsys, "ngram", "train", corpus, "--memory", "1G", "--temp", blocker,
                 "-o", tmp_path / "m.lm")
    assert "cannot create a scratch folder" in line


def test_full_disk_is_one_line_and_cleans_up(corpus, capsys, tmp_path, monkeypatch):
    previous = tmp_path / "m.lm"
    previous.write_bytes(b"previous model")
    real_save = np.save
    calls = []

    def save(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 7:  # somewhere in the middle of the stages
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    line = fails(capsys, "ngram", "train", corpus, "-n", 3, "--memory", "200M", "--temp",
                 tmp_path, "-o", previous)
    assert "temporary directory is full" in line and str(tmp_path) in line
    assert previous.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.lm"]


def test_interrupt_removes_the_scratch_folder(corpus, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ext, "interpolate_partition", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.train_external(corpus, 3, "mkn", memory=200 * 2**20, temp=tmp_path,
                           output=str(tmp_path / "m.lm"))
    assert list(tmp_path.iterdir()) == []


def test_parse_memory():
    assert build.parse_memory("1G") == 2**30
    assert build.parse_memory("800M") == 800 * 2**20
    assert build.parse_memory("1.5g") == int(1.5 * 2**30)
    assert build.parse_memory("2GB") == 2 * 2**30
    assert build.parse_memory("50%") == build.physical_memory() // 2
    for bad in ("", "G", "-1G", "1X"):
        with pytest.raises(LmlabError):
            build.parse_memory(bad)


def test_fold_keeps_lexicographic_order():
    rng = np.random.default_rng(0)
    base = 5000  # 5 columns overflow one int64: ranks replace the prefix on the way
    rows = rng.integers(0, base, size=(2000, 6))
    rows[1000:] = rows[:1000]  # duplicates
    code, _ = planning.fold([rows[:, j] for j in range(6)], base)
    by_code = np.argsort(code, kind="stable")
    by_rows = np.lexsort(rows.T[::-1])
    assert np.array_equal(rows[by_code], rows[by_rows])
    assert len(np.unique(code)) == len(np.unique(rows, axis=0))


def test_heavy_first_words_get_several_buckets(corpus, small_plan, tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "BUCKET_BYTES_PER_NGRAM", MEMORY // 300)
    ref = train_ngram(corpus, order=4, prune=[0, 0, 1], verbose=False)
    write_arpa(ref, tmp_path / "ref.arpa")
    build.train_external(corpus, 4, "mkn", memory=MEMORY, prune=[0, 0, 1], verbose=False,
                         output=str(tmp_path / "m.lm"), arpa=str(tmp_path / "m.arpa"))
    plan = small_plan[0]
    assert plan.bucket_span.max() > 3 and plan.buckets > 50
    assert_same_model(ref, tmp_path / "m.lm")
    assert (tmp_path / "m.arpa").read_bytes() == (tmp_path / "ref.arpa").read_bytes()


def test_first_word_buckets():
    first, span, total = planning.first_word_buckets(np.array([50, 3, 3, 3, 30, 1, 1]), 10)
    assert span.tolist() == [5, 1, 1, 1, 3, 1, 1]
    assert first.tolist() == [0, 5, 5, 5, 6, 9, 9] and total == 10


def test_partitions_are_balanced():
    weights = np.array([100, 90, 50, 40, 30, 20, 10, 5, 5, 1])
    part_of = planning.greedy_partition(weights, 3)
    loads = np.bincount(part_of, weights=weights)
    assert loads.max() - loads.min() <= 10


def test_every_stage_can_run_twice(corpus, sub_batches, tmp_path, monkeypatch):
    """Dask reruns a task whose worker died, even after it finished: a stage reads its inputs
    and writes its outputs and nothing else, so running each task twice changes nothing."""
    for name in ("count_span", "adjust_partition", "interpolate_partition", "assemble_bucket"):
        stage = getattr(ext, name)

        def twice(*args, _stage=stage, **kwargs):
            _stage(*args, **kwargs)
            return _stage(*args, **kwargs)

        monkeypatch.setattr(ext, name, twice)
    ref = train_ngram(corpus, order=5, prune=[0, 1], verbose=False)
    build.train_external(corpus, 5, "mkn", memory=MEMORY, prune=[0, 1], verbose=False,
                         output=str(tmp_path / "m.lm"))
    assert_same_model(ref, tmp_path / "m.lm")


def test_vocabulary_file_and_empty_lines(small_plan, capsys, tmp_path):
    words = [f"v{i}" for i in range(200)]
    text = write_lines(tmp_path / "t.txt", random_sentences(3, 3000, words, allow_empty=True))
    (tmp_path / "vocab.txt").write_text("\n".join(words[:150]) + "\n", encoding="utf-8")
    ok(capsys, "ngram", "train", text, "-n", 4, "--vocab", tmp_path / "vocab.txt", "--memory",
       "200M", "-o", tmp_path / "m.lm", "--arpa", tmp_path / "m.arpa")
    ok(capsys, "ngram", "train", text, "-n", 4, "--vocab", tmp_path / "vocab.txt", "-o",
       tmp_path / "ref.lm", "--arpa", tmp_path / "ref.arpa")
    assert_same_model(load_ngram(tmp_path / "ref.lm"), tmp_path / "m.lm")
    assert (tmp_path / "m.arpa").read_bytes() == (tmp_path / "ref.arpa").read_bytes()
    assert small_plan[0].parts > 1  # planned from the text's counts, not the file's (none)


def test_gzip_text_and_standard_input(corpus, capsys, tmp_path, monkeypatch):
    import gzip
    import io
    import sys

    packed = tmp_path / "t.txt.gz"
    packed.write_bytes(gzip.compress(corpus.read_bytes()))
    ok(capsys, "ngram", "train", packed, "-n", 3, "--memory", "200M", "-o", tmp_path / "m.lm")
    ref = train_ngram(packed, order=3)
    assert_same_model(ref, tmp_path / "m.lm")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(corpus.read_bytes())))
    assert "not standard input" in fails(capsys, "ngram", "train", "-", "--memory", "200M",
                                         "-o", tmp_path / "s.lm")
