#!/usr/bin/env python
"""Training throughput of lmlab's Trainer against a bare PyTorch loop on the same model and data.

Target (the issue): lmlab >= 0.9x the bare loop's training tokens/s.

Both sides train the same model on the same batches, on the CPU:

* model: embedding(V, 200) -> nn.LSTM(200, 200, 2 layers) -> Linear(200, V), uniform(-0.1, 0.1)
  init, no dropout; V = the training vocabulary (PTB: 10k words + lmlab's specials);
* step: mean cross-entropy over a [35, 20] window (BPTT 35, batch 20), backward,
  ``clip_grad_norm_(5)``, one SGD step (lr 1); the hidden state is carried across steps and
  detached (truncated BPTT);
* data: PTB train (``--data DIR`` or ``$LMLAB_DATA``: ``DIR/ptb/train.txt`` or
  ``DIR/train.txt``), cut into 20 rows by :func:`lmlab.neural.data.batchify` for both sides. Without
  it: a synthetic stream over a 10k-word vocabulary (Zipf-distributed words, random sentence
  lengths), written to a temporary folder.

The bare side is the textbook loop (pytorch/examples word_language_model, minus dropout and
logging). The lmlab side is :class:`lmlab.neural.trainer.Trainer` with the equivalent
:class:`~lmlab.neural.config.RunConfig` (``checkpoint_every = 0``, one epoch that these runs never
finish, so no validation), advanced block by block with ``train(max_steps=...)``. Both sides stay
alive for the whole run and walk through the data in step.

What is timed, and how: each ``train`` call ends with a checkpoint save (the first one also starts
with one). Those saves are kept out of the measurement by timing with ``step_hook``, which the
Trainer calls after every optimiser step: a block of n steps is timed from the hook of its first
step to the hook of its last, i.e. n - 1 complete Trainer steps with all their per-step work
(batch slicing, state detaching, loss and grad-norm read-back, the NaN check, history and the
metrics-log line, the hook call itself). The bare loop is timed the same way (end of its first
step to end of its last). ``--warmup`` untimed steps run first on each side. The Trainer's own
per-step ``tokens_per_s`` (metrics log; it times only the model part of a step) is reported as a
cross-check.

The Trainer keeps freed memory in the process (it raises glibc's malloc thresholds process-wide,
:mod:`lmlab.neural.heap`), so the bare loop, built first in the same process, runs with that
setting too from then on: the ratio compares the loops, not the allocator settings.

The machine is shared and noisy: the sides alternate in short blocks in one process with the same
thread count (bare, lmlab, bare, lmlab, ..., bare). Each lmlab block is compared with the mean of
the bare blocks just before and after it, which cancels load that drifts slowly; the table gives
each side's median tokens/s, the ratio of the medians and the median of those per-round ratios
(the headline number).

Usage::

    python benchmarks/trainer_speed.py --quick             # 6 rounds of 5-step blocks (minutes)
    python benchmarks/trainer_speed.py --data ../shared/data --rounds 20 --steps 10

Writes JSON (default ``benchmarks/results/trainer_speed.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
from lmlab.neural.data import Corpus, batchify, load_corpus
from lmlab.neural.trainer import Trainer

EMSIZE = HIDDEN = 200
LAYERS, BATCH, BPTT, LR, CLIP, INIT = 2, 20, 35, 1.0, 5.0, 0.1
SYNTH_VOCAB = 10_000
TARGET = 0.9


# -- data ---------------------------------------------------------------------------------------

def find_ptb(data: str | None) -> Path | None:
    """The PTB folder under ``data`` (or $LMLAB_DATA): ``DIR/ptb`` or ``DIR`` itself."""
    root = data or os.environ.get("LMLAB_DATA")
    if not root:
        return None
    for folder in (Path(root) / "ptb", Path(root)):
        if (folder / "train.txt").is_file() and (folder / "valid.txt").is_file():
            return folder
    return None


def synthetic_corpus(folder: Path, tokens: int, seed: int = 0) -> Path:
    """train/valid text over SYNTH_VOCAB words (Zipf 1.1, sentences of 1..40 words)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(SYNTH_VOCAB)])

    def write(path: Path, n: int) -> None:
        ids = rng.zipf(1.1, size=n * 2)
        ids = ids[ids <= SYNTH_VOCAB][:n] - 1
        # every word at least once in train, so the vocabulary has all SYNTH_VOCAB words
        if path.name == "train.txt":
            ids[:SYNTH_VOCAB] = np.arange(SYNTH_VOCAB)
        lines, i = [], 0
        while i < len(ids):
            k = int(rng.integers(1, 41))
            lines.append(" ".join(words[ids[i:i + k]]))
            i += k
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    write(folder / "train.txt", tokens)
    write(folder / "valid.txt", 2_000)
    return folder


# -- the bare PyTorch loop ----------------------------------------------------------------------

class BareLM(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, EMSIZE)
        self.rnn = nn.LSTM(EMSIZE, HIDDEN, LAYERS)
        self.decoder = nn.Linear(HIDDEN, vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -INIT, INIT)

    def forward(self, x, state):
        out, state = self.rnn(self.embedding(x), state)
        return self.decoder(out), state


class BareLoop:
    """The textbook loop, kept alive between blocks so it walks the data like the Trainer."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, vocab: int,
                 seed: int) -> None:
        torch.manual_seed(seed)
        self.inputs, self.targets, self.vocab = inputs, targets, vocab
        self.model = BareLM(vocab)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        h = torch.zeros(LAYERS, BATCH, HIDDEN)
        self.state = (h, h.clone())
        self.k = 0

    def steps(self, n: int) -> list[tuple[float, float]]:
        """Train ``n`` steps; (wall, CPU) time at the end of each."""
        stamps = []
        model, opt, vocab = self.model, self.opt, self.vocab
        for _ in range(n):
            i = self.k * BPTT
            self.k += 1
            x, y = self.inputs[i:i + BPTT], self.targets[i:i + BPTT]
            state = tuple(s.detach() for s in self.state)
            opt.zero_grad(set_to_none=True)
            logits, self.state = model(x, state)
            loss = nn.functional.cross_entropy(logits.view(-1, vocab), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            stamps.append(_now())
        return stamps


# -- lmlab's Trainer ----------------------------------------------------------------------------

def run_config(threads: int, seed: int) -> RunConfig:
    return RunConfig(
        ModelConfig(model="lstm", emsize=EMSIZE, hidden=HIDDEN, layers=LAYERS, dropout=0.0,
                    init_range=INIT),
        TrainConfig(epochs=1, bptt=BPTT, batch_size=BATCH, lr=LR, optimizer="sgd", clip=CLIP,
                    checkpoint_every=0, seed=seed, device="cpu", threads=threads))


class LmlabLoop:
    """lmlab's Trainer, advanced block by block with ``train(max_steps=...)``.

    Each ``train`` call ends with a checkpoint save (and the first one starts with one); the
    ``step_hook`` timestamps put those saves outside every measured span."""

    def __init__(self, corpus: Corpus, workdir: Path, threads: int, seed: int) -> None:
        self.stamps: dict[int, tuple[float, float]] = {}
        self.trainer = Trainer(run_config(threads, seed), corpus, workdir / "trainer_speed.pt",
                               overwrite=True, plot=False, step_hook=self._hook,
                               process_settings=True)  # as `lmlab train` runs

    def _hook(self, trainer, step: int) -> None:
        self.stamps[step] = _now()

    def steps(self, n: int) -> list[tuple[float, float]]:
        first = self.trainer.step + 1
        result = self.trainer.train(max_steps=self.trainer.step + n)
        if result.status != "max_steps" or result.step != first + n - 1:
            raise RuntimeError(f"trainer stopped early: {result.status} at step {result.step}")
        return [self.stamps[k] for k in range(first, first + n)]

    def self_reported(self, steps: set[int]) -> list[float]:
        """The Trainer's own per-step tokens/s (metrics log) of ``steps``."""
        self.trainer.metrics.flush()
        out = []
        with open(self.trainer.paths["metrics"], encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("step") in steps and rec.get("tokens_per_s"):
                    out.append(rec["tokens_per_s"])
        return out

    def close(self) -> None:
        self.trainer.close()


# -- driver -------------------------------------------------------------------------------------

def _now() -> tuple[float, float]:
    """(wall clock, CPU time of this process): CPU time is the work done, which being
    descheduled on a busy machine does not inflate (with several threads it includes their
    spin-waiting, on both sides alike)."""
    return time.perf_counter(), time.process_time()


def span_tokens_per_s(stamps: list[tuple[float, float]], which: int = 0) -> float:
    """Tokens/s over the steps after the first of a block (end of step 1 -> end of step n);
    ``which``: 0 wall clock, 1 CPU time."""
    return BATCH * BPTT * (len(stamps) - 1) / (stamps[-1][which] - stamps[0][which])


def measure(corpus: Corpus, rounds: int, warmup: int, steps: int, threads: int, seed: int,
            log=print) -> dict:
    """``rounds`` x (bare block, lmlab block) and a closing bare block, ``steps`` steps each,
    after ``warmup`` untimed steps on each side."""
    inputs, targets = batchify(corpus.train, BATCH)
    windows = inputs.size(0) // BPTT  # full windows in one epoch: the Trainer must not reach
    total = warmup + (rounds + 1) * steps  # the end of the epoch (validation)
    if total >= windows:
        raise SystemExit(f"training text too short: {windows} windows of {BPTT}x{BATCH} per "
                         f"epoch, need more than {total}; use fewer --rounds/--steps")
    vocab = len(corpus.vocab)
    wall: dict[str, list[float]] = {"bare": [], "lmlab": []}
    cpu: dict[str, list[float]] = {"bare": [], "lmlab": []}
    sandwich, sandwich_cpu = [], []
    timed_lmlab_steps: set[int] = set()

    def record(side: str, stamps) -> None:
        wall[side].append(span_tokens_per_s(stamps, 0))
        cpu[side].append(span_tokens_per_s(stamps, 1))

    with tempfile.TemporaryDirectory(prefix="trainer_speed_") as tmp:
        torch.set_num_threads(threads)
        bare = BareLoop(inputs, targets, vocab, seed)
        lmlab = LmlabLoop(corpus, Path(tmp), threads, seed)
        try:
            bare.steps(warmup)
            lmlab.steps(warmup)
            record("bare", bare.steps(steps))
            for r in range(rounds):
                first = lmlab.trainer.step + 2  # the block's first step only starts the clock
                record("lmlab", lmlab.steps(steps))
                timed_lmlab_steps.update(range(first, lmlab.trainer.step + 1))
                record("bare", bare.steps(steps))
                # the lmlab block against the bare blocks just before and just after it
                sandwich.append(wall["lmlab"][-1] / statistics.mean(wall["bare"][-2:]))
                sandwich_cpu.append(cpu["lmlab"][-1] / statistics.mean(cpu["bare"][-2:]))
                log(f"  round {r + 1}/{rounds}: bare {wall['bare'][-2]:,.0f} | lmlab "
                    f"{wall['lmlab'][-1]:,.0f} | bare {wall['bare'][-1]:,.0f} tok/s -> ratio "
                    f"{sandwich[-1]:.3f} (CPU-time ratio {sandwich_cpu[-1]:.3f})", flush=True)
            self_rep = lmlab.self_reported(timed_lmlab_steps)
        finally:
            lmlab.close()
    med_bare, med_lmlab = statistics.median(wall["bare"]), statistics.median(wall["lmlab"])
    return {"bare_tokens_per_s": wall["bare"], "lmlab_tokens_per_s": wall["lmlab"],
            "bare_median": med_bare, "lmlab_median": med_lmlab,
            "ratio_of_medians": med_lmlab / med_bare,
            "median_round_ratio": statistics.median(sandwich), "round_ratios": sandwich,
            "bare_cpu_tokens_per_s": cpu["bare"], "lmlab_cpu_tokens_per_s": cpu["lmlab"],
            "cpu_ratio_of_medians": statistics.median(cpu["lmlab"])
            / statistics.median(cpu["bare"]),
            "cpu_median_round_ratio": statistics.median(sandwich_cpu),
            "cpu_round_ratios": sandwich_cpu,
            "lmlab_self_reported_median": statistics.median(self_rep) if self_rep else None,
            "vocab": vocab, "tokens_per_step": BATCH * BPTT}


def src_hash() -> str:
    h = hashlib.sha256()
    src = Path(__file__).resolve().parents[1] / "src" / "lmlab"
    for p in sorted(src.rglob("*.py")):
        h.update(p.relative_to(src).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="folder holding ptb/ (or train.txt); default $LMLAB_DATA")
    p.add_argument("--quick", action="store_true", help="6 rounds x 5-step blocks, 3 warm-up")
    p.add_argument("--rounds", type=int, help="bare/lmlab block pairs (default 12; quick 6)")
    p.add_argument("--steps", type=int,
                   help="steps per block, the first one untimed (default 10; quick 5)")
    p.add_argument("--warmup", type=int, help="untimed steps per side first (default 5; "
                   "quick 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", dest="json_path", default="benchmarks/results/trainer_speed.json",
                   help="JSON file to write")
    args = p.parse_args(argv)
    rounds = args.rounds or (6 if args.quick else 12)
    steps = args.steps or (5 if args.quick else 10)
    warmup = args.warmup or (3 if args.quick else 5)
    if min(rounds, warmup, args.threads) < 1 or steps < 2:
        p.error("--rounds, --warmup, --threads must be >= 1 and --steps >= 2")
    torch.set_num_threads(args.threads)

    folder = find_ptb(args.data)
    with tempfile.TemporaryDirectory(prefix="trainer_speed_data_") as tmp:
        if folder is None:
            tokens = max(300_000, (warmup + (rounds + 1) * steps + 2) * BPTT * BATCH)
            print(f"no PTB (--data/LMLAB_DATA): synthetic {SYNTH_VOCAB}-word stream of {tokens:,} "
                  "tokens", flush=True)
            folder, source = synthetic_corpus(Path(tmp), tokens), "synthetic"
        else:
            source = os.fspath(folder)
        corpus = load_corpus(folder)
        print(f"data {source}: {len(corpus.train):,} train tokens, vocabulary "
              f"{len(corpus.vocab):,}; LSTM {LAYERS}x{HIDDEN}, batch {BATCH}, BPTT {BPTT}; "
              f"{warmup} warm-up steps, then {rounds} rounds of {steps}-step blocks, "
              f"{args.threads} threads", flush=True)
        res = measure(corpus, rounds, warmup, steps, args.threads, args.seed)

    ratio = res["median_round_ratio"]  # headline: paired (drift-cancelling) ratio
    print()
    print(f"{'side':<20} {'median tok/s':>13} {'ratio':>7}")
    print(f"{'bare PyTorch loop':<20} {res['bare_median']:>13,.0f} {1:>7.3f}")
    print(f"{'lmlab Trainer':<20} {res['lmlab_median']:>13,.0f} "
          f"{res['ratio_of_medians']:>7.3f}   (ratio of the medians)")
    print(f"paired ratio lmlab/bare, median over rounds: {ratio:.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in res['round_ratios'])})")
    cpu_bare = statistics.median(res["bare_cpu_tokens_per_s"])
    cpu_lmlab = statistics.median(res["lmlab_cpu_tokens_per_s"])
    print(f"CPU-time paired ratio (insensitive to being descheduled): "
          f"{res['cpu_median_round_ratio']:.3f} (ratio of CPU-time medians "
          f"{res['cpu_ratio_of_medians']:.3f}: bare {cpu_bare:,.0f}, lmlab {cpu_lmlab:,.0f} "
          "tokens per CPU-second)")
    if res["lmlab_self_reported_median"]:
        print(f"Trainer's own per-step tokens/s (metrics log, model part only): "
              f"{res['lmlab_self_reported_median']:,.0f}")
    verdict = "PASS" if ratio >= TARGET else "BELOW TARGET"
    print(f"target lmlab >= {TARGET}x bare (paired ratio): {verdict} ({ratio:.3f}x)")

    record = {"benchmark": "trainer_speed", "data": source, "rounds": rounds, "steps": steps,
              "warmup": warmup, "threads": args.threads, "batch_size": BATCH, "bptt": BPTT,
              "model": f"lstm {LAYERS}x{HIDDEN}, emsize {EMSIZE}", "target_ratio": TARGET,
              "pass": ratio >= TARGET, **res,
              "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                          "platform": platform.platform(), "cpus": os.cpu_count(),
                          "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None},
              "src_sha256": src_hash(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(args.json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
