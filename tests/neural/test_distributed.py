"""Data-parallel training (DistributedDataParallel, gloo, 2 CPU processes started by torchrun):
equal to one process with the same global batch, exact resume, a NaN on one rank, a rank killed,
Ctrl-C; and the pieces (rows, states, options) in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.neural.checkpoint import load_checkpoint
from lmlab.neural.data import load_corpus
from lmlab.neural.distributed import (
    Dist,
    check_launch,
    check_rows,
    check_same_data,
    from_environment,
    join_states,
    rank_device,
    rank_seed,
    state_rows,
    strip_ddp,
)
from lmlab.neural.lm import load_neural
from lmlab.neural.models import build_model
from lmlab.neural.trainer import Trainer
from lmlab.synth import MarkovSource, write_splits
from tests.cli_helpers import fails
from tests.neural import ddp_worker
from tests.neural.ddp_worker import CASES, NAN_CALL, STEPS, config
from tests.neural.faults import nan_at

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform != "linux",
                                reason="needs torch.distributed (gloo) on Linux")
TOL = 1e-5
# a tiny run for the command line: 2 x 8 LSTM, 4 rows of 8 steps
TINY = ["--hidden", "8", "--emsize", "8", "--layers", "1", "--batch-size", "4", "--bptt", "8",
        "--threads", "1", "--lr", "1", "--device", "cpu"]


def splits(tmp_path_factory, name: str, train: int, held_out: int):
    d = tmp_path_factory.mktemp(name)
    write_splits(MarkovSource(order=2, vocab_size=10, seed=5), d,
                 {"train": train, "valid": held_out, "test": held_out}, seed=1)
    return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return splits(tmp_path_factory, "ddp-data", 200, 20)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """Epochs of 20 steps, the last of 3 tokens, for ddp_worker.py's configurations."""
    return splits(tmp_path_factory, "ddp-small", 30, 10)


@pytest.fixture(scope="module")
def corpus(small_dir):
    return load_corpus(small_dir)


def env(**extra) -> dict:
    """The workers' environment: this checkout's lmlab and tests importable, one thread."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    root = Path(__file__).resolve().parents[2]
    e["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root),
                                       e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


def lmlab(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmlab", *map(str, argv)], env=env(),
                          capture_output=True, text=True, timeout=300, **kw)


def single(name: str, corpus, out: Path, steps: int = STEPS) -> Trainer:
    trainer = Trainer(config(name), corpus, out, plot=False)
    if name == "nan":
        nan_at({NAN_CALL})(trainer)
    trainer.train(max_steps=steps)
    trainer.close()
    return trainer


def assert_close(a: dict, b: dict, tol: float = TOL) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=tol, rtol=0), \
            (name, (a[name] - b[name]).abs().max().item())


@pytest.fixture(scope="module")
def ddp_runs(small_dir, tmp_path_factory):
    """Every case of ddp_worker.py trained once by 2 processes under torchrun."""
    out = tmp_path_factory.mktemp("ddp-runs")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", ddp_worker.__file__, str(small_dir), str(out)]
    run = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_with_the_global_batch(name, ddp_runs, corpus, tmp_path):
    ddp = load_checkpoint(ddp_runs / f"{name}.pt")
    one = single(name, corpus, tmp_path / "one.pt")
    assert ddp["progress"]["step"] == one.step == STEPS
    assert_close(ddp["model"], one.model.state_dict())
    # the logged loss is the global batch's, the carried state the full batch's
    assert ddp["history"]["step_loss"].tolist() == pytest.approx(one.history["step_loss"],
                                                                 abs=TOL)
    full, mine = ddp["progress"]["state"], one.state
    for a, b in zip(full if isinstance(full, tuple) else (full,),
                    mine if isinstance(mine, tuple) else (mine,), strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a.double(), b.double(), atol=TOL)
    assert len(ddp["rng_ranks"]) == 2
    # an epoch end was crossed: validation (rank 0's, shared), the decayed rate
    assert ddp["history"]["epochs"][0]["step"] == one.history["epochs"][0]["step"] < STEPS
    assert ddp["history"]["epochs"][0]["valid_ppl"] == pytest.approx(
        one.history["epochs"][0]["valid_ppl"], rel=1e-5)
    assert ddp["schedule"]["lr"] == pytest.approx(one.lr, rel=1e-12)
    if name == "every":  # rank 0's validations between epoch ends, shared: the same records
        assert [v["step"] for v in ddp["history"]["valid"]] == [7, 14, 20, 21, STEPS]
        assert [v["valid_ppl"] for v in ddp["history"]["valid"]] == pytest.approx(
            [v["valid_ppl"] for v in one.history["valid"]], rel=1e-5)
    if name == "nan":  # rank 1's NaN rolled both back: the same single event, the same lr
        assert one.nan_events == ddp["schedule"]["nan_events"] == 1
        assert [e["event"] for e in ddp["history"]["events"]] == ["nan_rollback"]


def test_python_api_under_torchrun(ddp_runs):
    saved = load_checkpoint(ddp_runs / "api.pt")
    assert saved["progress"]["step"] == 4 and len(saved["rng_ranks"]) == 2
    for rank in (0, 1):
        mine = torch.load(ddp_runs / f"api-rank{rank}.pt", weights_only=True)
        for name, tensor in saved["model"].items():
            assert torch.equal(mine[name], tensor), (rank, name)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="NCCL needs 2 GPUs (one per process)")
def test_nccl_on_two_gpus_equals_one_gpu(small_dir, corpus, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", ddp_worker.__file__, str(small_dir), str(tmp_path), "cuda"]
    run = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("lstm", "gru", "nan"):
        ddp = load_checkpoint(tmp_path / f"{name}.pt")
        one = Trainer(config(name, "cuda"), corpus, tmp_path / "one.pt", overwrite=True,
                      plot=False)
        if name == "nan":
            nan_at({NAN_CALL})(one)
        one.train(max_steps=STEPS)
        one.close()
        assert_close(ddp["model"], {k: v.cpu() for k, v in one.model.state_dict().items()},
                     tol=1e-4)


def test_checkpoint_of_two_processes_resumes_on_one(ddp_runs, corpus, tmp_path):
    """Another rank count: weights, optimiser, position and the carried rows continue (no
    dropout here, so the run continues as the single-process one)."""
    half = tmp_path / "half.pt"
    half.write_bytes((ddp_runs / "lstm-half.pt").read_bytes())
    resumed = Trainer(config("lstm"), corpus, half, resume=True, plot=False)
    assert resumed.step == STEPS // 2
    resumed.train(max_steps=STEPS)
    resumed.close()
    one = single("lstm", corpus, tmp_path / "one.pt")
    assert_close(resumed.model.state_dict(), one.model.state_dict())


def test_resume_with_three_processes_is_bit_for_bit(data_dir, tmp_path):
    """Three: with two, a sum of two gradients is the same in any order; with more, the order
    follows DDP's bucket layout, which a resumed run must rebuild identically."""
    args = ["lstm", "--data", data_dir, *TINY, "--batch-size", "6", "--layers", "2", "--tied",
            "--emsize", "8", "--dropout", "0.3", "--epochs", "1", "--ddp", "3"]
    full = lmlab("train", *args, "-o", tmp_path / "full.pt", "--max-steps", "10")
    assert full.returncode == 0, full.stderr
    part = lmlab("train", *args, "-o", tmp_path / "part.pt", "--max-steps", "4")
    assert part.returncode == 0, part.stderr
    assert "3 DDP processes, 2 batch rows each" in part.stderr
    assert part.stderr.count("training lstm") == 1  # rank 0 speaks
    assert json.loads((tmp_path / "part.config.json").read_text())["processes"] == 3
    more = lmlab("train", *args, "-o", tmp_path / "part.pt", "--resume", "--max-steps", "10")
    assert more.returncode == 0, more.stderr
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "part.pt")
    for name, tensor in a["model"].items():  # dropout on: every rank's own masks carried
        assert torch.equal(tensor, b["model"][name]), name
    assert torch.equal(a["history"]["step_loss"], b["history"]["step_loss"])
    report = json.loads(lmlab("eval", tmp_path / "part.pt", data_dir / "test.txt",
                              "--json").stdout)
    assert report["tokens"] > 0


def test_batch_not_divisible_is_one_line(capsys, data_dir, tmp_path):
    line = fails(capsys, "train", "lstm", "--data", data_dir, "-o", tmp_path / "m.pt",
                 "--batch-size", "5", "--ddp", "2")
    assert "--batch-size 5" in line and "multiple of 2" in line
    assert not (tmp_path / "m.pt").exists()


def test_existing_checkpoint_is_refused_before_launch(capsys, data_dir, tmp_path):
    (tmp_path / "m.pt").write_bytes(b"keep")
    line = fails(capsys, "train", "lstm", "--data", data_dir, "-o", tmp_path / "m.pt",
                 "--ddp", "2")
    assert "checkpoint exists" in line
    assert (tmp_path / "m.pt").read_bytes() == b"keep"


def test_resume_with_other_options_is_refused_before_launch(capsys, data_dir, tmp_path):
    from lmlab.cli import main

    out = tmp_path / "m.pt"
    assert main(["train", "lstm", "--data", str(data_dir), "-o", str(out), *TINY,
                 "--max-steps", "1"]) == 0
    capsys.readouterr()
    line = fails(capsys, "train", "lstm", "--data", data_dir, "-o", out, "--resume",
                 "--hidden", "16", "--ddp", "2")
    assert "--hidden 16 differs from the checkpoint's 8" in line


def _worker_pid(token: str, local_rank: int, timeout: float = 60) -> int:
    """The pid of the worker with LOCAL_RANK=local_rank of the run marked ``token``."""
    want = {f"LMLAB_TEST_RUN={token}".encode(), f"LOCAL_RANK={local_rank}".encode()}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = set((entry / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if want <= environ:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError("worker not found")


def _wait_for_step(metrics: Path, step: int, proc: subprocess.Popen, timeout: float = 120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        if metrics.exists():
            steps = [json.loads(x).get("step", 0) for x in metrics.read_text().splitlines()
                     if x.strip()]
            if steps and max(steps) >= step:
                return
        time.sleep(0.2)
    raise AssertionError(f"no step {step} in time")


def _start(data_dir, out: Path, token: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmlab", "train", "lstm", "--data", str(data_dir), "-o",
         str(out), *TINY, "--epochs", "1000", "--checkpoint-every", "2", "--ddp", "2"],
        env=env(LMLAB_TEST_RUN=token), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)


def test_rank_killed_ends_the_job_with_a_loadable_checkpoint(data_dir, tmp_path):
    token, out = uuid.uuid4().hex, tmp_path / "k.pt"
    proc = _start(data_dir, out, token)
    try:
        _wait_for_step(tmp_path / "k.metrics.jsonl", 4, proc)
        os.kill(_worker_pid(token, 1), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("lmlab: error: rank 1 of 2 was killed by SIGKILL"), err[-2000:]
    assert "Last checkpoint" in last and "--resume" in last
    step = load_checkpoint(out)["progress"]["step"]
    assert step >= 4 and f"(step {step})" in last
    assert "Traceback" not in err  # (the surviving rank says one line too)
    assert load_neural(out).perplexity(data_dir / "test.txt").tokens > 0


@pytest.mark.parametrize("to", ["terminal", "rank 1"])
def test_ctrl_c_stops_every_rank_with_a_checkpoint(data_dir, tmp_path, to):
    token, out = uuid.uuid4().hex, tmp_path / "c.pt"
    proc = _start(data_dir, out, token)
    try:
        _wait_for_step(tmp_path / "c.metrics.jsonl", 4, proc)
        if to == "terminal":  # the launcher's process group, as a terminal's Ctrl-C
            os.killpg(proc.pid, signal.SIGINT)
        else:  # one worker only: every rank still stops after the same step
            os.kill(_worker_pid(token, 1), signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; checkpoint saved to" in err and "Traceback" not in err
    data = load_checkpoint(out)
    assert data["progress"]["step"] >= 4 and len(data["rng_ranks"]) == 2
    step = data["progress"]["step"]
    if to != "terminal":
        return
    more = lmlab("train", "lstm", "--data", data_dir, "-o", out, *TINY, "--ddp", "2",
                 "--resume", "--max-steps", step + 2)
    assert more.returncode == 0, more.stderr
    assert load_checkpoint(out)["progress"]["step"] == step + 2


# -- the pieces, in-process --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_every_models_state_has_its_rows_in_dim_1(name):
    c = config(name).model
    c.vocab_size = 13
    model = build_model(c)
    state = model.init_state(4, "cpu")
    parts = [state_rows(state, slice(r * 2, r * 2 + 2)) for r in range(2)]
    for s in parts if isinstance(parts[0], tuple) else [(p,) for p in parts]:
        assert all(t.shape[1] == 2 for t in s)
    joined = join_states(parts)
    for a, b in zip(joined if isinstance(joined, tuple) else (joined,),
                    state if isinstance(state, tuple) else (state,), strict=True):
        assert torch.equal(a, b)
    assert join_states([None, parts[1]]) is None


def test_rows_and_options():
    assert check_rows(20, 4) == 5
    with pytest.raises(LmlabError, match="multiple of 3"):
        check_rows(20, 3)
    assert strip_ddp(["lstm", "--ddp", "2", "--lr", "1", "--ddp=4"]) == ["lstm", "--lr", "1"]
    assert strip_ddp(["--dd", "2", Path("x"), "--dropout", "0"]) == ["x", "--dropout", "0"]
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r, s) for r in range(4) for s in range(0, 10_000, 7)}) == 4 * 1429
    with pytest.raises(LmlabError, match="cuda:LOCAL_RANK"):
        rank_device("cuda:1", Dist(0, 2, 0))
    assert rank_device("cpu", Dist(1, 2, 1)).type == "cpu"


def test_ranks_with_other_vocabularies_are_refused(corpus):
    class Other(Dist):
        def gather(self, obj):
            return [obj, "another digest"]

    with pytest.raises(LmlabError, match="different vocabularies"):
        check_same_data(Other(0, 2, 0), corpus.vocab, "m.pt")


def test_no_ddp_inside_a_torchrun_worker(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LmlabError, match="already one of a torchrun job"):
        check_launch("cpu", 2)
    monkeypatch.delenv("WORLD_SIZE")
    check_launch("cpu", 2)


def test_no_torchrun_environment_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(LmlabError, match="torchrun"):
        from_environment("cpu")
