"""The files beside a checkpoint: their names and the metrics log, known answers."""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.neural.run_files import MetricsLog, sidecar_paths, write_run_config


def test_sidecar_paths_replace_the_suffix(tmp_path):
    paths = sidecar_paths(tmp_path / "run.pt")
    assert paths == {"config": tmp_path / "run.config.json",
                     "metrics": tmp_path / "run.metrics.jsonl",
                     "curve": tmp_path / "run.curve.png"}
    assert sidecar_paths("model")["metrics"] == Path("model.metrics.jsonl")


def test_run_config_file(tmp_path):
    path = tmp_path / "run.config.json"
    write_run_config(path, {"model": {"hidden": 8}}, "run.pt", 12, "data/ptb", "char")
    assert json.loads(path.read_text()) == {"config": {"model": {"hidden": 8}},
                                            "checkpoint": "run.pt", "vocab_size": 12,
                                            "data": "data/ptb", "tokenizer": "char",
                                            "processes": 1}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_log_writes_records_and_null_for_non_finite(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.write({"step": 0})  # not started: nothing, no file
    assert not log.path.exists()
    log.start()
    log.write({"step": 1, "loss": 2.5})
    log.write({"step": 2, "loss": float("nan"), "grad_norm": float("inf")})
    log.write({"test": {"perplexity": float("inf"), "tokens": 3}})
    log.close()
    log.close()  # twice is fine
    assert _records(log.path) == [{"step": 1, "loss": 2.5},
                                  {"step": 2, "loss": None, "grad_norm": None},
                                  {"test": {"perplexity": None, "tokens": 3}}]


def test_metrics_log_rewrite_from_history_then_appends(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.start()
    log.write({"step": 99, "lost": "after the last save"})
    history = {"step_loss": [3.0, 2.0, 1.5], "grad_norm": [1.0, 0.5, 0.25],
               "step_lr": [1.0, 1.0, 0.5], "step_epoch": [1, 1, 2],
               "epochs": [{"epoch": 1, "step": 2, "valid_ppl": 9.0}],
               "events": [{"event": "nan_rollback", "to_step": 1}]}
    log.rewrite(history, step=3)
    log.write({"step": 4, "loss": 1.0})
    log.close()
    assert _records(log.path) == [
        {"step": 1, "epoch": 1, "loss": 3.0, "grad_norm": 1.0, "lr": 1.0},
        {"step": 2, "epoch": 1, "loss": 2.0, "grad_norm": 0.5, "lr": 1.0},
        {"epoch": 1, "step": 2, "valid_ppl": 9.0},  # right after the step that ended the epoch
        {"step": 3, "epoch": 2, "loss": 1.5, "grad_norm": 0.25, "lr": 0.5},
        {"event": "nan_rollback", "to_step": 1},
        {"event": "resume", "step": 3},
        {"step": 4, "loss": 1.0},
    ]


def test_metrics_log_rewrite_writes_null_for_non_finite(tmp_path):
    # an epoch whose perplexity overflowed (cross-entropy past ~709 nats) is inf in the history
    log = MetricsLog(tmp_path / "m.jsonl")
    history = {"step_loss": [800.0], "grad_norm": [float("inf")], "step_lr": [1.0],
               "step_epoch": [1], "epochs": [{"epoch": 1, "step": 1, "valid_ppl": float("inf")}],
               "events": []}
    log.rewrite(history, step=1)
    log.close()

    def no_constants(name):
        raise AssertionError(f"{name} in the log: not JSON")

    lines = log.path.read_text().splitlines()
    assert [json.loads(line, parse_constant=no_constants) for line in lines] == [
        {"step": 1, "epoch": 1, "loss": 800.0, "grad_norm": None, "lr": 1.0},
        {"epoch": 1, "step": 1, "valid_ppl": None},
        {"event": "resume", "step": 1},
    ]


def test_metrics_log_rewrite_puts_validations_after_their_step(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    start = {"step": 0, "epoch": 0.0, "valid_ppl": 12.0, "when": "end"}
    every = {"step": 1, "epoch": 0.5, "valid_ppl": 10.0, "when": "every"}
    history = {"step_loss": [3.0, 2.0], "grad_norm": [1.0, 0.5], "step_lr": [1.0, 1.0],
               "step_epoch": [1, 1], "epochs": [{"epoch": 1, "step": 2, "valid_ppl": 9.0}],
               "events": [],
               "valid": [start, every, {"step": 2, "epoch": 1, "valid_ppl": 9.0, "when": "epoch"}]}
    log.rewrite(history, step=2)
    log.close()
    assert _records(log.path) == [
        start,  # before any step
        {"step": 1, "epoch": 1, "loss": 3.0, "grad_norm": 1.0, "lr": 1.0},
        every,
        {"step": 2, "epoch": 1, "loss": 2.0, "grad_norm": 0.5, "lr": 1.0},
        {"epoch": 1, "step": 2, "valid_ppl": 9.0},  # an epoch end's: its epoch record only
        {"event": "resume", "step": 2},
    ]
