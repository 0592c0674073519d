"""``lmlab ablate``: the LSTM-variant ablation study on a corpus or on the synthetic long-range
language.

Only the argument parser is built at import time (no torch); :mod:`lmlab.analysis.ablation` is
imported when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmlab.errors import LmlabError

VARIANTS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")  # = cells.VARIANTS

# The synthetic long-range study: a key, d - 1 random fillers, then the value the key determines.
# Small enough for the default budget on 2 CPU cores; its entropy floor is exact.
SYNTH_SENTENCES = {"train": 8000, "valid": 500, "test": 500}
SYNTH_STUDY = {"emsize": 32, "hidden": 64, "epochs": 10, "bptt": 50, "batch_size": 16,
               "lr": 0.005}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ablate", help="LSTM ablation study: Greff et al.'s variants x seeds, with t-tests",
        description="Train every LSTM variant (vanilla with peepholes, nig, nfg, nog, niaf, noaf, "
        "np, cifg, fgr) once per seed with one shared configuration and budget; write "
        "OUT/results.json, OUT/results.md and OUT/ablation.png (mean ± std of perplexity, "
        "parameters, tokens/s, Welch's t-test against vanilla). Finished runs are not redone; an "
        "interrupted one resumes from its checkpoint in OUT/runs/. The default study (1x128, 2 "
        "epochs of PTB, 3 seeds, 2 runs at a time) takes under two hours on 2 CPU cores.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="folder with train.txt, valid.txt, test.txt")
    src.add_argument("--synthetic", action="store_true",
                     help="lmlab's synthetic long-range language (written to OUT/data), where the "
                     "value token depends on the key --distance tokens earlier")
    p.add_argument("--out", required=True, metavar="DIR", help="study folder (created)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, metavar="V",
                   help=f"variants to run (default all: {' '.join(VARIANTS)})")
    p.add_argument("--seeds", type=int, help="seeds per variant (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny study for tests: 2 seeds, 16 units, 1 epoch on 3,000 tokens")
    p.add_argument("--distance", type=int, default=10, metavar="D",
                   help="--synthetic: key-to-value distance (default 10)")
    g = p.add_argument_group("shared configuration (defaults: see the description)")
    for flag, kind in (("--emsize", int), ("--hidden", int), ("--layers", int),
                       ("--epochs", int), ("--bptt", int), ("--batch-size", int),
                       ("--lr", float), ("--clip", float), ("--forget-bias", float),
                       ("--max-train-tokens", int)):
        g.add_argument(flag, type=kind)
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    r = p.add_argument_group("execution (may change when resuming)")
    r.add_argument("--jobs", type=int, help="runs at a time, one process each (default 2)")
    r.add_argument("--threads", type=int, help="torch threads per run (default 1)")
    r.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
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
    out = Path(args.out)
    extra: dict = {}
    data = args.data
    if args.synthetic:
        data, extra = _synthetic_data(out / "data", args.distance, quick=args.quick)
    elif not Path(data).is_dir():
        raise LmlabError("no such data directory", data)
    summary = run_study(data, out, study, log=lambda line: print(line, file=sys.stderr),
                        progress=sys.stderr.isatty(), extra=extra,
                        run=not args.summary_only)
    if args.json:
        print(json.dumps(summary["variants"], indent=1))
    else:
        print((out / "results.md").read_text(encoding="utf-8"), end="")
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'ablation.png'}")
    return 0


def _synthetic_data(folder: Path, distance: int, quick: bool) -> tuple[str, dict]:
    """Write (once) the long-range corpus; return its folder and its entropy floor."""
    import math

    from lmlab.synth import LongRangeSource, write_splits

    source = LongRangeSource(distance=distance, n_keys=10, n_fillers=20, seed=0)
    sizes = {k: (v // 20 if quick else v) for k, v in SYNTH_SENTENCES.items()}
    if not all((folder / f"{split}.txt").exists() for split in sizes):
        write_splits(source, folder, sizes, seed=1)
    return str(folder), {"source": source.name, "distance": distance,
                         "entropy_floor_ppl": math.exp(source.entropy_nats())}
