#!/usr/bin/env python
"""Training throughput of one process against data-parallel processes (``lmlab train --ddp N``)
on the Zaremba "small" step: LSTM 2x200, PTB (10k words), global batch 20, BPTT 20, SGD.

Rows (each an ``lmlab train`` command, so the numbers include everything a user's run pays:
torchrun's start, the gradient all-reduce, the agreed stop check):

* ``1 process x 1 thread``, ``1 process x 2 threads``: one process, as without DDP;
* ``2 processes x 1 thread`` (``--ddp 2 --threads 1``): each rank takes 10 of the 20 rows;
* on a machine with GPUs (``--device cuda``): ``1 GPU`` and ``N GPUs`` (``--ddp N``, one per
  process, NCCL), N = the GPUs visible.

Each row's rate is the median over its steps (the first ``--warmup`` skipped) of the global
batch's tokens per second of one optimiser step, as the run's metrics log records it on rank 0
(the step ends after the all-reduce, so it is the synchronised rate), and the median over
``--rounds`` rounds (rows in rotated order, to spread the machine's drift). The training text is
PTB's; validation uses PTB valid's first 100 lines so the end-of-run validation costs little.

Usage::

    python benchmarks/ddp_scaling.py                 # CPU rows, 3 rounds of 120 steps (~5 min)
    python benchmarks/ddp_scaling.py --device cuda   # GPU rows

Writes ``benchmarks/results/ddp_scaling.json`` (``--out``): per row the tokens/s of every round,
their median, and ``speedup`` (to the 1-process row with as many threads or GPUs in all:
``ddp2_vs_1thread``, ``ddp2_vs_2threads``; on GPUs ``ddpN_vs_1gpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZAREMBA_SMALL = ["--lr", "20", "--clip", "0.25", "--seed", "1"]  # 2x200, B 20, BPTT 20: defaults


def data_folder(corpus: Path, tmp: Path) -> Path:
    """PTB's train, the first 100 lines of its valid; no test."""
    d = tmp / "data"
    d.mkdir()
    os.symlink(corpus / "train.txt", d / "train.txt")
    lines = (corpus / "valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)[:100]
    (d / "valid.txt").write_text("".join(lines), encoding="utf-8")
    return d


def run(row: dict, data: Path, steps: int, warmup: int, tmp: Path) -> tuple[float, float]:
    """One training run: (median tokens/s of its steps after ``warmup``, wall seconds)."""
    out = tmp / "m.pt"
    for p in tmp.glob("m.*"):
        p.unlink()
    cmd = [sys.executable, "-m", "lmlab", "train", "lstm", "--data", str(data), "-o", str(out),
           "--max-steps", str(steps), "--device", row["device"], "--threads",
           str(row["threads"]), *ZAREMBA_SMALL]
    if row["procs"] > 1:
        cmd += ["--ddp", str(row["procs"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(row["threads"])}
    tic = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if done.returncode:
        raise SystemExit(f"{row['name']}: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    rates = [r["tokens_per_s"] for r in map(json.loads, (tmp / "m.metrics.jsonl").read_text()
                                            .splitlines())
             if "tokens_per_s" in r and r["step"] > warmup]
    return statistics.median(rates), wall


def rows_for(device: str) -> list[dict]:
    if device == "cpu":
        return [{"name": "1 process x 1 thread", "procs": 1, "threads": 1, "device": "cpu"},
                {"name": "1 process x 2 threads", "procs": 1, "threads": 2, "device": "cpu"},
                {"name": "2 processes x 1 thread", "procs": 2, "threads": 1, "device": "cpu"}]
    import torch

    gpus = torch.cuda.device_count()
    rows = [{"name": "1 GPU", "procs": 1, "threads": 1, "device": "cuda"}]
    if gpus > 1:
        rows.append({"name": f"{gpus} GPUs", "procs": gpus, "threads": 1, "device": "cuda"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="the PTB folder (default: $LMLAB_DATA/ptb)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                    "ddp_scaling.json")
    args = ap.parse_args()
    corpus = args.data or Path(os.environ.get("LMLAB_DATA", "../shared/data")) / "ptb"
    if not (corpus / "train.txt").is_file():
        raise SystemExit(f"no PTB at {corpus}: give --data or set LMLAB_DATA")
    rows = rows_for(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="lmlab-ddp-bench-"))
    try:
        data = data_folder(corpus, tmp)
        rates: dict[str, list[float]] = {r["name"]: [] for r in rows}
        walls: dict[str, list[float]] = {r["name"]: [] for r in rows}
        for k in range(args.rounds):
            for row in rows[k % len(rows):] + rows[:k % len(rows)]:
                rate, wall = run(row, data, args.steps, args.warmup, tmp)
                rates[row["name"]].append(rate)
                walls[row["name"]].append(wall)
                print(f"round {k + 1}: {row['name']:24} {rate:8.0f} tokens/s "
                      f"({wall:.1f} s in all)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    speedup = {}
    if args.device == "cpu":
        ddp = median["2 processes x 1 thread"]
        speedup = {"ddp2_vs_1thread": ddp / median["1 process x 1 thread"],
                   "ddp2_vs_2threads": ddp / median["1 process x 2 threads"]}
    elif len(rows) > 1:
        speedup = {f"ddp{rows[1]['procs']}_vs_1gpu": median[rows[1]["name"]] / median["1 GPU"]}
    print(f"\nZaremba small (LSTM 2x200, batch 20, BPTT 20) on PTB, {args.device}, "
          f"{os.cpu_count()} cores; median of {args.rounds} rounds x {args.steps} steps\n")
    print(f"{'':26}{'tokens/s':>10}{'rounds':>24}{'wall s':>9}")
    for row in rows:
        name = row["name"]
        each = " ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:26}{median[name]:10.0f}{each:>24}{statistics.median(walls[name]):9.1f}")
    for key, value in speedup.items():
        print(f"{key}: {value:.2f}x")
    import torch

    doc = {"device": args.device, "cores": os.cpu_count(), "torch": torch.__version__,
           "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
           "rows": [{**row, "tokens_per_s": rates[row["name"]],
                     "median_tokens_per_s": median[row["name"]],
                     "wall_s": walls[row["name"]]} for row in rows],
           "speedup": speedup}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
