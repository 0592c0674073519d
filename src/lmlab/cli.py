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
import warnings

from lmlab.cli_base import STDIN_HELP, HelpFormatter, Parser, add_command, split_words
from lmlab.errors import LmlabError, LmlabWarning, file_label

EXIT_USER_ERROR = 2
# Commands that live with their subsystem: each module has ``add_parser(subparsers)`` and imports
# nothing heavy (no torch) at import time, so every command starts fast.
COMMAND_MODULES = [m for m in ("lmlab.comparison", "lmlab.analysis.gradients_cli",
                               "lmlab.analysis.embeddings_cli", "lmlab.analysis.ablation_cli")
                   if importlib.util.find_spec(m) is not None]
def _add_ngram(sub) -> None:
    from lmlab.ngram.smoothing import ALL_METHODS

    ngram = add_command(sub, "ngram", "lmlab ngram train train.txt --order 5 -o ptb5.lm",
                        help="n-gram language models (train, next)",
                        description="Estimate n-gram models (train) and query them (next).")
    nsub = ngram.add_subparsers(dest="ngram_command", required=True, metavar="COMMAND")
    t = add_command(nsub, "train",
                    "lmlab ngram train train.txt --order 5 -s mkn -o ptb5.lm --arpa ptb5.arpa",
                    help="estimate an n-gram model from a text file",
                    description="Estimate an n-gram model from a text file (one sentence per "
                    "line) and write it as an lmlab model (-o) and/or an ARPA file (--arpa).")
    t.add_argument("train", help=f"training text, one sentence per line (.gz ok; {STDIN_HELP})")
    t.add_argument("-n", "--order", type=int, default=3, metavar="N",
                   help="n-gram order: N-1 previous words of context (lmplz -o)")
    t.add_argument("-s", "--smoothing", choices=ALL_METHODS, default="mkn", metavar="METHOD",
                   help="estimator: mle, addk (add-k), katz, wb (Witten-Bell), absdisc "
                   "(absolute discounting), kn (Kneser-Ney), mkn (modified "
                   "Kneser-Ney, as KenLM), stupid (stupid backoff)")
    t.add_argument("-o", "--output", metavar="MODEL", help="lmlab model file to write")
    t.add_argument("--arpa", metavar="FILE",
                   help="also (or only) write an ARPA file (.gz to compress)")
    t.add_argument("--min-count", type=int, default=1, metavar="N",
                   help="words seen fewer times become <unk> (default 1: keep all)")
    t.add_argument("--max-vocab", type=int, metavar="N",
                   help="keep at most this many words (with specials)")
    t.add_argument("--vocab", metavar="FILE", help="use this vocabulary file instead of building "
                   "one")
    t.add_argument("--add-k", type=float, default=1.0, metavar="K",
                   help="-s addk: the constant added to every count (1 = Laplace)")
    t.add_argument("--backoff-factor", type=float, default=0.4, metavar="F",
                   help="-s stupid: backoff factor")
    t.add_argument("--strict-discounts", action="store_true",
                   help="mkn: fail instead of using KenLM's fallback discounts on small data")
    t.add_argument("--prune", type=int, nargs="+", metavar="T",
                   help="count pruning as lmplz --prune: one threshold per order, n-grams seen "
                   "at most T times are dropped (the last value repeats for higher orders; first "
                   "0, non-decreasing); not with -s addk. Example: lmlab ngram train train.txt "
                   "-n 5 --prune 0 1 1 1 1 -o p5.lm drops every n-gram of order >= 2 seen once")
    t.set_defaults(func=cmd_ngram_train)

    pr = add_command(nsub, "prune", "lmlab ngram prune ptb5.lm ptb5p.arpa.gz --entropy 1e-8",
                     help="relative-entropy pruning of an n-gram model (SRILM -prune)",
                     description="Remove the n-grams whose removal changes perplexity by less "
                     "than a relative threshold (Stolcke 1998, SRILM's ngram -prune), then "
                     "renormalise the backoff weights. Count pruning is ngram train --prune.")
    pr.add_argument("model", help="lmlab n-gram model or ARPA file")
    pr.add_argument("output", help="pruned model: ARPA if it ends in .arpa or .arpa.gz, else "
                    "lmlab's format")
    pr.add_argument("--entropy", type=float, required=True, metavar="THRESHOLD",
                    help="relative perplexity change below which an n-gram goes (e.g. 1e-8; "
                    "0 prunes nothing)")
    pr.set_defaults(func=cmd_ngram_prune)

    nx = add_command(nsub, "next", 'lmlab ngram next ptb5.lm "the stock" -k 5',
                     help="most likely next words after a context",
                     description="The most likely next words after a context (a sentence "
                     "prefix), with their probabilities.")
    nx.add_argument("model", help="lmlab model file, ARPA file, checkpoint or mixture")
    nx.add_argument("context", nargs="*",
                    help="context words (separate words, or one quoted string)")
    nx.add_argument("-k", "--top", type=int, default=10, metavar="K",
                    help="how many words to list")
    nx.add_argument("--json", action="store_true", help="print one JSON list")
    nx.set_defaults(func=cmd_next)


def build_parser() -> argparse.ArgumentParser:
    from lmlab import __version__

    p = Parser(prog="lmlab", description="Train, evaluate, compare and dissect "
                                "language models, from n-grams to LSTMs.",
                                epilog="example: lmlab ngram train train.txt -o ptb3.lm && "
                                "lmlab eval ptb3.lm test.txt",
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"lmlab {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_ngram(sub)
    from lmlab.neural.cli import add_train_parser  # argparse only: torch loads when it runs

    add_train_parser(sub)

    e = add_command(sub, "eval", "lmlab eval ptb5.lm test.txt",
                    help="perplexity report of a model on a text file",
                    description="Perplexity, cross-entropy and OOV count of a model on a text "
                    "file (one sentence per line; every word and </s> is predicted).")
    e.add_argument("model", help="lmlab model file, ARPA file, checkpoint or mixture")
    e.add_argument("text", help=f"text, one sentence per line (.gz ok; {STDIN_HELP})")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--per-sentence", metavar="FILE",
                   help="also write per-sentence log10 probability and perplexity (TSV)")
    e.set_defaults(func=cmd_eval)

    s = add_command(sub, "score", 'lmlab score ptb5.lm "the cat sat on the mat"',
                    help="per-token log-probabilities of a sentence",
                    description="Log-probability of every predicted token of one sentence "
                    "(its words and </s>).")
    s.add_argument("model", help="lmlab model file, ARPA file, checkpoint or mixture")
    s.add_argument("sentence", nargs="+", help="the sentence (separate words, or one quoted "
                   "string)")
    s.add_argument("--json", action="store_true", help="print one JSON list")
    s.set_defaults(func=cmd_score)

    g = add_command(sub, "generate", "lmlab generate ptb5.lm --words 30 --temperature 0.8 "
                    "--seed 1", help="sample text from a model",
                    description="Sample sentences from a model, one per line.")
    g.add_argument("model", help="lmlab model file, ARPA file, checkpoint or mixture")
    g.add_argument("--words", type=int, default=50, metavar="N", help="words to sample")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="divide log-probabilities by T (< 1: safer, > 1: wilder)")
    g.add_argument("--top-k", type=int, metavar="K",
                   help="sample only from the K most likely words (default: all)")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--prefix", default="", help="start the first sentence with these words")
    g.set_defaults(func=cmd_generate)

    i = add_command(sub, "interpolate",
                    "lmlab interpolate ptb5.lm lstm.pt --valid valid.txt -o mix.json",
                    help="linear mixture of models, weights tuned by EM",
                    description="Linear interpolation of two or more models of any kind, its "
                    "weights tuned by EM on a validation text; the mixture is a model like any "
                    "other (eval, score, compare ...).")
    i.add_argument("models", nargs="+", metavar="MODEL",
                   help="two or more model files (any kind)")
    i.add_argument("--valid", required=True, metavar="TEXT",
                   help=f"validation text for the EM weights ({STDIN_HELP})")
    i.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="mixture file to write (JSON)")
    i.add_argument("--iterations", type=int, default=100, metavar="N",
                   help="at most N EM iterations")
    i.set_defaults(func=cmd_interpolate)

    d = add_command(sub, "demo", "lmlab demo --no-neural",
                    help="train models on built-in synthetic data with known entropy",
                    description="Train n-gram models (and a small LSTM) on synthetic text whose "
                    "true entropy is known, and compare their perplexities with it.")
    d.add_argument("--sentences", type=int, default=20000, metavar="N",
                   help="training sentences")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--no-neural", action="store_true",
                   help="n-grams only (skip the small LSTM: a second instead of about ten)")
    d.set_defaults(func=cmd_demo)

    data = add_command(sub, "data", "lmlab data verify ptb --data ~/corpora",
                       help="benchmark corpora: where to get them, verify checksums",
                       description="info: where each benchmark corpus comes from and its "
                       "checksums; verify: check your copy (DIR/NAME/train.txt ...) byte for "
                       "byte.")
    data.add_argument("action", choices=["info", "verify"], help="info or verify")
    data.add_argument("name", nargs="?", help="corpus name (ptb, wikitext-2, ptb-char; "
                      "default: all)")
    data.add_argument("--data", metavar="DIR",
                      help="folder holding the corpora (default: $LMLAB_DATA)")
    data.set_defaults(func=cmd_data)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return p


def cmd_ngram_train(args) -> int:
    from lmlab.corpus import Vocabulary
    from lmlab.fileio import check_output_path
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.estimate import check_order
    from lmlab.ngram.model import train_ngram
    from lmlab.ngram.prune import prune_thresholds

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
    check_order(args.order)
    prune_thresholds(args.prune, args.order, args.smoothing)
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
                        min_count=args.min_count, max_vocab=args.max_vocab, k=args.add_k,
                        progress=sys.stderr.isatty(), prune=args.prune, **options)
    elapsed = time.perf_counter() - start
    if args.output:
        model.save(args.output)
    if args.arpa:
        write_arpa(model, args.arpa)
    sizes = " ".join(f"{n}:{len(k)}" for n, k in enumerate(model.keys, 1))
    print(f"trained {args.smoothing} {args.order}-gram on {model.meta['tokens']} tokens in "
          f"{elapsed:.2f}s; vocabulary {len(model.vocab)}; n-grams {sizes}", file=sys.stderr)
    return 0


def cmd_ngram_prune(args) -> int:
    from lmlab.fileio import check_output_path
    from lmlab.models import load_model
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.entropy import check_entropy_threshold, entropy_prune

    check_entropy_threshold(args.entropy)
    check_output_path(args.output)
    model = load_model(args.model)
    pruned = entropy_prune(model, args.entropy)
    if args.output.lower().endswith((".arpa", ".arpa.gz")):
        write_arpa(pruned, args.output)
    else:
        pruned.save(args.output)
    before, after = (" ".join(f"{n}:{len(k)}" for n, k in enumerate(m.keys, 1))
                     for m in (model, pruned))
    print(f"pruned {args.model} at {args.entropy:g}: n-grams {before} -> {after}",
          file=sys.stderr)
    return 0


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else str(x)


def cmd_eval(args) -> int:
    from lmlab.metrics import LN10, evaluate, safe_exp, sentence_logprobs
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
                f.write(f"{i}\t{n}\t{lp / LN10:.6f}\t{safe_exp(-lp / n):.4f}\n")
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
    print(f"text        {file_label(args.text)}: {result.sentences} sentences, "
          f"{result.tokens} tokens (words + </s>), {result.oov} OOV")
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
    from lmlab.metrics import LN10, safe_exp, token_table
    from lmlab.models import load_model

    words = split_words(args.sentence)
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
          f"{_fmt(safe_exp(-total / len(rows) * LN10))}")
    return 0


def cmd_next(args) -> int:
    from lmlab.models import load_model

    if args.top < 1:
        raise LmlabError(f"--top must be >= 1, got {args.top}")
    model = load_model(args.model)
    rows = [{"word": w, "prob": p} for w, p in model.next_words(split_words(args.context),
                                                                k=args.top)]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['prob']:.6f}  {r['word']}")
    return 0


def cmd_generate(args) -> int:
    from lmlab.models import load_model

    model = load_model(args.model)
    for sentence in model.generate(args.words, seed=args.seed, temperature=args.temperature,
                                   top_k=args.top_k, prefix=args.prefix):
        print(sentence)
    return 0


def cmd_interpolate(args) -> int:
    from lmlab.models import interpolate

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

    return data_command(args.action, args.name, args.data)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, LmlabWarning):
        print(f"lmlab: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the sub-command whose options these are not
        words = ["lmlab", args.command, getattr(args, f"{args.command}_command", None)]
        prog = " ".join(w for w in words if w)
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} "
                       f"(see '{prog} --help')\n")
    try:
        with warnings.catch_warnings():
            # lmlab's own warnings as one line each, like its errors (the library only warns)
            warnings.simplefilter("always", LmlabWarning)
            warnings.showwarning = _show_warning
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
