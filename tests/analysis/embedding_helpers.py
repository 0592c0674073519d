"""Shared by the embedding tests (test_embeddings.py, test_embedding_formats.py): the gensim
marker and checkpoints whose embedding matrix is set by hand. The ``crafted`` fixture built with
them is in conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.corpus import SPECIALS, Vocabulary
from lmlab.neural.checkpoint import save_checkpoint
from lmlab.neural.config import ModelConfig, RunConfig
from lmlab.neural.models import build_model

# evaluation and the gensim parity checks need gensim (the `embeddings` and `test` extras); the
# rest of lmlab's embedding tools are numpy only and are tested without it
try:
    import gensim  # noqa: F401

    HAVE_GENSIM = True
except ImportError:
    HAVE_GENSIM = False
needs_gensim = pytest.mark.skipif(not HAVE_GENSIM,
                                  reason="gensim is not installed: pip install 'lmlab[embeddings]' "
                                  "(or pip install gensim)")

# Hand-made geometry (D = 12): royal e0, male e1, female e2, capital e3, country e4, one
# dimension per country e5..e9, the specials on e10/e11 (orthogonal to every word).
CAPITALS = [("athens", "greece"), ("baghdad", "iraq"), ("bangkok", "thailand"),
            ("beijing", "china"), ("berlin", "germany")]
WORDS = ["king", "queen", "man", "woman"] + [w for pair in CAPITALS for w in pair]
DIM = 12


def crafted_vectors(seed: int = 0) -> np.ndarray:
    e = np.eye(DIM)
    rows = [e[0] + e[1], e[0] + e[2], e[1], e[2]]
    for i in range(len(CAPITALS)):
        rows += [e[3] + e[5 + i], e[4] + e[5 + i]]
    noise = np.random.default_rng(seed).normal(0, 0.01, (len(rows), DIM))
    noise[:, 10:] = 0
    return (np.array(rows) + noise).astype(np.float32)


def make_checkpoint(path, vectors, words=WORDS, model="lstm", tied=False, bidirectional=False,
                    output=None):
    vocab = Vocabulary(list(SPECIALS) + list(words))
    dim = vectors.shape[1]
    cfg = RunConfig(ModelConfig(model=model, vocab_size=len(vocab), emsize=dim, hidden=dim,
                                layers=1, tied=tied, bidirectional=bidirectional, window=2))
    torch.manual_seed(0)
    net = build_model(cfg.model)
    full = torch.zeros(len(vocab), dim)
    full[0, 10], full[1, 10], full[1, 11], full[2, 11] = 1, 1, 1, 1  # <unk>, <s>, </s>
    full[3:] = torch.from_numpy(vectors)
    with torch.no_grad():
        net.embedding.weight.copy_(full)
        if output is not None:
            net.decoder.weight.copy_(torch.from_numpy(output))
    save_checkpoint(path, {"config": cfg.to_dict(), "vocab": vocab.itos,
                           "model": net.state_dict()})
    return path
