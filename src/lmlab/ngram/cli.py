"""``lmlab ngram train|prune|build-binary|next``: the n-gram commands, each a thin wrapper over
:mod:`lmlab.ngram`. Building the parser imports nothing heavy; the work's modules load when a
command runs.
"""

from __future__ import annotations

import json
import os
import sys
import time

from lmlab.cli_base import (
    MODEL_HELP,
    STDIN_HELP,
    add_command,
    add_tokenizer_options,
    command_line_text,
    tokenizer_of,
)
from lmlab.errors import LmlabError, file_label


def add_parser(sub) -> None:
    """Register ``lmlab ngram`` and its sub-commands."""
    from lmlab.ngram.smoothing import ALL_METHODS

    ngram = add_command(sub, "ngram", "lmlab ngram train train.txt --order 5 -o ptb5.lm",
                        help="n-gram language models (train, prune, build-binary, next)",
                        description="Estimate n-gram models (train, prune), convert them to the "
                        "binary format (build-binary) and query them (next).")
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
    t.add_argument("--min-count", type=int, metavar="N",
                   help="words seen fewer times become <unk> (default 1: keep all)")
    t.add_argument("--max-vocab", type=int, metavar="N",
                   help="keep at most this many words (with specials)")
    t.add_argument("--vocab", metavar="FILE", help="use this vocabulary file instead of building "
                   "one")
    add_tokenizer_options(t)
    t.add_argument("--add-k", type=float, metavar="K",
                   help="-s addk: the constant added to every count (default 1: Laplace)")
    t.add_argument("--backoff-factor", type=float, metavar="F",
                   help="-s stupid: backoff factor (default 0.4)")
    t.add_argument("--strict-discounts", action="store_true",
                   help="mkn: fail instead of using KenLM's fallback discounts on small data")
    t.add_argument("--prune", type=int, nargs="+", metavar="T",
                   help="count pruning as lmplz --prune: one threshold per order, n-grams seen "
                   "at most T times are dropped (the last value repeats for higher orders; first "
                   "0, non-decreasing); not with -s addk. Example: lmlab ngram train train.txt "
                   "-n 5 --prune 0 1 1 1 1 -o p5.lm drops every n-gram of order >= 2 seen once")
    t.add_argument("--memory", metavar="SIZE",
                   help="estimate out of core within SIZE of memory (e.g. 1G, 800M, 50%%; as "
                   "lmplz -S), spilling sorted n-grams to --temp; the model is the same. "
                   "Default: in memory when the corpus fits, else out of core in half of the "
                   "available memory")
    t.add_argument("--temp", metavar="DIR",
                   help="folder for out-of-core scratch files (default: the system's temporary "
                   "folder); removed when training ends, fails or is interrupted")
    t.add_argument("--cluster", metavar="SPEC",
                   help="run the out-of-core stages on Dask: local:N (N worker processes here) "
                   "or tcp://HOST:PORT (a running `dask scheduler`; --temp and the text must be "
                   "on a file system its workers share); --memory is then per process. Needs "
                   "lmlab[cluster]")
    t.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="N > 1: the same as --cluster local:N")
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

    bb = add_command(nsub, "build-binary", "lmlab ngram build-binary ptb5.lm ptb5.bin "
                     "[--layout trie] [--quantize 8]",
                     help="convert an n-gram model to the binary format made for querying",
                     description="Write an lmlab n-gram model or ARPA file in lmlab's binary "
                     "format: memory-mapped, loads in milliseconds whatever its size; every "
                     "command reads it as a model. The default layout scores exactly as its "
                     "source. With --verify "
                     "alone (one FILE), check a binary model's every byte against its checksum.")
    bb.add_argument("input", metavar="IN",
                    help="lmlab n-gram model or ARPA file (.gz ok; `-` for an ARPA file on "
                    "standard input); with --verify alone, the binary model to check")
    bb.add_argument("output", nargs="?", metavar="OUT",
                    help="binary model file to write (not .gz)")
    bb.add_argument("--layout", choices=("probing", "trie"), default="probing",
                    help="probing (default): hash tables and exact float64 values, the fastest "
                    "lookups; trie: sorted, bit-packed tables and float32 values (KenLM's "
                    "trie), the smallest file, lookups by binary search")
    bb.add_argument("--quantize", type=int, metavar="BITS",
                    help="store log-probabilities and backoffs as BITS-bit codes with bins per "
                    "order (8: KenLM's -q 8 -b 8; default: unquantised)")
    bb.add_argument("--verify", action="store_true",
                    help="check the checksum of the binary model written (or, given IN "
                    "alone, of IN)")
    bb.set_defaults(func=cmd_ngram_build_binary)

    nx = add_command(nsub, "next", 'lmlab ngram next ptb5.lm "the stock" -k 5',
                     help="most likely next words after a context",
                     description="The most likely next words after a context (a sentence "
                     "prefix), with their probabilities.")
    nx.add_argument("model", help=MODEL_HELP)
    nx.add_argument("context", nargs="*",
                    help="context words (separate words, or one quoted string)")
    nx.add_argument("-k", "--top", type=int, default=10, metavar="K",
                    help="how many words to list")
    nx.add_argument("--json", action="store_true", help="print one JSON list")
    nx.set_defaults(func=cmd_next)


def cmd_ngram_train(args) -> int:
    from lmlab.corpus import Vocabulary
    from lmlab.fileio import check_output_path, output_group
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.estimate import check_order
    from lmlab.ngram.model import check_model_output, train_ngram
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
    _check_train_options(args)
    # Check every output before training, so a failure writes nothing (not -o without --arpa).
    if args.arpa and args.smoothing == "addk":
        raise LmlabError("addk model has no backoff form and cannot be written as ARPA")
    if args.output:
        check_model_output(args.output)
    if args.arpa:
        check_output_path(args.arpa)
    options = {}
    if args.smoothing == "stupid":
        options["factor"] = args.backoff_factor
    if args.smoothing == "mkn":
        options["strict"] = args.strict_discounts
    tokenizer = tokenizer_of(args)
    vocab = Vocabulary.load(args.vocab) if args.vocab else None
    if vocab is not None:
        vocab.tokenizer = tokenizer
    memory = out_of_core_memory(args)
    start = time.perf_counter()
    if memory is not None:
        from lmlab.ngram.build import train_external

        meta = train_external(args.train, args.order, args.smoothing, memory=memory,
                              temp=args.temp, output=args.output, arpa=args.arpa, vocab=vocab,
                              min_count=args.min_count, max_vocab=args.max_vocab,
                              prune=args.prune, tokenizer=tokenizer, cluster=args.cluster,
                              progress=sys.stderr.isatty(), **options)
        report_trained(args, meta, meta["vocab_size"],
                       meta["ngrams"], time.perf_counter() - start, tokenizer)
        return 0
    model = train_ngram(args.train, order=args.order, smoothing=args.smoothing, vocab=vocab,
                        min_count=args.min_count, max_vocab=args.max_vocab, k=args.add_k,
                        progress=sys.stderr.isatty(), prune=args.prune, tokenizer=tokenizer,
                        **options)
    elapsed = time.perf_counter() - start
    with output_group():  # both files, or (failing, interrupted) neither
        if args.output:
            model.save(args.output)
        if args.arpa:
            write_arpa(model, args.arpa)
    report_trained(args, model.meta, len(model.vocab), [len(k) for k in model.keys], elapsed,
                   tokenizer)
    return 0


def _check_train_options(args) -> None:
    """Options that do nothing with the others given are errors, not silently ignored; then
    the defaults of those not given."""
    for option, value, smoothing in (("--add-k", args.add_k, "addk"),
                                     ("--backoff-factor", args.backoff_factor, "stupid"),
                                     ("--strict-discounts", args.strict_discounts or None, "mkn")):
        if value is not None and args.smoothing != smoothing:
            raise LmlabError(f"{option} applies to --smoothing {smoothing}, not "
                             f"{args.smoothing}")
    if args.vocab and (args.min_count is not None or args.max_vocab is not None):
        raise LmlabError("--min-count and --max-vocab shape a vocabulary built from the text; "
                         "--vocab gives one: use one or the other")
    args.min_count = 1 if args.min_count is None else args.min_count
    args.add_k = 1.0 if args.add_k is None else args.add_k
    args.backoff_factor = 0.4 if args.backoff_factor is None else args.backoff_factor


def report_trained(args, meta: dict, vocab_size: int, ngrams: list[int], elapsed: float,
                   tokenizer) -> None:
    sizes = " ".join(f"{n}:{size}" for n, size in enumerate(ngrams, 1))
    tok = "" if tokenizer.is_default else f" ({tokenizer.describe()})"
    print(f"trained {args.smoothing} {args.order}-gram on {meta['tokens']} tokens{tok} in "
          f"{elapsed:.2f}s; vocabulary {vocab_size}; n-grams {sizes}", file=sys.stderr)


def out_of_core_memory(args) -> int | None:
    """The memory budget for out-of-core estimation, or None to estimate in memory: --memory
    if given, else half the available memory when the corpus looks too big to fit."""
    from lmlab.fileio import is_stdin
    from lmlab.ngram.build import available_memory, in_memory_need, parse_memory

    if args.jobs < 1:
        raise LmlabError(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs > 1:
        if args.cluster is not None:
            raise LmlabError("give --jobs N or --cluster SPEC, not both (--jobs N is --cluster "
                             "local:N)")
        args.cluster = f"local:{args.jobs}"
    if args.cluster is not None:
        from lmlab.cluster import parse_cluster

        kind, workers = parse_cluster(args.cluster)
        if args.memory is None:  # half of what is free, shared by the workers and this process
            per_process = available_memory() // (2 * (workers + 1)) if kind == "local" \
                else 2**30
            args.memory = f"{max(per_process, 256 * 2**20) >> 20}M"
    if args.memory is not None:
        if args.smoothing == "addk":
            raise LmlabError("--memory/--cluster: addk has no backoff form, so it has no "
                             "out-of-core estimator; use another smoothing method")
        return parse_memory(args.memory)
    if args.temp is not None:
        raise LmlabError("--temp is for out-of-core estimation: give --memory SIZE too")
    if is_stdin(args.train) or args.smoothing == "addk":
        return None
    need, free = in_memory_need(args.train, args.order), available_memory()
    if need <= 0.8 * free:
        return None
    print(f"lmlab: {file_label(args.train)} needs about {need >> 20}M in memory, "
          f"{free >> 20}M is available: estimating out of core in {free >> 21}M "
          "(--memory sets this)", file=sys.stderr)
    return free // 2


def cmd_ngram_prune(args) -> int:
    from lmlab.fileio import check_output_path
    from lmlab.models import load_model
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.entropy import check_entropy_threshold, entropy_prune
    from lmlab.ngram.model import check_model_output

    check_entropy_threshold(args.entropy)
    arpa = args.output.lower().endswith((".arpa", ".arpa.gz"))
    (check_output_path if arpa else check_model_output)(args.output)
    model = load_model(args.model)
    pruned = entropy_prune(model, args.entropy)
    if arpa:
        write_arpa(pruned, args.output)
    else:
        pruned.save(args.output)
    before, after = (" ".join(f"{n}:{len(k)}" for n, k in enumerate(m.keys, 1))
                     for m in (model, pruned))
    print(f"pruned {args.model} at {args.entropy:g}: n-grams {before} -> {after}",
          file=sys.stderr)
    return 0


def cmd_ngram_build_binary(args) -> int:
    from lmlab.ngram.binary import check_quantize_bits, verify_binary, write_binary

    if args.output is None:
        if not args.verify:
            raise LmlabError("give the binary model to write: lmlab ngram build-binary IN OUT "
                             "(or --verify FILE to check one)")
        if args.quantize is not None or args.layout != "probing":
            raise LmlabError("--quantize and --layout need an output: lmlab ngram build-binary "
                             "IN OUT --layout trie --quantize 8")
        info = verify_binary(args.input)
        print(f"ok {file_label(args.input)}: {info['bytes']} bytes, checksum {info['sha256']}")
        return 0
    from lmlab.fileio import check_output_path
    from lmlab.models import load_model
    from lmlab.ngram.arpa import read_arpa

    check_quantize_bits(args.quantize)
    check_output_path(args.output)
    start = time.perf_counter()
    model = read_arpa(args.input) if args.input == "-" else load_model(args.input)
    write_binary(model, args.output, args.quantize, args.layout)
    if args.verify:
        verify_binary(args.output)
    size = os.path.getsize(args.output)
    sizes = " ".join(f"{n}:{len(k)}" for n, k in enumerate(model.keys, 1))
    print(f"wrote {args.output}: {size} bytes, n-grams {sizes}"
          f", {args.layout}{f', {args.quantize}-bit' if args.quantize else ''}"
          f"{', verified' if args.verify else ''} in "
          f"{time.perf_counter() - start:.2f}s", file=sys.stderr)
    return 0


def cmd_next(args) -> int:
    from lmlab.models import load_model

    if args.top < 1:
        raise LmlabError(f"--top must be >= 1, got {args.top}")
    model = load_model(args.model)
    rows = [{"word": w, "prob": p} for w, p in model.next_words(command_line_text(args.context),
                                                                k=args.top)]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['prob']:.6f}  {r['word']}")
    return 0
