"""Smoke test of ``benchmarks/lstm_cells.py`` (tiny sizes, one round): it runs every row and
writes the JSON the issue's interface names. Speed itself is measured by running the script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lstm_cells.py"


def test_lstm_cells_benchmark_runs(tmp_path):
    out = tmp_path / "cells.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--sizes", "8", "--rows", "vanilla", "fgr",
         "vanilla+compile", "vanilla/loop", "np/own", "--rounds", "1",
         "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["vanilla_vs_fused_train_ratio"] > 0
    assert doc["vanilla_compiled_vs_fused_train_ratio"] > 0
    rows = doc["results"]["2x8"]
    assert {"fused", "vanilla", "fgr", "vanilla+compile", "vanilla/loop", "np/own"} <= set(rows)
    assert doc["compile_seconds"]["2x8"].keys() == {"vanilla+compile"}
    assert doc["compile_seconds"]["2x8"]["vanilla+compile"] > 0
    ratios = doc["variant_ratios"]["2x8"]
    assert ratios["vanilla"]["eager"] == rows["vanilla"]["ratio_vs_fused"]
    assert ratios["vanilla"]["compiled"] == rows["vanilla+compile"]["ratio_vs_fused"]
    assert ratios["fgr"] == {"eager": rows["fgr"]["ratio_vs_fused"], "compiled": None}
    assert doc["device"] == "cpu"
    # fgr's bound: at most fused/vanilla's ratio, since fgr does vanilla's work and more
    assert doc["matmul_gflops"] > 0
    bound = doc["fgr_ratio_bound"]["2x8"]
    assert 0 < bound < rows["vanilla"]["ratio_vs_fused"]


def test_fgr_bound_by_hand():
    spec = importlib.util.spec_from_file_location("lstm_cells_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # 2 layers x 700 tokens x 54 H^2 (W_gg's three products, 2 FLOP per multiply-add)
    assert bench.fgr_extra_flops(100) == 2 * 700 * 54 * 100**2 == 756_000_000
    # fused 700 tokens/s: 1 s per step; vanilla 1.25x faster: 0.8 s; the extra 756 MFLOP at
    # 3.78 GFLOP/s: 0.2 s; so fgr's step takes at least 1.0 s and its ratio is at most 1.0
    rows = {"fused": {"tokens_per_s": 700.0}, "vanilla": {"ratio_vs_fused": 1.25}}
    assert abs(bench.fgr_bound(rows, 100, 3.78) - 1.0) < 1e-12
    del rows["vanilla"]  # then fused's step stands in for vanilla's: 1 / 1.2
    assert abs(bench.fgr_bound(rows, 100, 3.78) - 1 / 1.2) < 1e-12
