"""The files a training run writes beside its checkpoint ``NAME.pt``.

* ``NAME.config.json``: the run's configuration, checkpoint name, vocabulary size, data folder,
  tokenizer and process count (``processes``: > 1 for a data-parallel run);
* ``NAME.metrics.jsonl``: one JSON object per optimiser step, epoch, event and test score, and
  one per validation between epoch ends (``{"step", "epoch", "valid_ppl", "when"}``, ``epoch``
  the epochs done as a fraction, ``when`` "every" for ``eval_every`` or "end" at the end of a
  run; an epoch end's validation is in its epoch record). On resume the log is rewritten from
  the checkpoint's history (with what only the log held, such as tokens per second, kept), so
  steps taken after the last save (and lost with it) leave no trace;
* ``NAME.curve.png``: the learning curve (drawn by the trainer with :mod:`lmlab.plots`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from lmlab.fileio import atomic_output, json_safe


def sidecar_paths(checkpoint: str | os.PathLike) -> dict[str, Path]:
    """Files written beside a checkpoint ``NAME.pt``: config, metrics log, learning curve."""
    path = Path(checkpoint)
    stem = path.with_suffix("") if path.suffix else path
    return {"config": Path(f"{stem}.config.json"), "metrics": Path(f"{stem}.metrics.jsonl"),
            "curve": Path(f"{stem}.curve.png")}


def write_run_config(path: Path, config: dict, checkpoint: str, vocab_size: int,
                     data: str | None, tokenizer: str = "whitespace", processes: int = 1) -> None:
    with atomic_output(path, "w") as f:
        json.dump({"config": config, "checkpoint": checkpoint, "vocab_size": vocab_size,
                   "data": data, "tokenizer": tokenizer, "processes": processes}, f, indent=2)
        f.write("\n")


class MetricsLog:
    """``NAME.metrics.jsonl``, appended one record per line; writes nothing until opened by
    :meth:`start` or :meth:`rewrite`."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled  # (False: a data-parallel rank other than 0 writes no log)
        self._file: TextIO | None = None

    def start(self) -> None:
        """A new run: an empty log (its folder created if missing, like every output's)."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - kept open

    def rewrite(self, history: dict, step: int) -> None:
        """On resume: the log again from the checkpoint's ``history`` (steps, the epoch records
        and other validations after their step, events), then a ``resume`` record at ``step``.
        What the history does not keep (a step's tokens per second and a bidirectional model's
        loss parts, an epoch's seconds) comes from the log being replaced, where its record
        of that step or epoch is still there and agrees."""
        if not self.enabled:
            return
        old = self._records()
        with atomic_output(self.path, "w") as f:
            by_step: dict[int, list[dict]] = {}
            for e in history["epochs"]:
                e = _with_extras(e, old.get(("epoch", e["epoch"])), "valid_ppl")
                by_step.setdefault(e["step"], []).append(e)
            for v in history.get("valid", []):
                if v.get("when") != "epoch":  # (an epoch end's: in its epoch record)
                    by_step.setdefault(v["step"], []).append(v)
            for e in by_step.get(0, []):  # (validated before any step)
                f.write(_line(e))
            for i, loss in enumerate(history["step_loss"]):
                record = {"step": i + 1, "epoch": history["step_epoch"][i], "loss": loss,
                          "grad_norm": history["grad_norm"][i], "lr": history["step_lr"][i]}
                f.write(_line(_with_extras(record, old.get(("step", i + 1)), "loss")))
                for e in by_step.get(i + 1, []):
                    f.write(_line(e))
            for e in history["events"]:
                f.write(_line(e))
            f.write(_line({"event": "resume", "step": step}))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    def _records(self) -> dict[tuple[str, int], dict]:
        """The step and epoch records of the log on disk, by ``("step", n)`` and
        ``("epoch", n)`` (the last of each: a NaN rollback repeats steps); unreadable lines
        and a missing log give none."""
        found: dict[tuple[str, int], dict] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(r, dict) or "event" in r or "when" in r or "test" in r:
                        continue
                    if "loss" in r and isinstance(r.get("step"), int):
                        found["step", r["step"]] = r
                    elif "train_ppl" in r and isinstance(r.get("epoch"), int):
                        found["epoch", r["epoch"]] = r
        except (OSError, UnicodeDecodeError):
            pass
        return found

    def write(self, record: dict) -> None:
        """One record (see :func:`_line`)."""
        if self._file is not None:
            self._file.write(_line(record))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _with_extras(record: dict, logged: dict | None, check: str) -> dict:
    """``record`` and the fields only the ``logged`` record of it has, if that one agrees on
    ``check`` (the same step of the same run, not a step taken again after a rollback)."""
    if not logged or json.loads(_line({check: record[check]}))[check] != logged.get(check):
        return record
    return {**record, **{k: v for k, v in logged.items() if k not in record}}


def _line(record: dict) -> str:
    """A record as one line of JSON; a non-finite float (a diverged loss or perplexity), at any
    depth, becomes null, as JSON has none (the log a resume rewrites goes through here too)."""
    try:
        return json.dumps(record, allow_nan=False, default=str) + "\n"
    except ValueError:  # inf or nan somewhere: the rare case pays for the walk
        return json.dumps(json_safe(record), default=str) + "\n"
