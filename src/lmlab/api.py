"""lmlab's Python front door: train, load, mix and compare models in a few lines.

Every function here is what a command of the ``lmlab`` CLI does, as a call that returns data::

    import lmlab
    lm = lmlab.train_ngram("ptb/train.txt", order=5, smoothing="mkn")   # lmlab ngram train
    r = lm.perplexity("ptb/test.txt")                                   # lmlab eval
    nn = lmlab.train("lstm", data="ptb", hidden=200, layers=2, epochs=1)  # lmlab train
    mix = lmlab.interpolate([lm, nn], valid="ptb/valid.txt")            # lmlab interpolate
    print(lmlab.compare([lm, nn, mix], "ptb/test.txt"))                 # lmlab compare

Models returned here share the methods of :class:`lmlab.scoring.Scoring` (``logprob``,
``token_logprobs``, ``perplexity``, ``next_words``, ``generate``) and ``save``. Bad input raises
:class:`lmlab.LmlabError` with the one-line message the CLI prints. Nothing here changes
process-wide state (threads, allocator, cuDNN flags) and nothing prints: progress bars only
when asked (``progress=True``), warnings through :mod:`warnings`, training lines through the
``lmlab`` :mod:`logging` logger. torch is imported only by the neural functions.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError
from lmlab.scoring import Model, Sentence, is_path, sentences_of, stream_of

if TYPE_CHECKING:
    from lmlab.comparison import Comparison
    from lmlab.corpus import Vocabulary
    from lmlab.mixture import Mixture
    from lmlab.neural.lm import NeuralLM
    from lmlab.ngram.model import AddKModel, NGramModel
    from lmlab.tokenizers import Tokenizer

log = logging.getLogger("lmlab")



def train_ngram(data: str | os.PathLike | Iterable[Sentence], order: int = 3,
                smoothing: str = "mkn", *, min_count: int = 1, max_vocab: int | None = None,
                vocab: Vocabulary | str | os.PathLike | None = None, add_k: float = 1.0,
                backoff_factor: float = 0.4, strict_discounts: bool = False,
                prune: Sequence[int] | None = None, tokenizer: str | Tokenizer | None = None,
                vocab_size: int | None = None, progress: bool = False
                ) -> NGramModel | AddKModel:
    """Estimate an n-gram model, as ``lmlab ngram train`` does.

    ``data`` is a text file (one sentence per line, ``.gz`` ok, ``-`` for standard input) or an
    iterable of sentences, each a ``str`` (split on whitespace) or a list of tokens.
    ``smoothing`` is one of ``mle addk katz wb absdisc kn mkn stupid`` (``mkn`` is KenLM's
    ``lmplz``); ``add_k`` is add-k's constant, ``backoff_factor`` stupid backoff's;
    ``strict_discounts`` makes undefined modified-KN discounts an error instead of KenLM's
    fallback. ``vocab`` fixes the vocabulary (a :class:`~lmlab.corpus.Vocabulary` or a
    vocabulary file), else words seen ``min_count`` times are kept, at most ``max_vocab``.
    ``prune`` is count pruning as ``lmplz --prune``: one threshold per order (a shorter list's
    last value repeats; first 0, non-decreasing), e.g. ``prune=[0, 1, 1, 1, 1]`` drops every
    n-gram of order >= 2 seen once; every smoothing method but ``addk`` accepts it.
    ``tokenizer`` cuts raw text into tokens (``"whitespace"`` by default, ``"char"``, ``"byte"``,
    ``"jieba"``, ``"sentencepiece"``, ``"bpe"``...: :mod:`lmlab.tokenizers`); a subword one is
    trained on ``data`` with ``vocab_size`` tokens. It is saved with the model.

    >>> import lmlab
    >>> lm = lmlab.train_ngram(["the cat sat", "the dog sat"], order=2, smoothing="kn")
    >>> lm.order, len(lm.vocab)
    (2, 7)
    >>> lm = lmlab.train_ngram(["the cat sat"], order=3, smoothing="mle", tokenizer="char")
    >>> lm.next_words("the c", k=1)
    [('a', 1.0)]
    """
    from lmlab.corpus import TokenStream, Vocabulary
    from lmlab.ngram.model import train_ngram as _train
    from lmlab.ngram.prune import prune_thresholds
    from lmlab.tokenizers import make_tokenizer

    prune_thresholds(prune, order, smoothing)  # bad thresholds fail before any work
    tok = make_tokenizer(tokenizer, vocab_size)
    if isinstance(vocab, str | os.PathLike):
        vocab = Vocabulary.load(vocab)
    if vocab is not None and tokenizer is not None:
        vocab = Vocabulary(vocab.itos, vocab.counts, tok)
    options: dict[str, Any] = {}
    if smoothing == "stupid":
        options["factor"] = backoff_factor
    if smoothing == "mkn":
        options["strict"] = strict_discounts
    common = dict(order=order, smoothing=smoothing, min_count=min_count, max_vocab=max_vocab,
                  k=add_k, progress=progress, prune=prune, **options)
    if is_path(data):
        return _train(data, vocab=vocab, tokenizer=tok, **common)  # type: ignore[arg-type]
    items = list(data)  # type: ignore[arg-type]
    if vocab is None and tok.trainable and tok.model is None:
        tok.fit((s if isinstance(s, str) else " ".join(s) for s in items), "<sentences>")
    tokenizer_of = tok if vocab is None else vocab.tokenizer
    sentences = sentences_of(items, tokenizer_of)  # cut once, for the vocabulary and the stream
    if not any(sentences):
        raise LmlabError("training sentences contain no words")
    if vocab is None:
        vocab = Vocabulary.build(sentences, min_count=min_count, max_size=max_vocab, tokenizer=tok)
    stream = TokenStream.from_sentences(sentences, vocab, source="<sentences>")
    return _train(stream=stream, vocab=vocab, **common)  # type: ignore[arg-type]


def train(model: str, data: str | os.PathLike, *, output: str | os.PathLike | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = False,
          on_log: Callable[[str], None] | None = None, tokenizer: str | Tokenizer | None = None,
          vocab_size: int | None = None, **options: Any) -> NeuralLM:
    """Train a neural language model, as ``lmlab train`` does; returns it, ready to score.

    ``model`` is one of ``nnlm rnn_tanh rnn_relu irnn lstm gru``; ``data`` a folder holding
    ``train.txt``, ``valid.txt`` (and optionally ``test.txt``), or the name of a corpus under
    ``$LMLAB_DATA`` (``"ptb"``). ``options`` are the run configuration's fields, the CLI's
    flags with ``_`` for ``-`` (``hidden=200, layers=2, epochs=1, dropout=0.5, variant="cifg",
    max_steps=100, eval_every=50, seed=0, device="cuda"``...). The checkpoint, its config.json,
    metrics log and learning curve are written only when ``output`` is given (then
    ``resume=True`` continues that run with its own options, those given here overriding the
    ones a resume may change, and ``overwrite=True`` replaces it); otherwise the run lives in
    a temporary folder removed at the end, and Ctrl-C raises :class:`KeyboardInterrupt`. Each
    epoch's line goes to ``on_log`` (default: the ``lmlab`` logger at INFO level).
    ``tokenizer`` and ``vocab_size`` as for :func:`train_ngram` (a resumed run keeps its own).

    The random generators (Python's, numpy's, torch's) are seeded from ``seed`` for the run and
    restored afterwards, as are torch's thread count and cuDNN flags: the caller's process is
    left as it was.

    In a script started by ``torchrun --nproc_per_node N``, the run is data-parallel
    (DistributedDataParallel over the N processes, ``batch_size`` the global batch; rank 0
    alone logs and writes ``output``) and every process returns the trained model
    (docs/distributed.md). ``lmlab train --ddp N`` starts such processes from the command line.

    >>> import lmlab, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for split in ("train", "valid"):
    ...     _ = (d / f"{split}.txt").write_text("a b c\\nb c a\\n" * 20)
    >>> nn = lmlab.train("gru", d, hidden=8, emsize=8, layers=1, epochs=1, seed=0)
    >>> nn.perplexity(["a b c"]).perplexity < 6
    True
    """
    from lmlab.datasets import data_folder
    from lmlab.neural.checkpoint import get_rng_state, load_checkpoint, set_rng_state
    from lmlab.neural.config import RunConfig
    from lmlab.neural.data import load_corpus
    from lmlab.neural.distributed import session
    from lmlab.neural.lm import NeuralLM
    from lmlab.neural.trainer import Trainer, TrainingInterrupted, check_train_options
    from lmlab.tokenizers import make_tokenizer, tokenizer_from_spec

    if resume and output is None:
        raise LmlabError("resume=True continues the run saved in output=: give its path")
    tok = make_tokenizer(tokenizer, vocab_size)
    base = None
    if resume and output is not None:
        saved = load_checkpoint(output)
        base = RunConfig.from_dict(saved["config"], os.fspath(output))
        if tokenizer is None:
            tok = tokenizer_from_spec(saved.get("tokenizer"), output)
    config = _run_config(model, options, base)
    check_train_options(config)
    corpus = load_corpus(data_folder(data), tokenizer=tok)
    caller_rng = get_rng_state()
    try:
        with tempfile.TemporaryDirectory(prefix="lmlab-train-") as tmp, \
                session(config.train.device) as dist:
            out = Path(output) if output is not None else Path(tmp) / "model.pt"
            trainer = Trainer(config, corpus, out, resume=resume, overwrite=overwrite,
                              progress=progress, plot=output is not None,
                              log=on_log or log.info, dist=dist)
            try:
                result = trainer.train()
            except TrainingInterrupted:
                if output is not None:
                    raise  # its message says where the checkpoint to resume is
                raise KeyboardInterrupt from None  # nothing was kept to resume
            finally:
                trainer.close()
            if dist is None or dist.main:
                log.info("%s: %d epoch(s), %d steps", result.status, result.epoch, result.step)
            meta = {"checkpoint": os.fspath(output) if output is not None else None,
                    "epoch": trainer.epoch, "step": trainer.step}
            lm = NeuralLM(trainer.model, corpus.vocab, trainer.config, device=trainer.device,
                          meta=meta)
    finally:
        set_rng_state(caller_rng)
    lm.model.eval()
    if output is not None:
        lm.path = os.fspath(output)
    return lm


def _run_config(model: str, options: dict[str, Any], base=None):
    """A :class:`RunConfig` from keyword options, each routed to its section by name."""
    from lmlab.neural.config import RunConfig

    config = base or RunConfig()
    d = config.to_dict()
    sections = {f.name: section for section, cls in (("model", type(config.model)),
                                                     ("train", type(config.train)))
                for f in fields(cls)}
    for key, value in options.items():
        if key not in sections or key in ("model", "vocab_size"):
            known = ", ".join(sorted(k for k in sections if k not in ("model", "vocab_size")))
            raise LmlabError(f"unknown training option {key!r}; options are: {known}")
        d[sections[key]][key] = value
    d["model"]["model"] = model
    return RunConfig.from_dict(d, "options")


def load(path: str | os.PathLike) -> Model:
    """Open any model file lmlab reads, by content: an lmlab n-gram model, an ARPA file (plain
    or gzip, from KenLM, SRILM or lmlab), a neural checkpoint, or a mixture.

    >>> import lmlab, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.lm")
    >>> lmlab.train_ngram(["a b", "a c"], order=2, smoothing="mle").save(path)
    >>> [(w, round(p, 3)) for w, p in lmlab.load(path).next_words("a", k=1)]
    [('b', 0.5)]
    """
    from lmlab.models import load_model

    model = load_model(path)
    model.path = os.fspath(path)
    return model


def _models(items: Sequence[str | os.PathLike | Model]) -> tuple[list[Model],
                                                                  list[str | None]]:
    """Load the paths among ``items`` (models pass through); each one's file name or None."""
    models, paths = [], []
    for item in items:
        if is_path(item):
            models.append(load(item))
            paths.append(os.fspath(item))
        else:
            if not hasattr(item, "logprobs"):
                raise LmlabError(f"not a model or a model file: {type(item).__name__}")
            models.append(item)
            paths.append(getattr(item, "path", None))
    return models, paths


def interpolate(models: Sequence[str | os.PathLike | Model],
                valid: str | os.PathLike | Iterable[Sentence], *,
                iterations: int | None = None) -> Mixture:
    """Linear mixture of ``models`` (model objects or files, any kind, one vocabulary) with
    weights tuned by EM on ``valid``, as ``lmlab interpolate`` does. The mixture is a model
    like any other; ``mixture.weights``, ``mixture.em_perplexity`` (validation perplexity per
    EM iteration; ``iterations``: at most that many, default 1000) and
    ``mixture.member_perplexity`` tell how it was fitted. Saving it needs
    every member saved to (or loaded from) a file, since the mixture file names them.

    >>> import lmlab
    >>> a = lmlab.train_ngram(["a b", "a c"], order=1)
    >>> b = lmlab.train_ngram(["a b", "a c"], order=2, smoothing="mle")
    >>> mix = lmlab.interpolate([a, b], valid=["a b"])
    >>> [round(w, 2) for w in mix.weights.tolist()]
    [0.0, 1.0]
    """
    from lmlab.mixture import fit_mixture

    loaded, paths = _models(models)
    if not is_path(valid):

        valid = stream_of(valid, loaded[0].vocab)  # type: ignore[arg-type]
    return fit_mixture(loaded, paths, valid, iterations)


def compare(models: Sequence[str | os.PathLike | Model], text: str | os.PathLike) -> Comparison:
    """Score ``text`` with every model (objects or files) under the one protocol; the result
    holds the table ``lmlab compare`` prints (``str(result)``) and its data
    (``result.scores``, ``result.pairs``, ``result.to_dict()``). The first model is the
    reference of the per-token head-to-head."""
    from lmlab.comparison import compare_models, describe_model

    if not is_path(text):
        raise LmlabError("compare scores a text file: give its path (or - for standard input)")
    loaded, paths = _models(models)
    # a model made in this process has no file name: label it by its kind and position
    names = [p or f"{describe_model(m)[0]} {i}"
             for i, (m, p) in enumerate(zip(loaded, paths, strict=True), 1)]
    return compare_models(loaded, names, text)
