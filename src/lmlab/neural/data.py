"""From a TokenStream to tensors: the same predicted tokens as every other lmlab model.

The corpus is one continuous stream: sentence after sentence, each ending in ``</s>``. The input
at step t is the token before target t; before the very first target the input is ``</s>`` (the
boundary that precedes any sentence), so the first token of the file IS predicted (82,430 targets
on PTB test, unlike the pytorch example's batchify, its issue #453).
"""

from __future__ import annotations

import torch

from lmlab.corpus import EOS_ID, TokenStream


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
        raise ValueError(f"{len(targets)} tokens cannot fill a batch of {batch_size} rows")
    shape = (batch_size, n)
    return (inputs[: n * batch_size].view(shape).t().contiguous(),
            targets[: n * batch_size].view(shape).t().contiguous())


def bptt_windows(length: int, bptt: int) -> list[tuple[int, int]]:
    """(start, end) of each truncated-BPTT window over ``length`` steps."""
    return [(i, min(i + bptt, length)) for i in range(0, length, bptt)]
