#!/usr/bin/env python
"""Training speed of a whole word-level LM with lmlab's VariantLSTM against the fused nn.LSTM.

The model is the same for every row but for its recurrent part: embedding V×H -> 2-layer LSTM
(H units) -> linear H->V, mean cross-entropy, backward, gradient-norm clipping at 5, one SGD step;
V = 10,000, batch 20, BPTT 35, the state carried (detached) between steps as in real training.
Rows: ``fused`` is ``torch.nn.LSTM`` (cuDNN on CUDA); one row per variant of
:class:`lmlab.neural.cells.VariantLSTM` as shipped (eager: its sequence-level autograd Function);
one ``VARIANT+compile`` row per compiled variant (``lmlab train --compile``: the cell's step through
``torch.compile``, see :mod:`lmlab.neural.compiling`; the first training step, which compiles, is
timed apart as ``compile_seconds``); and, to show why the cell is built the way it is
(``--techniques``, on by default in the full run), the vanilla cell by other techniques:

* ``vanilla/loop``: the plain per-step loop over ``variant_step`` under autograd (input projection
  hoisted into one product), eager: what the Function replaces;
* ``vanilla/whole+compile``: the whole LM (embedding, the per-step loops of both layers, decoder)
  compiled as one graph instead of the cell's step: what ``--compile`` does not do;
* ``np/own``: np through lmlab's Function instead of torch's fused kernel.

Where fgr is measured, the table is followed by fgr's ratio BOUND on this machine: fgr does all of
vanilla's work plus its gate recurrence, 54 H^2 more FLOP per token and layer (products with the
3Hx3H W_gg: forward, and backward for the gradients w.r.t. the previous gates and W_gg). At best
those run at the rate of a large square matrix product here (2048 x 2048 in torch.mm, measured
in the same process before and after the rounds), so fgr's step takes at least
vanilla's step plus that time, and its ratio is at most
time(fused) / (time(vanilla) + extra FLOP / that rate).

The machine is shared and noisy (its speed drifts by 10-30% within minutes), so the comparison is
a RATIO of PAIRED measurements: in each round every model (order rotated every round) trains
``--steps`` steps right next to the fused model training as many (which of the two goes first
alternates), each pair gives one ratio ``time(fused) / time(model)``, and the table shows the
median of those ratios (> 1: faster than fused) with their interquartile range, each model's
median training tokens/s, and best-step/best-step; "CPU ratio" is the same median ratio of
process CPU time (user + sys, all threads), which other processes disturb less than wall time:
with ``--threads 1`` it approximates the uncontended wall-time ratio; with more threads it also
counts threads spinning at barriers. (Pairing each model with its own fused run, seconds apart,
instead of one fused run per round, cut the spread of the ratios by about half here.)

Like lmlab's trainer, the benchmark first keeps freed memory in the process
(:func:`lmlab.neural.heap.keep_freed_memory`: without it every step faults its logits' pages in
again; both models' 2x200 steps were 20-30% shorter with it here, 2x650 steps about the same);
``--malloc-defaults`` leaves glibc's defaults.

``--device cuda`` runs everything on the GPU (synchronising before each time is read; the CPU
ratio is then meaningless), against cuDNN's ``nn.LSTM``.

Usage::

    python benchmarks/lstm_cells.py                 # 2x200 and 2x650, all variants, eager and
                                                    # compiled (~30 min on 2 cores)
    python benchmarks/lstm_cells.py --quick --json  # 2x200 only: vanilla, np, fgr, vanilla+compile
    python benchmarks/lstm_cells.py --device cuda --sizes 650  # on a GPU

Writes JSON (default ``benchmarks/results/lstm_cells.json``; ``--quick``: ``lstm_cells_quick.json``)
with the keys ``vanilla_vs_fused_train_ratio`` and ``vanilla_compiled_vs_fused_train_ratio`` (each
the smallest over the sizes measured), ``variant_ratios`` (per size and variant, eager and
compiled), and ``compile_seconds`` (per size and compiled row: the first training step; with
torch's compile caches as they are, so a rerun finds the generated code cached and compiles in a
fraction of the time: ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` measures a first compile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import lmlab.neural.cells as cells
from lmlab.neural.cells import VARIANTS, VariantLSTM
from lmlab.neural.compiling import compile_model, is_compiled
from lmlab.neural.heap import keep_freed_memory

VOCAB, BATCH, BPTT, LAYERS = 10_000, 20, 35, 2
TECHNIQUES = ("vanilla/loop", "vanilla/whole+compile", "np/own")
DEVICE = torch.device("cpu")  # --device


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
        rnn = VariantLSTM(hidden, hidden, LAYERS, variant=kind.split("/")[0].split("+")[0])
        if kind in ("vanilla/loop", "vanilla/whole+compile"):
            rnn.step_fn = rnn.eager_step
    model = LM(rnn, hidden)
    for p in model.parameters():
        nn.init.uniform_(p, -0.1, 0.1)
    return model.to(DEVICE)


@contextlib.contextmanager
def technique(kind: str):
    """Switch lmlab's cell to the technique a row names, for the duration of its steps."""
    saved = cells.FUSED_NP
    cells.FUSED_NP = kind != "np/own"
    try:
        yield
    finally:
        cells.FUSED_NP = saved


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Trainer:
    """One model, its optimizer, data and carried state; ``steps(n)`` trains n steps."""

    def __init__(self, kind: str, hidden: int) -> None:
        self.kind = kind
        self.model = build(kind, hidden)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        self.data = torch.randint(VOCAB, (16, BPTT + 1, BATCH), generator=gen).to(DEVICE)
        h = torch.zeros(LAYERS, BATCH, hidden, device=DEVICE)
        self.state = (h, h.clone())
        self.k = 0
        self.compile_seconds = None
        if kind == "vanilla/whole+compile":  # the whole LM as one graph, for comparison
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self.model.forward = torch.compile(self.model.forward)
        if kind.endswith("+compile"):  # the first step compiles: timed apart
            if kind != "vanilla/whole+compile":
                compile_model(self.model)
                assert is_compiled(self.model), f"{kind}: torch.compile failed"
            self.compile_seconds = self.steps(1)[0]

    def steps(self, n: int) -> tuple[float, float]:
        """Train n steps; (wall seconds, CPU seconds) per step."""
        with technique(self.kind):
            sync()
            wall, cpu = time.perf_counter(), cpu_seconds()
            for _ in range(n):
                chunk = self.data[self.k % len(self.data)]
                self.k += 1
                inputs, targets = chunk[:-1], chunk[1:]
                self.state = tuple(s.detach() for s in self.state)
                logits, self.state = self.model(inputs, self.state)
                loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                   targets.reshape(-1))
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
                self.opt.step()
            sync()
            return (time.perf_counter() - wall) / n, (cpu_seconds() - cpu) / n


def matmul_gflops(n: int = 2048, repeats: int = 4) -> float:
    """This machine's rate for a large float32 matrix product, n x n by n x n (GFLOP/s, on
    torch's threads, best of ``repeats`` of torch.mm, the op lmlab's products use): more than any
    of the LSTM's skinnier products gets."""
    a, b = torch.rand(n, n, device=DEVICE), torch.rand(n, n, device=DEVICE)
    best = float("inf")
    torch.mm(a, b)
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def fgr_extra_flops(hidden: int) -> int:
    """FLOP per training step that fgr does on top of vanilla: per token and layer, three
    products of 9 H^2 multiply-adds each: the previous gates (o, i, f) times W_gg^T forward; and
    backward, the gate gradients times W_gg (the gradient w.r.t. the previous gates) and times the
    previous gates (W_gg's own gradient)."""
    return LAYERS * BATCH * BPTT * 3 * 2 * 9 * hidden**2


def fgr_bound(rows: dict, hidden: int, gflops: float) -> float:
    """The most fgr's ratio can be (see the module docstring): fused's median step time over
    vanilla's (fused's where vanilla was not measured) plus fgr's extra FLOP at ``gflops``."""
    fused = BATCH * BPTT / rows["fused"]["tokens_per_s"]
    vanilla = fused / rows["vanilla"]["ratio_vs_fused"] if "vanilla" in rows else fused
    return fused / (vanilla + fgr_extra_flops(hidden) / (gflops * 1e9))


def summary(fused: list[float], mine: list[float]) -> dict:
    ratios = sorted(f / m for f, m in zip(fused, mine, strict=True))
    q = len(ratios) // 4
    return {"median": statistics.median(ratios), "q1": ratios[q], "q3": ratios[-1 - q],
            "best_over_best": min(fused) / min(mine)}


def measure(hidden: int, kinds: list[str], rounds: int, steps: int, warmup: int,
            log=print) -> dict:
    """Interleaved rounds: in each, every model trains ``steps`` steps (order rotated) next to
    the fused model training as many, and its time per step is compared with that fused run's."""
    trainers = {}
    for k in ["fused", *kinds]:
        trainers[k] = Trainer(k, hidden)
        if trainers[k].compile_seconds is not None:
            log(f"  {LAYERS}x{hidden} {k}: first step (compiling) "
                f"{trainers[k].compile_seconds:.1f} s")
    for t in trainers.values():
        t.steps(warmup)
    # per model: its times and those of the fused runs paired with it ("fused": all fused runs)
    wall: dict[str, list[float]] = {k: [] for k in trainers}
    cpu: dict[str, list[float]] = {k: [] for k in trainers}
    fused_wall: dict[str, list[float]] = {k: [] for k in kinds}
    fused_cpu: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for n, k in enumerate(kinds[r % len(kinds):] + kinds[:r % len(kinds)]):
            pair = ["fused", k] if (r + n) % 2 == 0 else [k, "fused"]
            for name in pair:
                w, c = trainers[name].steps(steps)
                wall[name].append(w)
                cpu[name].append(c)
            fused_wall[k].append(wall["fused"][-1])
            fused_cpu[k].append(cpu["fused"][-1])
        if (r + 1) % max(1, rounds // 4) == 0 or r + 1 == rounds:
            log(f"  {LAYERS}x{hidden} round {r + 1}/{rounds}: "
                + " ".join(f"{k}={BATCH * BPTT / wall[k][-1]:.0f}" for k in trainers)
                + " tok/s")
    fused_wall["fused"], fused_cpu["fused"] = wall["fused"], cpu["fused"]
    rows = {}
    for k in trainers:
        wall_ratio = summary(fused_wall[k], wall[k])
        rows[k] = {"tokens_per_s": BATCH * BPTT / statistics.median(wall[k]),
                   "best_tokens_per_s": BATCH * BPTT / min(wall[k]),
                   "wall_ratio": wall_ratio,
                   "cpu_ratio": summary(fused_cpu[k], cpu[k]),
                   "ratio_vs_fused": wall_ratio["median"],
                   "compile_seconds": trainers[k].compile_seconds}
    return rows


def min_ratio(results: dict, kind: str) -> float | None:
    """``kind``'s smallest median ratio over the sizes measured (None: not measured)."""
    ratios = [rows[kind]["ratio_vs_fused"] for rows in results.values() if kind in rows]
    return min(ratios) if ratios else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2x200 only; vanilla, np, fgr, vanilla+compile; fewer rounds")
    p.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--sizes", type=int, nargs="+", help="hidden sizes (default 200 650)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS)
    p.add_argument("--compiled", nargs="*", choices=VARIANTS, metavar="VARIANT",
                   help="variants also measured compiled (default: every variant measured but "
                   "np; quick: vanilla); give none for no compiled rows")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--rows", nargs="+", metavar="ROW",
                   choices=[*VARIANTS, *(f"{v}+compile" for v in VARIANTS), *TECHNIQUES],
                   help="exactly these rows besides fused (overrides the three options above)")
    p.add_argument("--techniques", action=argparse.BooleanOptionalAction, default=None,
                   help="add the technique rows (default: on, off with --quick)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 16, quick 10)")
    p.add_argument("--steps", type=int, default=1, help="training steps per model per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--malloc-defaults", action="store_true",
                   help="leave glibc's malloc thresholds (lmlab's trainer raises them)")
    args = p.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    kept = False if args.malloc_defaults else keep_freed_memory()
    sizes = args.sizes or ([200] if args.quick else [200, 650])
    kinds = args.variants or (["vanilla", "np", "fgr"] if args.quick else list(VARIANTS))
    compiled = args.compiled if args.compiled is not None else (
        ["vanilla"] if args.quick else [v for v in kinds if v != "np"])
    kinds = kinds + [f"{v}+compile" for v in compiled]
    if args.techniques if args.techniques is not None else not args.quick:
        kinds += list(TECHNIQUES)
    kinds = args.rows or kinds
    rounds = args.rounds or (10 if args.quick else 16)
    out = Path(args.out or ("benchmarks/results/lstm_cells_quick.json" if args.quick
                            else "benchmarks/results/lstm_cells.json"))

    def log(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    results = {}
    gflops = matmul_gflops() if "fgr" in kinds else None
    for hidden in sizes:
        log(f"{LAYERS}x{hidden}: V={VOCAB} B={BATCH} T={BPTT}, {args.threads} thread(s), "
            f"{DEVICE}")
        results[f"{LAYERS}x{hidden}"] = measure(hidden, kinds, rounds, args.steps, warmup=2,
                                                log=log)
    bounds = {}
    if gflops is not None:
        gflops = max(gflops, matmul_gflops())
        bounds = {size: fgr_bound(rows, int(size.split("x")[1]), gflops)
                  for size, rows in results.items()}
    head = "| model |"
    for s in results:
        head += f" {s} tok/s | {s} ratio (IQR) | best/best | CPU ratio |"
    table = [head, "|" + "---|" * (head.count("|") - 1)]
    for k in ["fused", *kinds]:
        line = f"| {k} |"
        for rows in results.values():
            r, w = rows[k], rows[k]["wall_ratio"]
            line += (f" {r['tokens_per_s']:.0f} | {w['median']:.2f}x ({w['q1']:.2f}-{w['q3']:.2f})"
                     f" | {w['best_over_best']:.2f}x | {r['cpu_ratio']['median']:.2f}x |")
        table.append(line)
    doc = {
        "benchmark": "lstm_cells", "quick": args.quick, "torch": torch.__version__,
        "threads": args.threads, "machine": platform.machine(), "processor": platform.processor(),
        "device": str(DEVICE), "gpu": torch.cuda.get_device_name(DEVICE)
        if DEVICE.type == "cuda" else None, "keep_freed_memory": kept,
        "compile_caches_disabled": bool(torch.compiler.config.force_disable_caches),
        "vocab": VOCAB, "batch": BATCH, "bptt": BPTT, "layers": LAYERS,
        "rounds": rounds, "steps_per_round": args.steps,
        "ratio": "median over rounds of time(fused)/time(model) per training step (> 1: faster);"
                 " q1/q3: its quartiles; best_over_best: best fused step / best model step",
        "results": results,
        "vanilla_vs_fused_train_ratio": min_ratio(results, "vanilla"),
        "vanilla_compiled_vs_fused_train_ratio": min_ratio(results, "vanilla+compile"),
        "variant_ratios": {size: {v: {"eager": rows[v]["ratio_vs_fused"] if v in rows else None,
                                      "compiled": rows[f"{v}+compile"]["ratio_vs_fused"]
                                      if f"{v}+compile" in rows else None}
                                  for v in VARIANTS if v in rows or f"{v}+compile" in rows}
                           for size, rows in results.items()},
        "compile_seconds": {size: {k: r["compile_seconds"] for k, r in rows.items()
                                   if r["compile_seconds"] is not None}
                            for size, rows in results.items()},
        "table": table,
        "matmul_gflops": gflops,
        "fgr_ratio_bound": bounds or None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print("\n".join(table))
        if bounds:
            print("fgr's ratio at most (vanilla's step + its extra products at "
                  f"{gflops:.0f} GFLOP/s, a large matrix product here): "
                  + ", ".join(f"{size} {b:.2f}x" for size, b in bounds.items()))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
