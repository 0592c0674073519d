#!/usr/bin/env python
"""Benchmark deploying lmlab n-gram models against KenLM's deployment tools (issue 19 targets).

MKN 5-grams, lmlab's binary format (``lmlab ngram build-binary``: the probing layout exact and
8-bit, the trie layout float32 and 8-bit) next to KenLM
built from source in the same run (``benchmarks/setup_kenlm.sh``: ``lmplz``, then ``build_binary``
probing / trie / ``-q 8 -b 8`` trie, and ``query``), reported as RATIOS lmlab / KenLM because the
machines are shared and noisy: (1) load from Python; (2) ``lmlab eval`` (one process and
``--jobs 2``) vs ``query`` over WikiText-2 train x4 (8.4M words), wall and peak RSS, and peak RSS
on a 10x longer text; (3) file sizes and the 8-bit perplexity change; (4) count and entropy
pruning for MKN and Katz: perplexity vs size (PNG plot), ``lmplz --prune`` beside lmlab's.
Method details: benchmarks/README.md. Usage::

    python benchmarks/ngram_deploy.py --data $LMLAB_DATA        # everything (~7 min on 2 cores)
    python benchmarks/ngram_deploy.py --quick                   # 1 repeat, no 10x text, PTB prune

Output: a table on stdout, ``benchmarks/results/ngram_deploy.json`` and ``ngram_deploy.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ngram_vs_peers import (  # this folder: run as `python benchmarks/ngram_deploy.py`
    Report,
    _json_default,
    arpa_counts,
    count_words,
    find_kenlm_bins,
    human_mib,
    human_ppl,
    human_s,
    import_kenlm,
    machine_info,
    pct,
    print_table,
    read_lines,
    rel_diff,
    run_measured,
    run_query,
    say,
    tail,
    unk_copy,
)

from lmlab.metrics import evaluate
from lmlab.models import load_model
from lmlab.ngram.binary import write_binary
from lmlab.ngram.entropy import entropy_prune
from lmlab.ngram.model import train_ngram

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_LOAD_MS = 20.0
TARGET_EVAL_JOBS2 = 1.0
TARGET_EVAL_ONE = 2.0
TARGET_RSS = 1.5
TARGET_FLAT = 1.05  # peak RSS on the 10x text / on the 1x text (flat: within 5 %)
TARGET_Q8_PPL = 2e-3  # |ppl 8-bit / ppl exact - 1|
COUNT_PRUNE = ([0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 1, 2, 2, 2], [0, 2, 3, 3, 3])
ENTROPY_PRUNE = (1e-9, 1e-8, 3e-8, 1e-7, 1e-6)

# Child: load each file with its loader, interleaved, --repeats times; print the times as JSON.
_CHILD_LOAD = """\
import gc, json, sys, time
spec, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
import lmlab
try:
    import kenlm
except ImportError:
    kenlm = None
import lmlab.kenlm
loaders = {"lmlab": lmlab.load, "kenlm": lambda p: kenlm.Model(p), "lmlab.kenlm": lmlab.kenlm.Model}
times = {name: [] for name, _, _ in spec}
for r in range(repeats + 1):  # round 0 warms up (lazy imports inside the loaders), not kept
    for name, loader, path in spec:
        t0 = time.perf_counter()
        model = loaders[loader](path)
        if r:
            times[name].append(time.perf_counter() - t0)
        del model
        gc.collect()
print(json.dumps(times))
"""


def mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.1f} MB"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{1e3 * x:.1f} ms"


def lmlab_cli() -> str:
    exe = shutil.which("lmlab") or str(Path(sys.executable).parent / "lmlab")
    if not os.access(exe, os.X_OK):
        raise SystemExit("the lmlab command is not installed (pip install -e .)")
    return exe


def checked(cmd: list[str], tmp: Path, tag: str, stdin=None) -> dict:
    res = run_measured(cmd, tmp / f"{tag}.out", tmp / f"{tag}.err", stdin_path=stdin)
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {res['rc']}):\n{tail(tmp / f'{tag}.err')}")
    return res


def repeat_file(src: Path, dst: Path, times: int) -> Path:
    data = src.read_bytes()
    with open(dst, "wb") as f:
        for _ in range(times):
            f.write(data)
    return dst


# -- models ------------------------------------------------------------------------------------
def build_models(name: str, folder: Path, tmp: Path, bins: dict) -> dict:
    """lmlab MKN-5 (.lm; binary: probing exact and 8-bit, trie float32 and 8-bit) and KenLM's
    (ARPA, probing, trie, q8 trie)."""
    say(f"  {name}: building lmlab and KenLM 5-grams ...")
    m: dict = {"dir": tmp}
    model = train_ngram(folder / "train.txt", order=5, smoothing="mkn", verbose=False)
    m["ngrams"] = [int(len(k)) for k in model.keys]
    model.save(tmp / "lmlab.lm")
    write_binary(model, tmp / "lmlab.bin")
    write_binary(model, tmp / "lmlab.q8.bin", quantize_bits=8)
    write_binary(model, tmp / "lmlab.trie", layout="trie")
    write_binary(model, tmp / "lmlab.q8.trie", layout="trie", quantize_bits=8)
    del model
    m["train_unk"] = unk_copy(folder / "train.txt", tmp / "train.unk.txt")
    m["test_unk"] = unk_copy(folder / "test.txt", tmp / "test.unk.txt")
    if bins:
        checked([bins["lmplz"], "-o", "5", "-S", "100M", "-T", str(tmp), "--text",
                 str(m["train_unk"]), "--arpa", str(tmp / "kenlm.arpa")], tmp, "lmplz")
        m["kenlm_ngrams"] = arpa_counts(tmp / "kenlm.arpa")
        bb, arpa = bins["build_binary"], str(tmp / "kenlm.arpa")
        for tag, extra in (("probing", ["probing"]), ("trie", ["trie"]),
                           ("q8trie", ["-q", "8", "-b", "8", "trie"])):
            checked([bb, *extra, arpa, str(tmp / f"kenlm.{tag}")], tmp, f"bb-{tag}")
    return m


# -- 1. load -----------------------------------------------------------------------------------
def bench_load(models: dict, bins: dict, args, rep: Report) -> dict:
    say("\n== load from Python (fresh child process, warm page cache) ==")
    spec = []
    for name, m in models.items():
        spec.append((f"{name}/lmlab.bin", "lmlab", str(m["dir"] / "lmlab.bin")))
        for f in ("lmlab.q8.bin", "lmlab.trie", "lmlab.q8.trie"):
            spec.append((f"{name}/{f}", "lmlab", str(m["dir"] / f)))
        spec.append((f"{name}/lmlab.kenlm.Model", "lmlab.kenlm", str(m["dir"] / "lmlab.bin")))
        if bins and import_kenlm() is not None:
            for tag in ("probing", "trie", "q8trie"):
                spec.append((f"{name}/kenlm.{tag}", "kenlm", str(m["dir"] / f"kenlm.{tag}")))
    tmp = next(iter(models.values()))["dir"]
    checked([sys.executable, "-c", _CHILD_LOAD, json.dumps(spec), str(args.repeats)], tmp, "load")
    times = json.loads((tmp / "load.out").read_text().strip().splitlines()[-1])
    best = {k: min(v) for k, v in times.items()}
    for k, v in best.items():
        say(f"  {k:28s} {ms(v)} best of {len(times[k])}")
    for name in models:
        mine = best[f"{name}/lmlab.bin"]
        for tag in ("probing", "trie") if f"{name}/kenlm.trie" in best else ():
            peer = best[f"{name}/kenlm.{tag}"]
            rep.row(name, "load MKN-5 binary from Python", f"kenlm.Model ({tag})", peer, mine,
                    mine / peer, f"<= {TARGET_LOAD_MS:g} ms", mine * 1e3 <= TARGET_LOAD_MS, ms)
        for what, f, tag in (("8-bit binary", "lmlab.q8.bin", "q8trie"),
                             ("trie binary", "lmlab.trie", "trie"),
                             ("8-bit trie binary", "lmlab.q8.trie", "q8trie")):
            mine, peer = best[f"{name}/{f}"], best.get(f"{name}/kenlm.{tag}")
            rep.row(name, f"load {what} from Python", f"kenlm.Model ({tag})", peer, mine,
                    mine / peer if peer else None, f"<= {TARGET_LOAD_MS:g} ms",
                    mine * 1e3 <= TARGET_LOAD_MS, ms)
        api, peer = best[f"{name}/lmlab.kenlm.Model"], best.get(f"{name}/kenlm.probing")
        rep.row(name, "load binary as lmlab.kenlm.Model (query API)", "kenlm.Model (probing)",
                peer, api, api / peer if peer else None, "info", None, ms)
    return {"times_s": times, "best_s": best}


# -- 2. scoring a big text ---------------------------------------------------------------------
def query_cmd(bins: dict, model: Path) -> list[str]:
    return [bins["query"], "-v", "summary", str(model)]


def lmlab_eval(model: Path, text: Path, jobs: int) -> list[str]:
    return [lmlab_cli(), "eval", "--json", "--jobs", str(jobs), str(model), str(text)]


def eval_cmds(m: dict, bins: dict, text: Path, text_unk: Path | None, jobs=(1, 2)) -> dict:
    """{key: (command, stdin)}: query on the probing binary, lmlab eval with each of ``jobs``."""
    cmds = {"query": (query_cmd(bins, m["dir"] / "kenlm.probing"), text_unk)} if bins else {}
    return cmds | {f"lmlab_j{j}": (lmlab_eval(m["dir"] / "lmlab.bin", text, j), None)
                   for j in jobs}


def timed_runs(cmds: dict, repeats: int, tmp: Path, tag: str) -> tuple[dict, dict]:
    """Run every command ``repeats`` times, interleaved; all runs and the best wall and RSS."""
    runs: dict = {k: [] for k in cmds}
    for r in range(repeats):
        for k, (cmd, stdin) in cmds.items():
            runs[k].append(checked(cmd, tmp, f"{tag}-{k}", stdin=stdin))
        say(f"  {tag} {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['wall_s']:.2f} s "
                                                       f"{human_mib(v[-1]['maxrss_kb'])}"
                                                       for k, v in runs.items()))
    best = {k: {"wall_s": min(d["wall_s"] for d in v), "maxrss_kb": min(d["maxrss_kb"] for d in v)}
            for k, v in runs.items()}
    return runs, best


def bench_eval(name: str, folder: Path, m: dict, bins: dict, args, rep: Report) -> dict:
    tmp = m["dir"]
    # The test text (245k words): fixed costs (interpreter start, imports, loading) dominate.
    test = folder / "test.txt"
    say(f"\n== scoring {name} test, {count_words(read_lines(test)):,} words ==")
    _, small = timed_runs(eval_cmds(m, bins, test, m["test_unk"], (1,)), args.repeats, tmp,
                          "test")
    q = small.get("query", {}).get("wall_s")
    rep.row(name, "lmlab eval test text (245k words), one process, wall", "query (probing)", q,
            small["lmlab_j1"]["wall_s"], small["lmlab_j1"]["wall_s"] / q if q else None, "info",
            None, human_s)
    q = small.get("query", {}).get("maxrss_kb")  # held-out text: more of the mapping touched
    rep.row(name, "lmlab eval test text, one process, peak RSS", "query (probing)", q,
            small["lmlab_j1"]["maxrss_kb"], small["lmlab_j1"]["maxrss_kb"] / q if q else None,
            "info", None, human_mib)
    big = repeat_file(folder / "train.txt", tmp / "big.txt", args.times)
    big_unk = repeat_file(m["train_unk"], tmp / "big.unk.txt", args.times)
    words = count_words(read_lines(big))
    say(f"\n== scoring {name} train x{args.times}: {words / 1e6:.2f}M words ==")
    runs, best = timed_runs(eval_cmds(m, bins, big, big_unk), args.repeats, tmp, "big")
    ppl = {k: float(re.search(r"Perplexity including OOVs:\s*(\S+)", (tmp / "big-query.out")
                              .read_text())[1]) if k == "query" else
           json.loads((tmp / f"big-{k}.out").read_text())["perplexity"] for k in runs}
    out = {"words": words, "times": args.times, "runs": runs, "best": best, "perplexity": ppl,
           "test_text_best": small}
    label = f"{words / 1e6:.1f}M words"
    for jobs, target in ((2, TARGET_EVAL_JOBS2), (1, TARGET_EVAL_ONE)):
        b, q = best[f"lmlab_j{jobs}"], best.get("query", {})
        ratio = b["wall_s"] / q["wall_s"] if q else None
        rep.row(name, f"lmlab eval {label} --jobs {jobs}, wall", "query (probing)",
                q.get("wall_s"), b["wall_s"], ratio, f"<= {target:g}",
                None if ratio is None else ratio <= target, human_s)
    for jobs in (1, 2):
        b, q = best[f"lmlab_j{jobs}"], best.get("query", {})
        ratio = b["maxrss_kb"] / q["maxrss_kb"] if q else None
        what = "largest process" if jobs > 1 else "one process"
        rep.row(name, f"lmlab eval {label} --jobs {jobs}, peak RSS ({what})", "query (probing)",
                q.get("maxrss_kb"), b["maxrss_kb"], ratio, f"<= {TARGET_RSS:g}",
                None if ratio is None else ratio <= TARGET_RSS, human_mib)
    if bins:
        d = rel_diff(ppl["lmlab_j1"], ppl["query"])
        rep.row(name, f"eval {label}: perplexity", "query (probing)", ppl["query"],
                ppl["lmlab_j1"], d, "info", None, human_ppl, pct)
    # the trie layouts, beside KenLM's trie: one process each (info, no target)
    trie = {"lmlab_trie": (lmlab_eval(tmp / "lmlab.trie", big, 1), None)}
    if bins:
        trie["query_trie"] = (query_cmd(bins, tmp / "kenlm.trie"), big_unk)
    _, trie_best = timed_runs(trie, args.repeats, tmp, "trie")
    out["trie_best"] = trie_best
    for key, what in (("wall_s", "wall"), ("maxrss_kb", "peak RSS")):
        mine, peer = trie_best["lmlab_trie"][key], trie_best.get("query_trie", {}).get(key)
        rep.row(name, f"lmlab eval {label}, trie layout, one process, {what}", "query (trie)",
                peer, mine, mine / peer if peer else None, "info", None,
                human_s if key == "wall_s" else human_mib)
    big.unlink()
    big_unk.unlink()
    if args.flat_scale > 1:
        out["flat"] = bench_flat(name, folder, m, bins, args, best, rep)
    return out


def bench_flat(name, folder, m, bins, args, best, rep: Report) -> dict:
    tmp, scale = m["dir"], args.flat_scale
    huge = repeat_file(folder / "train.txt", tmp / "huge.txt", args.times * scale)
    huge_unk = repeat_file(m["train_unk"], tmp / "huge.unk.txt", args.times * scale) if bins \
        else None
    say(f"  the same on a {scale}x longer text, one run each ...")
    runs, _ = timed_runs(eval_cmds(m, bins, huge, huge_unk), 1, tmp, f"x{scale}")
    out: dict = {"scale": scale, "runs": runs}
    for key, (res,) in runs.items():
        growth = res["maxrss_kb"] / best[key]["maxrss_kb"]
        out[key] = {**res, "rss_growth": growth}
        rep.row(name, f"peak RSS growth, text x{scale}: {key}", "itself on the 1x text",
                best[key]["maxrss_kb"], res["maxrss_kb"], growth, f"<= {TARGET_FLAT:g}",
                growth <= TARGET_FLAT, human_mib)
    if bins:
        r = runs["lmlab_j2"][0]["wall_s"] / runs["query"][0]["wall_s"]
        rep.row(name, f"lmlab eval text x{scale} --jobs 2, wall (one run)", "query (probing)",
                runs["query"][0]["wall_s"], runs["lmlab_j2"][0]["wall_s"], r, "info", None,
                human_s)
    for p in tmp.glob("huge*.txt"):
        p.unlink()
    return out


# -- 3. sizes and quantisation -----------------------------------------------------------------
def bench_sizes(name: str, folder: Path, m: dict, bins: dict, rep: Report) -> dict:
    say(f"\n== {name}: sizes and 8-bit perplexity ==")
    tmp = m["dir"]
    files = ["lmlab.lm", "lmlab.bin", "lmlab.q8.bin", "lmlab.trie", "lmlab.q8.trie"]
    if bins:
        files += ["kenlm.arpa", "kenlm.probing", "kenlm.trie", "kenlm.q8trie"]
    size = {f: (tmp / f).stat().st_size for f in files}
    ppl = {}
    for f in ("lmlab.bin", "lmlab.q8.bin", "lmlab.trie", "lmlab.q8.trie"):
        ppl[f] = evaluate(load_model(tmp / f), folder / "test.txt")[0].perplexity
    if bins:
        for f in ("kenlm.probing", "kenlm.trie", "kenlm.q8trie"):
            ppl[f] = run_query(bins["query"], tmp / f, m["test_unk"], tmp)["perplexity"]
    for f in files:
        say(f"  {f:15s} {mb(size[f]):>10s}  ppl {human_ppl(ppl.get(f))}")
    # (what, lmlab file, KenLM's, target or None: info)
    rows = [("probing layout, exact float64", "lmlab.bin", "probing", None),
            ("trie layout, float32 (unquantised)", "lmlab.trie", "probing", "<= 1"),
            ("trie layout, float32 (compact)", "lmlab.trie", "trie", "<= 1"),
            ("trie layout, 8-bit", "lmlab.q8.trie", "q8trie", "<= 1"),
            ("probing layout, 8-bit", "lmlab.q8.bin", "q8trie", None)]
    for what, mine, peer, target in rows:
        r = size[mine] / size[f"kenlm.{peer}"] if bins else None
        rep.row(name, f"size, {what}", f"KenLM {peer.replace('q8', '-q 8 -b 8 ')}",
                size.get(f"kenlm.{peer}"), size[mine], r, target or "info",
                None if r is None or target is None else r <= 1, mb)
    for f, what, target in (("lmlab.trie", "trie float32", None),
                            ("lmlab.q8.trie", "trie 8-bit", TARGET_Q8_PPL),
                            ("lmlab.q8.bin", "probing 8-bit", TARGET_Q8_PPL)):
        d = ppl[f] / ppl["lmlab.bin"] - 1
        rep.row(name, f"test ppl, {what} vs exact (rel. change)", "lmlab exact binary",
                ppl["lmlab.bin"], ppl[f], d,
                "info" if target is None else f"|d| <= {100 * target:g} %",
                None if target is None else abs(d) <= target, human_ppl, pct)
    if bins:
        kd = ppl["kenlm.q8trie"] / ppl["kenlm.probing"] - 1
        rep.row(name, "test ppl, KenLM q8 trie vs probing (rel.)", "KenLM probing",
                ppl["kenlm.probing"], ppl["kenlm.q8trie"], kd, "info", None, human_ppl, pct)
    return {"bytes": size, "perplexity": ppl, "lmlab_ngrams": m["ngrams"],
            "kenlm_ngrams": m.get("kenlm_ngrams")}


# -- 4. pruning --------------------------------------------------------------------------------
def point(model, test: Path, tmp: Path, **info) -> dict:
    write_binary(model, tmp / "point.bin")
    res = evaluate(model, test)[0]
    p = {**info, "ngrams": [int(len(k)) for k in model.keys],
         "total_ngrams": int(sum(len(k) for k in model.keys)),
         "binary_bytes": (tmp / "point.bin").stat().st_size, "perplexity": res.perplexity}
    (tmp / "point.bin").unlink()
    say(f"    {info}: {p['total_ngrams']:,} n-grams, {mb(p['binary_bytes'])}, "
        f"ppl {p['perplexity']:.3f}")
    return p


def bench_prune(name: str, folder: Path, m: dict, bins: dict, rep: Report) -> dict:
    say(f"\n== {name}: pruning (5-grams; bytes = lmlab binary, exact) ==")
    tmp, train, test = m["dir"], folder / "train.txt", folder / "test.txt"
    out: dict = {}
    for smoothing in ("mkn", "katz"):
        full = train_ngram(train, order=5, smoothing=smoothing, verbose=False)
        pts = [point(full, test, tmp, method="none", threshold=None)]
        for th in ENTROPY_PRUNE:
            pts.append(point(entropy_prune(full, th), test, tmp, method="entropy", threshold=th))
        del full
        for th in COUNT_PRUNE:
            model = train_ngram(train, order=5, smoothing=smoothing, verbose=False, prune=th)
            pts.append(point(model, test, tmp, method="count", threshold=th))
        out[smoothing] = pts
    if bins:
        out["lmplz"] = []
        for th, mine in zip(COUNT_PRUNE, [p for p in out["mkn"] if p["method"] == "count"],
                            strict=True):
            arpa = tmp / "pruned.arpa"
            checked([bins["lmplz"], "-o", "5", "-S", "100M", "-T", str(tmp), "--text",
                     str(m["train_unk"]), "--arpa", str(arpa), "--prune", *map(str, th)],
                    tmp, "lmplz-prune")
            q = run_query(bins["query"], arpa, m["test_unk"], tmp)
            counts = arpa_counts(arpa)
            arpa.unlink()
            entry = {"threshold": th, "ngrams": counts, "total_ngrams": sum(counts),
                     "perplexity": q["perplexity"]}
            out["lmplz"].append(entry)
            d = rel_diff(mine["perplexity"], q["perplexity"])
            # KenLM's models have one unigram more: its own <unk> beside the text's UNK.
            extra = m["kenlm_ngrams"][0] - m["ngrams"][0]
            same = counts == [mine["ngrams"][0] + extra, *mine["ngrams"][1:]]
            say(f"    lmplz --prune {' '.join(map(str, th))}: {sum(counts):,} n-grams, ppl "
                f"{q['perplexity']:.3f} (lmlab {mine['perplexity']:.3f}; counts "
                f"{'equal' if same else 'DIFFER'}, KenLM's extra <unk> unigram aside)")
            rep.row(name, f"count prune {''.join(map(str, th))}: test ppl (counts "
                    f"{'equal' if same else 'differ'})", "lmplz --prune + query",
                    q["perplexity"], mine["perplexity"], d, "< 0.01 %", d < 1e-4 and same,
                    human_ppl, pct)
    return out


def plot_prune(prune: dict, path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, axes = plt.subplots(1, len(prune), figsize=(6.5 * len(prune), 4.8), squeeze=False)
    style = {("mkn", "count"): ("C0", "o-"), ("mkn", "entropy"): ("C0", "s--"),
             ("katz", "count"): ("C3", "o-"), ("katz", "entropy"): ("C3", "s--")}
    for ax, (corpus, res) in zip(axes[0], prune.items(), strict=True):
        for smoothing in ("mkn", "katz"):
            full = res[smoothing][0]
            for method in ("count", "entropy"):
                pts = [full] + [p for p in res[smoothing] if p["method"] == method]
                pts.sort(key=lambda p: p["binary_bytes"])
                color, fmt = style[(smoothing, method)]
                ax.plot([p["binary_bytes"] / 1e6 for p in pts], [p["perplexity"] for p in pts],
                        fmt, color=color, label=f"{smoothing.upper()} {method} pruning")
        if res.get("lmplz"):  # at the size of lmlab's model with the same thresholds
            size = {str(p["threshold"]): p["binary_bytes"] for p in res["mkn"]}
            ax.plot([size[str(e["threshold"])] / 1e6 for e in res["lmplz"]],
                    [e["perplexity"] for e in res["lmplz"]], "kx", markersize=9,
                    label="lmplz --prune + query (MKN)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("model size, lmlab binary (MB, log scale)")
        ax.set_ylabel("test perplexity")
        ax.set_title(f"{corpus}: 5-gram, pruned")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- main --------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("LMLAB_DATA"),
                   help="folder holding ptb/ and wikitext-2/ (default $LMLAB_DATA)")
    p.add_argument("--repeats", type=int, default=3, help="best of N (default 3; --quick 1)")
    p.add_argument("--times", type=int, default=4,
                   help="copies of WikiText-2 train in the scoring text (default 4: 8.2M words)")
    p.add_argument("--flat-scale", type=int, default=10,
                   help="peak RSS also on a text this many times longer (default 10; 1: skip)")
    p.add_argument("--skip", nargs="+", default=[], choices=("load", "eval", "sizes", "prune"))
    p.add_argument("--prune-corpora", nargs="+", default=["ptb", "wikitext-2"])
    p.add_argument("--json", type=Path, default=RESULTS / "ngram_deploy.json")
    p.add_argument("--plot", type=Path, default=RESULTS / "ngram_deploy.png")
    p.add_argument("--quick", action="store_true",
                   help="one repeat, no 10x text, pruning on PTB only")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.flat_scale, args.prune_corpora = 1, 1, ["ptb"]
    if not args.data:
        p.error("no data dir: --data DIR or $LMLAB_DATA")
    return args


def compile_lmlab() -> None:
    """Byte-compile lmlab's sources once, as ``pip install`` does: where Python may not write
    bytecode (PYTHONDONTWRITEBYTECODE, as on the benchmark machine), every lmlab process would
    otherwise compile its modules again, a cost no installed lmlab pays."""
    import compileall

    import lmlab

    compileall.compile_dir(Path(lmlab.__file__).parent, quiet=1)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    compile_lmlab()
    info = machine_info()
    info["loadavg_start"] = os.getloadavg()
    rep = Report()
    found = find_kenlm_bins()
    bins: dict = {}
    if found:
        bb = Path(found[1]).parent / "build_binary"
        bb = shutil.which("build_binary") or (str(bb) if os.access(bb, os.X_OK) else None)
        if bb:
            bins = {"lmplz": found[0], "query": found[1], "build_binary": bb}
    if not bins:
        rep.note("KenLM lmplz/query/build_binary not found (run benchmarks/setup_kenlm.sh): "
                 "KenLM comparisons skipped")
    say(f"lmlab n-gram deployment vs KenLM; {info['cpu_count']} CPUs, load "
        f"{info['loadavg_start'][0]:.2f}; KenLM: {bins or 'none'}")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="lmlab-deploy-") as tmp_name:
        models = {}
        for name in ("ptb", "wikitext-2"):
            folder = Path(args.data) / name
            if not (folder / "train.txt").is_file():
                rep.note(f"{name}: no train.txt in {folder}: skipped")
                continue
            (Path(tmp_name) / name).mkdir()
            models[name] = build_models(name, folder, Path(tmp_name) / name, bins)
        if "load" not in args.skip and models:
            results["load"] = bench_load(models, bins, args, rep)
        if "eval" not in args.skip and "wikitext-2" in models:
            results["eval"] = bench_eval("wikitext-2", Path(args.data) / "wikitext-2",
                                         models["wikitext-2"], bins, args, rep)
        if "sizes" not in args.skip:
            results["sizes"] = {n: bench_sizes(n, Path(args.data) / n, m, bins, rep)
                                for n, m in models.items()}
        if "prune" not in args.skip:
            results["prune"] = {n: bench_prune(n, Path(args.data) / n, models[n], bins, rep)
                                for n in args.prune_corpora if n in models}
            if results["prune"]:
                args.plot.parent.mkdir(parents=True, exist_ok=True)
                err = plot_prune(results["prune"], args.plot)
                if err:
                    rep.note(err)
                else:
                    say(f"wrote {args.plot}")
    info["loadavg_end"] = os.getloadavg()
    elapsed = time.perf_counter() - t_start
    say(f"\nResults (ratio = lmlab / KenLM unless noted; best of {args.repeats}):\n")
    print_table(rep.rows)
    for n in rep.notes:
        say(f"- {n}")
    met = [r["met"] for r in rep.rows if r["met"] is not None]
    say(f"\n{sum(met)}/{len(met)} targets met; {elapsed:.0f} s; load average "
        f"{info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}")
    payload = {"benchmark": "ngram_deploy", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "elapsed_s": elapsed, "machine": info, "kenlm_bins": bins,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "targets": {"load_ms": TARGET_LOAD_MS, "eval_wall_jobs2": TARGET_EVAL_JOBS2,
                           "eval_wall_one": TARGET_EVAL_ONE, "eval_rss": TARGET_RSS,
                           "rss_flat": TARGET_FLAT, "q8_ppl_rel": TARGET_Q8_PPL},
               "rows": rep.rows, "notes": rep.notes, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
