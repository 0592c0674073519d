"""Neural language models on PTB: the published baselines lmlab must reproduce (README table).

Each experiment is a list of ``lmlab train`` runs with the same budget. Every run writes its
checkpoint, config, metrics log and learning-curve PNG under ``--out`` (default
benchmarks/results/ptb_neural/), its console log to RUN.log, and its final report to
results.json (merged, so experiments can run in separate processes).

    python benchmarks/ptb_neural.py --data ../shared/data zaremba_lstm
    python benchmarks/ptb_neural.py --list

Runs already finished (present in results.json) are skipped; an interrupted run resumes from its
checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Zaremba et al. 2014 "small": 2x200, no dropout, BPTT 20, batch 20, SGD lr 1 halved each epoch
# after epoch 4, clip 5, init +-0.1, 13 epochs. Their loss is summed over the 20 time steps (and
# averaged over the batch); lmlab's is the mean over all tokens, so the same update needs a
# learning rate x20 and a clipping threshold /20: lr 20, clip 0.25 (the pytorch example's values).
ZAREMBA_SMALL = ["--emsize", "200", "--hidden", "200", "--layers", "2", "--dropout", "0",
                 "--bptt", "20", "--batch-size", "20", "--lr", "20", "--optimizer", "sgd",
                 "--lr-decay", "0.5", "--decay-start", "4", "--clip", "0.25", "--init-range",
                 "0.1", "--epochs", "13"]
# Same budget for a plain tanh RNN (Mikolov's RNNLM anchor 124.7); a lower LR keeps it stable.
RNN_SMALL = list(ZAREMBA_SMALL)
RNN_SMALL[RNN_SMALL.index("--lr") + 1] = "10"

EXPERIMENTS: dict[str, list[tuple[str, list[str]]]] = {
    "zaremba_lstm": [("lstm_small", ["lstm", *ZAREMBA_SMALL])],
    "zaremba_gru": [("gru_small", ["gru", *ZAREMBA_SMALL])],
    "zaremba_rnn": [("rnn_tanh_small", ["rnn_tanh", *RNN_SMALL])],
    "nnlm": [("nnlm_w5", ["nnlm", "--window", "5", "--emsize", "100", "--hidden", "400",
                          "--direct", "--dropout", "0.2", "--bptt", "64", "--batch-size", "64",
                          "--optimizer", "adam", "--lr", "0.001", "--epochs", "8",
                          "--plateau-patience", "1", "--lr-decay", "0.5", "--clip", "5"])],
    "deep_residual": [
        ("rnn_tanh_4layer", ["rnn_tanh", "--layers", "4", "--emsize", "200", "--hidden", "200",
                             "--bptt", "20", "--batch-size", "20", "--lr", "5",
                             "--lr-decay", "0.5", "--decay-start", "4", "--clip", "0.25",
                             "--epochs", "8"]),
        ("rnn_tanh_4layer_residual", ["rnn_tanh", "--layers", "4", "--residual", "--emsize",
                                      "200", "--hidden", "200", "--bptt", "20", "--batch-size",
                                      "20", "--lr", "5", "--lr-decay", "0.5", "--decay-start",
                                      "4", "--clip", "0.25", "--epochs", "8"]),
    ],
    "bidirectional": [
        ("lstm_forward", ["lstm", "--emsize", "200", "--hidden", "200", "--layers", "1",
                          "--bptt", "20", "--batch-size", "20", "--lr", "20", "--lr-decay",
                          "0.5", "--decay-start", "3", "--clip", "0.25", "--epochs", "6"]),
        ("lstm_bidirectional", ["lstm", "--bidirectional", "--emsize", "200", "--hidden", "200",
                                "--layers", "1", "--bptt", "20", "--batch-size", "20", "--lr",
                                "20", "--lr-decay", "0.5", "--decay-start", "3", "--clip", "0.25",
                                "--epochs", "6"]),
    ],
}


def run(name: str, args: list[str], data: Path, out: Path, threads: int, seed: int,
        extra: list[str]) -> dict:
    ckpt = out / f"{name}.pt"
    cmd = [sys.executable, "-m", "lmlab.cli", "train", *args, "--data", str(data), "--out",
           str(ckpt), "--seed", str(seed), "--threads", str(threads), "--json", *extra]
    if ckpt.exists():
        cmd.append("--resume")
    start = time.time()
    with open(out / f"{name}.log", "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {out / (name + '.log')}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report.update(name=name, command=" ".join(cmd), wall_seconds=round(time.time() - start, 1))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="*")
    p.add_argument("--data", default=os.environ.get("LMLAB_DATA"))
    p.add_argument("--out", default="benchmarks/results/ptb_neural")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--list", action="store_true")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more lmlab train options for every run (e.g. --epochs 1 for a smoke test)")
    args = p.parse_args()
    if args.list or not args.experiments:
        for name, runs in EXPERIMENTS.items():
            print(f"{name}: " + ", ".join(r for r, _ in runs))
        return
    if not args.data:
        raise SystemExit("give --data DIR or set LMLAB_DATA")
    data, out = Path(args.data) / "ptb", Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    for experiment in args.experiments:
        if experiment not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {experiment!r}; see --list")
        for name, run_args in EXPERIMENTS[experiment]:
            done = json.loads(results_path.read_text()) if results_path.exists() else {}
            if name in done:
                print(f"{name}: done already (test ppl {done[name]['test']['perplexity']:.2f})")
                continue
            report = run(name, run_args, data, out, args.threads, args.seed, args.extra)
            done = json.loads(results_path.read_text()) if results_path.exists() else {}
            done[name] = {**report, "experiment": experiment}
            results_path.write_text(json.dumps(done, indent=1))
            print(f"{name}: test perplexity {report['test']['perplexity']:.2f}, "
                  f"{report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
