"""A trained neural model behind the :class:`lmlab.metrics.LanguageModel` protocol.

Scoring follows the shared protocol exactly: the text is ONE continuous stream (sentence after
sentence, each ending in ``</s>``), fed with batch size 1 in chunks whose hidden state is carried
from chunk to chunk, so every token is predicted from its whole history and the result does not
depend on any training batch size. The first input is ``</s>`` (see :mod:`lmlab.neural.data`), so
the first word of the file is predicted too. A bidirectional model is scored with its forward
(left-to-right) direction only: the backward direction sees the future and is not a language
model of the text. Its backward and cloze scores come separately, under their own names, from
:meth:`NeuralLM.extra_metrics`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lmlab.corpus import EOS_ID, TokenStream, Vocabulary
from lmlab.errors import LmlabError
from lmlab.metrics import safe_exp
from lmlab.neural.config import RunConfig
from lmlab.neural.data import stream_tensors
from lmlab.scoring import Scoring
from lmlab.tokenizers import tokenizer_from_spec, tokenizer_record

CHUNK = 256


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or None) -> ``cuda`` if available else ``cpu``; checks that CUDA exists."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LmlabError(f"--device {name}: CUDA is not available here (torch "
                             f"{torch.__version__}); use --device cpu or auto")
        index = name.partition(":")[2]
        if index and not (index.isdigit() and int(index) < torch.cuda.device_count()):
            raise LmlabError(f"--device {name}: no such GPU ({torch.cuda.device_count()} "
                             "visible)")
        return torch.device(name)
    raise LmlabError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


class NeuralLM(Scoring):
    """Evaluate a neural model with the shared protocol (``logprobs``, ``next_logprobs``)."""

    normalised = True

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, config: RunConfig | None = None,
                 device: str | torch.device | None = "cpu", chunk: int = CHUNK,
                 meta: dict | None = None) -> None:
        if chunk < 1:
            raise LmlabError(f"chunk must be >= 1, got {chunk}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.vocab = vocab
        self.config = config
        self.chunk = chunk
        self.meta = dict(meta or {})
        self._cache: tuple[tuple[int, ...], object, torch.Tensor] | None = None

    # -- protocol -------------------------------------------------------------------------------
    def logprobs(self, stream: TokenStream) -> np.ndarray:
        """ln p of every predicted token of ``stream``, the stream fed continuously (batch 1)."""
        out = np.empty(len(stream), dtype=np.float64)
        for start, end, logits, y in self._stream_logits(stream):
            lp = torch.log_softmax(logits.double(), dim=-1)
            out[start:end] = lp.gather(1, y.view(-1, 1))[:, 0].cpu().numpy()
        return out

    def next_word_accuracy(self, stream: TokenStream) -> float:
        """Share of the predicted tokens of ``stream`` that are the model's most probable word
        (same stream and state as :meth:`logprobs`)."""
        correct = sum(int((logits.argmax(-1) == y).sum())
                      for _, _, logits, y in self._stream_logits(stream))
        return correct / len(stream) if len(stream) else float("nan")

    def _stream_logits(self, stream: TokenStream):
        """The evaluation protocol's loop: ``(start, end, logits [n, V], targets [n])`` per chunk
        of the stream, fed with batch size 1 and the state carried from chunk to chunk."""
        if len(stream) == 0:
            return
        inputs, targets = stream_tensors(stream)
        with self._eval():
            state = self.model.init_state(1, self.device)
            for start in range(0, len(targets), self.chunk):
                end = min(start + self.chunk, len(targets))
                x = inputs[start:end].view(-1, 1).to(self.device)
                logits, state = self.model(x, state)
                yield start, end, logits[:, 0], targets[start:end].to(self.device)

    def next_logprobs(self, context: list[str]) -> np.ndarray:
        """ln p over vocabulary ids of the word after ``context`` (a sentence prefix): the model is
        fed ``</s>`` then the context. Extending the previous call's context by a word (as
        generation does) costs one step."""
        ids = tuple(self.vocab.id(w) for w in context)
        with self._eval():
            if self._cache is not None and ids[:-1] == self._cache[0] and ids:
                state, todo = self._cache[1], ids[-1:]
            else:
                state, todo = self.model.init_state(1, self.device), (EOS_ID, *ids)
            x = torch.tensor(todo, dtype=torch.long, device=self.device).view(-1, 1)
            logits, state = self.model(x, state)
            lp = torch.log_softmax(logits[-1, 0].double(), dim=-1)
        self._cache = (ids, state, lp)
        return lp.cpu().numpy()

    def describe(self) -> dict:
        c = self.config
        d: dict = {"type": "neural", **self.meta}
        if c is not None:
            m = c.model
            d.update(model=m.model, vocab_size=len(self.vocab), emsize=m.emsize, hidden=m.hidden,
                     layers=m.layers, dropout=m.dropout, tied=m.tied, residual=m.residual,
                     bidirectional=m.bidirectional)
            if m.model == "nnlm":
                d.update(window=m.window, direct=m.direct)
            name = f"{m.model}, {m.layers}x{m.hidden}, emsize {m.emsize}"
            if m.model == "nnlm":
                name = f"nnlm, window {m.window}, hidden {m.hidden}, emsize {m.emsize}"
            if m.bidirectional:
                d["scoring"] = "forward direction only"
                name += ", bidirectional (scored with the forward direction only)"
            d["summary"] = name
        d["parameters"] = sum(p.numel() for p in self.model.parameters())
        return d

    @property
    def bidirectional(self) -> bool:
        """Whether :meth:`extra_metrics` has anything to say (a bidirectional model)."""
        from lmlab.neural.bidirectional import BidirectionalLM

        return isinstance(self.model, BidirectionalLM)

    def extra_metrics(self, stream: TokenStream) -> dict:
        """Numbers beside the left-to-right ones: empty for a unidirectional model. A
        bidirectional model adds, over the same stream (whole-stream context, batch 1):
        ``backward_perplexity`` (right-to-left LM), ``cloze_accuracy`` and ``cloze_perplexity``
        (each word predicted from both sides). These see words to the right of the one predicted:
        they are NOT left-to-right LM scores and never replace ``perplexity``."""
        if not self.bidirectional or len(stream) == 0:
            return {}
        _, targets = stream_tensors(stream)
        targets = targets.to(self.device)
        backward = self.model.backward_logprobs(targets).double()
        cloze_logp, pred = self.model.cloze_scores(targets)
        return {"backward_perplexity": safe_exp(-float(backward.mean())),
                "cloze_accuracy": float((pred == targets).double().mean()),
                "cloze_perplexity": safe_exp(-float(cloze_logp.double().mean()))}

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as a checkpoint (configuration, vocabulary, weights) that
        :func:`lmlab.load` and every command read. It holds no optimiser state: to continue
        training, resume from the trainer's own checkpoint (``lmlab train --resume``)."""
        from lmlab.neural.checkpoint import save_checkpoint

        if self.config is None:
            raise LmlabError("this model has no run configuration to save with it")
        config = self.config.to_dict()
        config["model"]["vocab_size"] = len(self.vocab)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_checkpoint(path, {"config": config, "vocab": list(self.vocab.itos), "model": state,
                               "progress": {"epoch": self.meta.get("epoch"),
                                            "step": self.meta.get("step")},
                               **tokenizer_record(self.vocab)})
        self.path = os.fspath(path)

    # -- helpers --------------------------------------------------------------------------------
    def _eval(self):
        return _EvalMode(self.model)


class _EvalMode:
    """eval() + no_grad for the duration, then the previous training flag back."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.no_grad = torch.no_grad()

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.no_grad.__enter__()
        return self

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)
        return False


def model_from_checkpoint(data: dict, path: str | os.PathLike = "checkpoint"
                          ) -> tuple[torch.nn.Module, Vocabulary, RunConfig]:
    """Rebuild the model of a loaded checkpoint dict; one-line errors when it does not fit."""
    from lmlab.neural.models import build_model

    try:
        config = RunConfig.from_dict(data["config"], os.fspath(path))
        config.check()
    except LmlabError as err:
        raise LmlabError(f"checkpoint holds an invalid configuration ({err})", path) from None
    except (TypeError, ValueError, AttributeError) as err:
        raise LmlabError(f"checkpoint holds an invalid configuration ({err})", path) from None
    itos = data["vocab"]
    if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
        raise LmlabError("checkpoint vocabulary is not a list of words", path)
    vocab = Vocabulary(itos, tokenizer=tokenizer_from_spec(data.get("tokenizer"), path))
    if config.model.vocab_size != len(vocab):
        raise LmlabError(f"checkpoint vocabulary has {len(vocab)} words but the model "
                         f"{config.model.vocab_size}", path)
    with torch.random.fork_rng(devices=[]):  # (its random initial weights are replaced: the
        model = build_model(config.model)  # caller's random stream must not move for them)
    try:
        model.load_state_dict(data["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise LmlabError("checkpoint weights do not fit a "
                         f"{config.model.model} model of its configuration "
                         f"({_first_line(err)})", path) from None
    return model, vocab, config


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    line = " ".join(s.strip() for s in lines[:2]) if lines else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def load_neural(path: str | os.PathLike, device: str | torch.device | None = "cpu",
                chunk: int = CHUNK) -> NeuralLM:
    """Open a neural checkpoint for evaluation (``device``: cpu, cuda, cuda:N or auto)."""
    from lmlab.neural.checkpoint import load_checkpoint

    dev = resolve_device(device)
    data = load_checkpoint(path)
    model, vocab, config = model_from_checkpoint(data, path)
    progress = data.get("progress") or {}
    meta = {"checkpoint": os.fspath(path), "epoch": progress.get("epoch"),
            "step": progress.get("step")}
    return NeuralLM(model, vocab, config, device=dev, chunk=chunk, meta=meta)
