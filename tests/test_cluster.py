"""The out-of-core estimator and scoring on Dask (``--cluster``): an embedded LocalCluster, and a
real ``dask scheduler`` with two ``dask worker`` processes on loopback started by the test. The
model is the in-memory estimator's, bit for bit; per-line scores come back in input order; a
worker killed mid-run changes nothing; an unreachable scheduler is one line."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import lmlab.cluster as cluster  # noqa: E402
import lmlab.ngram.partition as planning  # noqa: E402
from lmlab.cli import main  # noqa: E402
from lmlab.ngram.model import load_ngram, train_ngram  # noqa: E402
from tests.cli_helpers import fails, ok  # noqa: E402
from tests.conftest import random_sentences, write_lines  # noqa: E402

MEMORY = "200M"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    words = [f"v{i}" for i in range(400)]
    return write_lines(tmp_path_factory.mktemp("cluster") / "train.txt",
                       random_sentences(9, 6000, words, max_len=14))


@pytest.fixture
def many_partitions(monkeypatch):
    """Plans of a dozen partitions and buckets and a few spans for the small corpus (the stages
    themselves read only the plan, so this holds on every worker)."""
    budget = 200 * 2**20
    monkeypatch.setattr(planning, "FIXED_OVERHEAD", 0)
    monkeypatch.setattr(planning, "CHUNK_BYTES_PER_TOKEN", budget // 15_000)
    monkeypatch.setattr(planning, "PARTITION_BYTES_PER_ROW", budget // 8_000)
    monkeypatch.setattr(planning, "BUCKET_BYTES_PER_NGRAM", budget // 20_000)


def same_arrays(a, b) -> bool:
    return all(np.array_equal(x, y) for name in ("keys", "logp", "bow")
               for x, y in zip(getattr(a, name), getattr(b, name), strict=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_command(*args: str) -> list[str]:
    exe = shutil.which("dask")
    return [exe, *args] if exe else [sys.executable, "-m", "dask", *args]


def test_train_on_a_local_cluster_is_bit_for_bit(corpus, many_partitions, capsys, tmp_path):
    ok(capsys, "ngram", "train", corpus, "-n", 4, "--cluster", "local:2", "--memory", MEMORY,
       "--temp", tmp_path, "-o", tmp_path / "m.lm", "--arpa", tmp_path / "m.arpa")
    ref = train_ngram(corpus, order=4)
    assert same_arrays(ref, load_ngram(tmp_path / "m.lm"))
    assert load_ngram(tmp_path / "m.lm").meta == ref.meta
    from lmlab.ngram.arpa import write_arpa

    write_arpa(ref, tmp_path / "ref.arpa")
    assert (tmp_path / "m.arpa").read_bytes() == (tmp_path / "ref.arpa").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.arpa", "m.lm", "ref.arpa"]


def test_jobs_means_a_local_cluster(corpus, capsys, tmp_path):
    ok(capsys, "ngram", "train", corpus, "-n", 3, "--jobs", 2, "--memory", MEMORY, "-o",
       tmp_path / "m.lm")
    assert same_arrays(train_ngram(corpus, order=3), load_ngram(tmp_path / "m.lm"))


def test_eval_on_a_cluster_gives_the_same_lines_in_order(corpus, capsys, tmp_path, monkeypatch):
    import lmlab.metrics

    monkeypatch.setattr(lmlab.metrics, "CLUSTER_SPAN_BYTES", 5000)  # ~25 spans, 4 at a time
    model = tmp_path / "m.lm"
    train_ngram(corpus, order=3).save(model)
    here = json.loads(ok(capsys, "eval", model, corpus, "--per-line", tmp_path / "here.jsonl",
                         "--json"))
    there = json.loads(ok(capsys, "eval", model, corpus, "--cluster", "local:2", "--per-line",
                          tmp_path / "there.jsonl", "--json"))
    assert (tmp_path / "there.jsonl").read_bytes() == (tmp_path / "here.jsonl").read_bytes()
    assert there["perplexity"] == here["perplexity"] and there["tokens"] == here["tokens"]


@pytest.fixture
def scheduler(tmp_path):
    """A real ``dask scheduler`` and two single-process ``dask worker`` on loopback."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 - closed below
    procs = [subprocess.Popen(dask_command("scheduler", "--host", "127.0.0.1", "--port",
                                           str(port), "--no-dashboard"),
                              stdout=logs, stderr=logs)]
    for _ in range(2):
        procs.append(subprocess.Popen(dask_command("worker", address, "--nthreads", "1",
                                                   "--no-nanny", "--no-dashboard"),
                                      stdout=logs, stderr=logs))
    from distributed import Client

    try:
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()


def test_real_scheduler_and_a_worker_killed_mid_run(corpus, many_partitions, scheduler,
                                                    tmp_path):
    address, procs = scheduler
    scratch, out = tmp_path / "scratch", tmp_path / "m.lm"
    scratch.mkdir()
    result = {}

    def train():
        result["rc"] = main(["ngram", "train", str(corpus), "-n", "5", "--cluster", address,
                             "--memory", MEMORY, "--temp", str(scratch), "-o", str(out)])

    worker = threading.Thread(target=train)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(scratch.glob("*/table-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    killed_while_running = worker.is_alive()
    procs[2].kill()  # one worker dies while the partitions are being adjusted
    worker.join(timeout=240)
    assert killed_while_running
    assert result.get("rc") == 0
    assert same_arrays(train_ngram(corpus, order=5), load_ngram(out))
    assert list(scratch.iterdir()) == []


def test_unreachable_scheduler_is_one_line(corpus, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    line = fails(capsys, "ngram", "train", corpus, "--cluster", f"tcp://127.0.0.1:{free_port()}",
                 "--memory", MEMORY, "--temp", tmp_path, "-o", tmp_path / "m.lm")
    assert "cannot reach the Dask scheduler" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--cluster", "local:0"], "--cluster must be local:N"),
    (["--cluster", "http://x:1"], "--cluster must be local:N"),
    (["--cluster", "local:2", "--jobs", "2"], "not both"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_cluster_options(corpus, capsys, tmp_path, argv, message):
    assert message in fails(capsys, "ngram", "train", corpus, "-o", tmp_path / "m.lm", *argv)


def test_eval_cluster_needs_a_plain_file(corpus, capsys, tmp_path):
    import gzip

    model = tmp_path / "m.lm"
    train_ngram(corpus, order=2).save(model)
    packed = tmp_path / "t.txt.gz"
    packed.write_bytes(gzip.compress(corpus.read_bytes()))
    assert "give an uncompressed file" in fails(capsys, "eval", model, packed, "--cluster",
                                                "local:1")
