"""Figures lmlab writes: drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch, no display needed), saved atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from lmlab.fileio import atomic_output


def _moving_average(values: Sequence[float], width: int) -> list[float]:
    out, total, window = [], 0.0, []
    for v in values:
        window.append(v)
        total += v
        if len(window) > width:
            total -= window.pop(0)
        out.append(total / len(window))
    return out


def _positive(y) -> bool:
    return isinstance(y, int | float) and math.isfinite(y) and y > 0


def learning_curve(epochs: Sequence[dict], step_loss: Sequence[float],
                   path: str | os.PathLike, title: str | None = None,
                   valid: Sequence[dict] | None = None) -> None:
    """PNG with train/valid perplexity per epoch (left, log scale) and the training loss of every
    step with its moving average (right). ``epochs``: dicts with ``epoch``, ``train_ppl``,
    ``valid_ppl``. ``valid``: every validation, dicts with ``step``, ``epoch`` (epochs done, a
    fraction between epoch ends) and ``valid_ppl``; when given, the validation perplexities are
    drawn from it (left, at their epoch) and their loss, ln(perplexity), at their step (right),
    so a run shorter than an epoch has its validation point too."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for key, label, style, records in (("train_ppl", "train", "o-", epochs),
                                       ("valid_ppl", "valid", "s-", valid or epochs)):
        pts = [(r["epoch"], r.get(key)) for r in records if _positive(r.get(key))]
        if pts:
            left.plot(*zip(*pts, strict=True), style, label=label)
    valid_pts = [(r["step"], math.log(r["valid_ppl"])) for r in valid or []
                 if _positive(r.get("valid_ppl"))]
    if any(left.get_lines()):
        left.set_yscale("log")
        left.legend()
    left.set_xlabel("epoch")
    left.set_ylabel("perplexity")
    left.grid(True, which="both", alpha=0.3)

    finite = [(i + 1, v) for i, v in enumerate(step_loss) if math.isfinite(v)]
    if finite:
        steps, losses = zip(*finite, strict=True)
        right.plot(steps, losses, lw=0.5, alpha=0.4, label="step")
        width = max(1, len(losses) // 50)
        if width > 1:
            right.plot(steps, _moving_average(losses, width), lw=1.5,
                       label=f"mean of {width}")
    if valid_pts:
        right.plot(*zip(*valid_pts, strict=True), "s", color="C3", label="valid")
    if finite or valid_pts:
        right.legend()
    right.set_xlabel("step")
    right.set_ylabel("loss (nats/token)")
    right.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.88 if title else 0.95,
                        wspace=0.25)  # fixed: tight_layout costs more than drawing
    with atomic_output(path, "wb") as f:
        fig.savefig(f, format="png")
