"""Data-parallel training with PyTorch's own machinery: ``torchrun`` starts the processes,
``torch.distributed`` connects them (gloo on CPU, NCCL on CUDA) and
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients. lmlab adds only what
truncated BPTT over one stream needs:

* **Rows, not samples.** The training text is one stream cut into ``batch_size`` contiguous rows
  (:func:`lmlab.neural.data.batchify`) whose hidden state is carried from step to step. With N
  processes, rank r takes rows ``r*B/N .. (r+1)*B/N - 1`` of that same layout (fairseq's) and
  carries their state; a stock ``DistributedSampler`` would shuffle samples and break the carry.
  Each rank's loss is the mean over its rows, so DDP's average of the N gradients is the
  gradient of the global batch's mean loss: a run on N processes takes the steps a single
  process takes with the same ``--batch-size`` (up to float summation order) when no randomness
  is involved (dropout draws other masks per rank).
* **One checkpoint.** Every rank's hidden state and random-generator state are gathered; the
  checkpoint holds the full ``[.., B, ..]`` state, as a single-process one does, plus
  ``rng_ranks`` (one generator state per rank). Rank 0 writes it.
* **Agreement.** A stop request (Ctrl-C, SIGTERM) is all-reduced so that every rank stops after
  the same step; the loss is all-reduced so that a NaN on one rank rolls every rank back.

Launch with ``torchrun --nproc_per_node N -m lmlab train ...`` or ``lmlab train --ddp N ...``
(:func:`launch`, torchrun's own launcher API: same agent, same rendezvous).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist

from lmlab.errors import LmlabError

# Environment variables torchrun sets in every worker.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A rank waits this long for the others (rank 0 validating on its own, a slow checkpoint).
TIMEOUT = datetime.timedelta(hours=2)
EXIT_INTERRUPTED = 130
EXIT_PEER_LOST = 3  # a worker that stopped because another one died (not the cause)


class ReportedByRank0(LmlabError):
    """Raised on the other ranks when rank 0 failed at a step they share: rank 0 reports it,
    so the command line prints nothing more for these."""

    reported = True
SHUTDOWN_S = 120  # after Ctrl-C, how long the launcher waits for the workers to save


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, draws and writes files."""
        return self.rank == 0

    # -- collectives (every rank calls each at the same point) -------------------------------
    def mean(self, values: list[float], device: torch.device) -> list[float]:
        """The mean over the ranks of each of ``values`` (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=device)
        tdist.all_reduce(t)
        return (t / self.world).tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any rank's ``flag`` is set."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
        tdist.all_reduce(t)
        return bool(t.item())

    def gather(self, obj: object) -> list:
        """``obj`` of every rank, in rank order, on every rank (pickled: small things only)."""
        out: list = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def share(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def on_rank0(self, work: Callable[[], object], what: str, path) -> object:
        """``work()`` run by rank 0 alone, its result on every rank. Its failure stops every
        rank: rank 0 raises the error, the others :class:`ReportedByRank0` ("rank 0 could not
        ``what``"), so nobody waits for a result that will not come."""
        result, error = None, None
        if self.main:
            try:
                result = work()
            except Exception as err:  # noqa: BLE001 - every rank must learn of it
                error = err
        ok, result = self.share((error is None, result))
        if error is not None:
            raise error
        if not ok:
            raise ReportedByRank0(f"rank 0 could not {what}", path)
        return result


# Whether this process joined (and left) a process group: `python -m lmlab` then ends without
# interpreter teardown (lmlab/__main__.py says why).
joined_a_group = False


@contextlib.contextmanager
def session(device: str) -> Iterator[Dist | None]:
    """:func:`from_environment` for the length of a run: a process group joined here is left
    at the end (a process exiting with gloo's threads still running aborts)."""
    global joined_a_group
    joined = not tdist.is_initialized()
    dist = from_environment(device)
    joined_a_group |= dist is not None and joined
    try:
        yield dist
        if dist is not None and joined:
            tdist.barrier()  # every rank done before any leaves (PyTorch's advice)
    finally:
        if dist is not None and joined and tdist.is_initialized():
            tdist.destroy_process_group()


def from_environment(device: str) -> Dist | None:
    """The run's :class:`Dist` when this process was started by torchrun with more than one
    process (the process group is joined here: gloo on CPU, NCCL on CUDA); None otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise LmlabError(f"WORLD_SIZE is {world} but {', '.join(missing)} is not set: start "
                         "data-parallel runs with torchrun or lmlab train --ddp N")
    dist = Dist(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))
    if not tdist.is_initialized():
        dev = rank_device(device, dist)
        if dev.type == "cuda":  # (object collectives use the current device: this rank's GPU)
            torch.cuda.set_device(dev)
            tdist.init_process_group("nccl", timeout=TIMEOUT, device_id=dev)
        else:
            tdist.init_process_group("gloo", timeout=TIMEOUT)
    return dist


def rank_device(requested: str, dist: Dist) -> torch.device:
    """The device of this rank: ``auto``/``cuda`` mean ``cuda:LOCAL_RANK`` (one GPU per
    process), ``cpu`` is the CPU; a fixed ``cuda:N`` would put every rank on one GPU."""
    name = (requested or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name.startswith("cuda:"):
        raise LmlabError(f"--device {name}: a data-parallel run puts rank r on cuda:LOCAL_RANK; "
                         "use --device cuda (or CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if not torch.cuda.is_available():
        from lmlab.neural.lm import resolve_device

        resolve_device(name)  # its one-line error
    if dist.local_rank >= torch.cuda.device_count():
        raise LmlabError(f"local rank {dist.local_rank} has no GPU of its own "
                         f"({torch.cuda.device_count()} visible): start at most that many "
                         "processes per machine")
    return torch.device(f"cuda:{dist.local_rank}")


def check_rows(batch_size: int, world: int) -> int:
    """Rows per rank; a one-line error when ``world`` does not divide ``batch_size``."""
    if batch_size % world:
        raise LmlabError(f"--batch-size {batch_size} is the global batch: {world} processes need "
                         f"a multiple of {world} (each takes batch-size / {world} rows)")
    return batch_size // world


# -- the carried state: batch rows are dim 1 of every tensor of every model's state ------------
def state_rows(state, rows: slice):
    """Batch ``rows`` of a hidden state (a tensor or a tuple of them; None stays None)."""
    if state is None or rows == slice(None):
        return state
    if isinstance(state, tuple | list):
        return type(state)(s[:, rows].contiguous() for s in state)
    return state[:, rows].contiguous()


def join_states(states: list):
    """The rank states of :func:`state_rows` side by side again (None when any is None: the
    start of an epoch is the start for every rank)."""
    if any(s is None for s in states):
        return None
    if isinstance(states[0], tuple | list):
        return type(states[0])(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
    return torch.cat(states, dim=1)


def check_same_data(dist: Dist, vocab, out: str | os.PathLike) -> None:
    """Every rank read the same vocabulary and tokenizer (each reads the data itself)."""
    from lmlab.tokenizers import tokenizer_record

    text = "\n".join(vocab.itos) + "\n" + json.dumps(tokenizer_record(vocab), sort_keys=True,
                                                      default=str)
    digests = dist.gather(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    if len(set(digests)) > 1:
        raise LmlabError("the ranks read different vocabularies or tokenizers from the training "
                         "data (ranks on other machines: the same data folder for all?)", out)


class LossModule(torch.nn.Module):
    """``model.loss`` as a module's ``forward``: DDP synchronises the gradients of what runs
    through its wrapper's ``forward``, and a language model's training step is its loss."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, state):
        return self.model.loss(inputs, targets, state)


def wrap(model: torch.nn.Module, device: torch.device):
    """``model``'s loss wrapped in DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossModule(model), device_ids=ids)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s random streams (dropout), derived from the run's ``seed``:
    rank 0 keeps ``seed`` itself; a resume on another rank count re-seeds at ``step``."""
    if rank == 0 and step == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0]
               % 2**63)


# -- the launcher ----------------------------------------------------------------------------
def strip_ddp(argv: list) -> list[str]:
    """``argv`` without ``--ddp N`` / ``--ddp=N`` (or argparse's abbreviation ``--dd``): the
    workers' command line."""
    out, skip = [], False
    for arg in map(str, argv):
        flag, eq, _ = arg.partition("=")
        if skip:
            skip = False
        elif len(flag) >= 4 and "--ddp".startswith(flag):
            skip = not eq
        else:
            out.append(arg)
    return out


def check_launch(device: str, nproc: int) -> None:
    """What ``--ddp N`` can check before it starts anything: not inside a torchrun worker
    already, and a GPU per process."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise LmlabError("--ddp: this process is already one of a torchrun job's; give the "
                         "process count to torchrun only")
    if nproc < 1:
        raise LmlabError(f"--ddp must be >= 1, got {nproc}")
    rank_device(device, Dist(0, nproc, 0))  # cuda:N refused, CUDA present if asked for
    name = (device or "auto").strip().lower()
    if name != "cpu" and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise LmlabError(f"--ddp {nproc}: one GPU per process, and {torch.cuda.device_count()} "
                         "are visible; use at most that many (or --device cpu)")


def launch(argv: list[str], nproc: int, checkpoint: str, threads: int = 0) -> int:
    """``lmlab train --ddp N``: run ``python -m lmlab ARGV`` in ``nproc`` processes on this
    machine through torchrun's launcher (``torch.distributed.launcher.elastic_launch``, what the
    ``torchrun --standalone`` command runs), then say in one line how it ended.

    The workers run in sessions of their own: Ctrl-C (or SIGTERM) reaches the agent, which
    passes it on to every worker; they stop after the same step, rank 0 saves, and the agent
    waits ``SHUTDOWN_S`` for that before it kills them.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from lmlab.cli import EXIT_USER_ERROR

    # the workers' environment is this process's (torchrun's launcher copies os.environ)
    if not threads and "OMP_NUM_THREADS" not in os.environ:
        # as torchrun does (it sets 1): without it every process would use every core
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // nproc))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"lmlab-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          shutdown_timeout=SHUTDOWN_S)
    # the agent's own reports (each module's logger has its level set) give way to one line
    quiet = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
             if name.startswith("torch.distributed")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "lmlab", *argv)
    except SignalException:
        return EXIT_INTERRUPTED  # (rank 0 said where it saved)
    except ChildFailedError as err:
        # the first failure that is a cause, not a rank that lost its peer or that the agent
        # stopped (SIGTERM) because of another's failure
        causes = {r: f for r, f in err.failures.items()
                  if f.exitcode not in (EXIT_PEER_LOST, -signal.SIGTERM)}
        rank, failure = min((causes or err.failures).items(), key=lambda rf: rf[1].timestamp)
        code = failure.exitcode
        if code == EXIT_INTERRUPTED:  # a stop every rank agreed on (rank 0 said where it saved)
            return EXIT_INTERRUPTED
        if code == EXIT_USER_ERROR:  # (it said why: nothing to resume from that)
            return EXIT_USER_ERROR
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and
               -code in signal.valid_signals() else f"exited with code {code}")
        print(f"lmlab: error: rank {rank} of {nproc} {how}; the job was stopped. "
              f"{_last_checkpoint(checkpoint)}", file=sys.stderr)
        return 1
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    return 0


def _last_checkpoint(path: str) -> str:
    """Where the run can resume from, in words."""
    from lmlab.neural.checkpoint import load_checkpoint

    try:
        step = load_checkpoint(path)["progress"]["step"]
    except (LmlabError, KeyError, TypeError):
        return f"No checkpoint at {path}."
    return f"Last checkpoint: {path} (step {step}); continue with --resume."
