"""Out-of-core n-gram estimation at scale: ``lmlab ngram train --memory`` against ``lmplz -S``.

The corpus is regenerated, not downloaded: ``lmlab data synthesize`` samples it from an MKN 5-gram
of WikiText-2 (``--tokens 100M --seed 1``; held-out text: ``--tokens 1M --seed 2``). KenLM's
tools refuse a literal ``<unk>``, so both estimators read copies with ``<unk>`` -> ``UNK``. Text
sampled from a smoothed model has no word after only one other (every unigram's adjusted count is
at least 2), so the unigram discounts are undefined: ``lmplz`` runs with ``--discount_fallback``,
and lmlab falls back to the same values (with a warning), as it always does.

Measured, each in its own process (wall time and peak RSS from ``wait4``): the out-of-core build
of an MKN 5-gram within ``--memory`` and ``lmplz -o 5 -S`` with the same budget; then the
held-out perplexity of both models (lmlab's own scorer on its model, KenLM's ``query`` on the
ARPA file lmplz wrote). Prints a table and writes JSON.

    python benchmarks/ngram_scale.py --tokens 100M --memory 1G --work /big/disk/folder
    python benchmarks/ngram_scale.py --tokens 10M --memory 1G         # a quick run
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ngram_vs_peers import find_kenlm_bins, run_measured, run_query, tail  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RSS = 1.3  # x the --memory budget
TARGET_TIME = 1.2  # x lmplz's wall time
TARGET_PPL = 1e-4  # relative


def say(msg: str = "") -> None:
    print(msg, flush=True)


def lmlab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmlab", *args]


def synthesize(work: Path, name: str, tokens: str, seed: int, source: Path | None) -> Path:
    """The corpus (``<unk>`` as ``UNK``), generated once and kept in ``work``."""
    out = work / f"{name}.txt"
    if not out.exists():
        raw = work / f"{name}.raw.txt"
        cmd = lmlab_cmd("data", "synthesize", "-o", str(raw), "--tokens", tokens, "--seed",
                        str(seed))
        if source:
            cmd += ["--model", str(source)]
        say(f"  {' '.join(cmd[2:])}")
        subprocess.run(cmd, check=True)
        with open(raw, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
            for line in f:
                g.write(line.replace("<unk>", "UNK"))
        raw.unlink()
    return out


def perplexity_lmlab(model: Path, text: Path, work: Path) -> dict:
    code = ("import json, sys, time; from lmlab.models import load_model; "
            "from lmlab.metrics import evaluate_file; t = time.perf_counter(); "
            "r = evaluate_file(load_model(sys.argv[1]), sys.argv[2]); "
            "print(json.dumps({'perplexity': r.perplexity, 'tokens': r.tokens, 'oov': r.oov, "
            "'wall_s': time.perf_counter() - t}))")
    res = run_measured([sys.executable, "-c", code, str(model), str(text)], work / "ppl.out",
                       work / "ppl.err")
    if res["rc"] != 0:
        raise RuntimeError(f"lmlab scoring failed:\n{tail(work / 'ppl.err')}")
    return {**json.loads((work / "ppl.out").read_text()), "peak_rss_kb": res["maxrss_kb"]}


def build(name: str, cmd: list[str], work: Path, reuse: bool) -> dict:
    """Run one build measured (or reuse the last run's numbers with ``--reuse``)."""
    record = work / f"{name}.rusage.json"
    if reuse and record.exists():
        say(f"{name}: reusing {record}")
        return json.loads(record.read_text())
    say(f"{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))} ...")
    res = run_measured(cmd, work / f"{name}.out", work / f"{name}.err")
    if res["rc"] != 0:
        raise RuntimeError(f"{name} failed:\n{tail(work / f'{name}.err')}")
    return res


def same_members(a: Path, b: Path) -> bool:
    """Whether two model files hold the same arrays: every member's size and CRC-32 (the zip's
    own record of its bytes) match; the members' timestamps may differ."""
    import zipfile

    def members(path: Path) -> dict:
        with zipfile.ZipFile(path) as z:
            return {i.filename: (i.file_size, i.CRC) for i in z.infolist()}

    return members(a) == members(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="100M", help="corpus size (lmlab data synthesize)")
    ap.add_argument("--memory", default="1G", help="budget for both (--memory, lmplz -S)")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmlab-scale"),
                    help="folder for the corpus, scratch files and models (needs ~25x the "
                    "corpus's size free)")
    ap.add_argument("--source", type=Path, help="model to sample from (default: lmlab's)")
    ap.add_argument("--keep", action="store_true", help="keep the models")
    ap.add_argument("--cluster", metavar="SPEC",
                    help="also build with --cluster SPEC (e.g. local:2) and compare")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the builds a previous run left in --work (with --keep)")
    ap.add_argument("--json", type=Path, help="write results here (default: benchmarks/results/"
                    "ngram_scale_<tokens>.json)")
    args = ap.parse_args()
    bins = find_kenlm_bins()
    if bins is None:
        say("KenLM's lmplz/query not found: run benchmarks/setup_kenlm.sh first")
        return 1
    lmplz, query = bins
    args.work.mkdir(parents=True, exist_ok=True)
    say(f"corpus ({args.tokens} tokens) and held-out text in {args.work}")
    train = synthesize(args.work, f"train-{args.tokens}", args.tokens, 1, args.source)
    heldout = synthesize(args.work, "heldout-1M", "1M", 2, args.source)
    temp = args.work / "scratch"
    temp.mkdir(exist_ok=True)
    model, arpa = args.work / "lmlab.lm", args.work / "lmplz.arpa"
    disk = shutil.disk_usage(args.work)

    ours = build("lmlab", lmlab_cmd("ngram", "train", str(train), "-n", str(args.order),
                                    "--memory", args.memory, "--temp", str(temp), "-o",
                                    str(model)), args.work, args.reuse)
    theirs = build("lmplz", [lmplz, "-o", str(args.order), "-S", args.memory, "-T", str(temp),
                             "--discount_fallback", "--text", str(train), "--arpa", str(arpa)],
                   args.work, args.reuse)
    cluster = None
    if args.cluster:
        clustered = args.work / "lmlab-cluster.lm"
        cluster = build("lmlab-cluster", lmlab_cmd(
            "ngram", "train", str(train), "-n", str(args.order), "--memory", args.memory,
            "--temp", str(temp), "--cluster", args.cluster, "-o", str(clustered)),
            args.work, args.reuse)
        cluster["identical"] = same_members(model, clustered)
        cluster["speedup"] = ours["wall_s"] / cluster["wall_s"]
        if not args.keep:
            clustered.unlink()
    say("held-out perplexity ...")
    ppl_ours = perplexity_lmlab(model, heldout, args.work)
    ppl_theirs = run_query(query, arpa, heldout, args.work)
    rel = abs(ppl_ours["perplexity"] - ppl_theirs["perplexity"]) / ppl_theirs["perplexity"]

    from lmlab.ngram.build import parse_memory

    budget_kb = parse_memory(args.memory) / 1024
    rows = [
        ("wall time (s)", ours["wall_s"], theirs["wall_s"], ours["wall_s"] / theirs["wall_s"],
         f"<= {TARGET_TIME}x lmplz"),
        ("peak RSS (MiB)", ours["maxrss_kb"] / 1024, theirs["maxrss_kb"] / 1024,
         ours["maxrss_kb"] / budget_kb, f"<= {TARGET_RSS}x budget"),
        ("held-out perplexity", ppl_ours["perplexity"], ppl_theirs["perplexity"], rel,
         f"rel. diff <= {TARGET_PPL:g}"),
    ]
    say(f"\n{args.tokens} tokens, MKN {args.order}-gram, budget {args.memory}; "
        f"disk {args.work} ({disk.free >> 30} GiB free before)")
    say(f"{'':22}{'lmlab':>14}{'lmplz':>14}{'ratio':>10}  target")
    for name, a, b, r, target in rows:
        say(f"{name:22}{a:>14,.2f}{b:>14,.2f}{r:>10.4g}  {target}")
    if cluster:
        say(f"--cluster {args.cluster}: {cluster['wall_s']:,.1f} s, peak RSS of the driver "
            f"{cluster['maxrss_kb'] / 1024:,.0f} MiB, {cluster['speedup']:.2f}x one process "
            f"(target >= 1.6x), model identical: {cluster['identical']}")
    result = {"tokens": args.tokens, "order": args.order, "memory": args.memory,
              "lmlab": ours, "lmplz": theirs, "perplexity_lmlab": ppl_ours,
              "perplexity_kenlm": ppl_theirs, "perplexity_rel_diff": rel, "cluster": cluster,
              "time_ratio": ours["wall_s"] / theirs["wall_s"],
              "rss_over_budget": ours["maxrss_kb"] / budget_kb,
              "model_bytes": model.stat().st_size, "arpa_bytes": arpa.stat().st_size,
              "disk": str(args.work), "machine": platform.platform(),
              "date": time.strftime("%Y-%m-%d")}
    out = args.json or RESULTS / f"ngram_scale_{args.tokens}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    say(f"wrote {out}")
    if not args.keep:
        model.unlink()
        arpa.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
