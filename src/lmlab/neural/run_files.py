"""The files a training run writes beside its checkpoint ``NAME.pt``.

* ``NAME.config.json``: the run's configuration, checkpoint name, vocabulary size, data folder,
  tokenizer and process count (``processes``: > 1 for a data-parallel run);
* ``NAME.metrics.jsonl``: one JSON object per optimiser step, epoch, event and test score, and
  one per validation between epoch ends (``{"step", "epoch", "valid_ppl", "when"}``, ``epoch``
  the epochs done as a fraction, ``when`` "every" for ``eval_every`` or "end" at the end of a
  run; an epoch end's validation is in its epoch record). On resume the log is rewritten from
  the checkpoint's history, so steps taken after the last save (and lost with it) leave no
  trace;
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
        and other validations after their step, events), then a ``resume`` record at ``step``."""
        if not self.enabled:
            return
        with atomic_output(self.path, "w") as f:
            by_step: dict[int, list[dict]] = {}
            for e in history["epochs"]:
                by_step.setdefault(e["step"], []).append(e)
            for v in history.get("valid", []):
                if v.get("when") != "epoch":  # (an epoch end's: in its epoch record)
                    by_step.setdefault(v["step"], []).append(v)
            for e in by_step.get(0, []):  # (validated before any step)
                f.write(_line(e))
            for i, loss in enumerate(history["step_loss"]):
                f.write(_line({"step": i + 1, "epoch": history["step_epoch"][i], "loss": loss,
                               "grad_norm": history["grad_norm"][i],
                               "lr": history["step_lr"][i]}))
                for e in by_step.get(i + 1, []):
                    f.write(_line(e))
            for e in history["events"]:
                f.write(_line(e))
            f.write(_line({"event": "resume", "step": step}))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

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


def _line(record: dict) -> str:
    """A record as one line of JSON; a non-finite float (a diverged loss or perplexity), at any
    depth, becomes null, as JSON has none (the log a resume rewrites goes through here too)."""
    try:
        return json.dumps(record, allow_nan=False, default=str) + "\n"
    except ValueError:  # inf or nan somewhere: the rare case pays for the walk
        return json.dumps(json_safe(record), default=str) + "\n"
