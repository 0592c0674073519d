#!/usr/bin/env python
"""Benchmark lmlab's n-gram estimator side by side with its peers: KenLM and NLTK.

Every peer is measured in the same run as lmlab, on the same machine, and the comparison is reported
as a RATIO (lmlab / peer), because the machines this runs on are shared and noisy: absolute times
move from run to run, ratios measured back to back move much less.

Measurements, for each corpus present (``ptb``, ``wikitext-2``):

1. Build a modified-Kneser-Ney 5-gram: ``train_ngram`` in a fresh child process (wall time of the
   whole process and its peak RSS, from the child's own rusage via ``os.wait4``) against KenLM's
   ``lmplz -o 5 -S 100M`` writing an ARPA file. Best of ``--repeats`` runs each, interleaved.
2. Test perplexity of lmlab MKN 3- and 5-grams against reference values and against KenLM's
   ``query`` on lmplz's models; plus, when ``lmlab.ngram.arpa`` is importable, lmlab's own ARPA
   loaded by ``kenlm.Model`` (per-sentence log10 agreement) and lmplz's ARPA read by lmlab.
3. Scoring throughput in words/s (words = whitespace tokens + one ``</s>`` per line): lmlab end to
   end from text (``read_corpus`` + ``model.logprobs``) and scoring only (``model.logprobs`` on an
   already encoded stream), against ``kenlm.Model.score`` and ``full_scores`` on the same lines.
4. PTB only: NLTK's ``KneserNeyInterpolated(3)``: fit time, words/s and perplexity on the first
   ``--nltk-sentences`` test sentences, next to lmlab's 3-gram KN and MKN (and KenLM's 3-gram).

KenLM's tools refuse a literal ``<unk>`` in their input, so they (and the ``kenlm`` package, on
lmplz's models) get temporary copies of the text with ``<unk>`` replaced by ``UNK``.

Usage::

    python benchmarks/ngram_vs_peers.py --quick              # PTB only, one repeat: < 3 min
    python benchmarks/ngram_vs_peers.py --data /path/to/data # both corpora, the full run

The data dir (``--data`` or ``$LMLAB_DATA``) holds ``ptb/`` and ``wikitext-2/`` with train.txt,
valid.txt, test.txt. KenLM binaries are taken from PATH, else from
``${LMLAB_CACHE:-$HOME/.cache/lmlab}/kenlm/bin`` (see ``benchmarks/setup_kenlm.sh``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmlab.corpus import read_corpus
from lmlab.metrics import evaluate, sentence_logprobs
from lmlab.ngram.model import train_ngram

LN10 = math.log(10.0)
ALL_CORPORA = ("ptb", "wikitext-2")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ngram_vs_peers.json"

# Test perplexity of KenLM-style MKN (lmplz defaults), the numbers lmlab must reproduce.
REFERENCE_PPL = {"ptb": {5: 141.19, 3: 148.28}, "wikitext-2": {5: 220.14, 3: 226.05}}

# Targets, all on ratio = lmlab / peer (or on a relative / absolute difference).
TARGET_BUILD_WALL = 1.5  # lmlab wall / lmplz wall <=
TARGET_BUILD_RSS = 4.0  # lmlab peak RSS / lmplz peak RSS <=
TARGET_PPL_REL = 1e-3  # |lmlab - peer| / peer <  (0.1 %)
TARGET_SCORE_RATIO = 0.5  # lmlab words/s / kenlm.score words/s >=
TARGET_ARPA_LOG10 = 1e-4  # max |log10 lmlab - log10 kenlm| per sentence <=
PPL_TARGET = f"< {100 * TARGET_PPL_REL:g} %"

# Run in a fresh interpreter: import lmlab, train, report the in-process times on stdout.
_CHILD_BUILD = """\
import json, sys, time
t0 = time.perf_counter()
from lmlab.ngram.model import train_ngram
t1 = time.perf_counter()
model = train_ngram(sys.argv[1], order=int(sys.argv[2]), smoothing="mkn")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "train_s": t2 - t1,
                  "ngrams": [int(len(k)) for k in model.keys]}))
"""


# Starts argv[2:], waits for it, writes its wall time and rusage as JSON to argv[1].
_SPAWN = """\
import json, os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": wall, "maxrss_kb": usage.ru_maxrss, "user_s": usage.ru_utime,
               "sys_s": usage.ru_stime, "rc": os.waitstatus_to_exitcode(status)}, f)
"""


# -- small helpers -----------------------------------------------------------------------------
def say(msg: str = "") -> None:
    print(msg, flush=True)


def human_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f} M w/s" if x >= 1e5 else f"{x:,.0f} w/s" if x >= 100 else f"{x:.1f} w/s"


def human_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def human_mib(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f} MiB"


def human_ppl(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (KenLM's C++ loader draws a progress bar there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_kenlm(kenlm, path: Path):
    with quiet_stderr():
        return kenlm.Model(str(path))


def rel_diff(value: float, ref: float) -> float:
    return abs(value - ref) / abs(ref)


def run_measured(cmd: list[str], stdout_path: Path, stderr_path: Path,
                 stdin_path: str | os.PathLike | None = None) -> dict:
    """Run ``cmd`` and return its wall time, peak RSS (KiB), CPU times and exit code.

    The command is started by a tiny intermediate interpreter (``_SPAWN``) that times it and reads
    its rusage with ``os.wait4``. Starting it from this process directly would be wrong: Linux
    carries the RSS high-water mark of the process image replaced by ``exec`` into ``ru_maxrss``,
    so a child of a big parent reports at least the parent's RSS (this benchmark grows past 1 GiB).
    """
    result_path = Path(stdout_path).with_suffix(".rusage.json")
    with open(stdin_path or os.devnull, "rb") as inp, open(stdout_path, "wb") as out, \
            open(stderr_path, "wb") as err:
        subprocess.run([sys.executable, "-I", "-S", "-c", _SPAWN, str(result_path), *cmd],
                       stdin=inp, stdout=out, stderr=err, check=True)
    return json.loads(result_path.read_text())


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def unk_copy(src: Path, dst: Path) -> Path:
    """``src`` with every ``<unk>`` replaced by ``UNK`` (what KenLM's tools accept)."""
    text = src.read_text(encoding="utf-8")
    if re.search(r"(?<!\S)UNK(?!\S)", text):
        say(f"  note: {src} already contains the word UNK; <unk> -> UNK merges the two")
    dst.write_text(text.replace("<unk>", "UNK"), encoding="utf-8")
    return dst


def count_words(lines: list[str]) -> int:
    """Predicted tokens: whitespace tokens plus one end-of-sentence per line."""
    return sum(len(line.split()) + 1 for line in lines)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def interleaved_rates(funcs: dict[str, Callable[[], object]], words: int,
                      min_time: float, min_calls: int = 3) -> dict[str, dict]:
    """Time each function round-robin (so they share the machine's noise) until each has run
    ``min_calls`` times and for at least ``min_time`` seconds in total. One warm-up call each."""
    for f in funcs.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in funcs}
    while any(len(t) < min_calls or sum(t) < min_time for t in times.values()):
        for k, f in funcs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: {"calls": len(t), "total_s": sum(t), "best_s": min(t),
                "median_s": statistics.median(t), "words": words,
                "words_per_s_best": words / min(t),
                "words_per_s_median": words / statistics.median(t)}
            for k, t in times.items()}


# -- peers -------------------------------------------------------------------------------------
def find_kenlm_bins() -> tuple[str, str] | None:
    lmplz, query = shutil.which("lmplz"), shutil.which("query")
    if lmplz and query:
        return lmplz, query
    cache = Path(os.environ.get("LMLAB_CACHE") or Path.home() / ".cache" / "lmlab")
    bin_dir = cache / "kenlm" / "bin"
    lmplz, query = bin_dir / "lmplz", bin_dir / "query"
    if os.access(lmplz, os.X_OK) and os.access(query, os.X_OK):
        return str(lmplz), str(query)
    return None


def import_kenlm():
    try:
        import kenlm
    except ImportError:
        return None
    return kenlm


def import_arpa():
    try:
        from lmlab.ngram.arpa import read_arpa, write_arpa
    except ImportError:
        return None, None
    return write_arpa, read_arpa


def run_lmplz(lmplz: str, order: int, text: Path, arpa: Path, tmp: Path) -> dict:
    cmd = [lmplz, "-o", str(order), "-S", "100M", "-T", str(tmp), "--text", str(text),
           "--arpa", str(arpa)]
    res = run_measured(cmd, tmp / "lmplz.out", tmp / "lmplz.err")
    if res["rc"] != 0:
        raise RuntimeError(f"lmplz failed (rc {res['rc']}):\n{tail(tmp / 'lmplz.err')}")
    return res


def arpa_counts(path: Path) -> list[int]:
    """The n-gram counts of an ARPA file's header."""
    counts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("ngram "):
                counts.append(int(line.split("=")[1]))
            elif line.startswith("\\1-grams"):
                break
    return counts


def run_query(query: str, arpa: Path, text: Path, tmp: Path) -> dict:
    res = run_measured([query, "-v", "summary", str(arpa)], tmp / "query.out", tmp / "query.err",
                       stdin_path=text)
    out = (tmp / "query.out").read_text(errors="replace")
    if res["rc"] != 0:
        raise RuntimeError(f"query failed (rc {res['rc']}):\n{tail(tmp / 'query.err')}")
    found = {}
    for key, pattern in (("perplexity", r"Perplexity including OOVs:\s*(\S+)"),
                         ("perplexity_excl_oov", r"Perplexity excluding OOVs:\s*(\S+)"),
                         ("oov", r"^OOVs:\s*(\d+)"), ("tokens", r"^Tokens:\s*(\d+)")):
        m = re.search(pattern, out, re.M)  # (anchored: "Perplexity ... OOVs:" comes first)
        found[key] = float(m.group(1)) if m else None
    if found["perplexity"] is None:
        raise RuntimeError(f"could not parse query's output:\n{out[-2000:]}")
    return {**found, "wall_s": res["wall_s"]}


def lmlab_build_child(train: Path, order: int, tmp: Path) -> dict:
    cmd = [sys.executable, "-c", _CHILD_BUILD, str(train), str(order)]
    res = run_measured(cmd, tmp / "lmlab.out", tmp / "lmlab.err")
    if res["rc"] != 0:
        raise RuntimeError(f"lmlab build child failed (rc {res['rc']}):\n"
                           f"{tail(tmp / 'lmlab.err')}")
    lines = (tmp / "lmlab.out").read_text().strip().splitlines()
    res.update(json.loads(lines[-1]))
    return res


# -- one corpus --------------------------------------------------------------------------------
class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def row(self, corpus: str, measurement: str, peer: str, peer_value, lmlab_value,
            ratio: float | None, target: str, met: bool | None, fmt=str, ratio_fmt=None,
            raw: dict | None = None) -> None:
        if ratio is None:
            ratio_s = "-"
        elif ratio_fmt is not None:
            ratio_s = ratio_fmt(ratio)
        elif abs(ratio) >= 100:
            ratio_s = f"{ratio:,.0f}"
        else:
            ratio_s = f"{ratio:.3f}"
        self.rows.append({
            "corpus": corpus, "measurement": measurement, "peer": peer,
            "peer_value": peer_value, "lmlab_value": lmlab_value, "ratio": ratio,
            "target": target, "met": met,
            "peer_str": fmt(peer_value) if peer_value is not None else "-",
            "lmlab_str": fmt(lmlab_value) if lmlab_value is not None else "-",
            "ratio_str": ratio_s, **({"raw": raw} if raw else {})})

    def note(self, msg: str) -> None:
        say(f"  note: {msg}")
        self.notes.append(msg)


def pct(x: float) -> str:
    return f"{100 * x:.4f} %"


def bench_build(name: str, folder: Path, tmp: Path, args, bins, rep: Report) -> dict:
    train = folder / "train.txt"
    out: dict = {"lmlab": [], "lmplz": []}
    train_unk = unk_copy(train, tmp / "train.unk.txt") if bins else None
    for r in range(args.repeats):
        say(f"  build MKN-5, repeat {r + 1}/{args.repeats}: lmlab (child process) ...")
        res = lmlab_build_child(train, 5, tmp)
        say(f"    lmlab: {res['wall_s']:.2f} s wall (train_ngram {res['train_s']:.2f} s), "
            f"peak RSS {human_mib(res['maxrss_kb'])}")
        out["lmlab"].append(res)
        if bins:
            say("    lmplz -o 5 -S 100M ...")
            res = run_lmplz(bins[0], 5, train_unk, tmp / "lmplz5.arpa", tmp)
            say(f"    lmplz: {res['wall_s']:.2f} s wall, peak RSS {human_mib(res['maxrss_kb'])}")
            out["lmplz"].append(res)
    lm_best = min(out["lmlab"], key=lambda d: d["wall_s"])
    lm_rss = min(d["maxrss_kb"] for d in out["lmlab"])
    out["lmlab_best"] = {"wall_s": lm_best["wall_s"], "train_s": min(d["train_s"]
                                                                        for d in out["lmlab"]),
                         "maxrss_kb": lm_rss}
    if not bins:
        rep.row(name, "build MKN-5 wall (child process)", "lmplz (not run)", None,
                lm_best["wall_s"], None, f"<= {TARGET_BUILD_WALL}", None, human_s)
        rep.row(name, "build MKN-5 peak RSS", "lmplz (not run)", None, lm_rss, None,
                f"<= {TARGET_BUILD_RSS}", None, human_mib)
        return out
    kl_wall = min(d["wall_s"] for d in out["lmplz"])
    kl_rss = min(d["maxrss_kb"] for d in out["lmplz"])
    out["lmplz_best"] = {"wall_s": kl_wall, "maxrss_kb": kl_rss}
    ratio = lm_best["wall_s"] / kl_wall
    out["ratio_wall"] = ratio
    rep.row(name, "build MKN-5 wall (whole child process)", "lmplz -o 5 -S 100M", kl_wall,
            lm_best["wall_s"], ratio, f"<= {TARGET_BUILD_WALL}", ratio <= TARGET_BUILD_WALL,
            human_s)
    ratio_train = out["lmlab_best"]["train_s"] / kl_wall
    out["ratio_wall_train_call_only"] = ratio_train
    rep.row(name, "build MKN-5 wall (train_ngram call only)", "lmplz -o 5 -S 100M", kl_wall,
            out["lmlab_best"]["train_s"], ratio_train, "info", None, human_s)
    ratio = lm_rss / kl_rss
    out["ratio_rss"] = ratio
    rep.row(name, "build MKN-5 peak RSS", "lmplz -o 5 -S 100M", kl_rss, lm_rss, ratio,
            f"<= {TARGET_BUILD_RSS}", ratio <= TARGET_BUILD_RSS, human_mib)
    return out


def bench_corpus(name: str, folder: Path, args, bins, kenlm, arpa_io, rep: Report) -> dict:
    say(f"\n== {name} ({folder}) ==")
    result: dict = {"folder": str(folder)}
    test = folder / "test.txt"
    write_arpa, read_arpa = arpa_io
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        test_unk = unk_copy(test, tmp / "test.unk.txt") if (bins or kenlm) else None

        # 1. build ---------------------------------------------------------------------------
        result["build"] = bench_build(name, folder, tmp, args, bins, rep)

        # 2. perplexity ----------------------------------------------------------------------
        models = {}
        result["perplexity"] = {}
        for order in (5, 3):
            say(f"  perplexity, MKN order {order} ...")
            t0 = time.perf_counter()
            model = train_ngram(folder / "train.txt", order=order, smoothing="mkn")
            train_s = time.perf_counter() - t0
            res, logprobs, stream = evaluate(model, test)
            models[order] = (model, logprobs, stream)
            entry = {"lmlab": res.to_dict(), "train_in_process_s": train_s}
            ref = REFERENCE_PPL.get(name, {}).get(order)
            say(f"    lmlab {res.perplexity:.4f} ({res.tokens} tokens, {res.oov} OOV)")
            if ref is not None:
                d = rel_diff(res.perplexity, ref)
                entry["reference"] = ref
                entry["rel_diff_reference"] = d
                rep.row(name, f"test ppl MKN-{order}", "reference", ref, res.perplexity, d,
                        PPL_TARGET, d < TARGET_PPL_REL, human_ppl, pct)
            if bins:
                arpa = tmp / f"lmplz{order}.arpa"
                if not arpa.exists():
                    say(f"    lmplz -o {order} (for query) ...")
                    entry["lmplz_build"] = run_lmplz(bins[0], order, tmp / "train.unk.txt",
                                                     arpa, tmp)
                q = run_query(bins[1], arpa, test_unk, tmp)
                entry["query"] = q
                d = rel_diff(res.perplexity, q["perplexity"])
                entry["rel_diff_query"] = d
                say(f"    query {q['perplexity']:.4f}")
                rep.row(name, f"test ppl MKN-{order}", "KenLM query", q["perplexity"],
                        res.perplexity, d, PPL_TARGET, d < TARGET_PPL_REL,
                        human_ppl, pct)
            result["perplexity"][order] = entry

        # 2b. ARPA interop (only when lmlab.ngram.arpa exists) --------------------------------
        result["arpa"] = bench_arpa(name, tmp, test, test_unk, models, bins, kenlm,
                                    write_arpa, read_arpa, result, rep)

        # 3. scoring throughput --------------------------------------------------------------
        result["throughput"] = bench_throughput(name, tmp, test, test_unk, models[5][0],
                                                bins, kenlm, args, rep)

        # 4. NLTK ----------------------------------------------------------------------------
        if name == "ptb" and not args.skip_nltk:
            result["nltk"] = bench_nltk(name, folder, tmp, models[3][0], bins, kenlm, args, rep)
    return result


def bench_arpa(name, tmp, test, test_unk, models, bins, kenlm, write_arpa, read_arpa, result,
               rep: Report) -> dict:
    out: dict = {}
    if write_arpa is None:
        rep.note("lmlab.ngram.arpa not importable: ARPA interop checks skipped")
        return out
    model, logprobs, stream = models[5]
    if kenlm is not None:
        say("  lmlab ARPA -> kenlm.Model, per-sentence agreement ...")
        try:
            path = tmp / "lmlab5.arpa"
            t0 = time.perf_counter()
            write_arpa(model, path)
            out["write_arpa_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            km = load_kenlm(kenlm, path)
            out["kenlm_load_s"] = time.perf_counter() - t0
            ours = sentence_logprobs(logprobs, stream) / LN10
            lines = read_lines(test)
            # Sentence totals from full_scores, summed in float64: Model.score sums the per-word
            # log10s in float32, which alone drifts ~5e-4 on WikiText-2's 300-word lines.
            theirs = np.array([sum(p for p, _, _ in km.full_scores(line)) for line in lines])
            diff = float(np.max(np.abs(ours - theirs)))
            out["max_abs_diff_log10_sentence"] = diff
            out["max_abs_diff_log10_sentence_vs_score_float32"] = float(np.max(np.abs(
                ours - np.array([km.score(line, bos=True, eos=True) for line in lines]))))
            out["sentences"] = len(theirs)
            del km
            path.unlink()
            rep.row(name, "lmlab ARPA in kenlm: max abs dlog10/sentence", "kenlm full_scores",
                    None, diff, diff, f"<= {TARGET_ARPA_LOG10:g}", diff <= TARGET_ARPA_LOG10,
                    lambda x: f"{x:.2e}", lambda x: f"{x:.2e}")
        except Exception as err:  # the ARPA code is new; report rather than abort the run
            rep.note(f"{name}: lmlab ARPA -> kenlm check failed: {type(err).__name__}: {err}")
            out["error_kenlm"] = f"{type(err).__name__}: {err}"
    if bins and read_arpa is not None:
        say("  lmplz ARPA -> lmlab read_arpa, perplexity vs query ...")
        try:
            t0 = time.perf_counter()
            theirs_model = read_arpa(tmp / "lmplz5.arpa")
            out["read_arpa_s"] = time.perf_counter() - t0
            res, _, _ = evaluate(theirs_model, test_unk)
            q = result["perplexity"][5]["query"]["perplexity"]
            d = rel_diff(res.perplexity, q)
            out.update(read_arpa_perplexity=res.perplexity, rel_diff_query=d)
            del theirs_model
            rep.row(name, "lmplz ARPA read by lmlab: test ppl", "KenLM query", q,
                    res.perplexity, d, PPL_TARGET, d < TARGET_PPL_REL,
                    human_ppl, pct)
        except Exception as err:
            rep.note(f"{name}: read_arpa check failed: {type(err).__name__}: {err}")
            out["error_read_arpa"] = f"{type(err).__name__}: {err}"
    return out


def bench_throughput(name, tmp, test, test_unk, model, bins, kenlm, args, rep: Report) -> dict:
    say("  scoring throughput (MKN-5) ...")
    stream = read_corpus(test, model.vocab)
    words = len(stream)
    funcs: dict[str, Callable[[], object]] = {
        "lmlab_end_to_end": lambda: model.logprobs(read_corpus(test, model.vocab)),
        "lmlab_scoring_only": lambda: model.logprobs(stream),
    }
    peer_desc = None
    km = None
    if kenlm is not None:
        arpa = tmp / "lmplz5.arpa"
        if arpa.exists():
            peer_desc = "lmplz 5-gram ARPA"
            km, lines = load_kenlm(kenlm, arpa), read_lines(test_unk)
        else:
            write_arpa, _ = import_arpa()
            if write_arpa is not None:
                try:
                    write_arpa(model, tmp / "lmlab5.arpa")
                    km, lines = load_kenlm(kenlm, tmp / "lmlab5.arpa"), read_lines(test)
                    peer_desc = "lmlab's own 5-gram ARPA (no lmplz)"
                except Exception as err:
                    rep.note(f"{name}: no model for kenlm throughput: {err}")
        if km is not None:
            if count_words(lines) != words:
                rep.note(f"{name}: word counts differ: kenlm lines {count_words(lines)}, "
                         f"lmlab {words}")

            def kenlm_score(km=km, lines=lines):
                total = 0.0
                for line in lines:
                    total += km.score(line, bos=True, eos=True)
                return total

            def kenlm_full(km=km, lines=lines):
                return sum(s for line in lines for s, _, _ in km.full_scores(line))

            funcs["kenlm_score"] = kenlm_score
            funcs["kenlm_full_scores"] = kenlm_full
    rates = interleaved_rates(funcs, words, args.min_time)
    out = {"words": words, "kenlm_model": peer_desc, "rates": rates}
    for key, r in rates.items():
        say(f"    {key:20s} {human_rate(r['words_per_s_best'])} best, "
            f"{human_rate(r['words_per_s_median'])} median, {r['calls']} calls")
    e2e = rates["lmlab_end_to_end"]["words_per_s_best"]
    only = rates["lmlab_scoring_only"]["words_per_s_best"]
    if km is None:
        rep.row(name, "score words/s, lmlab end to end", "kenlm (not run)", None, e2e, None,
                f">= {TARGET_SCORE_RATIO}", None, human_rate)
        rep.row(name, "score words/s, lmlab scoring only", "kenlm (not run)", None, only, None,
                f">= {TARGET_SCORE_RATIO}", None, human_rate)
        return out
    ks = rates["kenlm_score"]["words_per_s_best"]
    kf = rates["kenlm_full_scores"]["words_per_s_best"]
    out["ratio_end_to_end_vs_score"] = e2e / ks
    out["ratio_scoring_only_vs_score"] = only / ks
    out["ratio_end_to_end_vs_full_scores"] = e2e / kf
    rep.row(name, "score words/s, lmlab end to end (text)", "kenlm.Model.score", ks, e2e,
            e2e / ks, f">= {TARGET_SCORE_RATIO}", e2e / ks >= TARGET_SCORE_RATIO, human_rate)
    rep.row(name, "score words/s, lmlab scoring only", "kenlm.Model.score", ks, only, only / ks,
            f">= {TARGET_SCORE_RATIO}", only / ks >= TARGET_SCORE_RATIO, human_rate)
    rep.row(name, "score words/s, lmlab end to end (text)", "kenlm full_scores", kf, e2e,
            e2e / kf, "info", None, human_rate)
    return out


def bench_nltk(name, folder, tmp, mkn3, bins, kenlm, args, rep: Report) -> dict:
    try:
        import nltk
        from nltk.lm import KneserNeyInterpolated
        from nltk.lm.preprocessing import padded_everygram_pipeline
        from nltk.util import ngrams
    except ImportError:
        rep.note("nltk not installed: NLTK comparison skipped")
        return {}
    n_sent = args.nltk_sentences
    out: dict = {"nltk_version": nltk.__version__, "sentences": n_sent}
    train_sents = [line.split() for line in read_lines(folder / "train.txt")]
    say(f"  NLTK KneserNeyInterpolated(3): fit on {len(train_sents)} sentences ...")
    t0 = time.perf_counter()
    grams, vocab = padded_everygram_pipeline(3, train_sents)
    nlm = KneserNeyInterpolated(3)
    nlm.fit(grams, vocab)
    fit_s = time.perf_counter() - t0
    say(f"    fit {fit_s:.2f} s")
    t0 = time.perf_counter()
    kn3 = train_ngram(folder / "train.txt", order=3, smoothing="kn")
    lm_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_ngram(folder / "train.txt", order=3, smoothing="mkn")
    mkn3_fit = time.perf_counter() - t0
    out.update(nltk_fit_s=fit_s, lmlab_kn3_fit_s=lm_fit, lmlab_mkn3_fit_s=mkn3_fit)
    rep.row(name, "fit 3-gram KN on train (in process)", f"NLTK {nltk.__version__}", fit_s,
            lm_fit, lm_fit / fit_s, "info", None, human_s)

    # Subset: the first N test sentences, as a file for lmlab (and kenlm's UNK copy).
    subset_lines = read_lines(folder / "test.txt")[:n_sent]
    subset = tmp / "test.subset.txt"
    subset.write_text("".join(line + "\n" for line in subset_lines), encoding="utf-8")
    # NLTK protocol matching lmlab's: context starts with <s> <s>; predict words and one </s>.
    say(f"    NLTK scoring {n_sent} sentences ...")
    t0 = time.perf_counter()
    log2_total, n_tokens = 0.0, 0
    for line in subset_lines:
        toks = ["<s>", "<s>"] + line.split() + ["</s>"]
        for a, b, c in ngrams(toks, 3):
            log2_total += nlm.logscore(c, (a, b))
            n_tokens += 1
    nltk_s = time.perf_counter() - t0
    nltk_rate = n_tokens / nltk_s
    nltk_ppl = 2.0 ** (-log2_total / n_tokens) if math.isfinite(log2_total) else float("inf")
    del nlm
    say(f"    NLTK {nltk_ppl:.3f} ppl, {nltk_rate:.1f} words/s")
    kn_res, _, _ = evaluate(kn3, subset)
    mkn_res, _, _ = evaluate(mkn3, subset)
    rates = interleaved_rates({"kn3": lambda: kn3.logprobs(read_corpus(subset, kn3.vocab))},
                              kn_res.tokens, args.min_time)
    lm_rate = rates["kn3"]["words_per_s_best"]
    out.update(tokens=n_tokens, nltk_score_s=nltk_s, nltk_words_per_s=nltk_rate,
               nltk_perplexity=nltk_ppl, lmlab_kn3_perplexity=kn_res.perplexity,
               lmlab_mkn3_perplexity=mkn_res.perplexity, lmlab_kn3_rates=rates["kn3"])
    if kn_res.tokens != n_tokens:
        rep.note(f"NLTK scored {n_tokens} tokens, lmlab {kn_res.tokens}")
    rep.row(name, f"score words/s, 3-gram KN, {n_sent} test sents", "NLTK", nltk_rate, lm_rate,
            lm_rate / nltk_rate, "info", None, human_rate)
    rep.row(name, f"ppl 3-gram KN, {n_sent} test sents", "NLTK KN-interpolated", nltk_ppl,
            kn_res.perplexity, kn_res.perplexity / nltk_ppl, "info", None, human_ppl)
    rep.row(name, f"ppl 3-gram MKN, {n_sent} test sents", "NLTK KN-interpolated", nltk_ppl,
            mkn_res.perplexity, mkn_res.perplexity / nltk_ppl, "info", None, human_ppl)
    if kenlm is not None and bins and (tmp / "lmplz3.arpa").exists():
        km = load_kenlm(kenlm, tmp / "lmplz3.arpa")
        sub_unk = unk_copy(subset, tmp / "test.subset.unk.txt")
        lines = read_lines(sub_unk)
        log10_total = sum(p for line in lines for p, _, _ in km.full_scores(line))
        k_ppl = 10.0 ** (-log10_total / count_words(lines))
        out["kenlm_mkn3_perplexity"] = k_ppl
        d = rel_diff(mkn_res.perplexity, k_ppl)
        rep.row(name, f"ppl 3-gram MKN, {n_sent} test sents", "kenlm (lmplz -o 3)", k_ppl,
                mkn_res.perplexity, d, PPL_TARGET, d < TARGET_PPL_REL,
                human_ppl, pct)
    return out


# -- report ------------------------------------------------------------------------------------
def machine_info() -> dict:
    info = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "python_executable": sys.executable, "numpy": np.__version__,
            "platform": platform.platform(), "machine": platform.machine()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["mem_total_kb"] = int(re.search(r"MemTotal:\s*(\d+)",
                                             Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        pass
    try:
        import lmlab
        info["lmlab"] = getattr(lmlab, "__version__", None)
    except ImportError:
        pass
    repo = Path(__file__).resolve().parent.parent
    # Others edit src/ while benchmarks run: fingerprint exactly the code that was measured.
    digest = hashlib.sha256()
    for f in sorted((repo / "src").rglob("*.py")):
        digest.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes())
    info["src_sha256"] = digest.hexdigest()
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, text=True,
                                            capture_output=True, check=True).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "src"],
                                                cwd=repo, text=True, capture_output=True,
                                                check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def print_table(rows: list[dict]) -> None:
    head = ["corpus", "measurement", "peer", "peer value", "lmlab", "ratio", "target", "met?"]
    body = [[r["corpus"], r["measurement"], r["peer"], r["peer_str"], r["lmlab_str"],
             r["ratio_str"], r["target"], {True: "yes", False: "NO", None: "-"}[r["met"]]]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]

    def fmt(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) \
            + " |"

    say(fmt(head))
    say("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in body:
        say(fmt(cells))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="data dir holding ptb/ and wikitext-2/ (default: $LMLAB_DATA)")
    p.add_argument("--corpora", nargs="+", choices=ALL_CORPORA,
                   help="corpora to run (default: both; --quick: ptb)")
    p.add_argument("--repeats", type=int, help="builds per tool, best kept (default 2; --quick 1)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help=f"where to write the results (default {DEFAULT_JSON})")
    p.add_argument("--skip-nltk", action="store_true", help="skip the NLTK comparison")
    p.add_argument("--skip-kenlm", action="store_true",
                   help="skip KenLM (binaries and python package)")
    p.add_argument("--nltk-sentences", type=int,
                   help="PTB test sentences NLTK scores (~11 words/s; default 20, --quick 5)")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="seconds of repeated calls per throughput measurement (default 0.5)")
    p.add_argument("--quick", action="store_true",
                   help="PTB only, one repeat, NLTK on 5 sentences")
    args = p.parse_args(argv)
    if args.corpora is None:
        args.corpora = ["ptb"] if args.quick else list(ALL_CORPORA)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.nltk_sentences is None:
        args.nltk_sentences = 5 if args.quick else 20
    if args.repeats < 1 or args.nltk_sentences < 1 or args.min_time <= 0:
        p.error("--repeats and --nltk-sentences must be >= 1, --min-time > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    data = args.data or os.environ.get("LMLAB_DATA")
    info = machine_info()
    info["loadavg_start"] = os.getloadavg()
    say(f"lmlab n-gram vs peers; python {info['python']}, numpy {info['numpy']}, "
        f"{info['cpu_count']} CPUs, load {info['loadavg_start'][0]:.2f}")
    rep = Report()
    bins = None
    kenlm = None
    if args.skip_kenlm:
        rep.note("--skip-kenlm: KenLM comparisons skipped")
    else:
        bins = find_kenlm_bins()
        if bins is None:
            rep.note("KenLM lmplz/query not on PATH nor in the lmlab cache "
                     "(run benchmarks/setup_kenlm.sh): lmplz/query comparisons skipped")
        else:
            say(f"KenLM binaries: {bins[0]}, {bins[1]}")
        kenlm = import_kenlm()
        if kenlm is None:
            rep.note("python package kenlm not installed: kenlm.Model comparisons skipped")
    arpa_io = import_arpa()
    results: dict = {}
    if not data:
        rep.note("no data dir (--data or $LMLAB_DATA): nothing to benchmark")
    else:
        for name in args.corpora:
            folder = Path(data) / name
            missing = [f for f in ("train.txt", "test.txt") if not (folder / f).is_file()]
            if missing:
                rep.note(f"corpus {name} skipped: {', '.join(missing)} not found in {folder}")
                continue
            results[name] = bench_corpus(name, folder, args, bins, kenlm, arpa_io, rep)
    info["loadavg_end"] = os.getloadavg()
    elapsed = time.perf_counter() - t_start

    say(f"\nResults (ratio = lmlab / peer, except ppl rows: relative difference; "
        f"best of {args.repeats} builds, throughput best call of >= {args.min_time} s):\n")
    if rep.rows:
        print_table(rep.rows)
    else:
        say("(no measurements)")
    if rep.notes:
        say("\nNotes:")
        for n in rep.notes:
            say(f"- {n}")
    met = [r["met"] for r in rep.rows if r["met"] is not None]
    say(f"\n{sum(met)}/{len(met)} targets met; {elapsed:.0f} s in all; "
        f"load average {info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}")

    payload = {"benchmark": "ngram_vs_peers", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "elapsed_s": elapsed, "machine": info,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "data": data, "kenlm_bins": list(bins) if bins else None,
               "arpa_io_available": arpa_io[0] is not None,
               "targets": {"build_wall_ratio_max": TARGET_BUILD_WALL,
                           "build_rss_ratio_max": TARGET_BUILD_RSS,
                           "ppl_rel_diff_max": TARGET_PPL_REL,
                           "score_ratio_min": TARGET_SCORE_RATIO,
                           "arpa_sentence_log10_max": TARGET_ARPA_LOG10},
               "reference_ppl": REFERENCE_PPL, "rows": rep.rows, "notes": rep.notes,
               "corpora": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    say(f"wrote {args.json}")
    return 0


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


if __name__ == "__main__":
    sys.exit(main())
