"""Word embeddings learnt on PTB (or WikiText-2, ``--corpus wikitext-2``): neural checkpoints next
to a count-based PPMI+SVD baseline built from the same training text.

For every checkpoint given (input embeddings, and output embeddings where untied) and for PPMI +
truncated SVD vectors built from the same PTB training text, prints the nearest neighbours of a
fixed word list, Google analogy accuracy (3CosAdd) with its coverage, and WordSim-353 / SimLex-999
Spearman correlations with their coverage (gensim's evaluation routines and files, words compared
case-insensitively: PTB is lower case), then writes everything to JSON.

    python benchmarks/embeddings_ptb.py benchmarks/results/ptb_neural/lstm_small.pt \\
        --data ../shared/data                 # or set LMLAB_DATA; --no-ppmi to skip the baseline

Needs gensim (pip install 'lmlab[embeddings]'). PTB's 10k-word vocabulary covers only part of
the benchmarks (about a quarter of the analogy questions), so compare models on the same coverage
only: all sources built on PTB train share its vocabulary (the PPMI baseline drops only words
with no context), so their coverage is (nearly) the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

WORDS = ["company", "stock", "president", "japan", "buy", "monday", "billion", "good",
         "computer", "bank", "profit", "university"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*", help="neural checkpoints (or word2vec files)")
    p.add_argument("--data", help="folder holding ptb/ (default: $LMLAB_DATA)")
    p.add_argument("--corpus", default="ptb", choices=("ptb", "wikitext-2"),
                   help="corpus of the PPMI baseline (default ptb)")
    p.add_argument("--dim", type=int, default=200, help="PPMI+SVD dimension (default 200)")
    p.add_argument("--window", type=int, default=5, help="PPMI co-occurrence window")
    p.add_argument("--weighting", choices=("uniform", "harmonic"), default="uniform")
    p.add_argument("--eig", type=float, default=0.5)
    p.add_argument("--no-ppmi", action="store_true", help="skip the PPMI+SVD baseline")
    p.add_argument("--save-ppmi", metavar="PATH", help="also write the PPMI vectors (word2vec)")
    p.add_argument("--k", type=int, default=8, help="neighbours per word")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (default 1: shared machines oversubscribe badly)")
    p.add_argument("--json", metavar="PATH",
                   help="default benchmarks/results/embeddings_CORPUS.json")
    return p.parse_args(argv)


def checkpoint_info(path: str) -> dict:
    from lmlab.neural.checkpoint import load_checkpoint

    data = load_checkpoint(path)
    progress = data.get("progress") or {}
    history = data.get("history") or {}
    epochs = history.get("epochs") or []
    info = {"model": data["config"]["model"], "epoch": progress.get("epoch"),
            "step": progress.get("step"), "epochs_done": len(epochs)}
    if epochs and isinstance(epochs[-1], dict):
        info["last_epoch"] = {k: v for k, v in epochs[-1].items()
                              if isinstance(v, int | float | str)}
    if isinstance(history.get("test"), dict):
        info["test"] = {k: v for k, v in history["test"].items()
                        if isinstance(v, int | float | str)}
    return info


def run_one(name: str, emb, k: int) -> dict:
    from lmlab.analysis.embeddings import evaluate

    start = time.perf_counter()
    neighbours = {}
    for w in WORDS:
        if w in emb.index:
            neighbours[w] = [[x, round(s, 4)] for x, s in emb.neighbors(w, k)]
    result = evaluate(emb)
    result["name"] = name
    result["embeddings"] = emb.describe()
    result["meta"] = emb.meta
    result["neighbours"] = neighbours
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def pct(x) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def corr(x) -> str:
    return "  n/a" if x is None else f"{x:5.3f}"


def report(results: list[dict]) -> None:
    head = (f"{'source':<34} {'analogy':>7} {'sem':>6} {'syn':>6} {'covered':>12} "
            f"{'WS353 rho':>9} {'cov':>6} {'SL999 rho':>9} {'cov':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        a, ws, sl = r["analogies"], r["pairs"]["wordsim353"], r["pairs"]["simlex999"]
        g = a["groups"]
        print(f"{r['name'][:34]:<34} {pct(a['accuracy']):>7} "
              f"{pct(g.get('semantic', {}).get('accuracy')):>6} "
              f"{pct(g.get('syntactic', {}).get('accuracy')):>6} "
              f"{a['covered']:>5}/{a['questions']:<6} {corr(ws['spearman']):>9} "
              f"{pct(ws['coverage']):>6} {corr(sl['spearman']):>9} {pct(sl['coverage']):>6}")
    print("\nanalogy = 3CosAdd accuracy on covered questions (gensim evaluate_word_analogies, "
          "case-insensitive); rho = Spearman; cov = share of pairs with both words in the "
          "vocabulary")
    for r in results:
        print(f"\n== nearest neighbours: {r['name']} ({r['embeddings']})")
        for w, rows in r["neighbours"].items():
            print(f"  {w:<11} " + ", ".join(x for x, _ in rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # before numpy loads
    from lmlab.analysis.embedding_formats import write_word2vec
    from lmlab.analysis.embeddings import load_embeddings, require_gensim
    from lmlab.datasets import find_corpus
    from lmlab.errors import LmlabError

    try:
        require_gensim()
        results = []
        for path in args.checkpoints:
            info = None
            try:
                info = checkpoint_info(path)
            except LmlabError:
                pass  # a word2vec file
            for which in ("input", "output"):
                if which == "output" and (info is None or info["model"].get("tied")):
                    continue
                emb = load_embeddings(path, which)
                name = f"{Path(path).name} [{which}]"
                print(f"evaluating {name} ...", file=sys.stderr, flush=True)
                r = run_one(name, emb, args.k)
                r["checkpoint"] = info
                results.append(r)
        ppmi_meta = None
        if not args.no_ppmi:
            ptb = find_corpus(args.corpus, args.data)
            if ptb is None:
                print(f"note: no {args.corpus}/ under --data or $LMLAB_DATA: PPMI baseline "
                      "skipped", file=sys.stderr)
            else:
                from lmlab.analysis.ppmi import ppmi_embeddings

                train = ptb / "train.txt"
                print(f"building PPMI+SVD vectors of {train} (dim {args.dim}) ...",
                      file=sys.stderr, flush=True)
                emb = ppmi_embeddings(train, dim=args.dim, window=args.window,
                                      weighting=args.weighting, eig=args.eig)
                ppmi_meta = emb.meta
                if args.save_ppmi:
                    write_word2vec(emb, args.save_ppmi)
                results.append(run_one(f"PPMI+SVD d{args.dim} w{args.window} "
                                       f"{args.weighting} eig{args.eig}", emb, args.k))
        if not results:
            print("nothing to evaluate: give checkpoints and/or PTB data", file=sys.stderr)
            return 1
    except LmlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report(results)
    out = Path(args.json or f"benchmarks/results/embeddings_{args.corpus}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    import gensim
    import numpy
    import scipy

    doc = {"words": WORDS, "args": vars(args), "ppmi": ppmi_meta, "results": results,
           "machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "numpy": numpy.__version__, "scipy": scipy.__version__,
                       "gensim": gensim.__version__, "cpus": os.cpu_count()}}
    out.write_text(json.dumps(doc, indent=1, allow_nan=False))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
