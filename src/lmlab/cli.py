"""The ``lmlab`` command line. Each command is a thin wrapper over the library.

User mistakes raise :class:`~lmlab.errors.LmlabError` and end as one line on stderr with a
non-zero exit status; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
import time

from lmlab.errors import LmlabError

EXIT_USER_ERROR = 2
# Commands that live with their subsystem: each module has ``add_parser(subparsers)`` and imports
# nothing heavy (no torch) at import time, so every command starts fast.
COMMAND_MODULES = [m for m in ("lmlab.compare", "lmlab.analysis.gradients_cli",
                               "lmlab.analysis.embeddings_cli", "lmlab.analysis.ablation_cli")
                   if importlib.util.find_spec(m) is not None]


def _add_ngram(sub) -> None:
    from lmlab.ngram.smoothing import ALL_METHODS

    ngram = sub.add_parser("ngram", help="n-gram language models (train, next)")
    nsub = ngram.add_subparsers(dest="ngram_command", required=True)
    t = nsub.add_parser("train", help="estimate an n-gram model from a text file")
    t.add_argument("train", help="training text, one sentence per line (.gz ok)")
    t.add_argument("--order", "-n", type=int, default=3)
    t.add_argument("--smoothing", "-s", choices=ALL_METHODS, default="mkn")
    t.add_argument("-o", "--output", help="lmlab model file to write")
    t.add_argument("--arpa", help="also (or only) write an ARPA file (.gz to compress)")
    t.add_argument("--min-count", type=int, default=1,
                   help="words seen fewer times become <unk> (default 1: keep all)")
    t.add_argument("--max-vocab", type=int, help="keep at most this many words (with specials)")
    t.add_argument("--vocab", help="use this vocabulary file instead of building one")
    t.add_argument("--k", type=float, default=1.0, help="add-k constant (addk; 1 = Laplace)")
    t.add_argument("--backoff-factor", type=float, default=0.4, help="stupid backoff factor")
    t.add_argument("--strict-discounts", action="store_true",
                   help="mkn: fail instead of using KenLM's fallback discounts on small data")
    t.set_defaults(func=cmd_ngram_train)

    nx = nsub.add_parser("next", help="most likely next words after a context")
    nx.add_argument("model")
    nx.add_argument("context", nargs="*", help="context words (sentence prefix)")
    nx.add_argument("--top", "-k", type=int, default=10)
    nx.add_argument("--json", action="store_true")
    nx.set_defaults(func=cmd_next)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmlab", description="Train, evaluate, compare and dissect "
                                "language models, from n-grams to LSTMs.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_ngram(sub)
    from lmlab.neural.cli import add_train_parser  # argparse only: torch loads when it runs

    add_train_parser(sub)

    e = sub.add_parser("eval", help="perplexity report of a model on a text file")
    e.add_argument("model", help="lmlab model file or ARPA file")
    e.add_argument("text")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--per-sentence", metavar="FILE",
                   help="write per-sentence log10 probability and perplexity (TSV)")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("score", help="per-token log-probabilities of a sentence")
    s.add_argument("model")
    s.add_argument("sentence", nargs="+", help="the sentence (words, or one quoted string)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_score)

    g = sub.add_parser("generate", help="sample text from a model")
    g.add_argument("model")
    g.add_argument("--words", type=int, default=50)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--prefix", default="", help="start the first sentence with these words")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("interpolate", help="linear mixture of models, weights tuned by EM")
    i.add_argument("models", nargs="+", help="two or more model files (any kind)")
    i.add_argument("--valid", required=True, help="validation text for the EM weights")
    i.add_argument("-o", "--output", required=True, help="mixture file to write (JSON)")
    i.add_argument("--iterations", type=int, default=100)
    i.set_defaults(func=cmd_interpolate)

    d = sub.add_parser("demo", help="train models on built-in synthetic data with known entropy")
    d.add_argument("--sentences", type=int, default=20000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true")
    d.add_argument("--no-neural", action="store_true",
                   help="n-grams only (skip the small LSTM: a second instead of about ten)")
    d.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="benchmark corpora: where to get them, verify checksums")
    data.add_argument("action", choices=["info", "verify"])
    data.add_argument("name", nargs="?", help="corpus name (ptb, wikitext-2, ptb-char)")
    data.add_argument("--data-dir", help="folder holding the corpora (default: $LMLAB_DATA)")
    data.set_defaults(func=cmd_data)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return p


def cmd_ngram_train(args) -> int:
    from lmlab.corpus import Vocabulary
    from lmlab.fileio import check_output_path
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.model import train_ngram

    if not args.output and not args.arpa:
        raise LmlabError("nothing to write: give -o MODEL and/or --arpa FILE")
    # Two slips a KenLM user makes (lmplz -o is the order, and its output is ARPA): both fail
    # here, before training, rather than leave a model file named "5" or a .arpa that is not one.
    if args.output and args.output.isdigit():
        raise LmlabError(f"-o {args.output} would write a model file named {args.output!r}; the "
                         "order is --order/-n (lmplz's -o)")
    if args.output and args.output.lower().endswith((".arpa", ".arpa.gz")):
        raise LmlabError(f"-o writes lmlab's own model format, not ARPA; use --arpa "
                         f"{args.output}", args.output)
    # Check every output before training, so a failure writes nothing (not -o without --arpa).
    if args.arpa and args.smoothing == "addk":
        raise LmlabError("addk model has no backoff form and cannot be written as ARPA")
    for out in (args.output, args.arpa):
        if out:
            check_output_path(out)
    options = {}
    if args.smoothing == "stupid":
        options["factor"] = args.backoff_factor
    if args.smoothing == "mkn":
        options["strict"] = args.strict_discounts
    vocab = Vocabulary.load(args.vocab) if args.vocab else None
    start = time.perf_counter()
    model = train_ngram(args.train, order=args.order, smoothing=args.smoothing, vocab=vocab,
                        min_count=args.min_count, max_vocab=args.max_vocab, k=args.k,
                        progress=sys.stderr.isatty(), **options)
    elapsed = time.perf_counter() - start
    if args.output:
        model.save(args.output)
    if args.arpa:
        write_arpa(model, args.arpa)
    sizes = " ".join(f"{n}:{len(k)}" for n, k in enumerate(model.keys, 1))
    print(f"trained {args.smoothing} {args.order}-gram on {model.meta['tokens']} tokens in "
          f"{elapsed:.2f}s; vocabulary {len(model.vocab)}; n-grams {sizes}", file=sys.stderr)
    return 0


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else str(x)


def cmd_eval(args) -> int:
    from lmlab.metrics import LN10, _safe_exp, evaluate, sentence_logprobs
    from lmlab.models import load_model

    model = load_model(args.model)
    if args.per_sentence:
        from lmlab.fileio import check_output_path

        check_output_path(args.per_sentence)
    result, logprobs, stream = evaluate(model, args.text)
    if args.per_sentence:
        from lmlab.fileio import atomic_output

        sent = sentence_logprobs(logprobs, stream)
        lengths = stream.offsets[1:] - stream.offsets[:-1]
        with atomic_output(args.per_sentence, "w") as f:
            f.write("sentence\ttokens\tlog10prob\tperplexity\n")
            for i, (lp, n) in enumerate(zip(sent, lengths, strict=True), 1):
                f.write(f"{i}\t{n}\t{lp / LN10:.6f}\t{_safe_exp(-lp / n):.4f}\n")
    d = {"model": args.model, "text": args.text, **result.to_dict(),
         "normalised": getattr(model, "normalised", True)}
    # Bidirectional checkpoints: backward/cloze numbers BESIDE the left-to-right ones.
    extra = model.extra_metrics(stream) if hasattr(model, "extra_metrics") else {}
    d.update(extra)
    if args.json:
        # inf/nan (an MLE model on unseen text) are not JSON: write them as null.
        from lmlab.fileio import json_safe

        print(json.dumps(json_safe(d), allow_nan=False))
        return 0
    desc = model.describe()
    summary = desc.get("summary") or f"{desc.get('smoothing', '')}, order {desc.get('order', '?')}"
    print(f"model       {args.model} ({summary})")
    print(f"text        {args.text}: {result.sentences} sentences, {result.tokens} tokens "
          f"(words + </s>), {result.oov} OOV")
    print(f"log10 prob  {_fmt(result.log10_prob)}")
    print(f"cross-ent.  {_fmt(result.cross_entropy_nats)} nats = "
          f"{_fmt(result.cross_entropy_bits)} bits per token")
    print(f"perplexity  {_fmt(result.perplexity)} (excluding OOV: "
          f"{_fmt(result.perplexity_excl_oov)})")
    if not d["normalised"]:
        print("note        stupid backoff scores are not probabilities: this 'perplexity' is not "
              "comparable to other models'")
    if extra:
        print("note        bidirectional model: the perplexity above is its forward "
              "(left-to-right) direction's, comparable to any LM's")
        print(f"backward    perplexity {_fmt(extra['backward_perplexity'])} (right-to-left LM)")
        print(f"cloze       accuracy {_fmt(extra['cloze_accuracy'])}, perplexity "
              f"{_fmt(extra['cloze_perplexity'])} (each word from both sides)")
        print("note        backward and cloze numbers see words to the right of the predicted "
              "one: NOT left-to-right LM scores, not comparable with perplexity")
    return 0


def cmd_score(args) -> int:
    from lmlab.metrics import LN10, _safe_exp, token_table
    from lmlab.models import load_model

    words = " ".join(args.sentence).split()
    model = load_model(args.model)
    rows = token_table(model, words)
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["token"]) for r in rows)
    print(f"{'token':<{width}}  {'log10 p':>9}  {'bits':>7}")
    for r in rows:
        flag = "  (OOV)" if r["oov"] else ""
        print(f"{r['token']:<{width}}  {r['log10prob']:9.4f}  {r['bits']:7.3f}{flag}")
    total = sum(r["log10prob"] for r in rows)
    print(f"{'total':<{width}}  {total:9.4f}  perplexity "
          f"{_fmt(_safe_exp(-total / len(rows) * LN10))}")
    return 0


def cmd_next(args) -> int:
    import numpy as np

    from lmlab.corpus import BOS_ID
    from lmlab.models import load_model

    if args.top < 1:
        raise LmlabError(f"--top must be >= 1, got {args.top}")
    model = load_model(args.model)
    logp = model.next_logprobs(list(args.context))
    # <s> is context only, never a next word; a neural softmax still gives it a sliver of mass
    # (mean 1e-6 on PTB test for the Zaremba-small LSTM, more for an undertrained model)
    top = [i for i in np.argsort(-logp, kind="stable") if i != BOS_ID][: args.top]
    rows = [{"word": model.vocab.itos[i], "prob": float(np.exp(logp[i]))} for i in top]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['prob']:.6f}  {r['word']}")
    return 0


def cmd_generate(args) -> int:
    from lmlab.generate import generate
    from lmlab.models import load_model

    model = load_model(args.model)
    for sentence in generate(model, args.words, seed=args.seed, temperature=args.temperature,
                             top_k=args.top_k, prefix=args.prefix.split()):
        print(" ".join(sentence))
    return 0


def cmd_interpolate(args) -> int:
    from lmlab.mixture import interpolate

    mixture, history, alone = interpolate(args.models, args.valid, args.iterations)
    mixture.save(args.output)
    for path, w, ppl in zip(args.models, mixture.weights, alone, strict=True):
        print(f"{w:.4f}  {path}  (validation perplexity alone {ppl:.2f})")
    print(f"mixture validation perplexity {history[-1]:.2f} after {len(history) - 1} EM "
          f"iterations -> {args.output}")
    return 0


def cmd_demo(args) -> int:
    from lmlab.demo import run_demo

    return run_demo(n_sentences=args.sentences, seed=args.seed, as_json=args.json,
                    neural=not args.no_neural)


def cmd_data(args) -> int:
    from lmlab.datasets import data_command

    return data_command(args.action, args.name, args.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LmlabError as err:
        print(f"lmlab: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
