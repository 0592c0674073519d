"""``lmlab compare MODEL... --text TEST.txt``: several models of any kind side by side on one text.

Every model is loaded by content (:func:`lmlab.models.load_model`: n-gram, ARPA, mixture, neural
checkpoint) and scored with the one evaluation protocol of :mod:`lmlab.metrics`, so the per-token
log-probabilities of all models line up one to one: the same predicted tokens (each line's words
plus ``</s>``), in the same order. That is checked (a different number of predicted tokens is an
error), and it is what makes the head-to-head column meaningful: for every model after the first,
the share of tokens it gives a higher probability than the first model (the *reference*).

Columns: model, type/description, size (parameters of a neural model, stored n-grams of an n-gram
model; a mixture adds up its members), predicted tokens, OOV (each model's own vocabulary decides),
cross-entropy in bits per token, perplexity, perplexity excluding OOV tokens, and scoring speed
(predicted tokens per second of ``model.logprobs`` alone: reading the text and loading the model
are not timed).

Caveats the report repeats: models with different vocabularies see different OOV tokens, so their
``<unk>`` predictions are not the same event (compare ``ppl excl. OOV`` or use one vocabulary);
stupid backoff gives scores, not probabilities, so its perplexity is not comparable.

This module imports nothing heavy at import time (the command is registered on every ``lmlab``
start); torch loads only when a neural checkpoint is compared.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.fileio import json_safe


@dataclass
class ModelScore:
    """One model's numbers on the text (``logprobs`` kept for the head-to-head comparison)."""

    path: str
    name: str
    kind: str  # ngram, arpa, mixture, neural
    description: str
    parameters: int | None
    ngrams: int | None
    tokens: int
    oov: int
    sentences: int
    cross_entropy_bits: float
    perplexity: float
    perplexity_excl_oov: float
    seconds: float
    normalised: bool
    logprobs: object = field(repr=False)  # np.ndarray [tokens]
    tokenizer: str = "whitespace"  # for display; tokenizer_key tells two apart
    tokenizer_key: str = ""
    characters: int = 0
    bytes: int = 0
    bits_per_character: float = float("nan")
    bits_per_byte: float = float("nan")
    word_perplexity: float = float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"model": self.path, "name": self.name, "type": self.kind,
                "description": self.description, "parameters": self.parameters,
                "ngrams": self.ngrams, "tokens": self.tokens, "oov": self.oov,
                "sentences": self.sentences, "cross_entropy_bits": self.cross_entropy_bits,
                "perplexity": self.perplexity, "perplexity_excl_oov": self.perplexity_excl_oov,
                "scoring_seconds": self.seconds, "tokens_per_s": self.tokens_per_s,
                "normalised": self.normalised, "tokenizer": self.tokenizer,
                "characters": self.characters, "bytes": self.bytes,
                "bits_per_character": self.bits_per_character,
                "bits_per_byte": self.bits_per_byte, "word_perplexity": self.word_perplexity}


@dataclass
class Comparison:
    """Every model's numbers on one text. Models of one tokenizer are compared token by token
    against the first (``pairs``); models that tokenize differently predict different tokens,
    so they are ranked by bits per character of the raw text instead (``by_characters``)."""

    text: str
    scores: list[ModelScore]
    pairs: list[dict]  # one per model after the first, against the first (one tokenizer only)

    @property
    def by_characters(self) -> bool:
        """Whether the models tokenize differently (then ranked by bits per character)."""
        return len({s.tokenizer_key for s in self.scores}) > 1

    def __str__(self) -> str:
        return format_table(self)

    def to_dict(self) -> dict:
        return json_safe({"text": self.text, "tokens": self.scores[0].tokens,
                           "reference": None if self.by_characters else self.scores[0].path,
                           "ranked_by": "bits_per_character" if self.by_characters else None,
                           "models": [s.to_dict() for s in self.scores], "pairs": self.pairs})


# -- describing a model -------------------------------------------------------------------------

def model_size(model) -> tuple[int | None, int | None]:
    """(parameters, n-grams) of ``model``: None where the kind has none; a mixture sums its
    members."""
    members = getattr(model, "models", None)
    if members is not None:  # a Mixture
        params = ngrams = None
        for m in members:
            p, n = model_size(m)
            if p is not None:
                params = (params or 0) + p
            if n is not None:
                ngrams = (ngrams or 0) + n
        return params, ngrams
    d = model.describe()
    if d.get("type") == "neural":
        return int(d.get("parameters", 0)), None
    if "ngrams" in d:
        return None, int(sum(d["ngrams"]))
    return None, None


def describe_model(model) -> tuple[str, str]:
    """(kind, one-line description) for the table."""
    d = model.describe()
    kind = d.get("type", "?")
    if kind == "neural":
        summary = d.get("summary") or str(d.get("model", "neural"))
        if d.get("bidirectional"):  # the summary's long caveat, shortened for the table
            summary = summary.split(", bidirectional")[0] + ", bidirectional (forward scored)"
        return "neural", summary
    if kind == "mixture":
        members = getattr(model, "models", [])
        parts = [f"{w:.3g}×{describe_model(m)[1]}"
                 for w, m in zip(d.get("weights", []), members, strict=False)]
        return "mixture", "mixture: " + " + ".join(parts)
    if kind == "ngram":
        smoothing, order = d.get("smoothing", "?"), d.get("order", "?")
        if smoothing == "arpa":
            return "arpa", f"ARPA {order}-gram"
        return "ngram", f"{smoothing} {order}-gram"
    return str(kind), str(d.get("summary", kind))


# -- scoring ------------------------------------------------------------------------------------

class _Timed:
    """The model as :func:`lmlab.metrics.evaluate` sees it, timing ``logprobs`` only."""

    def __init__(self, model) -> None:
        self.model = model
        self.vocab = model.vocab
        self.seconds = 0.0

    def logprobs(self, stream):
        tic = time.perf_counter()
        out = self.model.logprobs(stream)
        self.seconds += time.perf_counter() - tic
        return out


def score_model(model, text: str | os.PathLike, path: str = "", name: str = "") -> ModelScore:
    """Score ``text`` with a loaded ``model`` under the shared protocol."""
    from lmlab.metrics import evaluate

    timed = _Timed(model)
    result, logprobs, _ = evaluate(timed, text)
    kind, description = describe_model(model)
    params, ngrams = model_size(model)
    return ModelScore(path=path, name=name or Path(path).name or path, kind=kind,
                      description=description, parameters=params, ngrams=ngrams,
                      tokens=result.tokens, oov=result.oov, sentences=result.sentences,
                      cross_entropy_bits=result.cross_entropy_bits, perplexity=result.perplexity,
                      perplexity_excl_oov=result.perplexity_excl_oov, seconds=timed.seconds,
                      normalised=bool(getattr(model, "normalised", True)), logprobs=logprobs,
                      tokenizer=model.vocab.tokenizer.describe(),
                      tokenizer_key=json.dumps(model.vocab.tokenizer.spec(), sort_keys=True),
                      characters=result.characters,
                      bytes=result.bytes, bits_per_character=result.bits_per_character,
                      bits_per_byte=result.bits_per_byte,
                      word_perplexity=result.word_perplexity)


def head_to_head(reference: ModelScore, other: ModelScore) -> dict:
    """Share of the predicted tokens where ``other`` gives the true token a higher (lower, equal)
    probability than ``reference``. The two must score the same tokens."""
    import numpy as np

    a = np.asarray(reference.logprobs, dtype=np.float64)
    b = np.asarray(other.logprobs, dtype=np.float64)
    if a.shape != b.shape:
        raise LmlabError(f"{other.path} predicts {len(b)} tokens but {reference.path} "
                         f"{len(a)}: per-token log-probs do not align")
    n = len(a)
    better, worse = int((b > a).sum()), int((b < a).sum())
    tie = n - better - worse
    diff = b - a
    finite = np.isfinite(diff)
    return {"model": other.path, "reference": reference.path, "tokens": n,
            "better": better / n, "worse": worse / n, "tie": tie / n,
            # mean gain in bits per token (positive: `model` better), over tokens where both are
            # finite
            "mean_gain_bits": float(diff[finite].mean() / math.log(2)) if finite.any()
            else float("nan")}


def compare(paths: list[str], text: str | os.PathLike) -> Comparison:
    """Load and score every model in ``paths`` on ``text``; pairs are against ``paths[0]``."""
    from lmlab.models import load_model

    if not paths:
        raise LmlabError("compare needs at least one model")
    return compare_models([load_model(p) for p in paths], list(paths), text,
                          names=_short_names(paths))


def compare_models(models: list, paths: list[str], text: str | os.PathLike,
                   names: list[str] | None = None) -> Comparison:
    """Score every loaded model on ``text``; ``paths`` label them (file names or any labels)."""
    if not models:
        raise LmlabError("compare needs at least one model")
    names = names or _short_names(paths)
    scores = [score_model(model, text, path=path, name=name)
              for model, path, name in zip(models, paths, names, strict=True)]
    if len({s.tokenizer_key for s in scores}) > 1:  # different tokens: rank by the raw text's
        scores.sort(key=lambda s: (not math.isfinite(s.bits_per_character),
                                   s.bits_per_character))
        return Comparison(os.fspath(text), scores, [])
    for s, path in zip(scores, paths, strict=True):
        if s.tokens != scores[0].tokens or len(s.logprobs) != len(scores[0].logprobs):
            raise LmlabError(f"{path} predicts {s.tokens} tokens of {text} but "
                             f"{paths[0]} {scores[0].tokens}: per-token log-probs do not align")
    pairs = [head_to_head(scores[0], s) for s in scores[1:]]
    return Comparison(os.fspath(text), scores, pairs)


def _short_names(paths: list[str]) -> list[str]:
    """File names, or the given paths where file names collide."""
    base = [Path(p).name or p for p in paths]
    return [b if base.count(b) == 1 else p for b, p in zip(base, paths, strict=True)]


# -- output -------------------------------------------------------------------------------------

def _num(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if math.isfinite(x) else str(x)


def _size(s: ModelScore) -> str:
    parts = []
    if s.parameters is not None:
        parts.append(f"{_human(s.parameters)} params")
    if s.ngrams is not None:
        parts.append(f"{_human(s.ngrams)} n-grams")
    return " + ".join(parts) or "-"


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def format_table(c: Comparison) -> str:
    ref = c.scores[0]
    pairs = {p["model"]: p for p in c.pairs}
    mixed = c.by_characters
    header = ["model", "type", "description", "size", "tokens", "OOV", "bits/tok", "ppl",
              "ppl excl. OOV", "bits/char", "word ppl", "tok/s"]
    header += ["tokenizer"] if mixed else [f"better than {ref.name}"]
    rows = []
    for s in c.scores:
        p = pairs.get(s.path)
        better = "(reference)" if s is ref else \
            f"{100 * p['better']:.1f}% (worse {100 * p['worse']:.1f}%)" if p else "-"
        rows.append([s.name, s.kind, s.description, _size(s), f"{s.tokens:,}", f"{s.oov:,}",
                     _num(s.cross_entropy_bits, 3), _num(s.perplexity),
                     _num(s.perplexity_excl_oov), _num(s.bits_per_character, 4),
                     _num(s.word_perplexity), f"{s.tokens_per_s:,.0f}",
                     s.tokenizer if mixed else better])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {4, 5, 6, 7, 8, 9, 10, 11}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    if mixed:
        title = (f"text: {c.text} ({ref.characters:,} characters, {ref.sentences:,} lines); "
                 "the models tokenize differently, so they are RANKED BY BITS PER CHARACTER "
                 "(total bits / characters of the raw text, line ends included), best first; "
                 "per-token columns are not comparable across tokenizers")
    else:
        title = (f"text: {c.text} ({ref.tokens:,} predicted tokens incl. one </s> per line, "
                 f"{ref.sentences:,} sentences)")
    out = [title, line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    notes = []
    if mixed and any(s.oov for s in c.scores):
        with_oov = ", ".join(f"{s.name} ({s.oov:,})" for s in c.scores if s.oov)
        notes.append(f"OOV tokens in {with_oov}: a model with OOV predicts <unk> for text it "
                     "cannot spell, one event however long the text, which "
                     "makes its bits per character optimistic; only a byte-level vocabulary (byte, "
                     "bpe, sentencepiece's byte fallback) spells any text")
    if not mixed and len({s.oov for s in c.scores}) > 1:
        notes.append("models with different OOV counts have different vocabularies: their <unk> "
                     "predictions are different events; compare 'ppl excl. OOV' too")
    for s in c.scores:
        if not s.normalised:
            notes.append(f"{s.name}: not normalised (stupid backoff), its perplexity is not "
                         "comparable")
        if "bidirectional" in s.description:
            notes.append(f"{s.name}: bidirectional, scored left to right with its forward "
                         "direction only (as every LM here)")
    if not mixed:
        notes.append("'better than' = share of predicted tokens given a higher probability than "
                     "by the reference (first model)")
    notes.append("tok/s = scoring only, shared machine: indicative")
    out += [f"note: {n}" for n in notes]
    return "\n".join(out)


def plot_comparison(c: Comparison, path: str | os.PathLike) -> None:
    """Bar chart PNG: perplexity (and excluding OOV) per model, scoring speed beside."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lmlab.fileio import atomic_output

    names = [s.name for s in c.scores]
    n = len(names)
    fig = Figure(figsize=(max(6.0, 1.6 * n + 4), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    xs = list(range(n))
    w = 0.4

    def finite(v):
        return v if math.isfinite(v) else 0.0

    ppl = [finite(s.perplexity) for s in c.scores]
    excl = [finite(s.perplexity_excl_oov) for s in c.scores]
    bars = left.bar([x - w / 2 for x in xs], ppl, w, label="perplexity")
    left.bar([x + w / 2 for x in xs], excl, w, label="excl. OOV", alpha=0.7)
    for rect, v in zip(bars, ppl, strict=True):
        left.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v), ha="center",
                      va="bottom", fontsize=8)
    left.set_ylabel("perplexity (lower is better)")
    left.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    left.set_title(f"{Path(c.text).name}: {c.scores[0].tokens:,} tokens", fontsize=9)
    right.bar(xs, [finite(s.tokens_per_s) for s in c.scores], 0.6, color="tab:green")
    right.set_ylabel("scoring tokens/s")
    right.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    right.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_output(path, "wb") as f:
        fig.savefig(f, format="png")


# -- command line -------------------------------------------------------------------------------

def add_parser(sub) -> None:
    from lmlab.cli_base import STDIN_HELP, add_command

    p = add_command(sub, "compare", "lmlab compare ptb5.lm lstm.pt mix.json --text test.txt "
                    "--plot compare.png",
                    help="several models (any kind) side by side on one text",
                    description="Score one text with several models (n-gram, ARPA, mixture, "
                    "neural) under the same protocol; the first model is the reference for "
                    "the per-token head-to-head.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files (any kind)")
    p.add_argument("--text", required=True, metavar="TEXT",
                   help=f"text to score, one sentence per line (.gz ok; {STDIN_HELP})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart (PNG)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    if args.plot:
        from lmlab.fileio import check_output_path

        check_output_path(args.plot)
    result = compare(args.models, args.text)
    if args.plot:
        plot_comparison(result, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(format_table(result))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


__all__ = ["Comparison", "ModelScore", "add_parser", "compare", "compare_models", "format_table",
           "head_to_head", "plot_comparison", "score_model"]
