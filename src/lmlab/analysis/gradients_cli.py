"""``lmlab gradients``: vanishing and exploding gradients of a recurrent LM on real text.

Only the argument parser is built at import time (no torch);
:mod:`lmlab.analysis.gradients_report` (which runs :mod:`lmlab.analysis.gradients`) is imported
when the command runs.
"""

from __future__ import annotations

import sys

CELLS = ("rnn_tanh", "rnn_relu", "irnn", "lstm", "gru")  # = recurrence.CELLS (a test checks)


def add_parser(sub) -> None:
    from lmlab.cli_base import STDIN_HELP, add_command

    p = add_command(
        sub, "gradients", "lmlab gradients --cell lstm --text valid.txt -o runs/gradients",
        help="measure vanishing/exploding gradients through time of an RNN LM",
        description="Measure ||dL_t/dh_k|| against the distance t-k on a batch of real text "
        "(per layer; LSTM also through the cell state), the exact norms of the Jacobian "
        "products and, for plain RNN cells, the bound (||W_hh||_2 max|sigma'|)^(t-k). Writes "
        "OUTPUT/gradients.json and OUTPUT/gradients.png.")
    p.add_argument("--cell", choices=CELLS,
                   help="recurrent cell of a fresh model (with --checkpoint: must match it)")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="analyse this trained model (cell and sizes come from it)")
    p.add_argument("--text", required=True, metavar="TEXT",
                   help=f"text to take the batch from (.gz ok; {STDIN_HELP})")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder (created)")
    p.add_argument("--spectral-radius", type=float, metavar="R",
                   help="rescale W_hh (each gate block for lstm/gru) to spectral radius R")
    p.add_argument("--residual", action="store_true", default=None,
                   help="fresh model: residual connections between layers")
    p.add_argument("--layers", type=int, metavar="N", help="fresh model: layers (default 1)")
    p.add_argument("--hidden", type=int, metavar="H",
                   help="fresh model: hidden units = embedding size (default 64)")
    p.add_argument("--seq-len", type=int, default=200, metavar="T",
                   help="steps per sequence (default 200, at most 400)")
    p.add_argument("--sequences", type=int, default=4, metavar="B",
                   help="sequences in the batch (default 4)")
    p.add_argument("--targets", type=int, default=4, metavar="N",
                   help="target positions t per sequence (default 4, the last one included)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fresh model and of the batch offsets (default 0)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch CPU threads, 0: torch's default (default 0)")
    p.set_defaults(func=cmd_gradients)


def cmd_gradients(args) -> int:
    from lmlab.errors import LmlabError

    for name in ("layers", "hidden"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise LmlabError(f"--{name} must be >= 1, got {value}")
    if args.threads < 0:
        raise LmlabError(f"--threads must be >= 0, got {args.threads}")
    if args.seed < 0:
        raise LmlabError(f"--seed must be >= 0, got {args.seed}")
    import torch

    from lmlab.analysis.gradients_report import run

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(cell=args.cell, text=args.text, out=args.output, checkpoint=args.checkpoint,
                 spectral_radius=args.spectral_radius, residual=args.residual,
                 layers=args.layers, hidden=args.hidden, seq_len=args.seq_len, seed=args.seed,
                 sequences=args.sequences, n_targets=args.targets)
    first = report["per_layer"][0]
    rate = report["decay_rate"]
    jrate = report["jacobian_decay_rate"]
    line = (f"{report['cell']}{' residual' if report['residual'] else ''} "
            f"{report['num_layers']}x{report['hidden']}: gradient decay rate "
            f"{_fmt(rate)} nats/step (layer 1), Jacobian-product rate {_fmt(jrate)}")
    if first.get("bound_log_rate") is not None:
        line += (f", bound rate ln(β_W β_h) = {first['bound_log_rate']:+.4f} (β_W "
                 f"{first['beta_W']:.3f}, β_h {first['beta_h']:.3f}; "
                 f"{first['bound_violations']} violations)")
    print(line)
    print(f"wrote {args.output}/gradients.json and {args.output}/gradients.png",
          file=sys.stderr)
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"
