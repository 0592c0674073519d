"""Training neural language models: stream batching, truncated BPTT, schedules, and a run that
survives divergence, Ctrl-C and crashes.

The training text is one stream cut into ``batch_size`` contiguous rows (:func:`batchify`); each
step feeds the next ``bptt`` tokens of every row, carrying the hidden state across steps and
detaching it (truncated BPTT). NNLM uses the same interface: its state is its window of previous
words.

Learning rate (per epoch, after validation):

* ``decay_start > 0`` (Zaremba et al.): after every epoch ``e >= decay_start`` the rate is
  multiplied by ``lr_decay``: epoch ``e`` trains with ``lr * lr_decay ** max(0, e - decay_start)``;
* plateau: when validation perplexity has not improved for ``plateau_patience`` epochs (1 when
  ``decay_start == 0`` and ``plateau_patience == 0``, the pytorch example's rule), multiply by
  ``lr_decay``; set ``lr_decay = 1`` for a constant rate;
* ``early_stop > 0``: stop after that many epochs without improvement.

Every step logs the loss and the gradient's total norm before clipping. A NaN/Inf loss or gradient
rolls everything (weights, optimiser, position, RNG) back to the last saved checkpoint, multiplies
the learning rate by ``nan_lr_factor`` and carries on; after ``max_nan_retries`` such events the run
gives up with an :class:`LmlabError`.

Validation (the shared protocol, :meth:`Trainer.evaluate`) runs at every epoch end (it drives the
schedule above), every ``eval_every`` optimiser steps when set, and at the end of every run that
stops normally or on ``max_steps`` (not on Ctrl-C), unless the last one was at that very step.
Each is recorded with its step and epoch (``history["valid"]``, the metrics log, the curve).
Validations between epoch ends are for watching only: they change neither the schedule nor the
training (the RNG state is kept), so a run ends with the same weights with or without them.

Process-wide settings: by default the trainer changes none behind its caller's back. The run's
thread count (``threads``) and, on CUDA, cuDNN's deterministic mode (needed for bit-for-bit
resume) are in force only while the trainer computes (:meth:`Trainer.train`,
:meth:`Trainer.evaluate`, :meth:`Trainer.evaluate_test`) and restored afterwards; glibc's memory
thresholds (:func:`lmlab.neural.heap.keep_freed_memory`, fewer page faults per step with a large
vocabulary) are left alone. ``Trainer(..., process_settings=True)``, what ``lmlab train`` and the
ablation workers use, applies all three for the rest of the process.

A checkpoint is saved at the start, after every epoch, every ``checkpoint_every`` steps, on
``max_steps`` and on Ctrl-C; resuming from any of them continues bit for bit (same final weights and
metrics as a run never stopped, on the same device and thread count), unless a NaN rollback
follows the resume: it returns to the checkpoint resumed from, the run never stopped to its last
save before it (docs/neural.md). Beside ``NAME.pt`` the run
writes ``NAME.config.json``, ``NAME.metrics.jsonl`` (one JSON object per step, epoch and event) and
``NAME.curve.png``.

Data-parallel (``dist``, one :class:`~lmlab.neural.distributed.Dist` per process started by
torchrun): each process trains its rows of the batch through DistributedDataParallel; the loss,
stop requests, checkpoints and validations are shared as :mod:`lmlab.neural.distributed`
describes, so the methods that touch them (:meth:`Trainer.train`, :meth:`Trainer.save`,
:meth:`Trainer.evaluate`, :meth:`Trainer.evaluate_test`) are collectives: every rank calls them.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmlab.corpus import TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.fileio import check_not_overwriting, check_output_path
from lmlab.metrics import safe_exp, summarize
from lmlab.neural.base import detach_state
from lmlab.neural.checkpoint import (
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    to_cpu,
)
from lmlab.neural.config import RunConfig
from lmlab.neural.data import Corpus, batchify, bptt_windows
from lmlab.neural.distributed import Dist, check_rows, check_same_data, rank_device, rank_seed, wrap
from lmlab.neural.lm import NeuralLM, model_from_checkpoint, resolve_device
from lmlab.neural.resume import (
    RunState,
    check_new_run,
    check_resumable_data,
    check_train_options,
    epoch_validation,
    resume_config,
)
from lmlab.neural.run_control import StopSignals, apply_process_settings, run_settings
from lmlab.neural.run_files import MetricsLog, sidecar_paths, write_run_config

CURVE_EVERY_S = 60.0  # redraw the learning curve after an epoch at most this often (and at the end)

class TrainingInterrupted(Exception):  # noqa: N818 - reads as what happened
    """Ctrl-C during training: a checkpoint was saved at ``path``."""

    def __init__(self, path: str | os.PathLike, step: int) -> None:
        super().__init__(f"interrupted; checkpoint saved to {os.fspath(path)}; resume with "
                         "--resume")
        self.path = path
        self.step = step


@dataclass
class TrainResult:
    """How a call to :meth:`Trainer.train` ended."""

    status: str  # "finished", "early_stop", "max_steps"
    epoch: int  # epochs completed
    step: int  # optimiser steps taken in total
    checkpoint: str
    epochs: list[dict] = field(default_factory=list)  # per-epoch metrics
    best_valid_ppl: float | None = None  # the best epoch-end validation (the schedule's)
    best_valid_epoch: int | None = None  # ... and the epoch it ended
    # the last validation, at the end of the run: {"step", "epoch" (epochs done, a fraction
    # between epoch ends), "valid_ppl", "when" ("epoch", "every" or "end")}; None only when a
    # Ctrl-C ended the run before any
    valid: dict | None = None


class Trainer(RunState):
    """One training run writing to the checkpoint ``out``.

    ``resume=True`` continues the run saved in ``out`` (its configuration must match ``config``
    except for :data:`~lmlab.neural.resume.RESUMABLE_CHANGES`, where ``config``'s values win:
    start from the checkpoint's own, ``RunConfig.from_dict(load_checkpoint(out)["config"])``,
    to keep them all, as ``lmlab train --resume`` does; its vocabulary must match
    ``corpus``'s). ``step_hook`` is called as ``step_hook(trainer, step)`` after every
    optimiser step (tests use it to inject faults); ``log`` receives one line per epoch and per
    validation between epoch ends; ``plot=False`` skips the learning-curve PNG.

    ``process_settings=True`` applies the run's process-wide settings at construction, for the
    rest of the process, as a command-line program wants: ``torch.set_num_threads(threads)``
    (when ``threads`` is set), glibc's memory thresholds
    (:func:`lmlab.neural.heap.keep_freed_memory`) and, on CUDA,
    ``torch.backends.cudnn.deterministic = True`` and ``benchmark = False``. By default
    (``False``) none of them outlives a call: the thread count and the cuDNN flags are set only
    while the trainer computes and then restored, and the memory thresholds are left alone (call
    ``keep_freed_memory()`` yourself for the CLI's speed with a large vocabulary).
    """

    def __init__(self, config: RunConfig, corpus: Corpus, out: str | os.PathLike, *,
                 resume: bool = False, overwrite: bool = False, progress: bool = False,
                 plot: bool = True, log: Callable[[str], None] | None = None,
                 step_hook: Callable[[Trainer, int], None] | None = None,
                 process_settings: bool = False, dist: Dist | None = None) -> None:
        check_train_options(config)
        self.dist = dist
        self.main = dist is None or dist.main  # rank 0 logs and writes; the others compute
        self.out = Path(out)
        self.paths = sidecar_paths(self.out)
        self.metrics = MetricsLog(self.paths["metrics"], enabled=self.main)
        self.corpus = corpus
        self.vocab: Vocabulary = corpus.vocab
        self.progress = progress and self.main
        self.plot = plot and self.main
        self.log = (log if self.main else None) or (lambda line: None)
        self.step_hook = step_hook
        check_output_path(self.out)
        sources = [s.source for s in (corpus.train, corpus.valid, corpus.test) if s is not None]
        check_not_overwriting([self.out, *self.paths.values()], sources)
        data = None
        if resume:
            data = load_checkpoint(self.out)
            config = self._resume_config(data, config)
        else:
            check_new_run(self.out, overwrite)
        config.model.vocab_size = len(self.vocab)
        self.config = config
        t = config.train
        world = dist.world if dist else 1
        self.rows = check_rows(t.batch_size, world)  # batch rows of this process
        self.device = rank_device(t.device, dist) if dist else resolve_device(t.device)
        if process_settings:  # for good (see the class docstring); else only in _run_settings
            apply_process_settings(t.threads, self.device)

        seed_everything(t.seed)
        if data is not None:
            model, _, _ = model_from_checkpoint(data, self.out)
        else:
            from lmlab.neural.models import build_model

            model = build_model(config.model)
        self.model = model.to(self.device)
        if dist and dist.rank:  # the same initial weights everywhere, other dropout masks
            seed_everything(rank_seed(t.seed, dist.rank))
        self.optimizer = self._make_optimizer()
        self.inputs, self.targets = batchify(corpus.train, t.batch_size)
        # this rank's rows of the one batched stream (see lmlab.neural.distributed)
        self.my_rows = slice(dist.rank * self.rows, (dist.rank + 1) * self.rows) if dist \
            else slice(None)
        if dist:
            self.inputs = self.inputs[:, self.my_rows].contiguous()
            self.targets = self.targets[:, self.my_rows].contiguous()
        self._ddp = None  # the model's loss in DistributedDataParallel (made by train())
        self.windows = bptt_windows(self.inputs.size(0), t.bptt)

        # Run state (everything here is in the checkpoint).
        self.lr = t.lr
        self.best_valid: float | None = None
        self.bad_epochs = 0  # epochs without improvement, for early stopping
        self.plateau = 0  # the same, reset when the plateau rule decays the rate
        self.nan_events = 0
        self.finished: str | None = None
        self.epoch = 0  # epochs completed
        self.position = 0  # windows of the current epoch done
        self.step = 0
        self.state = None  # carried hidden state (None: start of an epoch)
        self.loss_sum = 0.0  # sum of loss * tokens over the current epoch
        self.loss_tokens = 0
        self.history: dict = {"epochs": [], "step_loss": [], "grad_norm": [], "step_lr": [],
                              "step_epoch": [], "events": [], "test": None, "valid": []}
        self._snapshot: dict | None = None
        self._last_curve = time.monotonic()
        self.stop = StopSignals(dist, self.main)
        self._probing = False  # in _throwaway_step (tests that count loss calls skip it)
        self._consistent = True
        self._saved_step: int | None = None  # the step of the last checkpoint written
        self._valid_seconds = 0.0  # time validating between epoch ends, this epoch
        self._compile_pending = t.compile  # compiled at the start of train() (see _compile)
        if data is not None:
            self._restore(data)
            self._snapshot = to_cpu(data)
            self.metrics.rewrite(self.history, self.step)
        else:
            for p in self.paths.values():
                check_output_path(p)
        self._signals = contextlib.ExitStack()
        if dist:
            check_same_data(dist, self.vocab, self.out)
            # for the trainer's whole life: a signal during a collective must not raise on one
            # rank only (see StopSignals)
            self._signals.enter_context(self.stop.deferred())

    # -- configuration ----------------------------------------------------------------------------
    def _resume_config(self, data: dict, requested: RunConfig) -> RunConfig:
        config = resume_config(data, requested, self.out)
        check_resumable_data(data, self.vocab, self.out)
        return config

    def _make_optimizer(self) -> torch.optim.Optimizer:
        t = self.config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        return kind[t.optimizer](params, lr=t.lr, weight_decay=t.weight_decay)

    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    # -- checkpoints (what they hold: lmlab.neural.resume.RunState) -----------------------------
    def save(self, curve: bool = False) -> None:
        """Write the checkpoint (atomically) and keep an in-memory copy for NaN rollback;
        ``curve``: redraw the learning-curve PNG too. Under ``dist`` every rank calls it and
        rank 0 writes; a failed write stops every rank."""
        data = self.state_dict()
        if self.dist is None:
            save_checkpoint(self.out, data)
        else:
            self.dist.on_rank0(lambda: save_checkpoint(self.out, data),
                               "write the checkpoint", self.out)
        self._snapshot = data
        self._saved_step = self.step
        self.metrics.flush()
        if curve and time.monotonic() - self._last_curve >= CURVE_EVERY_S:
            self._write_curve()

    # -- training ----------------------------------------------------------------------------------
    def train(self, max_steps: int | None = None) -> TrainResult:
        """Train until ``config.train.epochs`` epochs are done, early stopping, or ``max_steps``
        optimiser steps in total (counted over resumes; 0: no limit; None: the configuration's
        ``max_steps``), then validate unless the last validation was at this step; raises
        :class:`TrainingInterrupted` on Ctrl-C (after saving, without validating)."""
        if max_steps is None:
            max_steps = self.config.train.max_steps
        if max_steps < 0:
            raise LmlabError(f"--max-steps must be >= 0, got {max_steps}")
        if self._snapshot is None:
            self._write_config()
            self.metrics.start()
            self.save()
        else:
            self._write_config()
        signals = contextlib.nullcontext() if self.dist else self.stop.deferred()
        with self._run_settings(), signals:
            if self._compile_pending:
                self._compile()
            if self.dist and self._ddp is None:
                self._ddp = wrap(self.model, self.device)
                # DDP lays its gradient buckets out anew after its first backward pass, and the
                # layout decides the order of the sums (with 3+ ranks): that pass is made here,
                # so that every step, of a resumed run too, sums in the same layout
                self._throwaway_step(self._ddp)
            try:
                status = self._loop(max_steps or None)
                validated = not self._validated_here()
                if validated:
                    self._validate("end")
                if validated or self._saved_step != self.step:
                    self.save()
            except KeyboardInterrupt:
                if self._consistent:
                    self.save()
                self._write_curve()
                raise TrainingInterrupted(self.out, self.step) from None
            finally:
                self.metrics.flush()
        self._write_curve()
        best_epoch = next((e["epoch"] for e in self.history["epochs"]
                           if e["valid_ppl"] == self.best_valid), None)
        return TrainResult(status, self.epoch, self.step, os.fspath(self.out),
                           [dict(e) for e in self.history["epochs"]], self.best_valid,
                           best_epoch, dict(self.history["valid"][-1]))

    def _compile(self) -> None:
        """``compile``: compile the model in place (:mod:`lmlab.neural.compiling`) and log how long
        its first use took: one training step's forward and backward on the first batch, run here
        with the RNG state kept and the gradients dropped, so the run itself is unchanged."""
        from lmlab.neural.compiling import compile_model

        self._compile_pending = False
        what, seconds = compile_model(self.model, lambda: self._throwaway_step(self.model.loss))
        if seconds is not None:
            self.log(f"compiled {what} with torch.compile; first use (a training step's forward "
                     f"and backward) took {seconds:.1f} s")

    def _throwaway_step(self, loss_fn: Callable) -> None:
        """A training step's forward and backward on the first window through ``loss_fn``, with
        the RNG state kept and the gradients dropped: the run itself is unchanged."""
        start, end = self.windows[0]
        x = self.inputs[start:end].to(self.device)
        y = self.targets[start:end].to(self.device)
        rng = get_rng_state()
        self._probing = True
        try:
            self.model.train()
            loss, _ = loss_fn(x, y, self.model.init_state(self.rows, self.device))
            loss.backward()
        finally:
            set_rng_state(rng)
            self._probing = False
        self.model.zero_grad(set_to_none=True)

    def _loop(self, max_steps: int | None) -> str:
        t = self.config.train
        if self.finished == "early_stop":
            return "early_stop"
        while self.epoch < t.epochs:
            if max_steps is not None and self.step >= max_steps:
                return "max_steps"
            bar = self._progress_bar()
            epoch_start = time.perf_counter()
            self._valid_seconds = 0.0
            try:
                while self.position < len(self.windows):
                    if max_steps is not None and self.step >= max_steps:
                        return "max_steps"  # (train() validates and saves)
                    self._train_step(bar)
                    if self.stop.agreed(self.device, step=True):
                        raise KeyboardInterrupt
                    if (t.eval_every and self.step % t.eval_every == 0
                            and self.position < len(self.windows) and not self._validated_here()):
                        self._validate("every", bar)  # (an epoch's last step: its end's)
                    if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                        self.save()
            finally:
                if bar is not None:
                    bar.close()
            self._consistent = False
            stop = self._end_epoch(time.perf_counter() - epoch_start - self._valid_seconds)
            if stop:
                self.finished = "early_stop"
            self._consistent = True
            self.save(curve=True)
            if stop:
                return "early_stop"
            if self.stop.agreed(self.device):
                raise KeyboardInterrupt
        self.finished = "finished"
        return "finished"

    def _train_step(self, bar) -> None:
        t = self.config.train
        start, end = self.windows[self.position]
        x = self.inputs[start:end].to(self.device)
        y = self.targets[start:end].to(self.device)
        tic = time.perf_counter()
        self._consistent = False
        self.model.train()
        state = self.state if self.state is not None else \
            self.model.init_state(self.rows, self.device)
        state = detach_state(state)
        self.optimizer.zero_grad(set_to_none=True)
        loss, new_state = (self._ddp or self.model.loss)(x, y, state)
        loss_value = float(loss.detach())
        # A bidirectional model optimises (forward + backward + cloze) / 3: only its forward
        # part is a language-model loss, so the epoch's training perplexity uses that part.
        parts = {k: float(v) for k, v in (getattr(self.model, "last_loss_parts", None)
                                          or {}).items()}
        tokens = y.numel()
        if self.dist:  # the global batch's: a NaN on any rank is everyone's (and a stop request)
            values = self.dist.mean([loss_value, *parts.values(), float(self.stop.requested)],
                                    self.device)
            loss_value, parts = values[0], dict(zip(parts, values[1:-1], strict=True))
            self.stop.in_step = values[-1] > 0
            tokens *= self.dist.world
        grad_norm = float("nan")
        if math.isfinite(loss_value):
            loss.backward()
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                params, t.clip if t.clip > 0 else float("inf")))
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self._consistent = True
            self._nan_rollback(loss_value, grad_norm)
            return
        self.optimizer.step()
        lm_loss = parts.get("forward", loss_value)
        self.state = detach_state(new_state)
        self.position += 1
        self.step += 1
        self.loss_sum += lm_loss * tokens
        self.loss_tokens += tokens
        h = self.history
        h["step_loss"].append(loss_value)
        h["grad_norm"].append(grad_norm)
        h["step_lr"].append(self.lr)
        h["step_epoch"].append(self.epoch + 1)
        self._consistent = True
        elapsed = time.perf_counter() - tic
        self.metrics.write({"step": self.step, "epoch": self.epoch + 1, "loss": loss_value,
                            "grad_norm": grad_norm, "lr": self.lr, **parts,
                            "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None})
        if bar is not None:
            bar.update(1)
            avg = self.loss_sum / self.loss_tokens
            bar.set_postfix(loss=f"{lm_loss:.3f}", ppl=f"{safe_exp(avg):.1f}",
                            tok_s=f"{tokens / max(elapsed, 1e-9):.0f}", refresh=False)
        if self.step_hook is not None:
            self.step_hook(self, self.step)

    def _nan_rollback(self, loss_value: float, grad_norm: float) -> None:
        t = self.config.train
        self.nan_events += 1
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        where = f"epoch {self.epoch + 1}, step {self.step + 1}"
        if self.nan_events > t.max_nan_retries:
            value = loss_value if what == "loss" else grad_norm
            raise LmlabError(f"training diverged: the {what} became {value} at {where} after "
                             f"{t.max_nan_retries} rollback(s) (learning rate now {self.lr:.3g}); "
                             "try a lower --lr or a --clip threshold")
        new_lr = self.lr * t.nan_lr_factor
        assert self._snapshot is not None
        self._restore(self._snapshot, keep_events=True)
        self._set_lr(new_lr)
        event = {"event": "nan_rollback", "what": what, "at": where, "to_step": self.step,
                 "lr": new_lr, "count": self.nan_events}
        self.history["events"].append(event)
        self.metrics.write(event)
        self.log(f"warning: {what} became non-finite at {where}; rolled back to step "
                 f"{self.step}, learning rate now {new_lr:.4g}")

    def _end_epoch(self, seconds: float) -> bool:
        """Validate, record, update the learning rate; True when early stopping says stop."""
        t = self.config.train
        self.epoch += 1
        train_ppl = safe_exp(self.loss_sum / self.loss_tokens) if self.loss_tokens else float("nan")
        valid = self.evaluate(self.corpus.valid)
        improved = self.best_valid is None or valid < self.best_valid
        if improved:
            self.best_valid = valid
            self.bad_epochs = self.plateau = 0
        else:
            self.bad_epochs += 1
            self.plateau += 1
        record = {"epoch": self.epoch, "step": self.step, "lr": self.lr, "train_ppl": train_ppl,
                  "valid_ppl": valid, "best_valid_ppl": self.best_valid}
        self.history["epochs"].append(record)
        self.history["valid"].append(epoch_validation(record))
        self.metrics.write({**record, "seconds": round(seconds, 3)})
        self.log(f"epoch {self.epoch}/{t.epochs} (step {self.step}): train ppl {train_ppl:.2f}, "
                 f"valid ppl {valid:.2f}, lr {self.lr:.4g}, {seconds:.1f}s")
        lr = self.lr
        if t.decay_start > 0 and self.epoch >= t.decay_start:
            lr *= t.lr_decay
        patience = t.plateau_patience or (1 if t.decay_start == 0 else 0)
        if patience and self.plateau >= patience:
            lr *= t.lr_decay
            self.plateau = 0
        self._set_lr(lr)
        self.position, self.state = 0, None
        self.loss_sum, self.loss_tokens = 0.0, 0
        return bool(t.early_stop and self.bad_epochs >= t.early_stop)

    def _validated_here(self) -> bool:
        """Whether the last validation was at the current step."""
        valid = self.history["valid"]
        return bool(valid) and valid[-1]["step"] == self.step

    def _validate(self, when: str, bar=None) -> dict:
        """Validate between epoch ends (``when``: "every") or at the end of a run ("end"):
        recorded and logged, the RNG state kept so that training goes on as without it."""
        tic = time.perf_counter()
        rng = get_rng_state()
        try:
            ppl = self.evaluate(self.corpus.valid)
        finally:
            set_rng_state(rng)
        record = {"step": self.step,
                  "epoch": round(self.epoch + self.position / len(self.windows), 4),
                  "valid_ppl": ppl, "when": when}
        self.history["valid"].append(record)
        self.metrics.write(record)
        if bar is not None:
            bar.clear()
        self.log(f"valid ppl {ppl:.2f} {validation_point(record)}")
        if bar is not None:
            bar.refresh()
        self._valid_seconds += time.perf_counter() - tic
        return record

    def evaluate(self, stream: TokenStream) -> float:
        """Perplexity of ``stream`` with the shared protocol (one stream, batch size 1); under
        ``dist`` rank 0 computes it and every rank gets it."""
        return self._scored(stream)["perplexity"]

    def _scored(self, stream: TokenStream) -> dict:
        """The shared protocol's result on ``stream`` (:meth:`EvalResult.to_dict`), computed
        once: by rank 0 under ``dist``, then shared."""
        def score() -> dict:
            with self._run_settings():
                lm = NeuralLM(self.model, self.vocab, self.config, device=self.device)
                return summarize(lm.logprobs(stream), stream).to_dict()

        return score() if self.dist is None else \
            self.dist.on_rank0(score, "evaluate", stream.source)

    def evaluate_test(self) -> dict | None:
        """Score the test split (if any) with the shared protocol; recorded in the checkpoint."""
        if self.corpus.test is None:
            return None
        result = self._scored(self.corpus.test)
        self.history["test"] = {k: v for k, v in result.items() if not isinstance(v, float)
                                or math.isfinite(v)}
        self.metrics.write({"test": self.history["test"], "step": self.step})
        self.save()
        return result

    def _run_settings(self):
        """The run's thread count and cuDNN mode while the trainer computes (see
        :func:`lmlab.neural.run_control.run_settings`)."""
        return run_settings(self.config.train.threads, self.device)

    # -- side files -----------------------------------------------------------------------------
    def _write_config(self) -> None:
        if not self.main:
            return
        write_run_config(self.paths["config"], self.config.to_dict(), self.out.name,
                         len(self.vocab), self.corpus.folder, self.vocab.tokenizer.describe(),
                         self.dist.world if self.dist else 1)

    def close(self) -> None:
        self.metrics.close()
        self._ddp = None  # (its reducer goes before the process group does)
        self._signals.close()

    def _write_curve(self) -> None:
        self._last_curve = time.monotonic()
        h = self.history
        if not self.plot or not (h["epochs"] or h["step_loss"] or h["valid"]):
            return
        from lmlab.plots import learning_curve

        m = self.config.model
        learning_curve(h["epochs"], h["step_loss"], self.paths["curve"],
                       title=f"{m.model} {m.layers}x{m.hidden} ({self.out.name})",
                       valid=h["valid"])

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=len(self.windows), initial=self.position, unit="batch", leave=False,
                    desc=f"epoch {self.epoch + 1}/{self.config.train.epochs}", file=sys.stderr,
                    dynamic_ncols=True)


def validation_point(record: dict) -> str:
    """Where a validation record (``history["valid"]``) belongs: ``at step 150 (epoch 0.4)``,
    ``at step 715 (end of epoch 13)``."""
    epoch = record["epoch"]
    if record.get("when") == "epoch":
        return f"at step {record['step']} (end of epoch {epoch})"
    return f"at step {record['step']} (epoch {f'{epoch:.2f}'.rstrip('0').rstrip('.')})"
