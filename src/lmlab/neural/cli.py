"""``lmlab train MODEL --data DIR --out CKPT``: train a neural language model.

This module only builds the argument parser at import time (no torch), so registering the command
costs n-gram users nothing; torch is imported when the command runs.

Options come from, lowest priority first: the defaults of :class:`RunConfig`, ``--config FILE.toml``
(sections ``[model]`` and ``[train]``), then the flags given. With ``--resume`` the checkpoint's own
configuration is the base instead of the defaults; a flag or file value that would change it is an
error, except ``--epochs``, ``--device``, ``--threads``, ``--early-stop``, ``--checkpoint-every``,
``--max-nan-retries``.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmlab.errors import LmlabError
from lmlab.fileio import json_safe
from lmlab.neural.config import MODEL_TYPES, OPTIMIZERS, RunConfig

# flag dest -> (section, field)
FLAGS = {
    "emsize": ("model", "emsize"), "hidden": ("model", "hidden"), "layers": ("model", "layers"),
    "dropout": ("model", "dropout"), "tied": ("model", "tied"),
    "residual": ("model", "residual"), "bidirectional": ("model", "bidirectional"),
    "window": ("model", "window"), "direct": ("model", "direct"),
    "init_range": ("model", "init_range"), "variant": ("model", "variant"),
    "forget_bias": ("model", "forget_bias"),
    "epochs": ("train", "epochs"), "bptt": ("train", "bptt"),
    "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "optimizer": ("train", "optimizer"), "weight_decay": ("train", "weight_decay"),
    "lr_decay": ("train", "lr_decay"), "decay_start": ("train", "decay_start"),
    "plateau_patience": ("train", "plateau_patience"), "early_stop": ("train", "early_stop"),
    "clip": ("train", "clip"), "max_nan_retries": ("train", "max_nan_retries"),
    "nan_lr_factor": ("train", "nan_lr_factor"),
    "checkpoint_every": ("train", "checkpoint_every"), "seed": ("train", "seed"),
    "device": ("train", "device"), "threads": ("train", "threads"),
}


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a neural language model (nnlm, rnn, lstm, gru)",
                       description="Train a neural LM on DIR/train.txt, validate on valid.txt each "
                       "epoch and report test.txt perplexity (same protocol as n-gram models).")
    t.add_argument("model", choices=MODEL_TYPES, help="irnn = rnn_relu with identity init")
    t.add_argument("--data", required=True, metavar="DIR",
                   help="folder with train.txt, valid.txt and (optional) test.txt")
    t.add_argument("--out", "-o", required=True, metavar="CKPT", help="checkpoint to write")
    t.add_argument("--config", metavar="FILE.toml", help="run configuration ([model], [train])")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--max-steps", type=int, metavar="N",
                   help="stop (with a resumable checkpoint) after N optimiser steps in total")
    t.add_argument("--json", action="store_true", help="print the final report as JSON")
    m = t.add_argument_group("model")
    m.add_argument("--emsize", type=int)
    m.add_argument("--hidden", type=int)
    m.add_argument("--layers", type=int)
    m.add_argument("--dropout", type=float)
    m.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None)
    m.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None)
    m.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None)
    m.add_argument("--window", type=int, help="nnlm: previous words seen")
    m.add_argument("--direct", action=argparse.BooleanOptionalAction, default=None,
                   help="nnlm: direct embedding-to-output connections")
    m.add_argument("--init-range", type=float)
    m.add_argument("--variant", help="lstm: Greff et al. variant")
    m.add_argument("--forget-bias", type=float)
    o = t.add_argument_group("training")
    o.add_argument("--epochs", type=int)
    o.add_argument("--bptt", type=int)
    o.add_argument("--batch-size", type=int)
    o.add_argument("--lr", type=float)
    o.add_argument("--optimizer", choices=OPTIMIZERS)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--lr-decay", type=float)
    o.add_argument("--decay-start", type=int,
                   help="decay the lr after every epoch >= this (0: on plateau only)")
    o.add_argument("--plateau-patience", type=int)
    o.add_argument("--early-stop", type=int, help="stop after N epochs without improvement")
    o.add_argument("--clip", type=float, help="gradient-norm clipping threshold (0: off)")
    o.add_argument("--max-nan-retries", type=int)
    o.add_argument("--nan-lr-factor", type=float)
    o.add_argument("--checkpoint-every", type=int, metavar="STEPS")
    o.add_argument("--seed", type=int)
    o.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    o.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    t.set_defaults(func=cmd_train)


def build_config(args, base: RunConfig | None = None) -> RunConfig:
    """Defaults (or ``base``) < ``--config`` file < flags < the positional model type."""
    config = base or RunConfig()
    d = config.to_dict()
    if args.config:
        try:
            from_file = RunConfig.from_toml(args.config)
        except (TypeError, AttributeError, ValueError) as err:
            if isinstance(err, LmlabError):
                raise
            raise LmlabError(f"invalid configuration ({err})", args.config) from None
        import tomllib
        from pathlib import Path

        given = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        file_dict = from_file.to_dict()
        for section in ("model", "train"):
            for key in given.get(section, {}):
                d[section][key] = file_dict[section][key]
    for dest, (section, key) in FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            d[section][key] = value
    d["model"]["model"] = args.model
    return RunConfig.from_dict(d, args.config or "config")


def cmd_train(args) -> int:
    from lmlab.neural.data import load_corpus

    if args.max_steps is not None and args.max_steps < 0:
        raise LmlabError(f"--max-steps must be >= 0, got {args.max_steps}")
    base = None
    if args.resume:
        from lmlab.neural.checkpoint import load_checkpoint

        base = RunConfig.from_dict(load_checkpoint(args.out)["config"], args.out)
    config = build_config(args, base)
    from lmlab.neural.trainer import Trainer, TrainingInterrupted, check_train_options

    check_train_options(config)  # before reading the data: a typo fails at once
    if config.train.threads:
        import torch

        torch.set_num_threads(config.train.threads)
    corpus = load_corpus(args.data)
    trainer = Trainer(config, corpus, args.out, resume=args.resume, overwrite=args.overwrite,
                      progress=sys.stderr.isatty(), log=lambda line: print(line, file=sys.stderr))
    try:
        m = trainer.config.model
        n_params = sum(p.numel() for p in trainer.model.parameters())
        print(f"{'resuming' if args.resume else 'training'} {m.model}: {n_params:,} parameters, "
              f"vocabulary {len(corpus.vocab)}, {len(corpus.train)} training tokens, "
              f"{len(trainer.windows)} batches/epoch, device {trainer.device}", file=sys.stderr)
        try:
            result = trainer.train(max_steps=args.max_steps)
        except TrainingInterrupted as stop:
            print(f"lmlab: {stop}", file=sys.stderr)
            return 130
        test = trainer.evaluate_test()
    finally:
        trainer.close()
    report = {"checkpoint": args.out, "status": result.status, "epochs": result.epoch,
              "steps": result.step, "best_valid_ppl": result.best_valid_ppl,
              "valid_ppl": result.epochs[-1]["valid_ppl"] if result.epochs else None,
              "test": test}
    if args.json:
        print(json.dumps(json_safe(report), allow_nan=False))
        return 0
    print(f"{result.status}: {result.epoch} epoch(s), {result.step} steps; checkpoint "
          f"{args.out}")
    if report["valid_ppl"] is not None:
        print(f"valid perplexity {report['valid_ppl']:.4f} (best {result.best_valid_ppl:.4f})")
    if test is not None:
        print(f"test perplexity  {test['perplexity']:.4f} ({test['tokens']} tokens, "
              f"{test['oov']} OOV; excluding OOV {test['perplexity_excl_oov']:.4f})")
    return 0
