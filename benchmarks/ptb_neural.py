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

from lmlab.fileio import atomic_output

# Zaremba et al. 2014 "small": 2x200, no dropout, BPTT 20, batch 20, SGD lr 1 halved each epoch
# after epoch 4, clip 5, init +-0.1, 13 epochs. Their loss is summed over the 20 time steps (and
# averaged over the batch); lmlab's is the mean over all tokens, so the same update needs a
# learning rate x20 and a clipping threshold /20: lr 20, clip 0.25 (the pytorch example's values).
ZAREMBA_SMALL = ["--emsize", "200", "--hidden", "200", "--layers", "2", "--dropout", "0",
                 "--bptt", "20", "--batch-size", "20", "--lr", "20", "--optimizer", "sgd",
                 "--lr-decay", "0.5", "--decay-start", "4", "--clip", "0.25", "--init-range",
                 "0.1", "--epochs", "13"]
def changed(base: list[str], **options) -> list[str]:
    """``base`` with some option values replaced, e.g. ``changed(X, lr=10, direct=False)``."""
    args = list(base)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args = [a for a in args if a not in (flag, "--no-" + flag[2:])]
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args[args.index(flag) + 1] = str(value)
    return args


# Same budget for a plain tanh RNN (Mikolov's RNNLM anchor 124.7) with a lower learning rate: at
# lr 10 it diverged within the first 100 steps (loss 9 -> 14, valid perplexity 4e9 after epoch 1,
# test 643 at the end); lr 5 is the rate the 4-layer tanh RNNs below train well with.
RNN_SMALL = changed(ZAREMBA_SMALL, lr=5)
# The GRU diverges early with the LSTM's learning rate (validation perplexity rose in epochs 3-4
# until the first halving); the same budget with half the rate, and at the LSTM's parameter count
# (2x200 LSTM: 4,653,200 parameters at V=10k; a 2x208 GRU with 208-dim embeddings: 4,691,664).
GRU_LR10 = changed(ZAREMBA_SMALL, lr=10)
GRU_EQUAL_PARAMS = changed(GRU_LR10, emsize=208, hidden=208)
# Zaremba "medium": 2x650, dropout 0.5, BPTT 35, lr 1 decayed by 1/1.2 after epoch 6, clip 5,
# init +-0.05, 39 epochs. Loss summed over 35 steps -> lmlab lr 35, clip 5/35.
ZAREMBA_MEDIUM = changed(ZAREMBA_SMALL, emsize=650, hidden=650, dropout=0.5, bptt=35, lr=35,
                         lr_decay=0.8333, decay_start=6, clip=0.143, init_range=0.05, epochs=39)
# WikiText-2 (2.1M training tokens, 33k words): the small LSTM's recipe with BPTT 35, 6 epochs.
WT2_LSTM = changed(ZAREMBA_SMALL, bptt=35, decay_start=3, epochs=6)
NNLM_W5 = ["nnlm", "--window", "5", "--emsize", "100", "--hidden", "400", "--direct",
           "--dropout", "0.2", "--bptt", "64", "--batch-size", "64", "--optimizer", "adam",
           "--lr", "0.001", "--epochs", "8", "--plateau-patience", "1", "--lr-decay", "0.5",
           "--clip", "5"]
# A wider NNLM with more dropout (Bengio's best PTB-sized models had ~100-dim features and
# hundreds of hidden units; dropout stands in for their weight decay).
NNLM_W5_WIDE = changed(NNLM_W5, emsize=200, hidden=600, dropout=0.4, epochs=10)
NNLM_W4_WIDE = changed(NNLM_W5_WIDE, window=4)
# An NNLM a 2-core CPU trains in well under an hour (no direct connections, 300 hidden units,
# 5 epochs): the member of the NNLM + MKN-5 mixture measured here on CPU.
NNLM_CPU = changed(NNLM_W5, hidden=300, direct=False, epochs=5)
# 4-layer tanh RNNs, with and without residual connections, one budget.
DEEP_RNN = ["rnn_tanh", "--layers", "4", "--emsize", "200", "--hidden", "200", "--bptt", "20",
            "--batch-size", "20", "--lr", "5", "--lr-decay", "0.5", "--decay-start", "4",
            "--clip", "0.25", "--epochs", "8"]

EXPERIMENTS: dict[str, list[tuple[str, list[str]]]] = {
    "zaremba_lstm": [("lstm_small", ["lstm", *ZAREMBA_SMALL])],
    "zaremba_gru": [("gru_small", ["gru", *ZAREMBA_SMALL])],
    "zaremba_gru_lr10": [("gru_small_lr10", ["gru", *GRU_LR10])],
    "gru_equal_params": [("gru_208_lr10", ["gru", *GRU_EQUAL_PARAMS])],
    "zaremba_medium": [("lstm_medium", ["lstm", *ZAREMBA_MEDIUM])],
    "nnlm_wide": [("nnlm_w5_wide", NNLM_W5_WIDE), ("nnlm_w4_wide", NNLM_W4_WIDE)],
    "wt2_lstm": [("wt2_lstm", ["lstm", *WT2_LSTM])],
    "wt2_nnlm": [("wt2_nnlm_w5", changed(NNLM_W5, epochs=4))],
    "zaremba_rnn": [("rnn_tanh_small", ["rnn_tanh", *RNN_SMALL])],
    "nnlm": [("nnlm_w5", NNLM_W5)],
    "nnlm_cpu": [("nnlm_w5_cpu", NNLM_CPU)],
    "deep_residual": [("rnn_tanh_4layer", DEEP_RNN),
                      ("rnn_tanh_4layer_residual", [*DEEP_RNN, "--residual"])],
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


# Experiments on another corpus than PTB (a folder under --data).
CORPUS = {"wt2_lstm": "wikitext-2", "wt2_nnlm": "wikitext-2"}


def run(name: str, args: list[str], data: Path, out: Path, threads: int, seed: int,
        extra: list[str]) -> dict:
    ckpt = out / f"{name}.pt"
    cmd = [sys.executable, "-m", "lmlab.cli", "train", *args, "--data", str(data), "-o",
           str(ckpt), "--seed", str(seed), "--threads", str(threads), "--json", *extra]
    if ckpt.exists():
        cmd.append("--resume")
    start = time.time()
    with open(out / f"{name}.log", "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            stdout, _ = proc.communicate()
        except KeyboardInterrupt:
            # The run got the same Ctrl-C: it saves a resumable checkpoint, let it finish that.
            proc.wait(timeout=120)
            raise SystemExit(f"{name} interrupted; the same command resumes it") from None
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {out / (name + '.log')}")
    report = json.loads(stdout.strip().splitlines()[-1])
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
    p.add_argument("--runs", nargs="+", metavar="NAME",
                   help="only these runs of the experiments given (e.g. one of deep_residual)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more lmlab train options for every run (e.g. --epochs 1 for a smoke test)")
    args = p.parse_args()
    if args.list or not args.experiments:
        for name, runs in EXPERIMENTS.items():
            print(f"{name}: " + ", ".join(r for r, _ in runs))
        return
    if not args.data:
        raise SystemExit("give --data DIR or set LMLAB_DATA")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for experiment in args.experiments:
        if experiment not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {experiment!r}; see --list")
        data = Path(args.data) / CORPUS.get(experiment, "ptb")
        for name, run_args in EXPERIMENTS[experiment]:
            if args.runs and name not in args.runs:
                continue
            # One result file per run (several experiments may run at once, in separate
            # processes); results.json merges them.
            result = out / f"{name}.result.json"
            if result.exists():
                done = json.loads(result.read_text())
                print(f"{name}: done already (test ppl {done['test']['perplexity']:.2f})")
                continue
            report = run(name, run_args, data, out, args.threads, args.seed, args.extra)
            report.update(experiment=experiment, corpus=data.name)
            with atomic_output(result, "w") as f:
                json.dump(report, f, indent=1)
            merged = {p.name.removesuffix(".result.json"): json.loads(p.read_text())
                      for p in sorted(out.glob("*.result.json"))}
            with atomic_output(out / "results.json", "w") as f:
                json.dump(merged, f, indent=1)
            print(f"{name}: test perplexity {report['test']['perplexity']:.2f}, "
                  f"{report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
