"""``lmlab ablate``: the LSTM-variant ablation study on a corpus or on the synthetic long-range
language.

Only the argument parser is built at import time (no torch); :mod:`lmlab.analysis.ablation` is
imported when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmlab.neural.cli import LSTM_VARIANTS as VARIANTS  # = cells.VARIANTS, torch-free

# The synthetic long-range study: a key, d - 1 random fillers, then the value the key determines.
# Small enough for the default budget on 2 CPU cores; its entropy floor is exact.
SYNTH_SENTENCES = {"train": 8000, "valid": 500, "test": 500}
SYNTH_STUDY = {"emsize": 32, "hidden": 64, "epochs": 10, "bptt": 50, "batch_size": 16,
               "lr": 0.005}


# StudyConfig's defaults, for --help without importing torch (a test checks they agree).
STUDY_DEFAULTS = {"seeds": 3, "emsize": 128, "hidden": 128, "layers": 1, "epochs": 2, "bptt": 35,
                  "batch_size": 20, "optimizer": "adam", "lr": 0.002, "clip": 1.0,
                  "forget_bias": 0.0, "max_train_tokens": 0, "threads": 1, "jobs": 2}


def add_parser(sub) -> None:
    from lmlab.cli_base import add_command

    p = add_command(
        sub, "ablate", "lmlab ablate --data ptb --variants vanilla cifg nfg --seeds 3 "
        "-o runs/ablation",
        help="LSTM ablation study: Greff et al.'s variants x seeds, with t-tests",
        description="Train every LSTM variant (vanilla with peepholes, nig, nfg, nog, niaf, noaf, "
        "np, cifg, fgr) once per seed with one shared configuration and budget; write "
        "OUTPUT/results.json, OUTPUT/results.md and OUTPUT/ablation.png (mean ± std of "
        "perplexity, parameters, tokens/s, Welch's t-test against vanilla). Finished runs are not "
        "redone; an interrupted one resumes from its checkpoint in OUTPUT/runs/. The default "
        "study (1x128, 2 epochs of PTB, 3 seeds, 2 runs at a time) takes under two hours on 2 CPU "
        "cores.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR",
                     help="folder with train.txt, valid.txt, test.txt, or the name of a corpus "
                     "under $LMLAB_DATA (e.g. ptb)")
    src.add_argument("--synthetic", action="store_true",
                     help="lmlab's synthetic long-range language (written to OUTPUT/data), where "
                     "the value token depends on the key --distance tokens earlier")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="study folder (created; an existing one is resumed)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, metavar="V",
                   help=f"variants to run (default all: {' '.join(VARIANTS)})")
    p.add_argument("--seeds", type=int, metavar="N",
                   help=f"seeds per variant, 1..N (default {STUDY_DEFAULTS['seeds']})")
    p.add_argument("--quick", action="store_true",
                   help="a tiny study for tests: 2 seeds, 16 units, 1 epoch on 3,000 tokens")
    p.add_argument("--distance", type=int, default=10, metavar="D",
                   help="--synthetic: key-to-value distance")
    g = p.add_argument_group("shared configuration (--synthetic and --quick change the "
                             "defaults)")
    for flag, kind, metavar, text in (
            ("--emsize", int, "N", "embedding size"), ("--hidden", int, "N", "hidden units"),
            ("--layers", int, "N", "layers"), ("--epochs", int, "N", "epochs"),
            ("--bptt", int, "N", "truncated BPTT length"),
            ("--batch-size", int, "N", "batch size"), ("--lr", float, "LR", "learning rate"),
            ("--clip", float, "C", "gradient-norm clipping threshold, 0: off"),
            ("--forget-bias", float, "B", "added to the forget-gate bias at init"),
            ("--max-train-tokens", int, "N", "train on the first N tokens only, 0: all")):
        default = STUDY_DEFAULTS[flag[2:].replace("-", "_")]
        g.add_argument(flag, type=kind, metavar=metavar, help=f"{text} (default {default})")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"),
                   help=f"optimiser (default {STUDY_DEFAULTS['optimizer']})")
    r = p.add_argument_group("execution (may change when resuming)")
    r.add_argument("--jobs", type=int, metavar="N",
                   help=f"runs at a time, one process each (default {STUDY_DEFAULTS['jobs']})")
    r.add_argument("--threads", type=int, metavar="N",
                   help=f"torch threads per run (default {STUDY_DEFAULTS['threads']})")
    r.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing: summarise the runs finished so far")
    p.add_argument("--json", action="store_true", help="print results.json's per-variant rows")
    p.set_defaults(func=cmd_ablate)


def cmd_ablate(args) -> int:
    import json

    from lmlab.analysis.ablation import QUICK, StudyConfig, run_study

    values: dict = {}
    if args.synthetic:
        values.update(SYNTH_STUDY)
    if args.quick:
        values.update(QUICK)
    for name in ("seeds", "emsize", "hidden", "layers", "epochs", "bptt", "batch_size", "lr",
                 "clip", "forget_bias", "max_train_tokens", "optimizer", "jobs", "threads",
                 "device"):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.variants:
        values["variants"] = list(dict.fromkeys(args.variants))
    study = StudyConfig(**values)
    study.check()
    out = Path(args.output)
    extra: dict = {}
    if args.synthetic:  # (the corpus is written only when runs will read it)
        data, extra = _synthetic_data(out / "data", args.distance, quick=args.quick,
                                      write=not args.summary_only)
    else:
        from lmlab.datasets import data_folder

        data = str(data_folder(args.data))
    summary = run_study(data, out, study, log=lambda line: print(line, file=sys.stderr),
                        progress=sys.stderr.isatty(), extra=extra,
                        run=not args.summary_only)
    if args.json:
        print(json.dumps(summary["variants"], indent=1))
    else:
        print((out / "results.md").read_text(encoding="utf-8"), end="")
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'ablation.png'}")
    return 0


def _synthetic_data(folder: Path, distance: int, quick: bool, write: bool = True
                    ) -> tuple[str, dict]:
    """Write (once, if ``write``) the long-range corpus; return its folder and its entropy
    floor."""
    import math

    from lmlab.synth import LongRangeSource, write_splits

    source = LongRangeSource(distance=distance, n_keys=10, n_fillers=20, seed=0)
    sizes = {k: (v // 20 if quick else v) for k, v in SYNTH_SENTENCES.items()}
    if write and not all((folder / f"{split}.txt").exists() for split in sizes):
        write_splits(source, folder, sizes, seed=1)
    return str(folder), {"source": source.name, "distance": distance,
                         "entropy_floor_ppl": math.exp(source.entropy_nats())}
