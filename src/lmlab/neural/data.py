"""From a TokenStream to tensors: the same predicted tokens as every other lmlab model.

The corpus is one continuous stream: sentence after sentence, each ending in ``</s>``. The input
at step t is the token before target t; before the very first target the input is ``</s>`` (the
boundary that precedes any sentence), so the first token of the file IS predicted (82,430 targets
on PTB test, unlike the pytorch example's batchify, its issue #453).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lmlab.corpus import EOS_ID, TokenStream, Vocabulary, read_corpus, read_training_corpus
from lmlab.errors import LmlabError
from lmlab.tokenizers import WHITESPACE, Tokenizer

SPLITS = ("train", "valid", "test")


class DataError(LmlabError, ValueError):
    """Data that cannot feed a model: one line for the CLI, a ValueError for Python callers."""


def stream_tensors(stream: TokenStream) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D (inputs, targets) of the whole stream; ``targets`` are exactly ``stream.ids``."""
    targets = torch.from_numpy(stream.ids.astype("int64"))
    inputs = torch.cat([torch.tensor([EOS_ID]), targets[:-1]])
    return inputs, targets


def batchify(stream: TokenStream, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[L, B] inputs and targets for training: B contiguous slices of the stream side by side
    (the last N mod B tokens are dropped; training only)."""
    inputs, targets = stream_tensors(stream)
    n = len(targets) // batch_size
    if n == 0:
        raise DataError(f"{len(targets)} tokens cannot fill a batch of {batch_size} rows; use a "
                        "smaller --batch-size or more data", stream.source)
    shape = (batch_size, n)
    return (inputs[: n * batch_size].view(shape).t().contiguous(),
            targets[: n * batch_size].view(shape).t().contiguous())


def bptt_windows(length: int, bptt: int) -> list[tuple[int, int]]:
    """(start, end) of each truncated-BPTT window over ``length`` steps."""
    return [(i, min(i + bptt, length)) for i in range(0, length, bptt)]


@dataclass
class Corpus:
    """A training folder read once: the vocabulary (built from train) and the encoded splits."""

    vocab: Vocabulary
    train: TokenStream
    valid: TokenStream
    test: TokenStream | None
    folder: str = ""


def split_path(folder: str | os.PathLike, split: str) -> Path | None:
    """``folder/split.txt`` (or ``.txt.gz``) if present."""
    for name in (f"{split}.txt", f"{split}.txt.gz"):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def split_paths(folder: str | os.PathLike) -> dict[str, Path | None]:
    """The split files of a data folder; a one-line error when train or valid is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LmlabError("no such data directory (expected train.txt, valid.txt, test.txt "
                         "inside)", folder)
    paths = {s: split_path(folder, s) for s in SPLITS}
    for s in ("train", "valid"):
        if paths[s] is None:
            raise LmlabError(f"no {s}.txt in the data directory", folder)
    return paths


def load_corpus(folder: str | os.PathLike, vocab: Vocabulary | None = None,
                tokenizer: Tokenizer = WHITESPACE) -> Corpus:
    """Read ``train.txt`` and ``valid.txt`` (required) and ``test.txt`` (optional) of ``folder``.

    The vocabulary is built from ``train`` (every token kept; a subword ``tokenizer`` trained on
    it first) unless given.
    """
    paths = split_paths(folder)
    vocab, train = read_training_corpus(paths["train"], vocab, tokenizer=tokenizer)
    valid = read_corpus(paths["valid"], vocab)
    test = read_corpus(paths["test"], vocab) if paths["test"] else None
    return Corpus(vocab, train, valid, test, os.fspath(folder))
