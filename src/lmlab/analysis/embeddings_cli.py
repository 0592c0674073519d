"""``lmlab embed ...``: word embeddings of a neural checkpoint or of a word2vec file.

    lmlab embed neighbors CKPT WORD [-k N] [--which input|output] [--json]
    lmlab embed analogy CKPT A B C [-k N] [--method add|mul|both] [--json]
    lmlab embed evaluate CKPT [--analogies FILE] [--pairs FILE ...] [--case-sensitive] [--json]
    lmlab embed export CKPT -o OUT --format {word2vec,word2vec-binary,tsv}
    lmlab embed plot CKPT WORD... -o PNG
    lmlab embed ppmi TRAIN.txt --dim 200 -o vectors.w2v     # count-based baseline

CKPT is anything :func:`lmlab.analysis.embeddings.load_embeddings` reads: a neural checkpoint, a
word2vec file (text or binary, gzip ok; e.g. what ``embed ppmi`` or ``embed export`` wrote) or a
projector TSV folder. Only argparse is imported here; numpy, torch and gensim load when a command
runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lmlab.cli_base import report_stream
from lmlab.errors import LmlabError

SOURCE_HELP = ("neural checkpoint, word2vec file (text or binary, .gz ok) or a folder with "
               "vectors.tsv + metadata.tsv")


def add_parser(sub) -> None:
    from lmlab.cli_base import STDIN_HELP, add_command

    e = add_command(sub, "embed", "lmlab embed neighbours lstm.pt money -k 10",
                    help="word embeddings: neighbours, analogies, evaluation, export, plots, "
                    "PPMI+SVD baseline",
                    description="Word embeddings of a neural checkpoint (input embeddings, or "
                    "the softmax rows with --which output) or of a word2vec file.")
    es = e.add_subparsers(dest="embed_command", required=True, metavar="COMMAND")

    def source(p, which: bool = True) -> None:
        p.add_argument("source", metavar="CKPT", help=SOURCE_HELP)
        if which:
            p.add_argument("--which", choices=("input", "output"), default="input",
                           help="checkpoints: input embeddings (default) or output embeddings "
                           "(softmax matrix rows; the same matrix when tied)")

    n = add_command(es, "neighbors", "lmlab embed neighbours lstm.pt money -k 10",
                    aliases=["neighbours"], help="nearest words by cosine similarity",
                    description="The words nearest to WORD by cosine similarity.")
    source(n)
    n.add_argument("word", metavar="WORD", help="query word (another case of it if absent)")
    n.add_argument("-k", "--top", type=int, default=10, metavar="K",
                   help="how many neighbours to list")
    n.add_argument("--json", action="store_true", help="print one JSON object")
    n.set_defaults(func=cmd_neighbors)

    a = add_command(es, "analogy", "lmlab embed analogy vectors.w2v man king woman   "
                    "# man : king :: woman : ? (queen)",
                    help="A is to B as C is to ? (3CosAdd and 3CosMul)",
                    description="A is to B as C is to ?: the words nearest to B - A + C "
                    "(3CosAdd) and by 3CosMul, the question words excluded.")
    source(a)
    a.add_argument("a", metavar="A", help="A : B :: C : ?")
    a.add_argument("b", metavar="B")
    a.add_argument("c", metavar="C")
    a.add_argument("-k", "--top", type=int, default=5, metavar="K",
                   help="how many answers to list per method")
    a.add_argument("--method", choices=("add", "mul", "both"), default="both",
                   help="3CosAdd, 3CosMul or both")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_analogy)

    v = add_command(es, "evaluate", "lmlab embed evaluate lstm.pt --sections",
                    help="Google analogies, WordSim-353 and SimLex-999 (gensim)",
                      description="Analogy accuracy (3CosAdd) and word-similarity Spearman/Pearson "
                      "correlations with gensim's evaluation routines, on the benchmark files "
                      "gensim ships, each with its coverage (share of questions whose words are "
                      "all in the vocabulary). Words are compared case-insensitively by default "
                      "(PTB is lower case).")
    source(v)
    v.add_argument("--analogies", metavar="FILE",
                   help="analogy file (': SECTION' lines, then 'A B C D'); default: gensim's "
                   "questions-words.txt")
    v.add_argument("--pairs", metavar="FILE", action="append",
                   help="word-pair file ('w1<TAB>w2<TAB>score', # comments); repeatable; "
                   "default: gensim's wordsim353.tsv and simlex999.txt")
    v.add_argument("--case-sensitive", action="store_true",
                   help="match words exactly (default: case-insensitive, as gensim)")
    v.add_argument("--sections", action="store_true", help="also print every analogy section")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=cmd_evaluate)

    x = add_command(es, "export", "lmlab embed export lstm.pt -o vectors.w2v.gz",
                    help="write the vectors: word2vec text/binary or projector TSV",
                    description="Write the vectors as a word2vec file (text or binary) or as "
                    "TensorBoard projector TSV files.")
    source(x)
    x.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="file (word2vec formats; .gz compresses) or folder (tsv: vectors.tsv + "
                   "metadata.tsv)")
    x.add_argument("--format", choices=("word2vec", "word2vec-binary", "tsv"),
                   default="word2vec", help="file format")
    x.set_defaults(func=cmd_export)

    p = add_command(es, "plot", "lmlab embed plot lstm.pt king queen man woman -o words.png",
                    help="2-D PCA plot of chosen words (PNG)",
                    description="Project the vectors of the chosen words on their first two "
                    "principal components and plot them (PNG).")
    source(p)
    p.add_argument("words", nargs="+", metavar="WORD", help="words to plot")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="image to write")
    p.add_argument("--title", help="plot title")
    p.add_argument("--json", action="store_true", help="print the coordinates as JSON")
    p.set_defaults(func=cmd_plot)

    c = add_command(es, "ppmi", "lmlab embed ppmi train.txt --dim 200 -o ppmi.w2v",
                    help="count-based baseline: PPMI + truncated SVD of a text file",
                      description="Word vectors from positive PMI of window co-occurrences "
                      "(within sentences), reduced by truncated SVD (Levy et al. 2015), written "
                      "as a word2vec file that every embed command accepts.")
    c.add_argument("train", metavar="TRAIN",
                   help=f"text, one sentence per line (.gz ok; {STDIN_HELP})")
    c.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="vector file (or folder for --format tsv)")
    c.add_argument("--format", choices=("word2vec", "word2vec-binary", "tsv"),
                   default="word2vec", help="file format")
    c.add_argument("--dim", type=int, default=200, metavar="N", help="vector size")
    c.add_argument("--window", type=int, default=5, metavar="N",
                   help="max distance of a context word")
    c.add_argument("--weighting", choices=("uniform", "harmonic"), default="uniform",
                   help="pair weight by distance d: 1 or 1/d")
    c.add_argument("--alpha", type=float, default=0.75, help="context smoothing exponent")
    c.add_argument("--eig", type=float, default=0.5, help="vectors = U * S**eig")
    c.add_argument("--shift", type=float, default=1.0, help="PMI shifted by log(shift)")
    c.add_argument("--min-count", type=int, default=1, metavar="N",
                   help="words seen fewer times become <unk>")
    c.add_argument("--max-vocab", type=int, metavar="N",
                   help="keep at most this many words (with specials)")
    c.add_argument("--seed", type=int, default=0, help="seed of ARPACK's start vector")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_ppmi)


def _load(args):
    from lmlab.analysis.embeddings import load_embeddings

    emb = load_embeddings(args.source, getattr(args, "which", "input"))
    if getattr(args, "which", "input") == "output" and emb.meta.get("tied"):
        print("lmlab: note: this model is tied: its output embeddings are its input embeddings",
              file=sys.stderr)
    return emb


def _check_top(k: int) -> None:
    if k < 1:
        raise LmlabError(f"--top must be >= 1, got {k}")


def _resolved(emb, words: list[str]) -> dict[str, str]:
    """Query words that matched a different vocabulary word (case)."""
    out = {}
    for w in words:
        r = emb.words[emb.lookup(w)]
        if r != w:
            out[w] = r
    return out


def cmd_neighbors(args) -> int:
    _check_top(args.top)
    emb = _load(args)
    rows = emb.neighbors(args.word, args.top)
    word = emb.words[emb.lookup(args.word)]
    if args.json:
        print(json.dumps({"source": args.source, "embeddings": emb.describe(),
                          "which": emb.kind, "word": args.word, "resolved": word, "k": args.top,
                          "neighbors": [{"word": w, "cosine": s} for w, s in rows]}))
        return 0
    shown = word if word == args.word else f"{word} (for {args.word})"
    print(f"nearest neighbours of {shown} by cosine ({emb.describe()}):")
    for w, s in rows:
        print(f"  {s:7.4f}  {w}")
    return 0


def cmd_analogy(args) -> int:
    _check_top(args.top)
    emb = _load(args)
    methods = {"add": ["add"], "mul": ["mul"], "both": ["add", "mul"]}[args.method]
    names = {"add": "3CosAdd", "mul": "3CosMul"}
    results = {names[m]: emb.analogy(args.a, args.b, args.c, args.top, m) for m in methods}
    if args.json:
        print(json.dumps({"source": args.source, "embeddings": emb.describe(),
                          "question": [args.a, args.b, args.c],
                          "resolved": _resolved(emb, [args.a, args.b, args.c]), "k": args.top,
                          **{name: [{"word": w, "score": s} for w, s in rows]
                             for name, rows in results.items()}}))
        return 0
    print(f"{args.a} : {args.b} :: {args.c} : ?   ({emb.describe()}; question words excluded)")
    for name, rows in results.items():
        print(f"{name}:")
        for w, s in rows:
            print(f"  {s:7.4f}  {w}")
    return 0


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _corr(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def cmd_evaluate(args) -> int:
    from lmlab.analysis.embeddings import evaluate, require_gensim

    require_gensim()  # before loading a large checkpoint
    pairs = None
    if args.pairs:
        pairs = {}
        for p in args.pairs:
            name = Path(p).name.split(".")[0] or p
            while name in pairs:
                name += "'"
            pairs[name] = p
    for path in ([args.analogies] if args.analogies else []) + list(args.pairs or []):
        if not Path(path).is_file():
            raise LmlabError("no such file", path)
    emb = _load(args)
    result = evaluate(emb, args.analogies, pairs, case_insensitive=not args.case_sensitive)
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    a = result["analogies"]
    print(f"embeddings  {args.source} ({emb.describe()})")
    case = ("case-sensitive" if args.case_sensitive else
            "case-insensitive: words compared upper-cased, as gensim does")
    print(f"matching    {case}")
    print(f"analogies   {Path(a['file']).name}: 3CosAdd accuracy {_pct(a['accuracy'])} of "
          f"{a['covered']:,} covered questions (coverage {_pct(a['coverage'])} of "
          f"{a['questions']:,}; {_pct(a['accuracy_all'])} counting uncovered as wrong)")
    for group, g in a["groups"].items():
        print(f"  {group:<10} {_pct(g['accuracy']):>6} of {g['covered']:,}/{g['questions']:,}")
    if args.sections:
        for s in a["sections"]:
            print(f"  {s['section']:<28} {_pct(s['accuracy']):>6} of "
                  f"{s['covered']:,}/{s['questions']:,}")
    for name, p in result["pairs"].items():
        print(f"{name:<11} Spearman {_corr(p['spearman'])}, Pearson {_corr(p['pearson'])} on "
              f"{p['covered']:,}/{p['pairs']:,} pairs (coverage {_pct(p['coverage'])})")
    return 0


def cmd_export(args) -> int:
    from lmlab.analysis.embedding_formats import export

    emb = _load(args)
    written = export(emb, args.output, args.format)
    print(f"wrote {len(emb):,} vectors x {emb.dim} ({args.format}) to "
          f"{', '.join(str(p) for p in written)}", file=report_stream(args.output))
    return 0


def cmd_plot(args) -> int:
    from lmlab.analysis.embeddings import plot_words

    emb = _load(args)
    info = plot_words(emb, args.words, args.output, args.title)
    out = report_stream(args.output)
    if args.json:
        print(json.dumps(info), file=out)
    else:
        ev = info["explained_variance"]
        print(f"wrote {args.output}: {len(info['points'])} words, PCA axes explain "
              f"{100 * ev[0]:.1f}% + {100 * ev[1]:.1f}% of their variance", file=out)
    return 0


def cmd_ppmi(args) -> int:
    from lmlab.analysis.embedding_formats import FORMATS, export
    from lmlab.analysis.ppmi import ppmi_embeddings
    from lmlab.fileio import check_output_path

    if args.format in FORMATS[:2]:
        check_output_path(args.output)  # before the work
    else:
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise LmlabError("exists and is not a directory (--format tsv writes a folder)", out)
        check_output_path(out / "vectors.tsv" if out.is_dir() else out)
    emb = ppmi_embeddings(args.train, dim=args.dim, window=args.window,
                          min_count=args.min_count, max_vocab=args.max_vocab, alpha=args.alpha,
                          eig=args.eig, shift=args.shift, weighting=args.weighting,
                          seed=args.seed)
    written = export(emb, args.output, args.format)
    if args.json:
        print(json.dumps({**emb.meta, "out": [str(p) for p in written],
                          "format": args.format}))
    else:
        m = emb.meta
        print(f"PPMI+SVD of {args.train}: {m['tokens']:,} tokens, {m['vocabulary']:,} words, "
              f"{m['ppmi_nonzeros']:,} positive PMI cells, dim {m['dim']}, {m['seconds']:.1f}s "
              f"-> {', '.join(str(p) for p in written)}")
    return 0
