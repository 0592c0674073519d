"""Fixtures shared by the tests of :mod:`lmlab.analysis`."""

from __future__ import annotations

import numpy as np
import pytest

from tests.analysis.embedding_helpers import DIM, WORDS, crafted_vectors, make_checkpoint


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """(checkpoint, input vectors, output vectors) of an untied LSTM with hand-set weights."""
    d = tmp_path_factory.mktemp("emb")
    vectors = crafted_vectors()
    output = np.random.default_rng(5).normal(size=(len(WORDS) + 3, DIM)).astype(np.float32)
    return make_checkpoint(d / "crafted.pt", vectors, output=output), vectors, output
