"""Smoke test of ``benchmarks/lstm_cells.py`` (tiny sizes, one round): it runs every row and
writes the JSON the issue's interface names. Speed itself is measured by running the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lstm_cells.py"


def test_lstm_cells_benchmark_runs(tmp_path):
    out = tmp_path / "cells.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--sizes", "8", "--variants", "vanilla", "fgr",
         "--techniques", "--rounds", "1", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["vanilla_vs_fused_train_ratio"] > 0
    rows = doc["results"]["2x8"]
    assert {"fused", "vanilla", "fgr", "vanilla/loop", "vanilla/steps", "vanilla/ops",
            "vanilla/mkl", "np/own"} <= set(rows)
    assert isinstance(doc["lstm_kernel_loop"], bool)
