#!/usr/bin/env python
"""Benchmark ``lmlab.kenlm`` (KenLM's Python query API over lmlab n-gram models) against the
``kenlm`` package, on the same model, in the same run.

Measured, per-sentence over the test text of a corpus (WikiText-2 by default):

- ``score`` loop: ``for line in lines: model.score(line)``;
- ``full_scores`` loop: every tuple of every line consumed;
- ``BaseScore``: one call per word of the test text (states ping-ponged, ``BeginSentenceWrite``
  at each line start, ``</s>`` scored), in microseconds per call;
- load time (``kenlm.Model`` on the ARPA file; ``lmlab.kenlm.Model`` on the same model saved as an
  lmlab ``.lm``, and on the ARPA with ``--lmlab-arpa``) and the process's peak RSS (informational).

Timed loops are interleaved (kenlm, lmlab, kenlm, ...) and the best of ``--repeats`` is kept; the
machines this runs on are shared and noisy, so the RATIOS (lmlab / kenlm, lower is better) are
what to read, and even they are indicative. Parity is checked on the way: every sentence's
``score`` within 1e-4 log10 and every ``full_scores`` n-gram length and OOV flag equal.

The model is an interpolated modified-Kneser-Ney n-gram lmlab trains on the corpus (``--order``,
5 by default), written as ARPA for kenlm, or any ARPA file given with ``--arpa`` (both sides then
load that file). Usage::

    python benchmarks/kenlm_api.py --data /path/to/data          # WikiText-2, 5-gram
    python benchmarks/kenlm_api.py --corpus ptb --order 3         # quicker
    python benchmarks/kenlm_api.py --arpa model.arpa.gz --text test.txt

Output: a table on stdout and the raw numbers in ``benchmarks/results/kenlm_api.json``
(``--json PATH`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from ngram_vs_peers import quiet_stderr  # this folder: run as `python benchmarks/kenlm_api.py`

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "kenlm_api.json"
TARGET_RATIO = 2.0  # issue 19: lmlab.kenlm time / kenlm time <= 2 for score, full_scores, BaseScore
TOL = 1e-4


def rss_mib() -> float | None:
    """Current resident set size (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def timed(fn) -> float:
    return timed_call(fn)[1]


def timed_call(fn):
    """``fn()`` and the seconds it took."""
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def score_loop(model, lines):
    score = model.score
    for line in lines:
        score(line)


def full_scores_loop(model, lines):
    full = model.full_scores
    for line in lines:
        for _ in full(line):
            pass


def base_score_loop(model, state_cls, sentences):
    a, b = state_cls(), state_cls()
    begin, base = model.BeginSentenceWrite, model.BaseScore
    for words in sentences:
        begin(a)
        for w in words:
            base(a, w, b)
            a, b = b, a


def parity(theirs, mine, lines) -> dict:
    worst, length_mismatch = 0.0, 0
    for line in lines:
        worst = max(worst, abs(theirs.score(line) - mine.score(line)))
        a = [x[1:] for x in theirs.full_scores(line)]
        b = [x[1:] for x in mine.full_scores(line)]
        length_mismatch += a != b
    return {"max_abs_score_diff": worst, "lines_with_length_or_oov_mismatch": length_mismatch,
            "ok": worst <= TOL and length_mismatch == 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("LMLAB_DATA"),
                   help="folder holding ptb/ and wikitext-2/ (default $LMLAB_DATA)")
    p.add_argument("--corpus", default="wikitext-2")
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--arpa", help="benchmark this ARPA file instead of training a model")
    p.add_argument("--text", help="test text (default: the corpus's test.txt)")
    p.add_argument("--lmlab-arpa", action="store_true",
                   help="also time lmlab.kenlm.Model loading the ARPA file (slow for big models)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=str(DEFAULT_JSON))
    args = p.parse_args(argv)
    try:
        import kenlm
    except ImportError:
        print("the kenlm Python module is not installed: pip install kenlm", file=sys.stderr)
        return 2
    import lmlab.kenlm as lk

    if args.arpa is None or args.text is None:
        if not args.data or not (Path(args.data) / args.corpus / "test.txt").exists():
            print(f"no {args.corpus}/test.txt: pass --data DIR (or set LMLAB_DATA), or --arpa "
                  "and --text", file=sys.stderr)
            return 2
    text = Path(args.text) if args.text else Path(args.data) / args.corpus / "test.txt"
    lines = text.read_text(encoding="utf-8").splitlines()
    words = sum(len(line.split()) + 1 for line in lines)
    result: dict = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                                "cpus": os.cpu_count()},
                    "text": str(text), "lines": len(lines), "words_incl_eos": words}
    with tempfile.TemporaryDirectory() as tmp:
        if args.arpa:
            arpa, lm_path = args.arpa, args.arpa
            result["model"] = args.arpa
        else:
            from lmlab.ngram.arpa import write_arpa
            from lmlab.ngram.model import train_ngram

            train = Path(args.data) / args.corpus / "train.txt"
            print(f"training MKN {args.order}-gram on {train} ...", flush=True)
            t = time.perf_counter()
            model = train_ngram(train, order=args.order, smoothing="mkn")
            arpa, lm_path = os.path.join(tmp, "model.arpa"), os.path.join(tmp, "model.lm")
            write_arpa(model, arpa)
            model.save(lm_path)
            result["model"] = f"lmlab MKN {args.order}-gram on {train}"
            result["ngrams"] = [int(len(k)) for k in model.keys]
            result["train_and_write_s"] = time.perf_counter() - t
            del model
        with quiet_stderr():
            theirs, load_k = timed_call(lambda: kenlm.Model(arpa))
        before = rss_mib()
        mine, load_l = timed_call(lambda: lk.Model(lm_path))
        after = rss_mib()
        result["lmlab_kenlm_rss_mib"] = after - before if before is not None else None
        result["load_s"] = {"kenlm_arpa": load_k, "lmlab_kenlm": load_l,
                            "lmlab_kenlm_file": lm_path if args.arpa else ".lm"}
        if args.lmlab_arpa and lm_path != arpa:
            result["load_s"]["lmlab_kenlm_arpa"] = timed(lambda: lk.Model(arpa))
    print("checking parity ...", flush=True)
    result["parity"] = parity(theirs, mine, lines)
    sentences = [line.split() + ["</s>"] for line in lines]
    calls = sum(len(s) for s in sentences)
    benches = {"score": lambda m, S: score_loop(m, lines),
               "full_scores": lambda m, S: full_scores_loop(m, lines),
               "BaseScore": lambda m, S: base_score_loop(m, S, sentences)}
    rows = {}
    for name, fn in benches.items():
        best = {"kenlm": float("inf"), "lmlab": float("inf")}
        for _ in range(args.repeats):
            for side, model, state in (("kenlm", theirs, kenlm.State), ("lmlab", mine, lk.State)):
                t0 = time.perf_counter()
                fn(model, state)
                best[side] = min(best[side], time.perf_counter() - t0)
        rows[name] = {"kenlm_s": best["kenlm"], "lmlab_s": best["lmlab"],
                      "ratio": best["lmlab"] / best["kenlm"]}
        if name == "BaseScore":
            rows[name]["kenlm_us_per_call"] = best["kenlm"] / calls * 1e6
            rows[name]["lmlab_us_per_call"] = best["lmlab"] / calls * 1e6
    result["timings"] = rows
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["target_ratio"] = TARGET_RATIO

    print(f"\n{result['model']}; {len(lines)} lines, {words} words ({text})")
    print(f"parity: max |score diff| {result['parity']['max_abs_score_diff']:.2e} log10, "
          f"{result['parity']['lines_with_length_or_oov_mismatch']} lines with an ngram_length "
          f"or oov mismatch -> {'OK' if result['parity']['ok'] else 'FAIL'}")
    print(f"load: kenlm (ARPA) {load_k:.2f} s, lmlab.kenlm ({result['load_s']['lmlab_kenlm_file']})"
          f" {load_l:.2f} s" + (f", lmlab.kenlm (ARPA) {result['load_s']['lmlab_kenlm_arpa']:.2f}"
                                 " s" if "lmlab_kenlm_arpa" in result["load_s"] else ""))
    print(f"\n| {'loop':<12} | {'kenlm':>10} | {'lmlab.kenlm':>11} | {'ratio':>6} | target |")
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 13}|{'-' * 8}|--------|")
    for name, r in rows.items():
        if name == "BaseScore":
            k, m = f"{r['kenlm_us_per_call']:.2f} us", f"{r['lmlab_us_per_call']:.2f} us"
        else:
            k, m = f"{r['kenlm_s']:.3f} s", f"{r['lmlab_s']:.3f} s"
        print(f"| {name:<12} | {k:>10} | {m:>11} | {r['ratio']:>6.2f} | <= {TARGET_RATIO:g}  |")
    print(f"\npeak RSS of this process (both models): {result['peak_rss_mib']:.0f} MiB; "
          f"lmlab.kenlm.Model added {result['lmlab_kenlm_rss_mib'] or 0:.0f} MiB")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"raw numbers: {out}")
    return 0 if result["parity"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
