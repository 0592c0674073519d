#!/usr/bin/env python
"""Benchmark speech decoding with pyctcdecode over an lmlab n-gram model
(``lmlab.integrations.pyctcdecode``) against pyctcdecode over ``kenlm``, same model, same run.

Both decoders are pyctcdecode's ``BeamSearchDecoderCTC`` with the same labels, alpha, beta and
unigrams; they differ only in the language model: ``kenlm.Model`` on the ARPA file (what
``pyctcdecode.build_ctcdecoder`` makes) or ``lmlab.kenlm.Model`` on the same file (or on
``--lmlab-model``, the same model as an lmlab ``.lm`` or binary file). The inputs are synthetic
CTC log-probabilities over ``_ a-z '`` (blank, space, letters, apostrophe): per utterance, a noisy
matrix whose best path spells a sentence of the test text (characters held 1-3 frames, blanks
between, every frame with a runner-up letter so the language model has choices to make), plus a
few purely random matrices (many unknown words). Decoding all of them with ``decode_beams`` is
timed, kenlm and lmlab interleaved, best of ``--repeats``; an extra, instrumented pass
times the language model's own calls (pyctcdecode's ``LanguageModel.score``: n-gram lookup,
unknown-word check, fusion), the part that differs. Parity is checked on the way: same beams
(text, word frames) and scores within 1e-4.

The machines this runs on are shared and noisy: read the ratio (lmlab / kenlm, issue 19's target
<= 1.5), and even that as indicative. Usage::

    python benchmarks/ctc_decode.py                       # KenLM's PTB 5-gram, PTB test text
    python benchmarks/ctc_decode.py --arpa lm.arpa.gz --text test.txt --utterances 50

Defaults: ``--arpa`` ``$LMLAB_DATA/../reference/kenlm/ptb-valid-UNK.o5.arpa.gz`` and ``--text``
``$LMLAB_DATA/ptb/test.txt``. Output: a table on stdout, the raw numbers in
``benchmarks/results/ctc_decode.json`` (``--json PATH`` to change).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ngram_vs_peers import quiet_stderr  # this folder: run as `python benchmarks/ctc_decode.py`

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ctc_decode.json"
TARGET_RATIO = 1.5  # issue 19: pyctcdecode decode time with lmlab <= 1.5x with kenlm
TOL = 1e-4
LABELS = ["", " "] + list("abcdefghijklmnopqrstuvwxyz'")


def utterance(text: str, rng: np.random.Generator) -> np.ndarray:
    """CTC log-probabilities whose best path spells ``text`` (characters outside LABELS
    dropped), with noise and a runner-up letter per frame."""
    frames = []
    for ch in text:
        if ch not in LABELS:
            continue
        frames += [ch] * int(rng.integers(1, 4)) + [""]
    logits = rng.normal(scale=1.2, size=(len(frames), len(LABELS)))
    logits[np.arange(len(frames)), [LABELS.index(c) for c in frames]] += 5.0
    logits[np.arange(len(frames)), rng.integers(2, len(LABELS), size=len(frames))] += 4.0
    return log_softmax(logits)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def inputs(text: Path | None, n: int, n_random: int, seed: int) -> tuple[list, str]:
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    if text is not None:
        with open(text, encoding="utf-8") as f:
            for line in f:
                words = line.lower().split()[:12]
                if len(words) >= 3:
                    lines.append(" ".join(words))
                if len(lines) == n:
                    break
    source = f"{len(lines)} lines of {text}" if text is not None else "no text"
    mats = [utterance(line, rng) for line in lines]
    mats += [log_softmax(rng.normal(scale=3.0, size=(60, len(LABELS)))) for _ in range(n_random)]
    return mats, source + f" + {n_random} random matrices"


def decode_all(decoder, mats, beam_width: int) -> list:
    return [decoder.decode_beams(m, beam_width=beam_width) for m in mats]


def lm_time(decoder, mats, beam_width: int) -> tuple[float, int]:
    """Seconds spent in the language model's ``score`` while decoding ``mats``, and calls."""
    lm = decoder._language_model
    inner, spent = lm.score, [0.0, 0]

    def timed_score(*args, **kwargs):
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
        return out

    lm.score = timed_score
    try:
        decode_all(decoder, mats, beam_width)
    finally:
        del lm.score
    return spent[0], spent[1]


def compare(a: list, b: list) -> dict:
    texts = frames = 0
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        texts += [t[0] for t in x] != [t[0] for t in y]
        frames += [t[2] for t in x] != [t[2] for t in y]
        if len(x) == len(y):
            worst = max([worst] + [max(abs(p[3] - q[3]), abs(p[4] - q[4]))
                                   for p, q in zip(x, y, strict=True)])
    return {"utterances_with_different_beam_texts": texts,
            "utterances_with_different_word_frames": frames, "max_abs_score_diff": worst,
            "ok": texts == 0 and frames == 0 and worst <= TOL}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = os.environ.get("LMLAB_DATA")
    p.add_argument("--arpa", default=str(Path(data).parent / "reference" / "kenlm" /
                                         "ptb-valid-UNK.o5.arpa.gz") if data else None,
                   help="ARPA file (plain or gzip) both sides decode with")
    p.add_argument("--lmlab-model", help="lmlab's side reads this file instead (.lm, binary)")
    p.add_argument("--text", default=str(Path(data) / "ptb" / "test.txt") if data else None)
    p.add_argument("--utterances", type=int, default=30)
    p.add_argument("--random", type=int, default=5, help="purely random matrices added")
    p.add_argument("--beam-width", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=str(DEFAULT_JSON))
    args = p.parse_args(argv)
    try:
        import kenlm
        import pyctcdecode
    except ImportError as exc:
        print(f"needs kenlm and pyctcdecode ({exc})", file=sys.stderr)
        return 2
    from lmlab.integrations.pyctcdecode import build_ctcdecoder
    from lmlab.kenlm import Model

    if not args.arpa or not Path(args.arpa).exists():
        print(f"no ARPA file {args.arpa!r}: set LMLAB_DATA or pass --arpa", file=sys.stderr)
        return 2
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    text = Path(args.text) if args.text and Path(args.text).exists() else None
    mats, source = inputs(text, args.utterances, args.random, args.seed)
    frames = sum(len(m) for m in mats)
    options = dict(alpha=args.alpha, beta=args.beta)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(args.arpa)
        if plain.suffix == ".gz":  # kenlm and pyctcdecode's unigram reader want it plain
            plain = Path(tmp) / plain.stem
            with gzip.open(args.arpa, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
        t0 = time.perf_counter()
        with quiet_stderr():
            theirs = pyctcdecode.build_ctcdecoder(LABELS, str(plain), **options)
        load_k = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = Model(args.lmlab_model or args.arpa)
        load_l = time.perf_counter() - t0
    unigrams = list(theirs._language_model._unigram_set)  # the same unigrams on both sides
    mine = build_ctcdecoder(LABELS, model, unigrams=unigrams, **options)
    print(f"{len(mats)} utterances, {frames} frames, beam width {args.beam_width}; "
          "checking parity ...", flush=True)
    par = compare(decode_all(theirs, mats, args.beam_width),
                  decode_all(mine, mats, args.beam_width))
    best = {"kenlm": float("inf"), "lmlab": float("inf")}
    for _ in range(args.repeats):
        for side, dec in (("kenlm", theirs), ("lmlab", mine)):
            t0 = time.perf_counter()
            decode_all(dec, mats, args.beam_width)
            best[side] = min(best[side], time.perf_counter() - t0)
    ratio = best["lmlab"] / best["kenlm"]
    in_lm = {"kenlm": lm_time(theirs, mats, args.beam_width),
             "lmlab": lm_time(mine, mats, args.beam_width)}
    result = {
        "model": args.arpa, "lmlab_model": args.lmlab_model or args.arpa, "inputs": source,
        "utterances": len(mats), "frames": frames, "beam_width": args.beam_width,
        "alpha": args.alpha, "beta": args.beta, "repeats": args.repeats,
        "load_s": {"pyctcdecode_kenlm_build": load_k, "lmlab_kenlm_model": load_l},
        "decode_s": best, "ratio_lmlab_to_kenlm": ratio,
        "lm_score_s": {k: v[0] for k, v in in_lm.items()}, "lm_score_calls": in_lm["kenlm"][1],
        "target_ratio": TARGET_RATIO,
        "parity": par, "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "pyctcdecode": pyctcdecode.__version__
        if hasattr(pyctcdecode, "__version__") else None,
        "kenlm": getattr(kenlm, "__version__", None),
    }
    for dec in (theirs, mine):
        dec.cleanup()
    print(f"\nmodel: {args.arpa} (lmlab reads {result['lmlab_model']}); inputs: {source}")
    print(f"parity: {par['utterances_with_different_beam_texts']} utterances with different "
          f"beams, max |score diff| {par['max_abs_score_diff']:.2e} -> "
          f"{'OK' if par['ok'] else 'FAIL'}")
    print(f"load: kenlm decoder {load_k:.2f} s, lmlab.kenlm.Model {load_l:.2f} s\n")
    print(f"| {'language model':<14} | {'decode (s)':>10} | {'ms/utt':>7} | {'vs kenlm':>8} | "
          f"{'in LM.score (s)':>15} | {'us/call':>7} |")
    print(f"|{'-' * 16}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 17}|{'-' * 9}|")
    for side in ("kenlm", "lmlab"):
        s, (lm_s, calls) = best[side], in_lm[side]
        print(f"| {side:<14} | {s:>10.3f} | {s / len(mats) * 1e3:>7.1f} | "
              f"{s / best['kenlm']:>8.2f} | {lm_s:>15.3f} | {lm_s / calls * 1e6:>7.2f} |")
    print(f"({in_lm['kenlm'][1]} LanguageModel.score calls per pass; the instrumented pass "
          "adds timer overhead)")
    print(f"\nlmlab / kenlm = {ratio:.2f} (target <= {TARGET_RATIO:g}); shared machine, "
          "indicative")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"raw numbers: {out}")
    return 0 if par["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
