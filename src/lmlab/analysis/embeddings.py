"""Word embeddings of any lmlab model or vector file: neighbours, analogies, benchmark evaluation
and plots. The vector files themselves (word2vec, projector TSV; reading, writing, export) are
:mod:`lmlab.analysis.embedding_formats`.

Sources (:func:`load_embeddings`, chosen by content, not by file name):

* a neural checkpoint: the INPUT embeddings (``model.embedding``, every lmlab neural model has
  one: NNLM, RNN/LSTM/GRU, bidirectional) or, with ``which="output"``, the OUTPUT embeddings
  (the rows of the softmax matrix ``model.decoder.weight``; the same matrix when the model is
  tied). ``<s>`` is left out: lmlab's neural models never read or predict it (the stream starts
  with ``</s>``), so its row is only its random initialisation. ``<unk>`` and ``</s>`` stay;
* a word2vec file, text or binary (gzip ok), e.g. the count-based PPMI+SVD baseline of
  :mod:`lmlab.analysis.ppmi` or vectors from any other tool;
* a folder holding ``vectors.tsv`` and ``metadata.tsv``, the pair
  :func:`~lmlab.analysis.embedding_formats.write_tsv` writes for embedding projectors.

N-gram models (lmlab files, ARPA) have no embeddings: a one-line :class:`LmlabError` says so.

Geometry: cosine similarity throughout. Analogies "A is to B as C is to ?" are answered with
3CosAdd (argmax cos(d, b - a + c) over unit vectors, Mikolov et al. 2013) and 3CosMul
(argmax cos'(d,b) cos'(d,c) / (cos'(d,a) + eps) with cos' = (1 + cos) / 2, Levy & Goldberg
2014), the three question words excluded from the answers.

Evaluation (:func:`evaluate`) runs gensim's own routines (``KeyedVectors.evaluate_word_analogies``
and ``evaluate_word_pairs``) on the benchmark files gensim ships: Google analogies
(``questions-words.txt``), WordSim-353 and SimLex-999. Case: by default the comparison is
case-insensitive (gensim upper-cases the model's words and the questions' words, and where a
model has several case variants of a word the first in its vocabulary order is used, i.e. the
most frequent for lmlab models); PTB is all lower case, so otherwise "Athens Greece" would never
match "athens greece". Coverage is the share of questions (pairs) whose words are all in the
model's vocabulary; accuracy and correlations are over the covered ones only (gensim's
convention), and ``accuracy_all`` also counts the uncovered questions as wrong.

gensim is only needed for :func:`evaluate` and :meth:`Embeddings.to_keyed_vectors`; everything
else is numpy. Without it the error names the extra: ``pip install 'lmlab[embeddings]'``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from lmlab.analysis.embedding_formats import read_tsv, read_word2vec
from lmlab.analysis.vectors import GENSIM_HINT, Embeddings, require_gensim
from lmlab.errors import LmlabError

WHICH = ("input", "output")
NO_EMBEDDINGS_NGRAM = "n-gram models have no word embeddings (give a neural checkpoint or a " \
                      "word2vec file)"
# the files gensim ships under gensim/test/test_data
ANALOGY_FILE = "questions-words.txt"
PAIR_FILES = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_embeddings(path: str | os.PathLike, which: str = "input") -> Embeddings:
    """Embeddings from a neural checkpoint (``which``: input or output), a word2vec file (text
    or binary, gzip ok) or a projector TSV folder; one-line errors for anything else."""
    from lmlab.models import detect_format

    if which not in WHICH:
        raise LmlabError(f"--which must be input or output, got {which!r}")
    path = Path(path)
    if not path.exists():
        raise LmlabError("no such file", path)
    if path.is_dir():
        if (path / "vectors.tsv").exists():
            return _only_input(read_tsv(path), which)
        raise LmlabError("is a directory without vectors.tsv, expected a checkpoint or a "
                         "vector file", path)
    kind = detect_format(path)
    if kind == "checkpoint":
        return checkpoint_embeddings(path, which)
    if kind == "ngram":
        raise LmlabError(NO_EMBEDDINGS_NGRAM, path)
    if kind == "zip":
        raise LmlabError("a zip archive but neither a neural checkpoint nor an lmlab model",
                         path)
    if kind == "arpa":
        raise LmlabError(NO_EMBEDDINGS_NGRAM + "; this is an ARPA file", path)
    if kind == "mixture":
        raise LmlabError("a mixture of models has no word embeddings of its own; give one of "
                         "its neural checkpoints", path)
    return _only_input(read_word2vec(path), which)


def _only_input(emb: Embeddings, which: str) -> Embeddings:
    if which != "input":
        raise LmlabError("--which output needs a neural checkpoint; a vector file holds one "
                         "set of vectors", emb.source)
    return emb


def checkpoint_embeddings(path: str | os.PathLike, which: str = "input") -> Embeddings:
    """Input or output embeddings of a neural checkpoint, ``<s>`` left out (never trained)."""
    import torch

    from lmlab.corpus import BOS
    from lmlab.neural.lm import load_neural

    lm = load_neural(path, device="cpu")
    model = lm.model
    embedding = getattr(model, "embedding", None)
    if not isinstance(embedding, torch.nn.Embedding):
        raise LmlabError(f"this {type(model).__name__} model has no word embeddings", path)
    decoder = getattr(model, "decoder", None)
    tied = decoder is not None and decoder.weight is embedding.weight
    if which == "input":
        weight = embedding.weight
    else:
        if not isinstance(decoder, torch.nn.Linear) or decoder.weight.shape[0] != len(lm.vocab):
            raise LmlabError(f"this {type(model).__name__} model has no output embeddings", path)
        weight = decoder.weight
    vectors = weight.detach().cpu().float().numpy()
    words = list(lm.vocab.itos)
    keep = [i for i, w in enumerate(words) if w != BOS]
    config = lm.config.model if lm.config is not None else None
    name = config.model if config is not None else type(model).__name__
    tag = "tied " if tied else ""
    meta = {"checkpoint": os.fspath(path), "model": name, "which": which, "tied": tied,
            "summary": f"{name} {tag}{which} embeddings"}
    return Embeddings([words[i] for i in keep], vectors[keep], os.fspath(path), which, meta)


# ----------------------------------------------------------------------------------------------
# Evaluation on the benchmark sets gensim ships
# ----------------------------------------------------------------------------------------------


def benchmark_path(name: str) -> Path:
    """Path of a file under gensim's ``test/test_data`` (``gensim.test.utils.datapath``)."""
    require_gensim()
    from gensim.test.utils import datapath

    path = Path(datapath(name))
    if not path.exists():
        raise LmlabError(f"gensim's copy of {name} is missing (a stripped gensim install?); "
                         "give the file explicitly", path)
    return path


def check_analogy_file(path: str | os.PathLike) -> tuple[int, dict[str, int]]:
    """Validate an analogy file in gensim's format (``: SECTION`` lines, then lines of four
    words ``A B C D``); the number of questions, in all and per section."""
    sections: dict[str, int] = {}
    current = None
    for lineno, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        if line.startswith(": "):
            current = line[2:].strip()
            if not current:
                raise LmlabError("empty section name", path, lineno)
            sections.setdefault(current, 0)
            continue
        if len(line.split()) != 4:
            raise LmlabError("expected four words 'A B C D' or a ': SECTION' line", path, lineno)
        if current is None:
            raise LmlabError("question before the first ': SECTION' line", path, lineno)
        sections[current] += 1
    total = sum(sections.values())
    if total == 0:
        raise LmlabError("no analogy questions (expected ': SECTION' lines and lines of four "
                         "words)", path)
    return total, sections


def check_pairs_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Validate a word-pair similarity file in gensim's format (``word1<TAB>word2<TAB>score``,
    ``#`` comments); its word pairs."""
    pairs = []
    for lineno, line in enumerate(_text_lines(path), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        ok = len(fields) == 3 and all(f.strip() for f in fields[:2])
        if ok:
            try:
                ok = math.isfinite(float(fields[2]))
            except ValueError:
                ok = False
        if not ok:
            raise LmlabError("expected 'word1<TAB>word2<TAB>score'", path, lineno)
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise LmlabError("no word pairs (expected 'word1<TAB>word2<TAB>score' lines)", path)
    return pairs


def _text_lines(path: str | os.PathLike):
    from lmlab.fileio import open_binary, strip_bom

    with open_binary(path) as f:
        try:
            data = f.read()
        except (OSError, EOFError) as err:
            raise LmlabError(f"truncated or corrupt file ({err})", path) from None
    try:
        text = strip_bom(data).decode("utf-8")
    except UnicodeDecodeError:
        raise LmlabError("not valid UTF-8 text", path) from None
    return text.split("\n")


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate(emb: Embeddings, analogies: str | os.PathLike | None = None,
             pairs: dict[str, str | os.PathLike] | None = None,
             case_insensitive: bool = True) -> dict:
    """Analogy accuracy (3CosAdd, gensim ``evaluate_word_analogies``) and word-similarity
    correlations (gensim ``evaluate_word_pairs``), each with its coverage. ``analogies``
    defaults to Google's questions-words.txt and ``pairs`` to WordSim-353 and SimLex-999, all as
    shipped with gensim. Every word of the model may be an answer (``restrict_vocab`` = the
    whole vocabulary)."""
    kv = emb.to_keyed_vectors()
    if len(kv) == 0:
        raise LmlabError("every vector is zero: nothing to evaluate", emb.source)
    analogies = Path(analogies) if analogies is not None else benchmark_path(ANALOGY_FILE)
    if pairs is None:
        pairs = {name: benchmark_path(f) for name, f in PAIR_FILES.items()}
    n_questions, per_section = check_analogy_file(analogies)
    pair_lists = {name: check_pairs_file(p) for name, p in pairs.items()}
    known = {w.upper() for w in kv.index_to_key} if case_insensitive else set(kv.index_to_key)
    result: dict = {"source": emb.source, "kind": emb.kind, "words": len(emb), "dim": emb.dim,
                    "words_evaluated": len(kv), "case_insensitive": case_insensitive}
    _, sections = kv.evaluate_word_analogies(str(analogies), restrict_vocab=len(kv),
                                             case_insensitive=case_insensitive)
    total = sections[-1]
    rows = []
    groups = {"semantic": [0, 0, 0], "syntactic": [0, 0, 0]}  # questions, covered, correct
    for s in sections[:-1]:
        correct, covered = len(s["correct"]), len(s["correct"]) + len(s["incorrect"])
        questions = per_section.get(s["section"], covered)
        rows.append({"section": s["section"], "questions": questions, "covered": covered,
                     "correct": correct, "accuracy": correct / covered if covered else None})
        g = groups["syntactic" if s["section"].startswith("gram") else "semantic"]
        g[0], g[1], g[2] = g[0] + questions, g[1] + covered, g[2] + correct
    correct = len(total["correct"])
    covered = correct + len(total["incorrect"])
    result["analogies"] = {
        "file": os.fspath(analogies), "method": "3CosAdd", "questions": n_questions,
        "covered": covered, "coverage": covered / n_questions, "correct": correct,
        "accuracy": correct / covered if covered else None,
        "accuracy_all": correct / n_questions,
        "groups": {k: {"questions": q, "covered": c, "correct": r,
                       "accuracy": r / c if c else None} for k, (q, c, r) in groups.items()
                   if q},
        "sections": rows,
    }
    result["pairs"] = {}
    for name, path in pairs.items():
        fold = str.upper if case_insensitive else str
        n = len(pair_lists[name])
        covered_pairs = sum(fold(a) in known and fold(b) in known for a, b in pair_lists[name])
        entry: dict = {"file": os.fspath(path), "pairs": n, "covered": covered_pairs,
                       "coverage": covered_pairs / n, "spearman": None, "spearman_p": None,
                       "pearson": None, "pearson_p": None}
        if covered_pairs >= 3:  # a correlation needs a few points (gensim fails below 2)
            with warnings.catch_warnings():  # scipy: constant input -> nan, reported as None
                warnings.simplefilter("ignore")
                pearson, spearman, _ = kv.evaluate_word_pairs(
                    str(path), restrict_vocab=len(kv), case_insensitive=case_insensitive)
            entry.update(spearman=_finite(spearman[0]), spearman_p=_finite(spearman[1]),
                         pearson=_finite(pearson[0]), pearson_p=_finite(pearson[1]))
        result["pairs"][name] = entry
    return result


# ----------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------


def plot_words(emb: Embeddings, words: list[str], out: str | os.PathLike,
               title: str | None = None) -> dict:
    """PNG of a 2-D PCA of the chosen words' unit vectors, each point labelled; the
    coordinates and explained variance. Drawn on matplotlib's Agg canvas (no pyplot)."""
    from lmlab.fileio import atomic_output, check_output_path

    unique = list(dict.fromkeys(words))
    if len(unique) < 2:
        raise LmlabError("give at least two different words to plot")
    indices = [emb.lookup(w) for w in unique]  # errors before any drawing
    resolved = [emb.words[i] for i in indices]
    if len(set(resolved)) < len(resolved):
        raise LmlabError("two of the words are the same vocabulary word (case)")
    check_output_path(out)
    coords, explained = emb.pca(resolved)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(coords[:, 0], coords[:, 1], s=18)
    for (x, y), w in zip(coords, resolved, strict=True):
        ax.annotate(w, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=9)
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f}% of variance)")
    ax.margins(x=0.18, y=0.08)  # room for the labels right of the points
    ax.grid(True, alpha=0.3)
    name = Path(emb.source).name
    ax.set_title(title or f"{name} ({emb.describe()}): PCA of {len(resolved)} words",
                 fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.09, top=0.93)
    with atomic_output(out, "wb") as f:
        fig.savefig(f, format="png")
    return {"out": os.fspath(out), "explained_variance": [float(e) for e in explained],
            "points": [{"word": w, "x": float(x), "y": float(y)}
                       for w, (x, y) in zip(resolved, coords, strict=True)]}


__all__ = ["Embeddings", "load_embeddings", "checkpoint_embeddings", "evaluate", "plot_words",
           "require_gensim", "benchmark_path", "check_analogy_file", "check_pairs_file",
           "GENSIM_HINT", "WHICH"]
