#!/usr/bin/env python
"""Training speed of a whole word-level LM with lmlab's VariantLSTM against the fused nn.LSTM.

The model is the same for every row but for its recurrent part: embedding V×H -> 2-layer LSTM
(H units) -> linear H->V, mean cross-entropy, backward, gradient-norm clipping at 5, one SGD step;
V = 10,000, batch 20, BPTT 35, the state carried (detached) between steps as in real training. The
rows are ``torch.nn.LSTM`` (fused) and :class:`lmlab.neural.cells.VariantLSTM` for each variant.

The machine is shared and noisy, so the comparison is a RATIO measured back to back: the models are
run in interleaved rounds (a block of steps each, order rotated every round), each round gives one
ratio ``time(fused) / time(model)`` per model, and the table reports the median of those ratios
(> 1: faster than fused) next to each model's median training tokens/s.

Usage::

    python benchmarks/lstm_cells.py                 # 2x200 and 2x650, all variants (a few min)
    python benchmarks/lstm_cells.py --quick --json  # 2x200 only, vanilla + np + fgr; JSON on stdout

Writes JSON (default ``benchmarks/results/lstm_cells.json``; ``--quick``: ``lstm_cells_quick.json``)
with the key ``vanilla_vs_fused_train_ratio`` (the smallest over the sizes measured).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from lmlab.neural.cells import VARIANTS, VariantLSTM

VOCAB, BATCH, BPTT, LAYERS = 10_000, 20, 35, 2


class LM(nn.Module):
    def __init__(self, rnn: nn.Module, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, hidden)
        self.rnn = rnn
        self.decoder = nn.Linear(hidden, VOCAB)

    def forward(self, inputs, state):
        out, state = self.rnn(self.embedding(inputs), state)
        return self.decoder(out), state


def build(kind: str, hidden: int, seed: int = 0) -> LM:
    torch.manual_seed(seed)
    if kind == "fused":
        rnn = nn.LSTM(hidden, hidden, LAYERS)
    else:
        rnn = VariantLSTM(hidden, hidden, LAYERS, variant=kind)
    model = LM(rnn, hidden)
    for p in model.parameters():
        nn.init.uniform_(p, -0.1, 0.1)
    return model


class Trainer:
    """One model, its optimizer, data and carried state; ``steps(n)`` trains n steps."""

    def __init__(self, kind: str, hidden: int) -> None:
        self.model = build(kind, hidden)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        self.data = torch.randint(VOCAB, (16, BPTT + 1, BATCH), generator=gen)
        h = torch.zeros(LAYERS, BATCH, hidden)
        self.state = (h, h.clone())
        self.k = 0

    def steps(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            chunk = self.data[self.k % len(self.data)]
            self.k += 1
            inputs, targets = chunk[:-1], chunk[1:]
            self.state = tuple(s.detach() for s in self.state)
            logits, self.state = self.model(inputs, self.state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.opt.step()
        return time.perf_counter() - start


def measure(hidden: int, kinds: list[str], rounds: int, steps: int, warmup: int,
            log=print) -> dict:
    trainers = {k: Trainer(k, hidden) for k in ["fused", *kinds]}
    for t in trainers.values():
        t.steps(warmup)
    names = list(trainers)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            times[k].append(trainers[k].steps(steps) / steps)
        log(f"  {LAYERS}x{hidden} round {r + 1}/{rounds}: "
            + " ".join(f"{k}={BATCH * BPTT / times[k][-1]:.0f}" for k in names))
    rows = {}
    for k in names:
        ratios = [f / m for f, m in zip(times["fused"], times[k], strict=True)]
        rows[k] = {"tokens_per_s": BATCH * BPTT / statistics.median(times[k]),
                   "best_tokens_per_s": BATCH * BPTT / min(times[k]),
                   "ratio_vs_fused": statistics.median(ratios),
                   "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2x200 only; vanilla, np, fgr; fewer steps")
    p.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--sizes", type=int, nargs="+", help="hidden sizes (default 200 650)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS)
    p.add_argument("--rounds", type=int)
    p.add_argument("--steps", type=int, help="training steps per model per round")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([200] if args.quick else [200, 650])
    kinds = args.variants or (["vanilla", "np", "fgr"] if args.quick else list(VARIANTS))
    rounds = args.rounds or (3 if args.quick else 5)
    steps = args.steps or (3 if args.quick else 4)
    out = Path(args.out or ("benchmarks/results/lstm_cells_quick.json" if args.quick
                            else "benchmarks/results/lstm_cells.json"))

    def log(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    results = {}
    for hidden in sizes:
        log(f"{LAYERS}x{hidden}: V={VOCAB} B={BATCH} T={BPTT}, {args.threads} threads")
        results[f"{LAYERS}x{hidden}"] = measure(hidden, kinds, rounds,
                                                steps if hidden < 500 else max(1, steps // 2),
                                                warmup=2, log=log)
    table = ["| model | " + " | ".join(f"{s} tok/s | {s} ratio" for s in results) + " |",
             "|---" * (1 + 2 * len(results)) + "|"]
    for k in ["fused", *kinds]:
        cells = []
        for rows in results.values():
            r = rows[k]
            cells.append(f"{r['tokens_per_s']:.0f} | {r['ratio_vs_fused']:.2f}x")
        table.append(f"| {k} | " + " | ".join(cells) + " |")
    doc = {
        "benchmark": "lstm_cells", "quick": args.quick, "torch": torch.__version__,
        "threads": args.threads, "machine": platform.machine(),
        "vocab": VOCAB, "batch": BATCH, "bptt": BPTT, "layers": LAYERS,
        "rounds": rounds, "steps_per_round": steps,
        "ratio": "median over rounds of time(fused)/time(model) per step; > 1 is faster",
        "results": results,
        "vanilla_vs_fused_train_ratio": min(r["vanilla"]["ratio_vs_fused"]
                                            for r in results.values())
        if "vanilla" in kinds else None,
        "table": table,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print("\n".join(table))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
