"""Test perplexity of every n-gram smoothing method on a corpus (README table).

    python benchmarks/smoothing_table.py --data ../shared/data --corpus ptb --orders 3 5
Prints a markdown table and writes JSON (default benchmarks/results/smoothing_table.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from lmlab.metrics import evaluate
from lmlab.ngram.model import train_ngram
from lmlab.ngram.smoothing import ALL_METHODS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("LMLAB_DATA"))
    p.add_argument("--corpus", default="ptb")
    p.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    p.add_argument("--methods", nargs="+", default=[m for m in ALL_METHODS if m != "mle"])
    p.add_argument("--k", type=float, default=0.01, help="add-k constant")
    p.add_argument("--json", default="benchmarks/results/smoothing_table.json")
    args = p.parse_args()
    if not args.data:
        raise SystemExit("give --data DIR or set LMLAB_DATA")
    folder = Path(args.data) / args.corpus
    rows = []
    for order in args.orders:
        for method in args.methods:
            start = time.perf_counter()
            model = train_ngram(folder / "train.txt", order=order, smoothing=method, k=args.k,
                                verbose=False)
            seconds = time.perf_counter() - start
            result, _, _ = evaluate(model, folder / "test.txt")
            rows.append({"corpus": args.corpus, "order": order, "smoothing": method,
                         "perplexity": result.perplexity, "train_seconds": seconds})
    print("| order | " + " | ".join(args.methods) + " |")
    print("|---" * (len(args.methods) + 1) + "|")
    for order in args.orders:
        ppl = {r["smoothing"]: r["perplexity"] for r in rows if r["order"] == order}
        print(f"| {order} | " + " | ".join(f"{ppl[m]:.2f}" for m in args.methods) + " |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
