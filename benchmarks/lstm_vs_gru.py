#!/usr/bin/env python
"""LSTM vs GRU, measured: the comparison table usually recited, with numbers from this machine.

Three sources, each optional, one table and one PNG:

* speed (measured here, now): training and inference tokens/s of a 2x200 LSTM, a 2x200 GRU and a
  2x208 GRU (the LSTM's parameter count) as word-level PTB-sized LMs (V = 10,000, batch 20, BPTT
  35 for training; inference is lmlab's evaluation protocol: batch 1, chunks of 256 tokens, the
  state carried). Models alternate in rounds and the table shows medians, since the machine is
  shared;
* PTB (``--ptb DIR``, the output folder of ``benchmarks/ptb_neural.py``): parameters, test
  perplexity at equal epochs (same recipe: Zaremba small) and at equal parameter count, and the
  train-validation gap of the last epoch (overfitting) of runs ``lstm_small``, ``gru_small``
  (the LSTM's learning rate), ``gru_small_lr10`` and ``gru_208_lr10``;
* long range (``--long-range DIR``, the output folder of ``benchmarks/long_range_memory.py``): the
  largest key-to-value distance each cell learns on lmlab's synthetic long-range language at equal
  parameters and budget.

    python benchmarks/lstm_vs_gru.py --ptb benchmarks/results/ptb_neural \\
        --long-range benchmarks/results/long_range_memory

Writes ``benchmarks/results/lstm_vs_gru.json`` and ``lstm_vs_gru.png`` (or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from lmlab.neural.config import ModelConfig
from lmlab.neural.models import build_model, detach_state

VOCAB, BATCH, BPTT, CHUNK = 10_000, 20, 35, 256
SPEED_MODELS = {"lstm 2x200": ("lstm", 200), "gru 2x200": ("gru", 200),
                "gru 2x208": ("gru", 208)}
PTB_RUNS = {"lstm_small": "LSTM 2x200, lr 20", "gru_small": "GRU 2x200, lr 20",
            "gru_small_lr10": "GRU 2x200, lr 10",
            "gru_208_lr10": "GRU 2x208 (= LSTM params), lr 10"}
LONG_RANGE_CELLS = ("lstm", "lstm_forget_bias1", "gru")


def make(model: str, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(model=model, vocab_size=VOCAB, emsize=hidden, hidden=hidden,
                                   layers=2))


def train_steps(model, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.randint(0, VOCAB, (BPTT, BATCH))
    y = torch.randint(0, VOCAB, (BPTT, BATCH))
    state = model.init_state(BATCH, torch.device("cpu"))
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss, state = model.loss(x, y, state)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        state = detach_state(state)
    return steps * BPTT * BATCH / (time.perf_counter() - start)


@torch.no_grad()
def infer_chunks(model, chunks: int) -> float:
    """Tokens/s of the evaluation protocol's inner loop (batch 1, chunks, full log-softmax)."""
    x = torch.randint(0, VOCAB, (CHUNK, 1))
    state = model.init_state(1, torch.device("cpu"))
    model.eval()
    start = time.perf_counter()
    for _ in range(chunks):
        logits, state = model(x, state)
        torch.log_softmax(logits, dim=-1)
    return chunks * CHUNK / (time.perf_counter() - start)


def measure_speed(rounds: int, steps: int, chunks: int) -> dict:
    models = {name: make(*spec) for name, spec in SPEED_MODELS.items()}
    train = {name: [] for name in models}
    infer = {name: [] for name in models}
    for m in models.values():  # warm-up
        train_steps(m, 1)
        infer_chunks(m, 1)
    names = list(models)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            train[name].append(train_steps(models[name], steps))
            infer[name].append(infer_chunks(models[name], chunks))
    return {name: {"parameters": sum(p.numel() for p in models[name].parameters()),
                   "train_tokens_per_s": statistics.median(train[name]),
                   "infer_tokens_per_s": statistics.median(infer[name])} for name in names}


def read_ptb(folder: Path) -> dict:
    """Final numbers of the ptb_neural runs present in ``folder``."""
    rows = {}
    for run in PTB_RUNS:
        result = folder / f"{run}.result.json"
        metrics = folder / f"{run}.metrics.jsonl"
        if not result.exists() or not metrics.exists():
            continue
        report = json.loads(result.read_text())
        epochs = [r for r in map(json.loads, metrics.read_text().splitlines())
                  if "valid_ppl" in r and "train_ppl" in r]
        config = json.loads((folder / f"{run}.config.json").read_text())["config"]["model"]
        last = epochs[-1]
        rows[run] = {"label": PTB_RUNS[run], "parameters": sum(
            p.numel() for p in build_model(ModelConfig(**config)).parameters()),
            "epochs": len(epochs), "test_ppl": report["test"]["perplexity"],
            "best_valid_ppl": report["best_valid_ppl"], "last_train_ppl": last["train_ppl"],
            "last_valid_ppl": last["valid_ppl"],
            "gap": last["valid_ppl"] - last["train_ppl"],
            "valid_curve": [r["valid_ppl"] for r in epochs]}
    return rows


def read_long_range(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    return {cell: {k: r[k] for k in ("hidden", "parameters", "longest_solved", "fails_at")}
            for cell, r in report["cells"].items() if cell in LONG_RANGE_CELLS} | {
        "_settings": {"steps": report["settings"]["steps"], "distances": report["distances"]}}


def table(result: dict) -> str:
    lines = []
    if result.get("speed"):
        lines += ["| model | parameters | train tok/s | x LSTM | inference tok/s | x LSTM |",
                  "|---|---|---|---|---|---|"]
        base = result["speed"]["lstm 2x200"]
        for name, r in result["speed"].items():
            lines.append(f"| {name} | {r['parameters']:,} | {r['train_tokens_per_s']:,.0f} | "
                         f"{r['train_tokens_per_s'] / base['train_tokens_per_s']:.2f} | "
                         f"{r['infer_tokens_per_s']:,.0f} | "
                         f"{r['infer_tokens_per_s'] / base['infer_tokens_per_s']:.2f} |")
        lines.append("")
    if result.get("ptb"):
        lines += ["| PTB run (13 epochs, Zaremba small) | parameters | test ppl | best valid | "
                  "last train ppl | last valid ppl | gap |", "|---|---|---|---|---|---|---|"]
        for r in result["ptb"].values():
            lines.append(f"| {r['label']} | {r['parameters']:,} | {r['test_ppl']:.2f} | "
                         f"{r['best_valid_ppl']:.2f} | {r['last_train_ppl']:.2f} | "
                         f"{r['last_valid_ppl']:.2f} | {r['gap']:+.2f} |")
        lines.append("")
    if result.get("long_range"):
        lines += ["| long-range cell | hidden | parameters | longest distance learned | fails at |",
                  "|---|---|---|---|---|"]
        for cell, r in result["long_range"].items():
            if not cell.startswith("_"):
                lines.append(f"| {cell} | {r['hidden']} | {r['parameters']:,} | "
                             f"{r['longest_solved']} | {r['fails_at'] or '-'} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("speed", "ptb", "long_range") if result.get(k)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "speed":
            names = list(result["speed"])
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [result["speed"][n]["train_tokens_per_s"]
                                           for n in names], 0.4, label="train")
            ax.bar([x + 0.2 for x in xs], [result["speed"][n]["infer_tokens_per_s"]
                                           for n in names], 0.4, label="inference")
            ax.set_xticks(list(xs), names)
            ax.set_ylabel("tokens/s")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
            ax.set_title("speed (this machine)", fontsize=10)
        elif panel == "ptb":
            for r in result["ptb"].values():
                ax.plot(range(1, len(r["valid_curve"]) + 1), r["valid_curve"], marker=".",
                        label=f"{r['label']}: test {r['test_ppl']:.1f}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation perplexity")
            ax.set_ylim(top=min(400, ax.get_ylim()[1]))
            ax.legend(fontsize=7)
            ax.set_title("PTB, Zaremba small budget", fontsize=10)
        else:
            cells = [c for c in result["long_range"] if not c.startswith("_")]
            ax.bar(cells, [result["long_range"][c]["longest_solved"] or 0 for c in cells])
            ax.set_ylabel("longest key-to-value distance learned")
            ax.set_title("synthetic long-range language", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ptb", type=Path, nargs="+", metavar="DIR",
                   help="benchmarks/ptb_neural.py output folder(s); a run found in several is "
                   "taken from the last")
    p.add_argument("--long-range", type=Path, metavar="DIR",
                   help="benchmarks/long_range_memory.py output")
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    p.add_argument("--chunks", type=int, default=4, help="inference chunks per model per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict = {"machine": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads}
    if not args.no_speed:
        result["speed"] = measure_speed(args.rounds, args.steps, args.chunks)
    if args.ptb:
        result["ptb"] = {}
        for folder in args.ptb:
            result["ptb"].update(read_ptb(folder))
        result["ptb"] = {run: result["ptb"][run] for run in PTB_RUNS if run in result["ptb"]}
    if args.long_range:
        result["long_range"] = read_long_range(args.long_range)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lstm_vs_gru.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "lstm_vs_gru.png")
    print(table(result), end="")
    print(f"wrote {args.out / 'lstm_vs_gru.json'} and {args.out / 'lstm_vs_gru.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
