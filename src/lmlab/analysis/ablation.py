"""The LSTM ablation study (Greff et al. 2017, "LSTM: A Search Space Odyssey") on language
modelling.

Every variant of :class:`lmlab.neural.cells.VariantLSTM` is trained with one shared configuration
and budget, once per seed, by the same :class:`lmlab.neural.trainer.Trainer` as ``lmlab train``, and
evaluated with the shared protocol. Each (variant, seed) is one run with its own checkpoint under
``OUT/runs/``; a run whose result file exists is never redone, and an interrupted one resumes from
its checkpoint, so a study can be stopped and restarted at any point.

Vanilla is the cell with peepholes (Greff's baseline), run through the same code path as the other
variants (not the fused ``torch.nn.LSTM``), so differences come from the equations alone.

The summary (``results.json``, ``results.md`` and ``ablation.png``) gives per variant the mean and
standard deviation over seeds of validation and test perplexity, the parameter count, training
tokens/s and epochs, and Welch's t-test (scipy) of its test perplexities against vanilla's. A run
whose validation or test perplexity overflowed (cross-entropy beyond ~709 nats: NOAF's unbounded
``h = o·c`` does this) is counted as diverged and left out of those statistics, so the count
says how many seeds each mean stands for.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.fileio import atomic_output, json_safe
from lmlab.neural.cells import VARIANTS, check_variant


@dataclass
class StudyConfig:
    """One shared configuration for every run of a study.

    The default is sized for this project's reference machine (2 CPU cores): 9 variants x 3 seeds
    of a 1-layer 128-unit LSTM, 2 epochs of PTB with Adam, two runs at a time, in under two hours.
    """

    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seeds: int = 3
    emsize: int = 128
    hidden: int = 128
    layers: int = 1
    epochs: int = 2
    bptt: int = 35
    batch_size: int = 20
    optimizer: str = "adam"
    lr: float = 0.002
    clip: float = 1.0
    forget_bias: float = 0.0
    max_train_tokens: int = 0  # 0: the whole training split
    device: str = "auto"
    threads: int = 1  # torch threads per run
    jobs: int = 2  # runs at a time (processes)

    def check(self) -> None:
        if not self.variants:
            raise LmlabError("--variants: give at least one variant")
        for v in self.variants:
            check_variant(v)
        for name in ("seeds", "emsize", "hidden", "layers", "epochs", "bptt", "batch_size",
                     "jobs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LmlabError(f"--{name.replace('_', '-')} must be an integer >= 1, got "
                                 f"{value!r}")
        if self.max_train_tokens < 0:
            raise LmlabError(f"--max-train-tokens must be >= 0, got {self.max_train_tokens}")

    def run_config(self, variant: str, seed: int):
        """The :class:`RunConfig` of one run."""
        from lmlab.neural.config import RunConfig

        config = RunConfig()
        m, t = config.model, config.train
        m.model, m.variant, m.forget_bias = "lstm", variant, self.forget_bias
        m.emsize, m.hidden, m.layers, m.dropout = self.emsize, self.hidden, self.layers, 0.0
        t.epochs, t.bptt, t.batch_size = self.epochs, self.bptt, self.batch_size
        t.optimizer, t.lr, t.clip = self.optimizer, self.lr, self.clip
        t.lr_decay, t.decay_start, t.seed = 0.5, 0, seed
        t.device, t.threads = self.device, self.threads
        config.check()
        return config


QUICK = {"seeds": 2, "emsize": 16, "hidden": 16, "epochs": 1, "bptt": 10, "batch_size": 4,
         "max_train_tokens": 3000, "lr": 0.01, "jobs": 1}


# Created in the runs folder when a study is interrupted: runs already handed to a worker process
# then return at once instead of starting.
STOP = ".stop"


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


def run_one(data: str, runs_dir: str, variant: str, seed: int,
            study: StudyConfig, own_process: bool = False) -> dict | None:
    """Train and test one (variant, seed); resume its checkpoint if one exists. Returns the record
    also written to ``runs_dir/NAME.json`` (atomically, last: its presence means done); None
    when Ctrl-C stopped it (its checkpoint is saved). ``own_process``: this is a worker process
    of the study's, whose process-wide settings (threads, allocator) the run may set for good."""
    from lmlab.neural.data import load_corpus
    from lmlab.neural.trainer import Trainer, TrainingInterrupted

    if (Path(runs_dir) / STOP).exists():  # the study was interrupted while this run waited
        return None
    name = run_name(variant, seed)
    ckpt = Path(runs_dir) / f"{name}.pt"
    corpus = load_corpus(data)
    if study.max_train_tokens and len(corpus.train) > study.max_train_tokens:
        corpus.train = _head(corpus.train, study.max_train_tokens)
    trainer = Trainer(study.run_config(variant, seed), corpus, ckpt, resume=ckpt.exists(),
                      plot=False, process_settings=own_process)
    try:
        start = time.perf_counter()
        try:
            result = trainer.train()
        except TrainingInterrupted:  # Ctrl-C: the checkpoint is saved; the next call resumes
            return None
        test = trainer.evaluate_test()
        wall = time.perf_counter() - start
        seconds = _train_seconds(trainer.paths["metrics"])
        tokens = trainer.inputs.numel() * result.epoch
        valid_ppl = result.epochs[-1]["valid_ppl"] if result.epochs else None
        test_ppl = test["perplexity"] if test else None
        record = {
            "variant": variant, "seed": seed, "status": result.status, "epochs": result.epoch,
            "steps": result.step, "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "train_ppl": result.epochs[-1]["train_ppl"] if result.epochs else None,
            "valid_ppl": valid_ppl, "best_valid_ppl": result.best_valid_ppl, "test_ppl": test_ppl,
            # perplexity overflows (inf, written as null) once cross-entropy passes ~709 nats
            "diverged": not (_finite(valid_ppl) and (test is None or _finite(test_ppl))),
            "train_tokens_per_s": tokens / seconds if seconds else None,
            "wall_seconds": round(wall, 1), "device": str(trainer.device),
        }
    finally:
        trainer.close()
    with atomic_output(Path(runs_dir) / f"{name}.json", "w") as f:
        json.dump(json_safe(record), f, indent=1)
    return record


def _head(stream, n: int):
    """The first ``n`` predicted tokens of a stream (whole sentences are not needed: training
    treats the split as one stream)."""
    import numpy as np

    offsets = stream.offsets[stream.offsets <= n]
    return replace(stream, ids=stream.ids[:n], oov=stream.oov[:n],
                   offsets=np.append(offsets, n) if offsets[-1] != n else offsets)


def _train_seconds(metrics: Path) -> float:
    """Training time (validation excluded) summed over the epochs in a run's metrics log."""
    total = 0.0
    with open(metrics, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if "seconds" in record and "valid_ppl" in record:
                total += record["seconds"] or 0.0
    return total


def run_study(data: str | os.PathLike, out: str | os.PathLike, study: StudyConfig, *,
              log: Callable[[str], None] = print, progress: bool = False,
              extra: dict | None = None, run: bool = True) -> dict:
    """Run every (variant, seed) not yet done, then write the summary files; returns the summary.

    ``extra`` is recorded in results.json (e.g. the synthetic source's entropy floor). With
    ``run=False`` nothing is trained: the summary covers the runs finished so far."""
    study.check()
    out = Path(out)
    runs_dir = out / "runs"
    settings = out / "study.json"
    if not run and not settings.exists():  # nothing to summarise, and nothing to write
        raise LmlabError("no finished runs to summarise: no study in this folder (no study.json)",
                         out)
    runs_dir.mkdir(parents=True, exist_ok=True)
    # what the runs learn from: the data's files (their SHA-256) and how a synthetic corpus
    # was made; a study of other data must not pass for this one
    record = {**asdict(study), "source": json.loads(json.dumps(extra or {}))}
    if settings.exists():
        saved = json.loads(settings.read_text(encoding="utf-8"))
        # (a summary reads finished runs only: their data need not be there any more)
        record["data"] = _fingerprint(data) if run else saved.get("data", {})
        saved.setdefault("data", record["data"])  # (a study.json from before they were kept)
        saved.setdefault("source", record["source"])
        mine = {k: v for k, v in record.items() if k not in _FREE}
        theirs = {k: v for k, v in saved.items() if k not in _FREE}
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise LmlabError(f"this folder holds a study with other settings ({', '.join(diff)});"
                             " use another --output", out)
    else:
        record["data"] = _fingerprint(data)
    with atomic_output(settings, "w") as f:
        json.dump(record, f, indent=1)
    runs = [(v, s) for v in study.variants for s in range(1, study.seeds + 1)]
    todo = [(v, s) for v, s in runs if not (runs_dir / f"{run_name(v, s)}.json").exists()]
    if len(todo) < len(runs):
        log(f"{len(runs) - len(todo)} of {len(runs)} runs done already")
    if run:
        _execute(str(data), str(runs_dir), todo, study, log, progress)
    done = [runs_dir / f"{run_name(v, s)}.json" for v, s in runs]
    records = [json.loads(p.read_text(encoding="utf-8")) for p in done if p.exists()]
    if not records:
        raise LmlabError("no finished runs to summarise", runs_dir)
    summary = summarize(records, study, extra or {})
    write_summary(summary, out)
    return summary


def _fingerprint(data: str | os.PathLike) -> dict[str, str]:
    """The SHA-256 of each split file of the data folder ``data`` (a corpus name or folder)."""
    from lmlab.datasets import data_folder, sha256_file
    from lmlab.neural.data import split_paths

    return {split: sha256_file(path)
            for split, path in split_paths(data_folder(data)).items() if path is not None}


# Settings that may change between an interrupted study and its resumption.
_FREE = {"device", "threads", "jobs", "variants", "seeds"}


def _execute(data: str, runs_dir: str, todo: list, study: StudyConfig, log, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="run", disable=not progress, file=sys.stderr)
    try:
        if study.jobs == 1 or len(todo) <= 1:
            for v, s in todo:
                _report(run_one(data, runs_dir, v, s, study), log, bar)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: CUDA- and fork-safe
        stop = Path(runs_dir) / STOP
        stop.unlink(missing_ok=True)
        pool = ProcessPoolExecutor(study.jobs, mp_context=ctx)
        try:
            futures = [pool.submit(run_one, data, runs_dir, v, s, study, True) for v, s in todo]
            for future in as_completed(futures):
                _report(future.result(), log, bar)
        except (KeyboardInterrupt, StudyInterrupted):
            # The workers got the same Ctrl-C and save their checkpoints: wait for them, and
            # keep them from starting the runs already queued to them.
            stop.touch()
            pool.shutdown(wait=True, cancel_futures=True)
            stop.unlink(missing_ok=True)
            raise _interrupted() from None
        pool.shutdown()
    finally:
        bar.close()


class StudyInterrupted(LmlabError):
    """Ctrl-C stopped the study; its finished runs and checkpoints are kept."""


def _interrupted() -> StudyInterrupted:
    return StudyInterrupted("interrupted; finished runs and checkpoints are kept: the same "
                            "command resumes the study")


def _report(record: dict | None, log, bar) -> None:
    if record is None:
        raise _interrupted()
    bar.update(1)
    test = record["test_ppl"]
    name = run_name(record["variant"], record["seed"])
    log(f"{name}: diverged (perplexity not finite), {record['wall_seconds']:.0f} s"
        if _diverged(record) else
        f"{name}: valid {record['valid_ppl']:.2f}, test "
        + (f"{test:.2f}" if test is not None else "-") + f", {record['wall_seconds']:.0f} s")


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _diverged(record: dict) -> bool:
    """Whether a run's validation or test perplexity overflowed. Records written before the key
    existed: validation perplexity missing (every run validates)."""
    return record.get("diverged", record["valid_ppl"] is None)


def _mean_std(values: list) -> tuple[float | None, float | None]:
    xs = [x for x in values if _finite(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(records: list[dict], study: StudyConfig, extra: dict) -> dict:
    """Per-variant statistics and Welch's t-test of test perplexity against vanilla."""
    from scipy import stats

    by_variant: dict[str, list[dict]] = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    base = [r["test_ppl"] for r in by_variant.get("vanilla", [])
            if not _diverged(r) and _finite(r["test_ppl"])]
    rows = []
    for variant, rs in by_variant.items():
        # perplexities over the runs that did not diverge; speed and epochs over all runs
        kept = [r for r in rs if not _diverged(r)]
        tests = [r["test_ppl"] for r in kept if _finite(r["test_ppl"])]
        row = {"variant": variant, "runs": len(rs), "diverged": len(rs) - len(kept),
               "parameters": rs[0]["parameters"], "test_ppl": tests}
        for key in ("valid_ppl", "test_ppl", "train_ppl", "train_tokens_per_s", "epochs"):
            source = kept if key.endswith("_ppl") else rs
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r[key] for r in source])
        row["p_vs_vanilla"] = None
        row["test_ppl_median"] = statistics.median(tests) if tests else None
        if variant != "vanilla" and len(base) >= 2 and len(tests) >= 2:
            p = float(stats.ttest_ind(tests, base, equal_var=False).pvalue)
            row["p_vs_vanilla"] = p if math.isfinite(p) else None
        rows.append(row)
    return {"study": asdict(study), **extra, "variants": rows, "runs": records}


def write_summary(summary: dict, out: Path) -> None:
    with atomic_output(out / "results.json", "w") as f:
        json.dump(json_safe(summary), f, indent=1)
    with atomic_output(out / "results.md", "w") as f:
        f.write(markdown_table(summary))
    plot_study(summary, out / "ablation.png")


def _fmt(mean, std, digits=2) -> str:
    if mean is None:
        return "-"
    if abs(mean) >= 1e5:  # a diverged run: the digits mean nothing
        return f"{mean:.2g} ± {std:.2g}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: dict) -> str:
    s = summary["study"]
    lines = [f"LSTM variants, {s['layers']}x{s['hidden']} (embedding {s['emsize']}), "
             f"{s['epochs']} epoch(s), {s['optimizer']} lr {s['lr']}, BPTT {s['bptt']}, batch "
             f"{s['batch_size']}, {s['seeds']} seed(s); mean ± std over seeds. p: Welch's "
             "t-test of test perplexity against vanilla. diverged: runs whose validation or "
             "test perplexity overflowed (is not finite); the statistics are over the other "
             "runs.", ""]
    devices: dict[str, int] = {}
    for r in summary["runs"]:
        devices[r.get("device", "?")] = devices.get(r.get("device", "?"), 0) + 1
    lines[0] += (" Runs per device: " + ", ".join(f"{d} {n}" for d, n in devices.items())
                 + " (tokens/s are each run's own, under whatever else that machine ran).")
    if "entropy_floor_ppl" in summary:
        lines += [f"Source entropy floor: perplexity {summary['entropy_floor_ppl']:.3f}.", ""]
    lines += ["| variant | runs | diverged | valid ppl | test ppl | test median | Δ test vs "
              "vanilla | p | params | train tok/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    vanilla = next((r for r in summary["variants"] if r["variant"] == "vanilla"), None)
    for r in summary["variants"]:
        delta = "-"
        if vanilla and vanilla["test_ppl_mean"] is not None and r["test_ppl_mean"] is not None \
                and r is not vanilla:
            diff = r["test_ppl_mean"] - vanilla["test_ppl_mean"]
            delta = f"{diff:+.2g}" if abs(diff) >= 1e5 else f"{diff:+.2f}"
        p = "-" if r["p_vs_vanilla"] is None else f"{r['p_vs_vanilla']:.3g}"
        speed = "-" if r["train_tokens_per_s_mean"] is None else \
            f"{r['train_tokens_per_s_mean']:,.0f}"
        median = "-" if r["test_ppl_median"] is None else _fmt(r["test_ppl_median"], 0.0)
        lines.append(f"| {r['variant']} | {r['runs']} | {r['diverged']} | "
                     f"{_fmt(r['valid_ppl_mean'], r['valid_ppl_std'])} | "
                     f"{_fmt(r['test_ppl_mean'], r['test_ppl_std'])} | {median.split(' ±')[0]} | "
                     f"{delta} | {p} | {r['parameters']:,} | {speed} |")
    return "\n".join(lines) + "\n"


def plot_study(summary: dict, path: Path) -> None:
    """Test perplexity per variant: one box per variant (its seeds as dots, diverged runs counted
    under its name), vanilla's mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["variants"] if r["test_ppl"]]
    lost = [f"{r['variant']} {r['diverged']}/{r['runs']}" for r in summary["variants"]
            if not r["test_ppl"] and r["diverged"]]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * max(len(rows), 1), 4))
    if rows:
        data = [r["test_ppl"] for r in rows]
        labels = [r["variant"] + (f"\n{r['diverged']}/{r['runs']} div." if r["diverged"] else "")
                  for r in rows]
        try:
            ax.boxplot(data, tick_labels=labels)
        except TypeError:  # matplotlib < 3.9
            ax.boxplot(data, labels=labels)
        for i, values in enumerate(data, start=1):
            ax.plot([i] * len(values), values, "o", color="tab:blue", alpha=0.6, markersize=4)
        vanilla = next((r for r in rows if r["variant"] == "vanilla"), None)
        if vanilla:
            ax.axhline(vanilla["test_ppl_mean"], color="gray", linestyle="--", linewidth=1,
                       label="vanilla mean")
            ax.legend(loc="upper left", fontsize=8)
        if "entropy_floor_ppl" in summary:
            ax.axhline(summary["entropy_floor_ppl"], color="tab:green", linestyle=":",
                       linewidth=1, label="entropy floor")
    if lost:
        ax.set_xlabel("no finite perplexity (diverged): " + ", ".join(lost), fontsize=8)
    s = summary["study"]
    ax.set_ylabel("test perplexity")
    ax.set_title(f"LSTM variants ({s['layers']}x{s['hidden']}, {s['epochs']} epochs, "
                 f"{s['seeds']} seeds)", fontsize=10)
    fig.tight_layout()
    with atomic_output(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
