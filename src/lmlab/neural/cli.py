"""``lmlab train MODEL --data DIR -o CKPT``: train a neural language model.

This module only builds the argument parser at import time (no torch), so registering the command
costs n-gram users nothing; torch is imported when the command runs.

Options come from, lowest priority first: the defaults of :class:`RunConfig`, ``--config FILE.toml``
(sections ``[model]`` and ``[train]``), then the flags given. With ``--resume`` the checkpoint's own
configuration is the base instead of the defaults; a flag or file value that would change it is an
error, except ``--epochs``, ``--device``, ``--threads``, ``--early-stop``, ``--checkpoint-every``,
``--max-nan-retries``, ``--eval-every``, ``--max-steps`` and ``--compile``. A flag not given keeps
the checkpoint's value (``--max-steps`` too), and the run says in one line what it resumed with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lmlab.cli_base import add_tokenizer_options, tokenizer_of
from lmlab.errors import LmlabError
from lmlab.fileio import json_safe
from lmlab.neural.config import MODEL_TYPES, OPTIMIZERS, VARIANTS, RunConfig, flag_name

LSTM_VARIANTS = VARIANTS  # (the name the ablation's parser imports)
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
    "eval_every": ("train", "eval_every"), "max_steps": ("train", "max_steps"),
    "compile": ("train", "compile"),
}


def add_train_parser(sub) -> None:
    from lmlab.cli_base import add_command

    defaults = RunConfig()

    def dflt(section: str, key: str) -> str:
        value = getattr(getattr(defaults, section), key)
        if isinstance(value, bool):
            value = "on" if value else "off"
        return f"(default {value})"

    t = add_command(sub, "train", "lmlab train lstm --data ptb --layers 2 --hidden 200 "
                    "--epochs 13 -o runs/lstm.pt",
                    help="train a neural language model (nnlm, rnn, lstm, gru)",
                    description="Train a neural LM on DIR/train.txt, validate on valid.txt each "
                    "epoch and report test.txt perplexity (same protocol as n-gram models). "
                    "Options come from the defaults shown, then --config FILE.toml, then the "
                    "flags given; --resume continues with the checkpoint's own options.")
    t.add_argument("model", choices=MODEL_TYPES, help="model type (irnn = rnn_relu with "
                   "identity init)")
    t.add_argument("--data", required=True, metavar="DIR",
                   help="folder with train.txt, valid.txt and (optional) test.txt, or the name "
                   "of a corpus under $LMLAB_DATA (e.g. ptb)")
    t.add_argument("-o", "--output", required=True, metavar="CKPT", help="checkpoint to write")
    t.add_argument("--config", metavar="FILE.toml", help="run configuration ([model], [train])")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    t.add_argument("--max-steps", type=int, metavar="N",
                   help="stop (with a resumable checkpoint) after N optimiser steps in total; "
                   "kept by --resume (default 0: no limit)")
    t.add_argument("--json", action="store_true", help="print the final report as JSON")
    t.add_argument("--ddp", type=int, metavar="N",
                   help="train in N processes on this machine with DistributedDataParallel "
                   "(started through torchrun's launcher; gloo on CPU, NCCL with one GPU per "
                   "process); --batch-size stays the global batch; 1: one process as without "
                   "it (see docs/distributed.md)")
    add_tokenizer_options(t)
    m = t.add_argument_group("model")
    m.add_argument("--emsize", type=int, metavar="N",
                   help=f"embedding size {dflt('model', 'emsize')}")
    m.add_argument("--hidden", type=int, metavar="N",
                   help=f"hidden units per layer {dflt('model', 'hidden')}")
    m.add_argument("--layers", type=int, metavar="N", help=f"layers {dflt('model', 'layers')}")
    m.add_argument("--dropout", type=float, metavar="P",
                   help=f"dropout on embeddings, between layers and before the softmax "
                   f"{dflt('model', 'dropout')}")
    m.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help=f"share the input embeddings and the softmax matrix (needs --emsize == "
                   f"--hidden) {dflt('model', 'tied')}")
    m.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help=f"residual connections between layers {dflt('model', 'residual')}")
    m.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                   help=f"ELMo-style forward + backward LM {dflt('model', 'bidirectional')}")
    m.add_argument("--window", type=int, metavar="N",
                   help=f"nnlm: previous words seen {dflt('model', 'window')}")
    m.add_argument("--direct", action=argparse.BooleanOptionalAction, default=None,
                   help=f"nnlm: direct embedding-to-output connections "
                   f"{dflt('model', 'direct')}")
    m.add_argument("--init-range", type=float, metavar="R",
                   help=f"uniform(-R, R) weight initialisation {dflt('model', 'init_range')}")
    m.add_argument("--variant", choices=LSTM_VARIANTS,
                   help="lstm: Greff et al. variant, run by lmlab's own cells (default: none, "
                   "the fused torch.nn.LSTM)")
    m.add_argument("--forget-bias", type=float, metavar="B",
                   help=f"lstm: added to the forget-gate bias at init "
                   f"{dflt('model', 'forget_bias')}")
    o = t.add_argument_group("training")
    o.add_argument("--epochs", type=int, metavar="N", help=f"epochs {dflt('train', 'epochs')}")
    o.add_argument("--bptt", type=int, metavar="N",
                   help=f"truncated BPTT length (nnlm: tokens per batch row) "
                   f"{dflt('train', 'bptt')}")
    o.add_argument("--batch-size", type=int, metavar="N",
                   help=f"batch size {dflt('train', 'batch_size')}")
    o.add_argument("--lr", type=float, metavar="LR",
                   help=f"learning rate {dflt('train', 'lr')}")
    o.add_argument("--optimizer", choices=OPTIMIZERS,
                   help=f"optimiser {dflt('train', 'optimizer')}")
    o.add_argument("--weight-decay", type=float, metavar="W",
                   help=f"L2 weight decay {dflt('train', 'weight_decay')}")
    o.add_argument("--lr-decay", type=float, metavar="F",
                   help=f"multiply the learning rate by F when it decays "
                   f"{dflt('train', 'lr_decay')}")
    o.add_argument("--decay-start", type=int, metavar="E",
                   help=f"decay the lr after every epoch >= E, 0: on plateau only "
                   f"{dflt('train', 'decay_start')}")
    o.add_argument("--plateau-patience", type=int, metavar="N",
                   help=f"decay when validation has not improved for N epochs "
                   f"{dflt('train', 'plateau_patience')}")
    o.add_argument("--early-stop", type=int, metavar="N",
                   help=f"stop after N epochs without improvement, 0: never "
                   f"{dflt('train', 'early_stop')}")
    o.add_argument("--clip", type=float, metavar="C",
                   help=f"gradient-norm clipping threshold, 0: off {dflt('train', 'clip')}")
    o.add_argument("--max-nan-retries", type=int, metavar="N",
                   help=f"on NaN/Inf: roll back and lower the lr, at most N times "
                   f"{dflt('train', 'max_nan_retries')}")
    o.add_argument("--nan-lr-factor", type=float, metavar="F",
                   help=f"lr factor after a NaN/Inf {dflt('train', 'nan_lr_factor')}")
    o.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help=f"also save every STEPS steps, 0: once per epoch "
                   f"{dflt('train', 'checkpoint_every')}")
    o.add_argument("--eval-every", type=int, metavar="N",
                   help="validate every N steps (default 0: at epoch ends and at the end)")
    o.add_argument("--seed", type=int, help=f"random seed {dflt('train', 'seed')}")
    o.add_argument("--device", help=f"auto (cuda if available, else cpu), cpu, cuda, cuda:N "
                   f"(not with --ddp: each process takes its own GPU; CUDA_VISIBLE_DEVICES "
                   f"chooses them) {dflt('train', 'device')}")
    o.add_argument("--threads", type=int, metavar="N",
                   help=f"torch CPU threads (per process with --ddp), 0: torch's default (with "
                   f"--ddp N: cores / N) {dflt('train', 'threads')}")
    o.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the LSTM variant cell's step (other models: the whole "
                   "model); the first step's compile time is logged, and any failure falls back "
                   f"to eager with one warning {dflt('train', 'compile')}")
    t.set_defaults(func=cmd_train)


# flags of one model type (given on the command line, not a --config file's)
MODEL_FLAGS = {"window": "nnlm", "direct": "nnlm", "forget_bias": "lstm"}


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


def resume_summary(saved: RunConfig, config: RunConfig) -> str:
    """One line saying what a resumed run runs with: the options of the checkpoint's run that
    differ from the defaults, and those this command changes (old -> new)."""
    default, old, new = RunConfig().to_dict(), saved.to_dict(), config.to_dict()
    kept, changed = [], []
    for section, key in FLAGS.values():
        if old[section][key] != default[section][key]:
            kept.append(_as_flag(key, old[section][key]))
        if new[section][key] != old[section][key]:
            changed.append(f"{_as_flag(key)} {old[section][key]} -> {new[section][key]}")
    line = f"resumed with {' '.join(kept) if kept else 'the default options'}"
    return line + (f"; changed here: {', '.join(changed)}" if changed else "")


def _as_flag(key: str, value=None) -> str:
    """``--key VALUE`` (``--key``/``--no-key`` for a switch); ``--key`` when no value."""
    flag = flag_name(key)
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return flag if value is None else f"{flag} {value}"


def cmd_train(args) -> int:
    from lmlab.neural.distributed import EXIT_PEER_LOST

    base = None
    if args.resume and args.tokenizer is None and args.subword_vocab_size is not None:
        raise LmlabError("a resumed run keeps its tokenizer: --vocab-size goes with --tokenizer "
                         "(and must then match the run's)")
    tokenizer = tokenizer_of(args)
    if args.resume:
        from lmlab.neural.checkpoint import load_checkpoint
        from lmlab.tokenizers import tokenizer_from_spec

        saved = load_checkpoint(args.output)
        base = RunConfig.from_dict(saved["config"], args.output)
        if args.tokenizer is None:  # the run's own (a trained subword model included)
            tokenizer = tokenizer_from_spec(saved.get("tokenizer"), args.output)
    config = build_config(args, base)
    from lmlab.neural.trainer import check_train_options

    check_train_options(config)  # before reading the data: a typo fails at once
    for dest, owner in MODEL_FLAGS.items():  # (a flag for another model type did nothing)
        if getattr(args, dest, None) is not None and config.model.model != owner:
            raise LmlabError(f"{flag_name(dest)} applies to {owner} only, not "
                             f"{config.model.model}")
    if args.ddp is not None and args.ddp != 1:
        return launch_ddp(args, config, saved if args.resume else None)
    from lmlab.neural.distributed import session

    with session(config.train.device) as dist:  # started by torchrun: one rank of N
        try:
            return _run(args, config, base, tokenizer, dist)
        except RuntimeError as err:
            if dist is None or not peer_lost(err):
                raise
            # a one-line note instead of gloo's or NCCL's traceback (the launcher says which
            # rank failed), then out at once: tearing down a broken process group can abort
            print("lmlab: error: stopped: another rank of the job is gone", file=sys.stderr,
                  flush=True)
            os._exit(EXIT_PEER_LOST)


def peer_lost(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective failing because a peer process went away: NCCL and the
    process group raise torch.distributed's ``DistError``; gloo's transport a plain RuntimeError
    naming its connection (other errors keep their traceback: they may be bugs)."""
    import torch.distributed as tdist

    text = str(err)
    return isinstance(err, tdist.DistError) or ("gloo/transport" in text and any(
        s in text for s in ("Connection reset", "Connection closed", "Broken pipe")))


def _run(args, config: RunConfig, base: RunConfig | None, tokenizer, dist) -> int:
    """Train (one process, or rank ``dist.rank`` of a data-parallel run) and report."""
    from lmlab.datasets import data_folder
    from lmlab.neural.data import load_corpus
    from lmlab.neural.trainer import Trainer, TrainingInterrupted, validation_point

    say = (lambda line: print(line, file=sys.stderr)) if dist is None or dist.main else None
    corpus = load_corpus(data_folder(args.data), tokenizer=tokenizer)
    trainer = Trainer(config, corpus, args.output, resume=args.resume, overwrite=args.overwrite,
                      progress=sys.stderr.isatty(), log=say, dist=dist,
                      process_settings=True)  # a program of its own: threads, heap, cuDNN
    try:
        m = trainer.config.model
        n_params = sum(p.numel() for p in trainer.model.parameters())
        ranks = "" if dist is None else \
            f" ({dist.world} DDP processes, {trainer.rows} batch rows each)"
        if say:
            say(f"{'resuming' if args.resume else 'training'} {m.model}: {n_params:,} "
                f"parameters, vocabulary {len(corpus.vocab)}, {len(corpus.train)} training "
                f"tokens, {len(trainer.windows)} batches/epoch, device {trainer.device}{ranks}")
        if base is not None and say:
            say(resume_summary(base, trainer.config))
        start = trainer.step
        try:
            result = trainer.train()  # (--max-steps is in the configuration)
        except TrainingInterrupted as stop:
            if say:
                print(f"lmlab: {stop}", file=sys.stderr)
            return 130
        if result.status == "max_steps" and result.step == start and args.resume and say:
            print(f"lmlab: the run is at its --max-steps {trainer.config.train.max_steps} "
                  "already; give a larger --max-steps (0: no limit) to train on",
                  file=sys.stderr)
        test = trainer.evaluate_test()
    finally:
        trainer.close()
    if not say:
        return 0  # (rank 0 reports)
    valid = result.valid  # the last validation: at the end of the run
    report = {"checkpoint": args.output, "status": result.status, "epochs": result.epoch,
              "steps": result.step, "valid_ppl": valid["valid_ppl"] if valid else None,
              "valid_step": valid["step"] if valid else None,
              "valid_epoch": valid["epoch"] if valid else None,
              "best_valid_ppl": result.best_valid_ppl,
              "best_valid_epoch": result.best_valid_epoch, "test": test}
    if args.json:
        print(json.dumps(json_safe(report), allow_nan=False))
        return 0
    print(f"{result.status}: {result.epoch} epoch(s), {result.step} steps; checkpoint "
          f"{args.output}")
    if valid is not None:
        best = "" if result.best_valid_ppl is None else \
            f"; best {result.best_valid_ppl:.4f} at epoch {result.best_valid_epoch}"
        print(f"valid perplexity {valid['valid_ppl']:.4f} {validation_point(valid)}{best}")
    if test is not None:
        print(f"test perplexity  {test['perplexity']:.4f} ({test['tokens']} tokens, "
              f"{test['oov']} OOV; excluding OOV {test['perplexity_excl_oov']:.4f})")
    return 0


def launch_ddp(args, config: RunConfig, saved: dict | None) -> int:
    """``--ddp N``: check what can be checked here (so a mistake is one line, not N), then start
    N workers through torchrun's launcher (:func:`lmlab.neural.distributed.launch`); ``saved``:
    the checkpoint a resume continues."""
    from lmlab.datasets import data_folder
    from lmlab.fileio import check_not_overwriting, check_output_path
    from lmlab.neural.data import split_paths
    from lmlab.neural.distributed import check_launch, check_rows, launch, strip_ddp
    from lmlab.neural.resume import check_new_run, resume_config
    from lmlab.neural.run_files import sidecar_paths

    check_launch(config.train.device, args.ddp)
    check_rows(config.train.batch_size, args.ddp)
    splits = split_paths(data_folder(args.data))
    check_output_path(args.output)
    # (what each rank's Trainer checks too, said here once instead of by every rank)
    check_not_overwriting([args.output, *sidecar_paths(args.output).values()], splits.values())
    if saved is not None:
        resume_config(saved, config, args.output)
    else:
        check_new_run(args.output, args.overwrite)
    return launch(strip_ddp(args.argv), args.ddp, args.output, config.train.threads)
