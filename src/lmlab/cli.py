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
import os
import sys
import warnings

from lmlab.cli_base import (
    MODEL_HELP,
    STDIN_HELP,
    HelpFormatter,
    Parser,
    add_command,
    command_line_text,
    report_stream,
)
from lmlab.errors import LmlabError, LmlabWarning, file_label
from lmlab.fileio import check_not_overwriting, holding_pipes

EXIT_USER_ERROR = 2
# Commands that live with their subsystem: each module has ``add_parser(subparsers)`` and imports
# nothing heavy (no torch) at import time, so every command starts fast.
COMMAND_MODULES = [m for m in ("lmlab.comparison", "lmlab.analysis.gradients_cli",
                               "lmlab.analysis.embeddings_cli", "lmlab.analysis.ablation_cli")
                   if importlib.util.find_spec(m) is not None]
def _add_streaming_options(p) -> None:
    """The options of scoring a text file (eval, score --text)."""
    p.add_argument("--per-line", metavar="FILE",
                   help="also write one JSON record per input line, in input order: line, "
                   "tokens (words + </s>), oov, log10prob, logprob (ln), perplexity (.gz to "
                   "compress; - for standard output)")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="score with N processes (n-gram models and mixtures of them)")
    p.add_argument("--cluster", metavar="SPEC",
                   help="score on a Dask cluster: local:N (N worker processes here) or "
                   "tcp://HOST:PORT (a running `dask scheduler`; its workers read the text and "
                   "the model from the same paths). Needs lmlab[cluster]")


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
    from lmlab.ngram.cli import add_parser as add_ngram_parser  # argparse only

    add_ngram_parser(sub)
    from lmlab.neural.cli import add_train_parser  # argparse only: torch loads when it runs

    add_train_parser(sub)

    e = add_command(sub, "eval", "lmlab eval ptb5.lm test.txt",
                    help="perplexity report of a model on a text file",
                    description="Perplexity, cross-entropy and OOV count of a model on a text "
                    "file (one sentence per line; every word and </s> is predicted). N-gram "
                    "models read the text in pieces: memory does not grow with the text.")
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("text", help=f"text, one sentence per line (.gz ok; {STDIN_HELP})")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _add_streaming_options(e)
    e.add_argument("--per-sentence", metavar="FILE", help=argparse.SUPPRESS)  # now --per-line
    e.set_defaults(func=cmd_eval)

    s = add_command(sub, "score", 'lmlab score ptb5.lm "the cat sat on the mat"',
                    help="per-token log-probabilities of a sentence, or per-line scores of a "
                    "text file (--text)",
                    description="Log-probability of every predicted token of one sentence "
                    "(its words and </s>), given on the command line. With --text FILE instead: "
                    "one JSON record per line of FILE (log10 and ln probability, tokens, OOVs, "
                    "perplexity), in input order, on standard output or in --per-line FILE, as "
                    "KenLM's query scores standard input; example: lmlab score ptb5.lm --text "
                    "web.txt.gz --per-line scores.jsonl --jobs 4")
    s.add_argument("model", help=MODEL_HELP)
    s.add_argument("sentence", nargs="*", help="the sentence (separate words, or one quoted "
                   "string); not with --text")
    s.add_argument("--text", metavar="FILE",
                   help=f"score this text file line by line instead (.gz ok; {STDIN_HELP})")
    s.add_argument("--json", action="store_true", help="print one JSON list (with --text and "
                   "--per-line FILE: the summary as one JSON object)")
    _add_streaming_options(s)
    s.set_defaults(func=cmd_score)

    g = add_command(sub, "generate", "lmlab generate ptb5.lm --words 30 --temperature 0.8 "
                    "--seed 1", help="sample text from a model",
                    description="Sample sentences from a model, one per line.")
    g.add_argument("model", help=MODEL_HELP)
    g.add_argument("--words", type=int, default=50, metavar="N",
                   help="tokens to sample (words of a word model)")
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
    i.add_argument("--iterations", type=int, metavar="N",
                   help="at most N EM iterations (default 1000; EM stops earlier once the "
                   "weights settle)")
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
                       help="benchmark corpora: where to get them, verify checksums, "
                       "synthesize big ones",
                       description="info: where each benchmark corpus comes from and its "
                       "checksums; verify: check your copy (DIR/NAME/train.txt ...) byte for "
                       "byte; synthesize: write a corpus of --tokens tokens sampled from an "
                       "n-gram model (--model, else an MKN 5-gram of $LMLAB_DATA/wikitext-2, "
                       "else a synthetic language), the same for a --seed.")
    data.add_argument("action", choices=["info", "verify", "synthesize"],
                      help="info, verify or synthesize")
    data.add_argument("name", nargs="?", help="corpus name (ptb, wikitext-2, ptb-char; "
                      "default: all)")
    data.add_argument("--data", metavar="DIR",
                      help="folder holding the corpora (default: $LMLAB_DATA)")
    s = data.add_argument_group("synthesize")
    s.add_argument("-o", "--output", metavar="FILE", help="the corpus to write (.gz compresses)")
    s.add_argument("--tokens", metavar="N", help="how many tokens: 1000, 100M, 1B (words plus "
                   "one </s> per line)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--model", metavar="MODEL", help="a backoff n-gram to sample from (.lm, "
                   "binary, ARPA)")
    s.add_argument("--streams", type=int, default=32768, metavar="K",
                   help="sentences drawn side by side (default 32768; part of what the seed "
                   "fixes)")
    data.set_defaults(func=cmd_data)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return p


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else str(x)


def _tokenizer_note(tokenizer, unicode_spaces: int = 0) -> str:
    """One line for a report: the tokenizer, and what it did with the ``unicode_spaces``
    characters that Python's ``str.split`` and KenLM read differently (U+00A0, U+3000...)."""
    line = tokenizer.describe()
    if tokenizer.name == "whitespace":
        what = "read as word separators (as str.split; KenLM reads them as parts of words: " \
               "see docs/tokenizers.md to match it)"
    elif tokenizer.name == "whitespace-ascii":
        what = "kept inside words, as KenLM does"
    elif tokenizer.name in ("byte", "bpe"):
        what = "kept as their UTF-8 bytes"
    elif tokenizer.name.startswith("sentencepiece"):
        what = "kept inside pieces (no normalisation), not merged with spaces"
    else:
        what = "kept as tokens (<U+XXXX>), not merged with spaces"
    if unicode_spaces:
        plural = "s" if unicode_spaces != 1 else ""
        return f"{line}; {unicode_spaces} Unicode space{plural} (U+00A0, U+3000...) {what}"
    return line


def cmd_eval(args) -> int:
    from lmlab.models import load_model

    if args.per_sentence:
        raise LmlabError("--per-sentence (TSV) was replaced by --per-line FILE: one JSON record "
                         "per input line (line, tokens, oov, log10prob, logprob, perplexity)")
    return _report_text(args, load_model(args.model))


def _report_text(args, model) -> int:
    """Score the text file ``args.text`` (eval, score --text), streaming, with --jobs and
    --per-line; print the report (on stderr when the records go to standard output)."""
    from lmlab.fileio import STDIN
    from lmlab.metrics import evaluate_file

    result = evaluate_file(model, args.text, jobs=args.jobs, model_path=args.model,
                           per_line=args.per_line, cluster=args.cluster)
    d = {"model": args.model, "text": args.text, **result.to_dict(),
         "normalised": getattr(model, "normalised", True),
         "tokenizer": model.vocab.tokenizer.describe()}
    # Bidirectional checkpoints: backward/cloze numbers BESIDE the left-to-right ones.
    extra = {}
    if getattr(model, "bidirectional", False):  # its backward and cloze numbers read the text
        from lmlab.corpus import read_corpus

        extra = model.extra_metrics(read_corpus(args.text, model.vocab))
    d.update(extra)
    out = sys.stderr if args.per_line == STDIN else sys.stdout
    if args.json and out is sys.stdout:
        # inf/nan (an MLE model on unseen text) are not JSON: write them as null.
        from lmlab.fileio import json_safe

        print(json.dumps(json_safe(d), allow_nan=False))
        return 0
    desc = model.describe()
    summary = desc.get("summary") or f"{desc.get('smoothing', '')}, order {desc.get('order', '?')}"
    lines = [f"model       {args.model} ({summary})",
             f"tokenizer   {_tokenizer_note(model.vocab.tokenizer, result.unicode_spaces)}",
             f"text        {file_label(args.text)}: {result.sentences} sentences, "
             f"{result.tokens} tokens (one </s> per line included), {result.oov} OOV; "
             f"{result.characters} characters, {result.bytes} bytes, {result.words} words",
             f"log10 prob  {_fmt(result.log10_prob)}",
             f"cross-ent.  {_fmt(result.cross_entropy_nats)} nats = "
             f"{_fmt(result.cross_entropy_bits)} bits per token",
             f"perplexity  {_fmt(result.perplexity)} (excluding OOV: "
             f"{_fmt(result.perplexity_excl_oov)})",
             f"per text    {_fmt(result.bits_per_character)} bits per character, "
             f"{_fmt(result.bits_per_byte)} per byte; word perplexity "
             f"{_fmt(result.word_perplexity)} (comparable across tokenizers)"]
    if not d["normalised"]:
        lines.append("note        stupid backoff scores are not probabilities: this "
                     "'perplexity' is not comparable to other models'")
    if extra:
        lines += ["note        bidirectional model: the perplexity above is its forward "
                  "(left-to-right) direction's, comparable to any LM's",
                  f"backward    perplexity {_fmt(extra['backward_perplexity'])} (right-to-left "
                  "LM)",
                  f"cloze       accuracy {_fmt(extra['cloze_accuracy'])}, perplexity "
                  f"{_fmt(extra['cloze_perplexity'])} (each word from both sides)",
                  "note        backward and cloze numbers see words to the right of the "
                  "predicted one: NOT left-to-right LM scores, not comparable with perplexity"]
    print("\n".join(lines), file=out)
    return 0


def cmd_score(args) -> int:
    from lmlab.metrics import LN10, safe_exp, token_table
    from lmlab.models import load_model
    from lmlab.scoring import tokens_of

    if args.text is not None:
        if args.sentence:
            raise LmlabError("give either a sentence or --text FILE, not both")
        model = load_model(args.model)
        if args.per_line is None:
            args.per_line = "-"  # the records are the output, as query's
        return _report_text(args, model)
    if not args.sentence:
        raise LmlabError("nothing to score: give a sentence, or --text FILE to score a file "
                         "line by line")
    if args.per_line is not None or args.jobs != 1 or args.cluster is not None:
        raise LmlabError("--per-line, --jobs and --cluster go with --text FILE (a sentence on the "
                         "command line is scored token by token)")
    _hint_file(args)
    model = load_model(args.model)
    rows = token_table(model, tokens_of(command_line_text(args.sentence), model.vocab.tokenizer))
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


def _hint_file(args) -> None:
    """``lmlab score MODEL test.txt`` scores the one-word sentence "test.txt", as always; a KenLM
    ``query`` user may have meant the file: say how to score it."""
    from pathlib import Path

    word = args.sentence[0] if len(args.sentence) == 1 else ""
    try:
        names_file = word == "-" or (word and Path(word).is_file())
    except (OSError, ValueError):  # too long for a file name (a CJK sentence), a NUL...
        names_file = False
    if names_file:
        warnings.warn(f"scoring {args.sentence[0]!r} as a one-word sentence; to score a file "
                      f"line by line: lmlab score {args.model} --text {args.sentence[0]}",
                      LmlabWarning, stacklevel=2)


def cmd_generate(args) -> int:
    from lmlab.models import load_model

    model = load_model(args.model)
    for sentence in model.generate(args.words, seed=args.seed, temperature=args.temperature,
                                   top_k=args.top_k, prefix=args.prefix):
        # a byte model may sample invalid UTF-8: print it replaced, not crash
        print(sentence.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return 0


def cmd_interpolate(args) -> int:
    from lmlab.models import interpolate

    mixture, history, alone = interpolate(args.models, args.valid, args.iterations)
    mixture.save(args.output)
    out = report_stream(args.output)
    for path, w, ppl in zip(args.models, mixture.weights, alone, strict=True):
        print(f"{w:.4f}  {path}  (validation perplexity alone {ppl:.2f})", file=out)
    print(f"mixture validation perplexity {history[-1]:.2f} after {len(history) - 1} EM "
          f"iterations -> {args.output}", file=out)
    return 0


def cmd_demo(args) -> int:
    from lmlab.demo import run_demo

    return run_demo(n_sentences=args.sentences, seed=args.seed, as_json=args.json,
                    neural=not args.no_neural)


def cmd_data(args) -> int:
    if args.action == "synthesize":
        return cmd_synthesize(args)
    from lmlab.datasets import data_command

    return data_command(args.action, args.name, args.data)


def cmd_synthesize(args) -> int:
    import time

    from lmlab.synthesize import (
        check_options,
        default_source,
        default_source_text,
        parse_count,
        synthesize,
    )

    if not args.output or not args.tokens:
        raise LmlabError("data synthesize needs -o FILE and --tokens N (e.g. --tokens 100M)")
    if args.name:
        raise LmlabError(f"data synthesize takes no corpus name (got {args.name!r}); "
                         "--model names the model to sample")
    tokens = parse_count(args.tokens)
    check_options(args.seed, args.streams)
    from lmlab.fileio import check_output_path

    check_output_path(args.output)
    if not args.model:  # (the default source's text is an input too)
        check_not_overwriting([args.output], [default_source_text(args.data)])
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.model:
        from lmlab.models import load_model

        model = load_model(args.model)
        say(f"source: {args.model}")
    else:
        model = default_source(args.data, say)
    tic = time.perf_counter()
    done = synthesize(model, args.output, tokens, seed=args.seed, streams=args.streams,
                      progress=sys.stderr.isatty())
    seconds = time.perf_counter() - tic
    print(f"wrote {done['output']}: {done['tokens']:,} tokens, {done['lines']:,} lines "
          f"(seed {args.seed}) in {seconds:.1f} s, {done['tokens'] / seconds / 1e6:.2f}M "
          "tokens/s", file=report_stream(args.output))
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, LmlabWarning):
        print(f"lmlab: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        with holding_pipes():  # (a pipe named as an input is read once, then held)
            return _main(argv)
    except KeyboardInterrupt:  # (Ctrl-C while starting: imports, parsing)
        print("lmlab: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    unknown = _trailing_words(parser, args, unknown)
    if unknown:  # name the sub-command whose options these are not
        words = ["lmlab", args.command, getattr(args, f"{args.command}_command", None)]
        prog = " ".join(w for w in words if w)
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} "
                       f"(see '{prog} --help')\n")
    try:
        _check_outputs(parser, args)
    except LmlabError as err:
        print(f"lmlab: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (lmlab train --ddp relaunches)
    try:
        with warnings.catch_warnings():
            # lmlab's own warnings as one line each, like its errors (the library only warns)
            warnings.simplefilter("always", LmlabWarning)
            warnings.showwarning = _show_warning
            return args.func(args)
    except LmlabError as err:
        if not getattr(err, "reported", False):  # (a data-parallel rank whose rank 0 reports)
            print(f"lmlab: error: {_rank_prefix()}{err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


# the options through which commands name the files they write (every other file named on the
# command line is read)
OUTPUT_OPTIONS = ("output", "arpa", "per_line", "plot")


def _check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No command writes over a file it reads (``ngram train t.txt -o t.txt`` would replace the
    corpus by the model), nor writes one file twice: one check for every command, before it
    starts. The inputs are the command's other arguments, but for those that name a choice (a
    command, a model type, a smoothing...), not a file: ``-o mkn`` is no clash with the default
    smoothing ``mkn``. Commands check the inputs they find themselves (a data folder's files)."""
    words = _choice_dests(parser, args)
    outputs, inputs = [], []
    for name, value in vars(args).items():
        if name in words:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        paths = [v for v in values if isinstance(v, str | os.PathLike)]
        (outputs if name in OUTPUT_OPTIONS else inputs).extend(paths)
        if name == "arpa" and paths:  # (and the tokenizer saved beside it, or a stale one
            from lmlab.ngram.arpa import companion_path  # removed)

            outputs.extend(companion_path(p) for p in paths if p != "-")
    check_not_overwriting(outputs, inputs)


def _choice_dests(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The destinations of every argument with choices (sub-commands included) of the command
    ``args`` holds."""
    return {a.dest for p in _invoked(parser, args) for a in p._actions if a.choices is not None}


def _trailing_words(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    unknown: list[str]) -> list[str]:
    """Words argparse left over because an option came between them and the command's list
    of words (``lmlab score m.lm --json the cat``, ``lmlab compare a.lm --text t b.lm``): they
    join that list when the command has one; anything that looks like an option stays
    unknown."""
    if not unknown or any(u.startswith("-") and u != "-" for u in unknown):
        return unknown
    lists = [a for a in _invoked(parser, args)[-1]._actions
             if not a.option_strings and a.nargs in ("*", "+")]
    if len(lists) != 1:
        return unknown
    dest = lists[0].dest
    setattr(args, dest, [*(getattr(args, dest) or []), *unknown])
    return []


def _invoked(parser: argparse.ArgumentParser, args: argparse.Namespace
             ) -> list[argparse.ArgumentParser]:
    """``parser`` and the sub-parsers the command line went through, outermost first."""
    chain = [parser]
    while True:
        subs = [a for a in chain[-1]._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = subs[0].choices.get(getattr(args, subs[0].dest, None)) if subs else None
        if chosen is None:
            return chain
        chain.append(chosen)


def _rank_prefix() -> str:
    """``rank R: `` in a data-parallel worker other than rank 0 (torchrun's environment)."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return f"rank {rank}: " if world not in ("", "1") and rank not in ("", "0") else ""


if __name__ == "__main__":
    sys.exit(main())
