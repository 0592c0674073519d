#!/usr/bin/env python
"""Exploding gradients in practice: a tanh and a ReLU RNN LM at an aggressive learning rate, with
and without gradient-norm clipping, trained by lmlab's own Trainer.

For each cell (``rnn_tanh``, ``rnn_relu``) and each clipping threshold (0 = off, and ``--clip``)
one run of :class:`lmlab.neural.trainer.Trainer` trains with plain SGD at the same high learning
rate, the same seed and data, for the same number of optimiser steps. The trainer logs every
step's gradient norm *before* clipping and, when the loss or the gradient becomes NaN/Inf, rolls
weights, optimiser, position and RNG back to its last checkpoint (saved every
``--checkpoint-every`` steps), halves the learning rate and carries on (``nan_rollback`` events
in its metrics log); after ``--max-nan-retries`` such events it gives up. The learning rate is
otherwise constant (``lr_decay = 1``).

Data: a synthetic order-3 Markov language from :mod:`lmlab.synth` (default; exact entropy known)
or, with ``--data DIR`` (or ``$LMLAB_DATA``) and ``--ptb-lines N``, the first N lines of PTB
train/valid.

Defaults (SGD lr 2, uniform init +-0.25, 128 units, BPTT 35, batch 20, clip 1) were chosen so
that both failure modes show: the unclipped tanh RNN (bounded activations) never produces a NaN
but its loss blows up and stays up; the unclipped ReLU RNN overflows to Inf/NaN, and the
trainer's rollbacks (each halving the learning rate) rescue it at the price of a tiny rate.

Writes ``benchmarks/results/gradient_clipping/`` (or ``--out``; ``--quick`` adds ``_quick`` to
every name so the two modes never overwrite each other): ``results.json`` (per run: NaN/Inf
events, rollbacks, final learning rate, gradient-norm statistics, the fraction of steps clipped,
final training loss and validation perplexity, the loss and gradient-norm curves) and
``gradient_clipping.png`` (loss per computed update, rollbacks marked, and pre-clip gradient
norms), plus each run's checkpoint and metrics log under ``runs/``.

    python benchmarks/gradient_clipping.py --quick      # 200 steps per run; ~30-60 s
    python benchmarks/gradient_clipping.py              # 1500 steps per run; ~3-5 min
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lmlab.corpus import TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import Corpus
from lmlab.neural.run_files import sidecar_paths
from lmlab.neural.trainer import Trainer
from lmlab.synth import MarkovSource, sample_splits

CELLS = ("rnn_tanh", "rnn_relu")


def synthetic_corpus(train_sentences: int, seed: int) -> tuple[Corpus, dict]:
    source = MarkovSource(order=3, vocab_size=60, seed=seed, concentration=0.3)
    splits = sample_splits(source, {"train": train_sentences, "valid": 150}, seed=seed)
    vocab = Vocabulary.build(splits["train"].sentences)
    streams = {k: TokenStream.from_sentences(v.sentences, vocab, f"<{v.name}>")
               for k, v in splits.items()}
    info = {"kind": "synthetic", "source": source.name,
            "entropy_nats": source.entropy_nats(),
            "perplexity_floor": math.exp(source.entropy_nats()),
            "train_tokens": len(streams["train"]), "valid_tokens": len(streams["valid"]),
            "vocab": len(vocab)}
    return Corpus(vocab, streams["train"], streams["valid"], None, "synthetic"), info


def ptb_corpus(data: str, lines: int) -> tuple[Corpus, dict]:
    from lmlab.datasets import find_corpus

    folder = find_corpus("ptb", data)
    if folder is None:
        raise LmlabError("no PTB folder: give --data DIR or set LMLAB_DATA")

    def head(name: str, n: int) -> list[list[str]]:
        with open(folder / f"{name}.txt", encoding="utf-8") as f:
            return [line.split() for _, line in zip(range(n), f, strict=False)]

    train, valid = head("train", lines), head("valid", max(lines // 10, 50))
    vocab = Vocabulary.build(train)
    t = TokenStream.from_sentences(train, vocab, f"{folder}/train.txt[:{lines}]")
    v = TokenStream.from_sentences(valid, vocab, f"{folder}/valid.txt")
    info = {"kind": "ptb", "folder": str(folder), "train_lines": lines, "train_tokens": len(t),
            "valid_tokens": len(v), "vocab": len(vocab)}
    return Corpus(vocab, t, v, None, str(folder)), info


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    steps, events = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("event"):
            events.append(rec)
        elif "loss" in rec and "valid_ppl" not in rec:
            steps.append(rec)
    return steps, events


def one_run(cell: str, clip: float, corpus: Corpus, args, out_dir: Path) -> dict:
    name = f"{cell}_clip{clip:g}"
    config = RunConfig(
        ModelConfig(model=cell, emsize=args.hidden, hidden=args.hidden, layers=1,
                    init_range=args.init_range),
        TrainConfig(epochs=10_000, bptt=args.bptt, batch_size=args.batch_size, lr=args.lr,
                    optimizer="sgd", lr_decay=1.0, clip=clip, max_nan_retries=args.max_nan_retries,
                    nan_lr_factor=0.5, checkpoint_every=args.checkpoint_every, seed=args.seed,
                    device="cpu", threads=args.threads))
    ckpt = out_dir / ("runs_quick" if args.quick else "runs") / f"{name}.pt"
    tic = time.perf_counter()
    trainer = Trainer(config, corpus, ckpt, overwrite=True, plot=False, process_settings=True)
    gave_up = None
    try:
        trainer.train(max_steps=args.steps)
    except LmlabError as err:
        gave_up = str(err)
    finally:
        trainer.close()
    seconds = time.perf_counter() - tic
    valid_ppl = None
    if gave_up is None:
        valid_ppl = trainer.evaluate(corpus.valid)
    steps, events = read_metrics(sidecar_paths(ckpt)["metrics"])
    rollbacks = [e for e in events if e.get("event") == "nan_rollback"]
    h = trainer.history
    norms = [g for g in h["grad_norm"] if math.isfinite(g)]
    losses = h["step_loss"]
    tail = losses[-max(1, min(50, len(losses) // 5)):] if losses else []
    log_norms = [r.get("grad_norm") for r in steps]
    return {
        "cell": cell, "clip": clip, "lr": args.lr, "steps_kept": trainer.step,
        "updates_computed": len(steps) + len(rollbacks),
        "nan_inf_events": trainer.nan_events,
        "rollbacks": [{k: e[k] for k in ("what", "at", "to_step", "lr", "count")}
                      for e in rollbacks],
        "gave_up": gave_up, "final_lr": trainer.lr,
        "grad_norm_median": statistics.median(norms) if norms else None,
        "grad_norm_max": max(norms) if norms else None,
        "grad_norm_p99": sorted(norms)[int(0.99 * (len(norms) - 1))] if norms else None,
        "fraction_clipped": (sum(g > clip for g in norms) / len(norms)) if clip and norms
        else 0.0,
        "final_train_loss": statistics.fmean(tail) if tail else None,
        "valid_ppl": valid_ppl if valid_ppl is None or math.isfinite(valid_ppl) else None,
        "seconds": round(seconds, 1),
        # in the order computed, rolled-back updates included (None: non-finite)
        "loss_log": [r.get("loss") for r in steps],
        "grad_norm_log": log_norms,
        "rollback_at": _rollback_positions(sidecar_paths(ckpt)["metrics"]),
    }


def _rollback_positions(path: Path) -> list[int]:
    """Index in the step log (computed updates so far) at which each rollback happened."""
    pos, out = 0, []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("event") == "nan_rollback":
            out.append(pos)
        elif "loss" in rec and "valid_ppl" not in rec and not rec.get("event"):
            pos += 1
    return out


def plot(results: list[dict], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for row, cell in enumerate(CELLS):
        ax_loss, ax_norm = axes[row]
        for r in (r for r in results if r["cell"] == cell):
            label = f"clip {r['clip']:g}" if r["clip"] else "no clipping"
            label += f" ({r['nan_inf_events']} NaN/Inf)"
            xs = [i for i, v in enumerate(r["loss_log"]) if v is not None]
            ys = [min(v, 20.0) for v in r["loss_log"] if v is not None]
            line, = ax_loss.plot(xs, ys, lw=0.8, label=label)
            for x in r["rollback_at"]:
                ax_loss.axvline(x, color=line.get_color(), ls=":", lw=1.0)
            gx = [i for i, v in enumerate(r["grad_norm_log"]) if v is not None]
            gy = [v for v in r["grad_norm_log"] if v is not None]
            ax_norm.plot(gx, gy, lw=0.6, color=line.get_color(), label=label)
            if r["clip"]:
                ax_norm.axhline(r["clip"], color=line.get_color(), ls="--", lw=0.8)
        ax_loss.set_title(f"{cell}: training loss (dotted: NaN/Inf rollback)")
        ax_loss.set_xlabel("updates computed (rolled-back ones included)")
        ax_loss.set_ylabel("loss, nats (capped at 20)")
        ax_loss.legend(fontsize=8)
        ax_loss.grid(True, alpha=0.3)
        ax_norm.set_yscale("log")
        ax_norm.set_title(f"{cell}: gradient norm before clipping (dashed: threshold)")
        ax_norm.set_xlabel("updates computed")
        ax_norm.legend(fontsize=8)
        ax_norm.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, smaller data (~1-2 min)")
    p.add_argument("--out", default="benchmarks/results/gradient_clipping")
    p.add_argument("--data", help="folder holding ptb/ (default: $LMLAB_DATA); needs --ptb-lines")
    p.add_argument("--ptb-lines", type=int, help="train on the first N lines of PTB")
    p.add_argument("--steps", type=int, help="optimiser steps per run (default 1500; quick 200)")
    p.add_argument("--lr", type=float, default=2.0, help="SGD learning rate (aggressive)")
    p.add_argument("--clip", type=float, default=1.0, help="clipping threshold of clipped runs")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--init-range", type=float, default=0.25)
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--max-nan-retries", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 1500
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / ("runs_quick" if args.quick else "runs")).mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    if args.ptb_lines:
        corpus, data_info = ptb_corpus(args.data, args.ptb_lines)
    else:
        corpus, data_info = synthetic_corpus(1500 if args.quick else 4000, args.seed)
    results = []
    for cell in CELLS:
        for clip in (0.0, args.clip):
            r = one_run(cell, clip, corpus, args, out)
            results.append(r)
            print(f"{cell:9s} clip {clip:<4g} NaN/Inf events {r['nan_inf_events']:2d}  "
                  f"final lr {r['final_lr']:.3g}  grad norm median {_f(r['grad_norm_median'])} "
                  f"max {_f(r['grad_norm_max'])}  clipped {r['fraction_clipped']:.0%}  "
                  f"train loss {_f(r['final_train_loss'])}  valid ppl {_f(r['valid_ppl'])}"
                  f"{'  GAVE UP' if r['gave_up'] else ''}  ({r['seconds']}s)", flush=True)
    report = {"benchmark": "gradient_clipping", "quick": args.quick, "args": vars(args),
              "data": data_info, "machine": platform.platform(), "torch": torch.__version__,
              "python": sys.version.split()[0], "runs": results}
    (out / f"results{suffix}.json").write_text(json.dumps(report, indent=1, allow_nan=False)
                                              + "\n")
    plot(results, out / f"gradient_clipping{suffix}.png",
         f"SGD lr {args.lr:g}, {args.hidden} units, BPTT {args.bptt}, {args.steps} steps "
         f"({data_info['kind']} data)")
    print(f"wrote {out}/results{suffix}.json and {out}/gradient_clipping{suffix}.png")
    return 0


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


if __name__ == "__main__":
    sys.exit(main())
