"""The step-by-step recurrence is the model: it reproduces the fused modules (float64 and
float32 weights, deep and residual stacks), refuses what it cannot read, and rescales recurrent
matrices to a given spectral radius gate block by gate block."""

from __future__ import annotations

import pytest
import torch

from lmlab.analysis.gradients_report import fresh_model
from lmlab.analysis.recurrence import CELLS, Stepwise
from lmlab.errors import LmlabError
from tests.analysis.gradient_helpers import STACKS, V, batch, tiny

torch.set_num_threads(1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,residual", STACKS)
def test_stepwise_reproduces_fused_module(cell, layers, residual):
    x, _ = batch(T=12, B=3)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        model = tiny(cell, layers, residual, hidden=5, init_range=0.3, dtype=dtype).eval()
        with torch.no_grad():
            ref, _ = model(x, None)
        mine = Stepwise.from_model(model).run(x).logits
        assert mine.dtype == torch.float64
        assert (ref.double() - mine).abs().max() < tol


def test_unsupported_models_are_refused():
    from lmlab.neural.config import ModelConfig
    from lmlab.neural.models import build_model

    nnlm = build_model(ModelConfig(model="nnlm", vocab_size=V, emsize=4, hidden=4))
    with pytest.raises(LmlabError, match="recurrent LM"):
        Stepwise.from_model(nnlm)
    variant = build_model(ModelConfig(model="lstm", vocab_size=V, emsize=4, hidden=4, layers=1,
                                      variant="vanilla"))
    with pytest.raises(LmlabError, match="variant"):
        Stepwise.from_model(variant)


def test_rescaling_gated_blocks():
    model = fresh_model("gru", V, hidden=6, seed=0)
    sw = Stepwise.from_model(model).with_spectral_radius(0.7)
    w = sw.layers[0].w_hh
    for g in range(3):
        assert torch.linalg.eigvals(w[g * 6:(g + 1) * 6]).abs().max() == pytest.approx(0.7)
    with pytest.raises(LmlabError, match="spectral-radius"):
        Stepwise.from_model(model).with_spectral_radius(-1.0)
