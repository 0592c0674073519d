"""What a training run's checkpoint holds, and what a resume of it keeps or may change.

A checkpoint is :meth:`RunState.state_dict`: the configuration, vocabulary and tokenizer, the
weights, the optimiser, the schedule, the position in the epoch with the carried hidden state,
the random states (every rank's under data-parallel training) and the history. Restoring it
continues the run bit for bit (same device and thread count). A resume keeps the checkpoint's
configuration but for :data:`RESUMABLE_CHANGES`, and needs the same vocabulary and tokenizer.
"""

from __future__ import annotations

import os
import sys

import torch

from lmlab.corpus import Vocabulary
from lmlab.errors import LmlabError
from lmlab.neural.checkpoint import get_rng_state, seed_everything, set_rng_state, to_cpu, to_device
from lmlab.neural.config import RunConfig, flag_name
from lmlab.neural.distributed import join_states, rank_seed, state_rows
from lmlab.neural.lm import resolve_device
from lmlab.neural.run_files import sidecar_paths
from lmlab.tokenizers import tokenizer_from_spec, tokenizer_record

# Options a resumed run may change; everything else must match the checkpoint.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("train", "threads"),
                     ("train", "early_stop"), ("train", "checkpoint_every"),
                     ("train", "max_nan_retries"), ("train", "eval_every"),
                     ("train", "max_steps"), ("train", "compile")}


def check_train_options(config: RunConfig) -> None:
    """Every option of the run (:meth:`RunConfig.check`) and its device; one-line errors."""
    config.check()
    resolve_device(config.train.device)


def resume_config(data: dict, requested: RunConfig, out: str | os.PathLike) -> RunConfig:
    """The configuration a resume of checkpoint ``data`` (at ``out``) runs with: the
    checkpoint's, with ``requested``'s values of :data:`RESUMABLE_CHANGES`; a one-line error
    when ``requested`` would change anything else."""
    saved = RunConfig.from_dict(data["config"], os.fspath(out))
    if saved.model.model != requested.model.model:
        raise LmlabError(f"checkpoint holds model type {saved.model.model}, not "
                         f"{requested.model.model}; cannot resume it as one", out)
    req, old = requested.to_dict(), saved.to_dict()
    for section in ("model", "train"):
        for key, value in req[section].items():
            if key == "vocab_size":
                continue
            if (section, key) in RESUMABLE_CHANGES:
                old[section][key] = value
            elif old[section].get(key) != value:
                raise LmlabError(
                    f"{flag_name(key)} {value!r} differs from the checkpoint's "
                    f"{old[section].get(key)!r}; a resumed run keeps its configuration "
                    f"(only {resumable_flags()} may change)", out)
    config = RunConfig.from_dict(old, os.fspath(out))
    check_train_options(config)
    return config


def resumable_flags() -> str:
    return ", ".join(sorted(flag_name(key) for _, key in RESUMABLE_CHANGES))


def check_resumable_data(data: dict, vocab: Vocabulary, out: str | os.PathLike) -> None:
    """A one-line error unless checkpoint ``data`` was trained with ``vocab``'s tokenizer and
    words (the training data it resumes on)."""
    saved_tokenizer = tokenizer_from_spec(data.get("tokenizer"), out)
    if saved_tokenizer != vocab.tokenizer:
        other = vocab.tokenizer.describe()
        if other == saved_tokenizer.describe():
            other = f"another {other} (trained on other text or settings)"
        raise LmlabError(f"checkpoint was trained with the {saved_tokenizer.describe()} "
                         f"tokenizer, not {other}", out)
    itos = data["vocab"]
    if itos != vocab.itos:
        raise LmlabError(f"checkpoint vocabulary ({len(itos)} words) differs from the one of "
                         f"the training data ({len(vocab)} words): another data set?", out)


def check_new_run(out: str | os.PathLike, overwrite: bool) -> None:
    """A new run may not replace a checkpoint, nor the files beside one (``runs/m`` and
    ``runs/m.pt`` share ``runs/m.metrics.jsonl``), unless told to."""
    if overwrite:
        return
    if os.path.exists(out):
        raise LmlabError("checkpoint exists; pass --resume (resume=True) to continue that "
                         "run or --overwrite (overwrite=True) to start afresh", out)
    taken = [p for p in sidecar_paths(out).values() if p.exists()]
    if taken:
        raise LmlabError("exists, a file of another run named like this one (or of one whose "
                         "checkpoint is gone); pass --overwrite (overwrite=True) to replace it, "
                         "or name the checkpoint otherwise", taken[0])


def epoch_validation(epoch_record: dict) -> dict:
    """The validation record of an epoch end, from its ``history["epochs"]`` record."""
    return {"step": epoch_record["step"], "epoch": epoch_record["epoch"],
            "valid_ppl": epoch_record["valid_ppl"], "when": "epoch"}


class RunState:
    """The checkpoint side of :class:`lmlab.neural.trainer.Trainer` (a mixin: the trainer
    holds the attributes named here; see its "run state")."""

    def state_dict(self) -> dict:
        """Everything needed to continue exactly here (CPU copies). Under ``dist`` a collective:
        every rank's hidden state (joined into the full batch's) and random state."""
        h = self.history
        state, rng, ranks = self.state, get_rng_state(), {}
        if self.dist:
            parts = self.dist.gather((to_cpu(state), rng))
            state = join_states([p[0] for p in parts])
            ranks = {"rng_ranks": [p[1] for p in parts]}
        return to_cpu({
            "config": self.config.to_dict(),
            "vocab": list(self.vocab.itos),
            **tokenizer_record(self.vocab),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"lr": self.lr, "best_valid": self.best_valid,
                         "bad_epochs": self.bad_epochs, "plateau": self.plateau,
                         "nan_events": self.nan_events, "finished": self.finished},
            "rng": rng, **ranks,
            "progress": {"epoch": self.epoch, "position": self.position, "step": self.step,
                         "state": state, "loss_sum": self.loss_sum,
                         "loss_tokens": self.loss_tokens},
            "history": {"epochs": [dict(e) for e in h["epochs"]],
                        "step_loss": torch.tensor(h["step_loss"], dtype=torch.float64),
                        "grad_norm": torch.tensor(h["grad_norm"], dtype=torch.float64),
                        "step_lr": torch.tensor(h["step_lr"], dtype=torch.float64),
                        "step_epoch": torch.tensor(h["step_epoch"], dtype=torch.int64),
                        "events": [dict(e) for e in h["events"]], "test": h["test"],
                        "valid": [dict(v) for v in h["valid"]]},
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        })

    def _restore(self, data: dict, keep_events: bool = False) -> None:
        """Continue from checkpoint ``data`` (``keep_events``: a NaN rollback, which keeps the
        events and their count since the checkpoint)."""
        try:
            self.model.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
            s, p, h = data["schedule"], data["progress"], data["history"]
            self.best_valid, self.bad_epochs = s["best_valid"], s["bad_epochs"]
            self.plateau, self.finished = s["plateau"], s["finished"]
            self._set_lr(s["lr"])
            self.epoch, self.position, self.step = p["epoch"], p["position"], p["step"]
            # (this rank's rows of the full batch's state)
            self.state = to_device(state_rows(p["state"], self.my_rows), self.device)
            self.loss_sum, self.loss_tokens = p["loss_sum"], p["loss_tokens"]
            events = self.history["events"]
            self.history = {"epochs": [dict(e) for e in h["epochs"]],
                            "step_loss": h["step_loss"].tolist(),
                            "grad_norm": h["grad_norm"].tolist(),
                            "step_lr": h["step_lr"].tolist(),
                            "step_epoch": h["step_epoch"].tolist(),
                            "events": events if keep_events else [dict(e) for e in h["events"]],
                            "test": h["test"],
                            # (a checkpoint from before validations were logged: its epochs')
                            "valid": [dict(v) for v in h["valid"]] if "valid" in h
                            else [epoch_validation(e) for e in h["epochs"]]}
            if not keep_events:
                self.nan_events = s["nan_events"]
            self._restore_rng(data)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise LmlabError(f"checkpoint cannot be resumed ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})", self.out) from None
        if self.position > len(self.windows):
            raise LmlabError(f"checkpoint is at batch {self.position} of an epoch that has only "
                             f"{len(self.windows)} here: another data set?", self.out)

    def _restore_rng(self, data: dict) -> None:
        """Each rank's own random state; on another rank count than the checkpoint's, rank 0
        takes rank 0's and the others are re-seeded from the seed, their rank and the step."""
        ranks = data.get("rng_ranks") or [data["rng"]]
        world, rank = (self.dist.world, self.dist.rank) if self.dist else (1, 0)
        if len(ranks) == world or rank == 0:
            set_rng_state(ranks[rank])
        else:
            seed_everything(rank_seed(self.config.train.seed, rank, self.step))
