"""Running and reporting the gradient analysis: what ``lmlab gradients`` does around the
measurement.

It builds a fresh :class:`~lmlab.neural.models.RecurrentLM` (:func:`fresh_model`) or loads a
checkpoint, reads the text (:func:`load_text_ids`) and samples the batch (:func:`sample_batch`),
runs :func:`lmlab.analysis.gradients.analyse` and writes the report (:func:`write_report`) as
``gradients.json`` and ``gradients.png`` (:func:`plot_report`); :func:`run` does all of it. What
is measured, and what the report holds, is described in :mod:`lmlab.analysis.gradients`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lmlab.analysis.gradients import MAX_SEQ_LEN, MAX_SEQUENCES, analyse
from lmlab.analysis.recurrence import CELLS
from lmlab.errors import LmlabError
from lmlab.fileio import json_safe


def fresh_model(cell: str, vocab_size: int, hidden: int = 64, layers: int = 1,
                residual: bool = False, seed: int = 0, init_range: float = 0.1) -> nn.Module:
    """A freshly initialised RecurrentLM (emsize = hidden), seeded without touching the global
    random generators."""
    from lmlab.neural.config import ModelConfig
    from lmlab.neural.models import build_model

    if cell not in CELLS:
        raise LmlabError(f"--cell must be one of {', '.join(CELLS)}, got {cell!r}")
    config = ModelConfig(model=cell, vocab_size=vocab_size, emsize=hidden, hidden=hidden,
                         layers=layers, residual=residual, init_range=init_range)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(config)


def sample_batch(ids: np.ndarray, seq_len: int, n_sequences: int, seed: int = 0
                 ) -> tuple[Tensor, Tensor]:
    """[T, B] inputs and targets: ``n_sequences`` windows of ``seq_len`` predicted tokens at
    seeded random offsets of the stream ``ids`` (the input before the first token is ``</s>``)."""
    from lmlab.corpus import EOS_ID

    if not 2 <= seq_len <= MAX_SEQ_LEN:
        raise LmlabError(f"--seq-len must be in 2..{MAX_SEQ_LEN} (the analysis keeps every step "
                         f"in memory), got {seq_len}")
    if not 1 <= n_sequences <= MAX_SEQUENCES:
        raise LmlabError(f"--sequences must be in 1..{MAX_SEQUENCES}, got {n_sequences}")
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < seq_len:
        raise LmlabError(f"the text has {len(ids)} tokens, fewer than --seq-len {seq_len}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seq_len + 1, size=n_sequences)
    inputs_all = np.concatenate([[EOS_ID], ids[:-1]])
    inp = np.stack([inputs_all[s:s + seq_len] for s in starts], axis=1)
    tgt = np.stack([ids[s:s + seq_len] for s in starts], axis=1)
    return torch.from_numpy(inp), torch.from_numpy(tgt)


def write_report(report: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``out_dir/gradients.json`` and ``out_dir/gradients.png`` (created atomically)."""
    from lmlab.fileio import atomic_output

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LmlabError("exists and is not a directory", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LmlabError(f"cannot create output directory ({err.strerror})", out) from None
    paths = {"json": out / "gradients.json", "png": out / "gradients.png"}
    with atomic_output(paths["json"], "w") as f:
        json.dump(json_safe(report), f, indent=1, allow_nan=False)
        f.write("\n")
    plot_report(report, paths["png"])
    return paths


def _xy(values: list | None) -> tuple[list[int], list[float]]:
    pts = [(d, v) for d, v in enumerate(values or []) if v is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_report(report: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """Left: ln‖∂L_t/∂h_k‖ by distance, per layer (LSTM: cell state dashed). Right: ln of the
    Jacobian-product norms by distance, measured, and the bound (dashed) for plain RNNs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lmlab.fileio import atomic_output

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for e in report["per_layer"]:
        n = e["layer"] + 1
        rate = e.get("grad_decay_rate")
        label = f"h, layer {n}" + (f" (rate {rate:+.3f}/step)" if rate is not None else "")
        left.plot(*_xy(e["grad_log_norm"]), lw=1.5, label=label)
        if "cell_state" in e:
            left.plot(*_xy(e["cell_state"]["grad_log_norm"]), "--", lw=1.2,
                      label=f"c, layer {n}")
    left.set_xlabel("distance t - k")
    left.set_ylabel("ln mean ‖∂L_t / ∂h_k‖")
    left.set_title("loss gradient through time")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)

    measured, bounds = [], []
    for e in report["per_layer"]:
        n = e["layer"] + 1
        if "jacobian_log_norm" not in e:
            continue
        xs, ys = _xy(e["jacobian_log_norm"])
        right.plot(xs, ys, lw=1.5 if n == 1 else 1.0, label=f"measured, layer {n}")
        measured += ys
        if "cell_state" in e and "jacobian_cc_log_norm" in e["cell_state"]:
            right.plot(*_xy(e["cell_state"]["jacobian_cc_log_norm"]), ":", lw=1.0,
                       label=f"c→c block, layer {n}")
        if e.get("bound_log"):
            bx, by = _xy(e["bound_log"])
            right.plot(bx, by, "--", lw=1.0, label=f"bound (β_W β_h)^d, layer {n}")
            bounds += by
    if measured:
        # The bound can be hundreds of nats above the measurement: show the measured range and
        # at most as much again of the bound.
        lo, hi = min(measured), max(measured)
        span = max(hi - lo, 1.0)
        top = hi + 0.1 * span
        if bounds:
            top = max(top, min(max(bounds), hi + span) + 0.1 * span)
        right.set_ylim(lo - 0.1 * span, top)
    right.set_xlabel("distance t - k")
    right.set_ylabel("ln ‖∏ ∂s_j / ∂s_{j-1}‖₂")
    right.set_title("Jacobian products (exact spectral norm)")
    right.grid(True, alpha=0.3)
    if right.get_lines():
        right.legend(fontsize=8)
    r = report.get("spectral_radius")
    fig.suptitle(title or (f"{report['cell']}{' residual' if report['residual'] else ''}, "
                           f"{report['num_layers']}x{report['hidden']}, T={report['seq_len']}"
                           + (f", W_hh rescaled to spectral radius {r}" if r else "")))
    fig.tight_layout()
    with atomic_output(path, "wb") as f:
        fig.savefig(f, format="png")


def load_text_ids(path: str | os.PathLike, vocab=None):
    """(vocabulary, ids) of a text file: with ``vocab`` (a checkpoint's) encode with it, else
    build the vocabulary from the text itself (fresh models)."""
    from lmlab.corpus import read_corpus, read_training_corpus

    if vocab is None:
        vocab, stream = read_training_corpus(path)
    else:
        stream = read_corpus(path, vocab)
    return vocab, stream.ids.astype(np.int64)


def run(*, cell: str | None, text: str | os.PathLike, out: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None, spectral_radius: float | None = None,
        residual: bool | None = None, layers: int | None = None, hidden: int | None = None,
        seq_len: int = 200, seed: int = 0, sequences: int = 4, n_targets: int = 4) -> dict:
    """What ``lmlab gradients`` does: load or build the model, sample the batch, analyse,
    write ``gradients.json`` and ``gradients.png`` into ``out``; returns the report."""
    if checkpoint is not None:
        from lmlab.neural.lm import load_neural

        lm = load_neural(checkpoint)
        model, c = lm.model, lm.config.model
        if cell is not None and cell != c.model:
            raise LmlabError(f"--cell {cell} disagrees with the checkpoint's model {c.model}",
                             checkpoint)
        for flag, given, have in (("--hidden", hidden, c.hidden), ("--layers", layers, c.layers),
                                  ("--residual", residual, c.residual)):
            if given is not None and given != have:
                raise LmlabError(f"{flag} {given} disagrees with the checkpoint's {have} (sizes "
                                 "come from the checkpoint)", checkpoint)
        vocab, ids = load_text_ids(text, lm.vocab)
        source = {"checkpoint": os.fspath(checkpoint), "epoch": lm.meta.get("epoch"),
                  "step": lm.meta.get("step")}
    else:
        if cell is None:
            raise LmlabError("give --cell (or --checkpoint)")
        vocab, ids = load_text_ids(text)
        model = fresh_model(cell, len(vocab), hidden=hidden or 64, layers=layers or 1,
                            residual=bool(residual), seed=seed)
        source = {"fresh": True, "seed": seed, "init_range": model.config.init_range}
    inputs, targets = sample_batch(ids, seq_len, sequences, seed)
    report = analyse(model, inputs, targets, spectral_radius=spectral_radius,
                     n_targets=n_targets)
    report = {"source": source, "text": os.fspath(text), **report}
    write_report(report, out)
    return report
