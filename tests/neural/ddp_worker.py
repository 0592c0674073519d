"""Run by ``test_distributed.py`` under torchrun (2 CPU processes, gloo): tiny data-parallel
runs of every model type, written to OUT/NAME.pt, which the test compares with single-process
runs of the same configurations (:func:`config`).

    PYTHONPATH=src:. python -m torch.distributed.run --standalone --nproc_per_node 2 \
        tests/neural/ddp_worker.py DATA OUT
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

import lmlab
from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import load_corpus
from lmlab.neural.distributed import session
from lmlab.neural.trainer import Trainer
from tests.neural.faults import nan_at  # (the repository root is on PYTHONPATH: see env())

STEPS = 24  # over an epoch end (20 steps on the test's data): validation, decay, a short window
# name -> model options (no dropout: equal to a single process only without random masks; SGD,
# as Adam turns float-rounding differences in near-zero gradients into steps of size lr)
CASES: dict[str, dict] = {
    "nnlm": {"model": "nnlm", "window": 3, "direct": True},
    "rnn_tanh": {"model": "rnn_tanh", "residual": True},
    "lstm": {"model": "lstm", "tied": True},
    "lstm_cifg": {"model": "lstm", "variant": "cifg"},
    "gru": {"model": "gru"},
    "bilstm": {"model": "lstm", "bidirectional": True},
    "nan": {"model": "lstm"},  # rank 1's 4th loss is NaN: every rank rolls back
    "every": {"model": "gru"},  # validations and checkpoints between epoch ends (TRAIN below)
}
TRAIN: dict[str, dict] = {"every": {"eval_every": 7, "checkpoint_every": 5}}
NAN_CALL = 4
API_OPTIONS = dict(hidden=8, emsize=8, layers=1, batch_size=4, bptt=6, max_steps=4,
                   device="cpu", threads=1, seed=3, dropout=0.2)


def config(name: str, device: str = "cpu") -> RunConfig:
    model = dict(emsize=8, hidden=8, layers=2, dropout=0.0, **CASES[name])
    train = dict(epochs=2, bptt=6, batch_size=4, lr=0.5, optimizer="sgd", clip=0.5, seed=7,
                 device=device, threads=1, decay_start=1, lr_decay=0.8, nan_lr_factor=0.5)
    return RunConfig(ModelConfig(**model), TrainConfig(**{**train, **TRAIN.get(name, {})}))


def main(data: str, out: str, device: str = "cpu") -> None:
    torch.set_num_threads(1)
    corpus = load_corpus(data)
    with session(device) as dist:
        assert dist is not None and dist.world == 2
        for name in CASES:
            run(name, corpus, dist, Path(out), device)
        if device == "cpu":  # the Python API inside torchrun: the same model on every rank
            lm = lmlab.train("gru", data, output=Path(out) / "api.pt", **API_OPTIONS)
            torch.save(lm.model.state_dict(), Path(out) / f"api-rank{dist.rank}.pt")


def run(name: str, corpus, dist, out: Path, device: str) -> None:
    trainer = Trainer(config(name, device), corpus, out / f"{name}.pt", dist=dist, plot=False)
    if name == "nan" and dist.rank == 1:
        nan_at({NAN_CALL})(trainer)
    if name == "lstm":  # a checkpoint half way, for a resume on one process
        trainer.train(max_steps=STEPS // 2)
        if dist.main:
            shutil.copy(out / "lstm.pt", out / "lstm-half.pt")
    trainer.train(max_steps=STEPS)
    trainer.close()

if __name__ == "__main__":
    main(*sys.argv[1:])
