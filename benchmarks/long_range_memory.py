#!/usr/bin/env python
"""How far back can each recurrent cell remember? Accuracy on the dependent token of lmlab's
synthetic long-range language against the distance d, for tanh RNN, ReLU RNN, IRNN, a residual
tanh RNN, LSTM and GRU at (approximately) equal parameter count.

Language (:class:`lmlab.synth.LongRangeSource`, no tail): every sentence is a key ``k_j``, then
``d - 1`` uniformly random fillers, then the value ``v_j`` that the key determines, exactly ``d``
positions later. Everything but the value is unpredictable, so the only thing to learn is to carry
the key across ``d`` steps; a model that cannot predicts the value at chance (1 / n_keys).

Each (cell, d) is a fresh model from :func:`lmlab.neural.models.build_model` (a RecurrentLM:
embedding, recurrence, decoder over the whole vocabulary) fed the sentence from a zero state and
trained with full backpropagation through the ``d + 1`` steps, Adam, gradient-norm clipping at 1
and the same budget of steps and sentences for every cell. The loss is the cross-entropy of the
value token only (``--loss value``, default): every other token is pure noise, whose gradient
only dilutes the one signal that matters under a short budget (``--loss lm`` trains on every
token; with the default budget nothing then learns even d = 20). Training stops early once the
value is predicted perfectly on three checks in a row.

Accuracy, on held-out sentences: the most probable of the n_keys values at the value position is
the right one (memory alone; chance 1/n_keys); ``accuracy_vocab`` (argmax over the whole
vocabulary) is reported too. A cell *fails* at d when its accuracy is below halfway between
chance and perfect; after two failures in a row its longer distances are skipped
(recorded as such), unless ``--no-skip``.

Hidden sizes are chosen per cell so that the total parameter count (embedding, recurrence,
decoder) is as close as possible to that of the reference LSTM (``--lstm-hidden``, default 32);
the residual RNN has two layers (emsize = hidden everywhere). The LSTM runs twice: with lmlab's
default forget-gate bias 0 (the forget gate starts at 0.5, so the cell forgets half of itself per
step) and with bias 1 (Jozefowicz et al. 2015).

"Fails" means "not learned within this budget" (600 steps of 32 sentences): a slow learner (the
LSTMs here) fails where it might succeed with more steps; the comparison is at equal parameters
and equal budget, not a statement about capacity.

Writes ``benchmarks/results/long_range_memory/`` (or ``--out``; ``--quick`` adds ``_quick`` to the
names): ``results.json`` (per cell: hidden size, parameters, per-distance accuracy, value
log-probability, training seconds; the failure distance) and ``long_range_memory.png`` (accuracy
vs distance).

    python benchmarks/long_range_memory.py --quick    # d = 5, 20, 50, 300 steps; ~1 min
    python benchmarks/long_range_memory.py            # d = 5 ... 130, 600 steps; ~4-10 min
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from lmlab.corpus import EOS_ID, SPECIALS, Vocabulary
from lmlab.neural.config import ModelConfig
from lmlab.neural.models import build_model
from lmlab.synth import LongRangeSource

# name -> (lmlab model type, layers, residual, LSTM forget-gate bias at init)
CELLS = {
    "rnn_tanh": ("rnn_tanh", 1, False, 0.0),
    "rnn_relu": ("rnn_relu", 1, False, 0.0),
    "irnn": ("irnn", 1, False, 0.0),
    "residual_rnn": ("rnn_tanh", 2, True, 0.0),
    "lstm": ("lstm", 1, False, 0.0),
    "lstm_forget_bias1": ("lstm", 1, False, 1.0),
    "gru": ("gru", 1, False, 0.0),
}
FULL_DISTANCES = (5, 10, 20, 35, 50, 75, 100, 130)
QUICK_DISTANCES = (5, 20, 50)


def vocabulary(n_keys: int, n_fillers: int) -> Vocabulary:
    words = ([f"k{j}" for j in range(n_keys)] + [f"v{j}" for j in range(n_keys)]
             + [f"f{i}" for i in range(n_fillers)])
    return Vocabulary(list(SPECIALS) + words)


def model_config(cell: str, hidden: int, vocab_size: int, init_range: float) -> ModelConfig:
    kind, layers, residual, forget_bias = CELLS[cell]
    return ModelConfig(model=kind, vocab_size=vocab_size, emsize=hidden, hidden=hidden,
                       layers=layers, residual=residual, init_range=init_range,
                       forget_bias=forget_bias)


def n_params(config: ModelConfig) -> int:
    with torch.random.fork_rng(devices=[]):
        return sum(p.numel() for p in build_model(config).parameters())


def formula_params(cell: str, hidden: int, vocab_size: int) -> int:
    """Embedding + recurrence (gates x (W_ih, W_hh, two biases) per layer) + decoder."""
    kind, layers = CELLS[cell][:2]
    gates = {"lstm": 4, "gru": 3}.get(kind, 1)
    h = hidden
    return vocab_size * h + layers * gates * (2 * h * h + 2 * h) + h * vocab_size + vocab_size


def matched_hidden(cell: str, target: int, vocab_size: int) -> int:
    """The hidden size whose parameter count is closest to ``target``."""
    return min(range(2, 1024), key=lambda h: abs(formula_params(cell, h, vocab_size) - target))


def sentences(source: LongRangeSource, n: int, seed: int, vocab: Vocabulary
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """[d+1, n] inputs (``</s>`` then key and fillers) and targets (key, fillers, value)."""
    corpus = source.sample(n, seed=seed)
    d = source.distance
    ids = np.stack([vocab.encode(s[:d + 1]) for s in corpus.sentences], axis=1).astype(np.int64)
    targets = torch.from_numpy(ids)
    inputs = torch.cat([torch.full((1, n), EOS_ID, dtype=torch.long), targets[:-1]])
    return inputs, targets


def evaluate(model, inputs, targets, values: torch.Tensor, chunk: int = 256) -> dict:
    """At the value position (the last one): ``accuracy`` = the most probable of the n_keys
    values is the right one (memory alone; chance 1/n_keys); ``accuracy_vocab`` = argmax over the
    whole vocabulary (memory and knowing that the value comes now); mean ``ln p(value)``."""
    model.eval()
    correct = correct_vocab = 0
    logp = 0.0
    with torch.no_grad():
        for s in range(0, inputs.size(1), chunk):
            x, y = inputs[:, s:s + chunk], targets[:, s:s + chunk]
            logits, _ = model(x, None)
            lp = F.log_softmax(logits[-1].double(), -1)
            correct_vocab += int((lp.argmax(-1) == y[-1]).sum())
            correct += int((values[lp[:, values].argmax(-1)] == y[-1]).sum())
            logp += float(lp.gather(1, y[-1:].T).sum())
    model.train()
    n = inputs.size(1)
    return {"accuracy": correct / n, "accuracy_vocab": correct_vocab / n, "value_logprob": logp / n}


def train_one(cell: str, hidden: int, d: int, args, vocab: Vocabulary) -> dict:
    source = LongRangeSource(distance=d, n_keys=args.keys, n_fillers=args.fillers, seed=args.seed,
                             tail_mean=0.0)
    pool = min(args.steps * args.batch_size, args.pool)
    train_x, train_y = sentences(source, pool, seed=1, vocab=vocab)
    test_x, test_y = sentences(source, args.test, seed=2, vocab=vocab)
    config = model_config(cell, hidden, len(vocab), args.init_range)
    torch.manual_seed(args.seed)
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    tic = time.perf_counter()
    solved_checks, steps_done, nonfinite = 0, 0, 0
    for step in range(1, args.steps + 1):
        idx = torch.randint(pool, (args.batch_size,), generator=gen)
        x, y = train_x[:, idx], train_y[:, idx]
        logits, _ = model(x, None)
        if args.loss == "value":
            loss = F.cross_entropy(logits[-1], y[-1])
        else:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            nonfinite += 1
            continue
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        if not torch.isfinite(norm):
            nonfinite += 1
            continue
        opt.step()
        steps_done = step
        if step % 50 == 0:  # stop early once the value is predicted perfectly on the batch
            hit = float((logits[-1].detach().argmax(-1) == y[-1]).float().mean())
            solved_checks = solved_checks + 1 if hit == 1.0 else 0
            if solved_checks >= 3:
                break
    seconds = time.perf_counter() - tic
    values = torch.tensor([vocab.id(f"v{j}") for j in range(args.keys)])
    return {"distance": d, **evaluate(model, test_x, test_y, values), "steps": steps_done,
            "nonfinite_steps": nonfinite, "seconds": round(seconds, 1)}


def plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for cell, r in report["cells"].items():
        pts = [(e["distance"], e["accuracy"]) for e in r["runs"] if e.get("accuracy") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=f"{cell} (H={r['hidden']}, "
                    f"{r['parameters']:,} p.; fails at {r['fails_at'] or '>' + str(pts[-1][0])})")
    ax.axhline(report["chance"], color="gray", ls=":", lw=1, label="chance")
    ax.axhline(report["threshold"], color="gray", ls="--", lw=0.8, label="failure threshold")
    ax.set_xlabel("distance d between key and value")
    ax.set_ylabel("accuracy on the value token (held out)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"long-range memory: {report['settings']['steps']} steps x batch "
                 f"{report['settings']['batch_size']}, Adam lr {report['settings']['lr']}")
    fig.tight_layout()
    fig.savefig(path, format="png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="d = 5, 20, 50 and fewer steps")
    p.add_argument("--out", default="benchmarks/results/long_range_memory")
    p.add_argument("--distances", type=int, nargs="+")
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    p.add_argument("--steps", type=int, help="training steps per run (default 600; quick 300)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pool", type=int, default=8192, help="training sentences per run (at most)")
    p.add_argument("--test", type=int, default=512, help="held-out sentences")
    p.add_argument("--loss", choices=["value", "lm"], default="value",
                   help="train on the value token only (default) or on every token (LM loss)")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--keys", type=int, default=8)
    p.add_argument("--fillers", type=int, default=8)
    p.add_argument("--lstm-hidden", type=int, default=32,
                   help="hidden size of the reference LSTM; other cells match its parameters")
    p.add_argument("--init-range", type=float, default=0.2)
    p.add_argument("--no-skip", action="store_true",
                   help="run every distance even after two failures in a row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    distances = args.distances or (QUICK_DISTANCES if args.quick else FULL_DISTANCES)
    if args.steps is None:
        args.steps = 300 if args.quick else 600
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(args.keys, args.fillers)
    target = n_params(model_config("lstm", args.lstm_hidden, len(vocab), args.init_range))
    chance = 1 / args.keys
    threshold = (1 + chance) / 2
    report = {"benchmark": "long_range_memory", "quick": args.quick, "settings": vars(args),
              "vocab_size": len(vocab), "target_parameters": target, "chance": chance,
              "threshold": threshold, "distances": list(distances), "machine": platform.platform(),
              "torch": torch.__version__, "cells": {}}
    start = time.perf_counter()
    for cell in args.cells:
        hidden = matched_hidden(cell, target, len(vocab))
        params = n_params(model_config(cell, hidden, len(vocab), args.init_range))
        assert params == formula_params(cell, hidden, len(vocab))
        runs, fails_at, misses = [], None, 0
        for d in distances:
            if misses >= 2 and not args.no_skip:
                runs.append({"distance": d, "accuracy": None,
                             "skipped": "failed at two shorter distances in a row"})
                continue
            r = train_one(cell, hidden, d, args, vocab)
            runs.append(r)
            ok = r["accuracy"] >= threshold
            misses = 0 if ok else misses + 1
            if not ok and fails_at is None:
                fails_at = d
            print(f"{cell:17s} H={hidden:3d} d={d:4d}  accuracy {r['accuracy']:.3f}  "
                  f"ln p(value) {r['value_logprob']:+.3f}  {r['steps']} steps "
                  f"{r['seconds']}s", flush=True)
        solved = [r["distance"] for r in runs if r.get("accuracy") is not None
                  and r["accuracy"] >= threshold and (fails_at is None or r["distance"] < fails_at)]
        report["cells"][cell] = {"model": CELLS[cell][0], "layers": CELLS[cell][1],
                                 "residual": CELLS[cell][2], "forget_bias": CELLS[cell][3],
                                 "hidden": hidden,
                                 "parameters": params, "fails_at": fails_at,
                                 "longest_solved": max(solved) if solved else None, "runs": runs}
    report["seconds"] = round(time.perf_counter() - start, 1)
    suffix = "_quick" if args.quick else ""
    (out / f"results{suffix}.json").write_text(json.dumps(report, indent=1, allow_nan=False)
                                              + "\n")
    plot(report, out / f"long_range_memory{suffix}.png")
    print("\ncell               hidden  params  longest solved  fails at")
    for cell, r in report["cells"].items():
        print(f"{cell:17s} {r['hidden']:6d} {r['parameters']:7,d}  {str(r['longest_solved']):>14s}"
              f"  {str(r['fails_at'] or '-'):>8s}")
    print(f"wrote {out}/results{suffix}.json and {out}/long_range_memory{suffix}.png "
          f"({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
