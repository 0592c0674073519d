#!/usr/bin/env python
"""Benchmark lmlab's tokenizers saved with the model: models of different tokenizations compared
on the same raw text by bits per character (issue targets in each section's table).

Sections (``--sections``, comma-separated; all by default):

* ``ptb-char``: Mikolov's character PTB (symbols already space-separated, ``_`` for a space),
  modified Kneser-Ney n-grams of the default whitespace tokenizer, orders ``--orders`` (up to
  lmlab's MAX_ORDER, 20); test bits per token (the literature's bpc) beside published anchors;
  with ``--ptb-char-lstm CKPT`` also that LSTM and an EM mixture of it with the best n-gram.
* ``zh``: zh-fortunes (raw Chinese prose, not segmented): char, jieba-word, sentencepiece
  (unigram) and byte MKN n-grams scored by bits per raw character; with ``--zh-lstm CKPT`` a
  char LSTM and its EM mixture with the best char n-gram.
* ``parity``: lmlab's ``--tokenizer char`` n-gram against KenLM's ``lmplz`` (and ``query``) run
  on the same text split into space-separated characters (target: perplexity within 0.1 %).
* ``speed``: the whitespace path is unchanged: PTB MKN-5 perplexity 141.19 and the wall time of
  ``lmlab ngram train`` / ``lmlab eval`` against the tree of commit c9d9bd8 (a git worktree
  outside the repository), interleaved, best of ``--repeats``; target current/base <= 1.05.

Usage::

    python benchmarks/cross_tokenization.py --data $LMLAB_DATA            # all (a few minutes)
    python benchmarks/cross_tokenization.py --sections zh,parity
    python benchmarks/cross_tokenization.py --sections ptb-char --orders 10 13 \\
        --ptb-char-lstm ptbchar-lstm.pt
    python benchmarks/cross_tokenization.py --sections zh --zh-lstm zh-char-lstm.pt
    python benchmarks/cross_tokenization.py --sections speed --repeats 5   # on a quiet machine

Output: one markdown table per section on stdout and ``benchmarks/results/cross_tokenization.json``
(sections run later are merged into the file: each keeps its own time stamp and machine info).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ngram_vs_peers import (  # this folder: run as `python benchmarks/cross_tokenization.py`
    arpa_counts,
    find_kenlm_bins,
    machine_info,
    run_measured,
    run_query,
    say,
    tail,
)

import lmlab
from lmlab.corpus import iter_lines
from lmlab.tokenizers import make_tokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEFAULT_JSON = RESULTS / "cross_tokenization.json"
ALL_SECTIONS = ("ptb-char", "zh", "parity", "speed")

# ptb-char: published test bpc (the anchors) and targets
ANCHORS = {"maximum-entropy n-gram (Mikolov et al. 2012)": 1.37,
           "LSTM (Graves 2013)": 1.262, "AWD-LSTM (Merity et al. 2018)": 1.175}
TARGET_PTB_NGRAM = 1.40
TARGET_PTB_LSTM = 1.40
# zh: best model vs best char n-gram, relative bpc improvement
TARGET_ZH_GAIN = 0.05
# parity: |lmlab - KenLM| / KenLM perplexity
TARGET_PARITY = 1e-3
PARITY_ORDER = 5
# speed: whitespace path, current tree / base tree, and the reference perplexity
BASE_COMMIT = "c9d9bd8"
TARGET_SPEED = 1.05
REFERENCE_PTB_MKN5 = 141.19

# The lmlab CLI from whichever tree PYTHONPATH names (there is no lmlab/__main__.py).
_CLI = "import sys; from lmlab.cli import main; sys.exit(main())"


def table(head: list[str], rows: list[list]) -> None:
    """A markdown table on stdout."""
    body = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    say(line(head))
    say("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in body:
        say(line(cells))
    say()


def f3(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def f4(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def yes(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def result_dict(r, **extra) -> dict:
    """The numbers of an EvalResult this benchmark reports."""
    return {"tokens": r.tokens, "oov": r.oov, "sentences": r.sentences, "characters": r.characters,
            "bytes": r.bytes, "logprob": r.logprob, "perplexity": r.perplexity,
            "bits_per_token": r.bits_per_token, "bits_per_character": r.bits_per_character,
            "bits_per_byte": r.bits_per_byte, "word_perplexity": r.word_perplexity, **extra}


def ngram_counts(model) -> list[int]:
    return [int(len(k)) for k in model.keys]


def train_timed(path: Path, **kw):
    gc.collect()
    t0 = time.perf_counter()
    model = lmlab.train_ngram(path, smoothing="mkn", **kw)
    return model, time.perf_counter() - t0


def same_vocab(a, b) -> tuple[bool, str]:
    """Whether two models can be mixed (same tokenizer and word set), and why not."""
    if a.vocab.tokenizer != b.vocab.tokenizer:
        return False, (f"tokenizers differ: {a.vocab.tokenizer.describe()} vs "
                       f"{b.vocab.tokenizer.describe()}")
    sa, sb = set(a.vocab.itos), set(b.vocab.itos)
    if sa != sb:
        return False, (f"vocabularies differ: {len(sa)} vs {len(sb)} words, "
                       f"{len(sa - sb)} only in the n-gram, {len(sb - sa)} only in the LSTM")
    return True, f"same tokenizer ({a.vocab.tokenizer.describe()}) and {len(sa)} words"


def mix_with(ngram, nn, train: Path, order: int, valid: Path, test: Path, notes: list[str]
             ) -> tuple[dict, object]:
    """EM mixture (weights fitted on valid) of ``ngram`` and ``nn``; when their vocabularies
    differ, the n-gram is retrained on the LSTM's vocabulary first (and that is reported)."""
    ok, why = same_vocab(ngram, nn)
    info: dict = {"vocab_check": why, "vocab_match": ok}
    if not ok:
        msg = f"VOCABULARY MISMATCH between the n-gram and the LSTM: {why}; the n-gram is " \
              "retrained on the LSTM's vocabulary for the mixture"
        say(f"  note: {msg}")
        notes.append(msg)
        ngram, info["retrain_s"] = train_timed(train, order=order, vocab=nn.vocab,
                                               tokenizer=nn.vocab.tokenizer)
        info["retrained_ngram_test"] = result_dict(ngram.perplexity(test))
    t0 = time.perf_counter()
    mix = lmlab.interpolate([ngram, nn], valid=valid)
    info["fit_s"] = time.perf_counter() - t0
    info["weights"] = [float(w) for w in mix.weights]
    info["em_valid_perplexity"] = [float(x) for x in mix.em_perplexity[-1:]]
    return info, mix


# -- ptb-char ----------------------------------------------------------------------------------
def section_ptb_char(args, data: Path) -> dict:
    """Whitespace MKN n-grams on Mikolov's character PTB. Its files hold the symbols separated by
    spaces (``_`` is the space): the whitespace tokenizer reads one symbol per token, and lmlab
    predicts every symbol plus one ``</s>`` per line, exactly the symbols + line ends the
    literature's bpc counts, so its bpc is ``bits_per_token`` (not ``bits_per_character``, which
    would count the separating spaces of the file as characters)."""
    folder = data / "ptb-char"
    train, valid, test = (folder / f"{s}.txt.gz" for s in ("train", "valid", "test"))
    say(f"## ptb-char: whitespace MKN n-grams, orders {' '.join(map(str, args.orders))}\n")
    rows, out, notes = [], {"orders": {}, "notes": []}, []
    best = None  # (valid bpc, order, model)
    for n in args.orders:
        model, secs = train_timed(train, order=n)
        rv, rt = model.perplexity(valid), model.perplexity(test)
        counts = ngram_counts(model)
        out["orders"][str(n)] = {"train_s": secs, "ngrams": counts, "total_ngrams": sum(counts),
                                 "valid": result_dict(rv), "test": result_dict(rt)}
        say(f"  order {n}: test bpc {rt.bits_per_token:.4f}, valid {rv.bits_per_token:.4f}, "
            f"{sum(counts):,} n-grams, {secs:.1f} s")
        rows.append([f"MKN {n}-gram", f4(rv.bits_per_token), f4(rt.bits_per_token),
                     f"{sum(counts):,}", f"{secs:.1f}", rt.tokens, rt.oov])
        if best is None or rv.bits_per_token < best[0]:
            best = (rv.bits_per_token, n, model)
        else:
            del model
        gc.collect()
    assert best is not None
    _, best_order, best_model = best
    best_test = out["orders"][str(best_order)]["test"]["bits_per_token"]
    out["best_order"] = best_order
    out["best_ngram_test_bpc"] = best_test
    table(["model", "valid bpc", "test bpc", "n-grams", "train s", "test tokens", "OOV"], rows)

    lstm_bpc = mix_bpc = None
    if args.ptb_char_lstm:
        nn = lmlab.load(args.ptb_char_lstm)
        t0 = time.perf_counter()
        r = nn.perplexity(test)
        out["lstm"] = result_dict(r, checkpoint=str(args.ptb_char_lstm),
                                  score_s=time.perf_counter() - t0)
        lstm_bpc = r.bits_per_token
        info, mix = mix_with(best_model, nn, train, best_order, valid, test, notes)
        rm = mix.perplexity(test)
        mix_bpc = rm.bits_per_token
        out["mixture"] = {**info, "test": result_dict(rm)}
    # the anchors and targets
    rows = [[name, f3(v), "-", "-"] for name, v in ANCHORS.items()]
    rows.append([f"lmlab MKN {best_order}-gram (best on valid)", f4(best_test),
                 f"<= {TARGET_PTB_NGRAM}", yes(best_test <= TARGET_PTB_NGRAM)])
    out["targets"] = {"ngram": best_test <= TARGET_PTB_NGRAM}
    if lstm_bpc is not None:
        rows.append(["lmlab LSTM (" + Path(args.ptb_char_lstm).name + ")", f4(lstm_bpc),
                     f"<= {TARGET_PTB_LSTM}", yes(lstm_bpc <= TARGET_PTB_LSTM)])
        below = mix_bpc < min(best_test, lstm_bpc)
        w = out["mixture"]["weights"]
        rows.append([f"EM mixture n-gram + LSTM (weights {w[0]:.2f}/{w[1]:.2f})",
                     f4(mix_bpc), "< both", yes(below)])
        out["targets"].update(lstm=lstm_bpc <= TARGET_PTB_LSTM, mixture=below)
    say("ptb-char test bpc (bits per symbol, one end per line) beside published numbers:\n")
    table(["model", "test bpc", "target", "met?"], rows)
    out["anchors"] = ANCHORS
    out["notes"] = notes
    return out


# -- zh ----------------------------------------------------------------------------------------
def zh_models(args) -> list[tuple[str, str, int, int | None]]:
    """(family, tokenizer, order, vocab size) of every zh model."""
    specs = [("char", "char", n, None) for n in args.zh_char_orders]
    specs += [("jieba", "jieba", n, None) for n in args.zh_jieba_orders]
    specs += [("sentencepiece", "sentencepiece", n, v) for v in args.zh_sp_vocab
              for n in args.zh_sp_orders]
    specs += [("byte", "byte", n, None) for n in args.zh_byte_orders]
    return specs


def section_zh(args, data: Path) -> dict:
    folder = data / "zh-fortunes"
    train, valid, test = (folder / f"{s}.txt" for s in ("train", "valid", "test"))
    say("## zh: zh-fortunes, MKN n-grams of four tokenizations, bits per raw character\n")
    out: dict = {"models": [], "notes": []}
    notes: list[str] = out["notes"]
    fitted: dict = {}  # a subword tokenizer trained once per vocab size, reused across orders
    best_char = None  # (valid bpc, order, model)
    for family, tok, n, vs in zh_models(args):
        label = f"{family} {n}-gram" + (f" (vocab {vs})" if vs else "")
        tokenizer = fitted.get((tok, vs), tok)
        try:
            model, secs = train_timed(train, order=n, tokenizer=tokenizer,
                                      vocab_size=None if tokenizer is not tok else vs)
        except (lmlab.LmlabError, ImportError) as err:
            say(f"  {label}: FAILED ({err})")
            notes.append(f"{label}: {err}")
            continue
        if model.vocab.tokenizer.trainable:
            fitted[(tok, vs)] = model.vocab.tokenizer
        rv, rt = model.perplexity(valid), model.perplexity(test)
        counts = ngram_counts(model)
        rec = {"family": family, "label": label, "tokenizer": model.vocab.tokenizer.describe(),
               "order": n, "vocab_size": vs, "vocab": len(model.vocab), "train_s": secs,
               "ngrams": counts, "valid": result_dict(rv), "test": result_dict(rt)}
        out["models"].append(rec)
        say(f"  {label}: test bpc {rt.bits_per_character:.4f} (valid "
            f"{rv.bits_per_character:.4f}), {rt.tokens:,} tokens, OOV {rt.oov}, {secs:.1f} s")
        if family == "char" and (best_char is None or rv.bits_per_character < best_char[0]):
            best_char = (rv.bits_per_character, n, model)
        del model
        gc.collect()

    if args.zh_lstm:
        nn = lmlab.load(args.zh_lstm)
        t0 = time.perf_counter()
        rv, rt = nn.perplexity(valid), nn.perplexity(test)
        out["models"].append({"family": "lstm", "label": f"char LSTM ({Path(args.zh_lstm).name})",
                              "tokenizer": nn.vocab.tokenizer.describe(), "order": None,
                              "vocab": len(nn.vocab), "train_s": None,
                              "score_s": time.perf_counter() - t0,
                              "valid": result_dict(rv), "test": result_dict(rt)})
        if best_char is not None:
            _, n, char_model = best_char
            info, mix = mix_with(char_model, nn, train, n, valid, test, notes)
            rv, rt = mix.perplexity(valid), mix.perplexity(test)
            w = info["weights"]
            out["models"].append({"family": "mixture", "vocab": len(mix.vocab),
                                  "label": f"EM mix char {n}-gram + LSTM ({w[0]:.2f}/{w[1]:.2f})",
                                  "tokenizer": mix.vocab.tokenizer.describe(), "order": None,
                                  "train_s": info["fit_s"], **info,
                                  "valid": result_dict(rv), "test": result_dict(rt)})

    rows = []
    for m in out["models"]:
        t = m["test"]
        rows.append([m["label"], f4(m["valid"]["bits_per_character"]),
                     f4(t["bits_per_character"]), f4(t["bits_per_token"]), f"{t['tokens']:,}",
                     t["oov"], "-" if m["train_s"] is None else f"{m['train_s']:.1f}"])
    table(["model", "valid bpc", "test bpc", "bits/token", "test tokens", "OOV", "train s"],
          rows)
    chars = out["models"][0]["test"]["characters"] if out["models"] else None
    say(f"bpc = total bits / {chars} raw test characters (each line end counts as one), the "
        "same for every model. jieba-word models map the test's unseen words to <unk>: one "
        "<unk> probability stands for a whole unseen word, so their bpc is OPTIMISTIC (see "
        "their OOV count) and they are not ranked. Byte models have no OOV; a char model's OOV "
        "are test characters never seen in training (each such <unk> is one character: a small "
        "effect); sentencepiece's byte-fallback pieces are all in its vocabulary.\n")
    out["test_characters"] = chars

    # best model (valid bpc, models without unseen-word OOV) vs the best char n-gram, on test
    ranked = [m for m in out["models"] if m["family"] != "jieba"]
    char_models = [m for m in out["models"] if m["family"] == "char"]
    if ranked and char_models:
        best = min(ranked, key=lambda m: m["valid"]["bits_per_character"])
        bchar = min(char_models, key=lambda m: m["valid"]["bits_per_character"])
        b, c = best["test"]["bits_per_character"], bchar["test"]["bits_per_character"]
        gain = 1.0 - b / c
        out["best"] = {"model": best["label"], "test_bpc": b, "best_char": bchar["label"],
                       "best_char_test_bpc": c, "relative_improvement": gain,
                       "target": TARGET_ZH_GAIN, "met": gain >= TARGET_ZH_GAIN}
        say("best model (lowest valid bpc, jieba excluded) vs the best char n-gram, test:\n")
        table(["best model", "test bpc", "best char n-gram", "test bpc", "improvement",
               "target", "met?"],
              [[best["label"], f4(b), bchar["label"], f4(c), f"{100 * gain:.2f} %",
                f">= {100 * TARGET_ZH_GAIN:g} %", yes(gain >= TARGET_ZH_GAIN)]])
    return out


# -- parity ------------------------------------------------------------------------------------
def char_split(src: Path, dst: Path) -> int:
    """``src`` with each line's characters as the char tokenizer cuts them, space-separated;
    lines read as lmlab reads them. Returns the number of lines."""
    tok = make_tokenizer("char")
    n = 0
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        for _, lines in iter_lines(src, tokenizer=tok):
            for line in lines:
                f.write(" ".join(tok.split(line)) + "\n")
                n += 1
    return n


def parity_one(name: str, train: Path, test: Path, bins: dict, tmp: Path) -> dict:
    n = PARITY_ORDER
    say(f"  {name}: char-splitting, lmplz -o {n}, lmlab --tokenizer char -n {n} ...")
    tr, te = tmp / f"{name}.train.chars", tmp / f"{name}.test.chars"
    char_split(train, tr)
    char_split(test, te)
    arpa = tmp / f"{name}.arpa"
    lmplz, query = bins
    res = run_measured([lmplz, "-o", str(n), "--discount_fallback", "-S", "20%", "-T", str(tmp),
                        "--text", str(tr), "--arpa", str(arpa)], tmp / "lmplz.out",
                       tmp / "lmplz.err")
    if res["rc"] != 0:
        raise RuntimeError(f"lmplz failed (rc {res['rc']}):\n{tail(tmp / 'lmplz.err')}")
    lmplz_s = res["wall_s"]
    ken = lmlab.load(arpa)
    rk = ken.perplexity(te)
    del ken
    gc.collect()
    model, secs = train_timed(train, order=n, tokenizer="char")
    rl = model.perplexity(test)
    q = run_query(query, arpa, te, tmp)
    # -v summary prints no total: the one its perplexity (OOVs included) implies
    q["log10_total"] = -q["tokens"] * math.log10(q["perplexity"])
    res = {"order": n, "train": str(train), "test": str(test),
           "lmlab_char": result_dict(rl, train_s=secs, ngrams=ngram_counts(model)),
           "lmplz_arpa_in_lmlab": result_dict(rk, ngrams=arpa_counts(arpa), lmplz_s=lmplz_s),
           "kenlm_query": q}
    res["rel_diff_ppl_vs_arpa"] = rl.perplexity / rk.perplexity - 1.0
    res["rel_diff_ppl_vs_query"] = rl.perplexity / q["perplexity"] - 1.0
    res["abs_diff_logprob_nats_vs_arpa"] = rl.logprob - rk.logprob
    res["met"] = max(abs(res["rel_diff_ppl_vs_arpa"]), abs(res["rel_diff_ppl_vs_query"])) \
        < TARGET_PARITY
    del model
    gc.collect()
    return res


def section_parity(args, data: Path) -> dict:
    say(f"## parity: lmlab --tokenizer char vs KenLM lmplz on char-split text (order "
        f"{PARITY_ORDER})\n")
    bins = find_kenlm_bins()
    if bins is None:
        say("  KenLM binaries not found (run benchmarks/setup_kenlm.sh): section skipped\n")
        return {"skipped": "KenLM binaries not found"}
    corpora = {"zh-fortunes": (data / "zh-fortunes" / "train.txt",
                               data / "zh-fortunes" / "test.txt")}
    if not args.parity_zh_only:
        corpora["ptb (raw text)"] = (data / "ptb" / "train.txt", data / "ptb" / "test.txt")
    out: dict = {"corpora": {}}
    with tempfile.TemporaryDirectory(prefix="lmlab-xtok-") as t:
        for name, (train, test) in corpora.items():
            sub = Path(t) / re.sub(r"\W+", "_", name)
            sub.mkdir()
            out["corpora"][name] = parity_one(re.sub(r"\W+", "_", name), train, test, bins, sub)
    rows = []
    for name, r in out["corpora"].items():
        a, k, q = r["lmlab_char"], r["lmplz_arpa_in_lmlab"], r["kenlm_query"]
        rows.append([name, "lmlab char model, raw test", f"{a['logprob'] / math.log(10):.2f}",
                     f"{a['perplexity']:.5f}", a["tokens"], a["oov"], "-",
                     f"{sum(a['ngrams']):,}", "-", "-"])
        rows.append([name, "lmplz ARPA in lmlab, char-split test",
                     f"{k['logprob'] / math.log(10):.2f}", f"{k['perplexity']:.5f}",
                     k["tokens"], k["oov"], f"{100 * r['rel_diff_ppl_vs_arpa']:+.5f} %",
                     f"{sum(k['ngrams']):,}", f"< {100 * TARGET_PARITY:g} %",
                     yes(abs(r["rel_diff_ppl_vs_arpa"]) < TARGET_PARITY)])
        qt = q["log10_total"]
        rows.append([name, "KenLM query, char-split test", "-" if qt is None else f"{qt:.2f}",
                     f"{q['perplexity']:.5f}", int(q["tokens"] or 0), int(q["oov"] or 0),
                     f"{100 * r['rel_diff_ppl_vs_query']:+.5f} %", "-",
                     f"< {100 * TARGET_PARITY:g} %",
                     yes(abs(r["rel_diff_ppl_vs_query"]) < TARGET_PARITY)])
    table(["corpus", "scorer", "log10 total", "perplexity", "tokens", "OOV",
           "lmlab vs this", "n-grams", "target", "met?"], rows)
    say("tokens include one </s> per line; lmplz, like lmlab, maps the test's unseen characters "
        "to <unk> and scores them with its <unk> probability (included in perplexity).\n")
    return out


# -- speed -------------------------------------------------------------------------------------
def ensure_base_tree(path: Path, commit: str) -> None:
    if (path / "src" / "lmlab" / "cli.py").exists():
        return
    say(f"  creating the base tree: git -C {REPO} worktree add {path} {commit}")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", str(path), commit], check=True,
                   capture_output=True, text=True)


def timed_cli(src: Path, argv: list[str], tmp: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _CLI, *argv], env=env, cwd=tmp,
                       capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"lmlab {' '.join(argv)} (PYTHONPATH={src}) failed "
                           f"(rc {p.returncode}):\n{p.stderr[-2000:]}")
    return secs, p.stdout


def section_speed(args, data: Path) -> dict:
    say(f"## speed: whitespace path, current tree vs {args.base_commit} (best of "
        f"{args.repeats}, interleaved)\n")
    base = Path(args.base_tree)
    ensure_base_tree(base, args.base_commit)
    trees = {"current": REPO / "src", "base": base / "src"}
    for tree, src in trees.items():  # an editable install's import hook must not win
        where = subprocess.run([sys.executable, "-c", "import lmlab; print(lmlab.__file__)"],
                               env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True,
                               text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(src.resolve()):
            raise RuntimeError(f"PYTHONPATH={src} imports lmlab from {where}: the {tree} tree "
                               "cannot be timed this way")
    train, test = data / "ptb" / "train.txt", data / "ptb" / "test.txt"
    times: dict = {t: {"train": [], "eval": []} for t in trees}
    ppl: dict = {}
    with tempfile.TemporaryDirectory(prefix="lmlab-xtok-speed-") as t:
        tmp = Path(t)
        for _ in range(args.repeats):
            for tree, src in trees.items():
                model = tmp / f"{tree}.lm"
                secs, _ = timed_cli(src, ["ngram", "train", str(train), "-n", "5", "-o",
                                          str(model)], tmp)
                times[tree]["train"].append(secs)
                secs, stdout = timed_cli(src, ["eval", str(model), str(test), "--json"], tmp)
                times[tree]["eval"].append(secs)
                ppl[tree] = json.loads(stdout)["perplexity"]
                model.unlink()
    out: dict = {"repeats": args.repeats, "base_commit": args.base_commit,
                 "base_tree": str(base), "times_s": times, "perplexity": ppl}
    rows = []
    for step in ("train", "eval"):
        cur, bas = min(times["current"][step]), min(times["base"][step])
        ratio = cur / bas
        out[f"{step}_ratio"] = ratio
        rows.append([f"lmlab {'ngram train -n 5' if step == 'train' else 'eval'} (PTB)",
                     f"{cur:.2f}", f"{bas:.2f}", f"{ratio:.3f}", f"<= {TARGET_SPEED}",
                     yes(ratio <= TARGET_SPEED)])
    for tree in trees:
        rows.append([f"PTB MKN-5 test perplexity ({tree})", f"{ppl[tree]:.2f}", "-", "-",
                     f"{REFERENCE_PTB_MKN5:.2f}",
                     yes(f"{ppl[tree]:.2f}" == f"{REFERENCE_PTB_MKN5:.2f}")])
    out["perplexity_met"] = f"{ppl['current']:.2f}" == f"{REFERENCE_PTB_MKN5:.2f}"
    table(["measurement", "current s", "base s", "current/base", "target", "met?"], rows)
    if args.repeats < 3:
        say("  note: fewer than 3 repeats; a smoke test, not a measurement\n")
    return out


# -- main --------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=os.environ.get("LMLAB_DATA"),
                   help="corpus folder holding ptb/, ptb-char/, zh-fortunes/ (default "
                        "$LMLAB_DATA)")
    p.add_argument("--sections", default=",".join(ALL_SECTIONS),
                   help=f"comma-separated, of {', '.join(ALL_SECTIONS)} (default all)")
    p.add_argument("--orders", type=int, nargs="+", default=[10, 13, 16, 20], metavar="N",
                   help="ptb-char n-gram orders (default 10 13 16 20; at most 20)")
    p.add_argument("--ptb-char-lstm", metavar="CKPT",
                   help="neural checkpoint trained on ptb-char by lmlab train")
    p.add_argument("--zh-lstm", metavar="CKPT",
                   help="char LSTM checkpoint (--tokenizer char) trained on zh-fortunes")
    p.add_argument("--zh-char-orders", type=int, nargs="+", default=[3, 4, 5, 6, 7], metavar="N")
    p.add_argument("--zh-jieba-orders", type=int, nargs="+", default=[2, 3, 4], metavar="N")
    p.add_argument("--zh-sp-orders", type=int, nargs="+", default=[3, 4, 5], metavar="N")
    p.add_argument("--zh-sp-vocab", type=int, nargs="+", default=[6000, 8000], metavar="V",
                   help="sentencepiece (unigram) vocabulary sizes (default 6000 8000: 4000 "
                        "cannot hold the 5,508 characters sentencepiece must keep)")
    p.add_argument("--zh-byte-orders", type=int, nargs="+", default=[6, 8, 10], metavar="N")
    p.add_argument("--parity-zh-only", action="store_true",
                   help="parity on zh-fortunes only (not on PTB's raw text too)")
    p.add_argument("--repeats", type=int, default=5, help="speed: best of this many (default 5)")
    p.add_argument("--base-tree", default="/tmp/lmlab-base",
                   help="speed: the base commit's git worktree, made if missing")
    p.add_argument("--base-commit", default=BASE_COMMIT)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (merged)")
    args = p.parse_args(argv)
    args.section_list = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.section_list if s not in ALL_SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(ALL_SECTIONS)}")
    if args.data is None:
        p.error("give --data or set LMLAB_DATA")
    if any(not 1 <= n <= 20 for n in args.orders):
        p.error("--orders must be between 1 and 20")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    sections = {"ptb-char": section_ptb_char, "zh": section_zh, "parity": section_parity,
                "speed": section_speed}
    try:
        results = json.loads(args.json.read_text()) if args.json.exists() else {}
    except ValueError:
        results = {}
    results.setdefault("sections", {})
    for name in args.section_list:
        t0 = time.perf_counter()
        out = sections[name](args, data)
        out.update(wall_s=time.perf_counter() - t0, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                   machine=machine_info(), argv=sys.argv[1:])
        results["sections"][name] = out
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
        os.replace(tmp, args.json)
        say(f"({name}: {out['wall_s']:.0f} s; written to {args.json})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
