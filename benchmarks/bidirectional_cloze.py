#!/usr/bin/env python
"""A bidirectional LM next to a forward-only one of the same budget, on one test set.

For the forward-only checkpoint: left-to-right perplexity and next-word accuracy (the most probable
word given the left context is the right one). For the bidirectional checkpoint: its forward
perplexity (the only left-to-right score it has, what ``lmlab eval`` reports as its perplexity),
its backward (right-to-left) perplexity, and cloze accuracy and perplexity (each word predicted
from both sides). Cloze numbers see the right context, so they are not LM scores: they are set
against the forward-only model's next-word accuracy to show what the right context is worth.

    python benchmarks/bidirectional_cloze.py benchmarks/results/ptb_neural/lstm_forward.pt \\
        benchmarks/results/ptb_neural/lstm_bidirectional.pt --test ../shared/data/ptb/test.txt
"""

from __future__ import annotations

import argparse
import json
import math

from lmlab.corpus import read_corpus
from lmlab.metrics import summarize
from lmlab.neural.lm import load_neural


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("forward", help="forward-only checkpoint")
    p.add_argument("bidirectional", help="bidirectional checkpoint")
    p.add_argument("--test", required=True)
    p.add_argument("--json", metavar="PATH", help="also write the result here")
    args = p.parse_args(argv)
    fwd, bi = load_neural(args.forward), load_neural(args.bidirectional)
    stream = read_corpus(args.test, fwd.vocab)
    if bi.vocab.itos != fwd.vocab.itos:
        raise SystemExit("the two checkpoints have different vocabularies")
    result = {
        "forward_only": {"perplexity": summarize(fwd.logprobs(stream), stream).perplexity,
                         "next_word_accuracy": fwd.next_word_accuracy(stream),
                         "parameters": sum(q.numel() for q in fwd.model.parameters())},
        "bidirectional": {"forward_perplexity": summarize(bi.logprobs(stream), stream).perplexity,
                          **bi.extra_metrics(stream),
                          "parameters": sum(q.numel() for q in bi.model.parameters())},
        "tokens": len(stream)}
    for name, r in result.items():
        if isinstance(r, dict):
            print(name + ": " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) and
                                         math.isfinite(v) else f"{k} {v}" for k, v in r.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
