"""Tiny recurrent LMs and word batches shared by the gradient-analysis tests."""

from __future__ import annotations

import numpy as np
import torch

from lmlab.analysis.gradients_report import fresh_model, sample_batch

V = 9


def batch(T: int = 20, B: int = 2, seed: int = 0, vocab: int = V):
    ids = np.random.default_rng(seed).integers(3, vocab, size=500)
    return sample_batch(ids, T, B, seed)


def tiny(cell: str, layers: int = 1, residual: bool = False, hidden: int = 3, seed: int = 0,
         init_range: float = 0.5, dtype=torch.float64, **kw):
    m = fresh_model(cell, V, hidden=hidden, layers=layers, residual=residual, seed=seed,
                    init_range=init_range)
    return m.to(dtype)


STACKS = [(1, False), (2, False), (2, True)]

