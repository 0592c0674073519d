"""Gradient dynamics lab: gradients and Jacobian products match finite differences, the measured
products never exceed the bound, spectral-radius regimes vanish/explode, and analysis has no side
effects (the step-by-step recurrence itself: test_recurrence.py; ``lmlab gradients``:
test_gradients_report.py)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmlab.analysis.gradients import (
    BOUND_CELLS,
    MAX_SEQ_LEN,
    analyse,
    jacobian_plan,
    jacobian_products,
    loss_gradients,
    step_jacobians,
)
from lmlab.analysis.gradients_report import fresh_model, sample_batch
from lmlab.analysis.recurrence import CELLS, Stepwise, token_losses
from lmlab.errors import LmlabError
from tests.analysis.gradient_helpers import V, batch, tiny

torch.set_num_threads(1)

# ----------------------------------------------------------------------------------------------
# Finite differences (float64)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,residual", [(1, False), (2, True)])
def test_loss_gradients_match_finite_differences(cell, layers, residual):
    x, y = batch(T=5, B=2, seed=1)
    sw = Stepwise.from_model(tiny(cell, layers, residual, seed=2))
    t, eps = 4, 1e-6
    grads = loss_gradients(sw.run(x, track=True), y, t)
    parts = ["h", "c"] if cell == "lstm" else ["h"]
    assert set(grads) == set(parts)
    for part in parts:
        for n in range(layers):
            for k in range(t + 1):
                fd = torch.zeros(2, 3, dtype=torch.float64)
                for b in range(2):
                    for i in range(3):
                        delta = torch.zeros(2, 3, dtype=torch.float64)
                        delta[b, i] = eps
                        up = token_losses(sw.run(x, perturb={(n, k, part): delta}).logits, y)
                        down = token_losses(sw.run(x, perturb={(n, k, part): -delta}).logits, y)
                        fd[b, i] = (up[t].sum() - down[t].sum()) / (2 * eps)
                got = grads[part][n][k]
                assert torch.allclose(got, fd, atol=1e-8, rtol=1e-6), (part, n, k, got, fd)


def _state_of(trace, n, t, lstm):
    h = trace.h[n][t]
    return torch.cat([h, trace.c[n][t]], -1) if lstm else h


@pytest.mark.parametrize("cell", CELLS)
def test_jacobian_products_match_finite_differences(cell):
    """∏ step_jacobians = ∂s_t/∂s_k by central differences, and jacobian_products reports
    ln of its spectral norm at distance t - k."""
    layers, residual = 2, True
    x, _ = batch(T=7, B=2, seed=3)
    sw = Stepwise.from_model(tiny(cell, layers, residual, seed=4))
    trace = sw.run(x)
    lstm = cell == "lstm"
    t, eps, H = 6, 1e-6, 3
    W = 2 * H if lstm else H
    for n in range(layers):
        w = sw.layers[n]
        logs = jacobian_products(sw, trace, n, [t])["log_norm"]  # [1, B, t+1]
        P = torch.eye(W, dtype=torch.float64).expand(2, W, W)
        for k in range(t - 1, -1, -1):
            P = P @ step_jacobians(w, _state_of(trace, n, k, lstm), trace.inputs[n][k + 1])
            # central differences of s_t with respect to s_k (this layer only)
            fd = torch.zeros(2, W, W, dtype=torch.float64)
            for i in range(W):
                part, col = ("c", i - H) if i >= H else ("h", i)
                delta = torch.zeros(2, H, dtype=torch.float64)
                delta[:, col] = eps
                up = _state_of(sw.run(x, perturb={(n, k, part): delta}), n, t, lstm)
                down = _state_of(sw.run(x, perturb={(n, k, part): -delta}), n, t, lstm)
                fd[:, :, i] = (up - down) / (2 * eps)
            assert torch.allclose(P, fd, atol=1e-8, rtol=1e-6), (n, k)
            expected = torch.linalg.matrix_norm(P, ord=2).log().numpy()
            assert np.allclose(logs[0, :, t - k], expected, atol=1e-9)


def test_jacobian_subsets_and_plan():
    """Products for a subset of sequences and distances equal the full computation there; the
    plan keeps the last target and thins out wide states."""
    x, y = batch(T=16, B=3, seed=8)
    sw = Stepwise.from_model(tiny("lstm", hidden=4, seed=8))
    trace = sw.run(x)
    full = jacobian_products(sw, trace, 0, [10, 15])
    part = jacobian_products(sw, trace, 0, [10, 15], sequences=[2], distances={0, 3, 7, 15})
    for key in ("log_norm", "log_norm_cc"):
        got, ref = part[key], full[key][:, [2]]
        have = ~np.isnan(got)
        assert set(np.flatnonzero(have.any(axis=(0, 1)))) == {0, 3, 7, 15}
        assert np.allclose(got[have], ref[have], atol=1e-10)
    assert np.allclose(trace.losses(y, chunk=5), token_losses(trace.logits, y))
    ends, seqs, dists = jacobian_plan(400, 16, [200, 300, 399], 4)
    assert ends == [200, 300, 399] and seqs == [0, 1, 2, 3] and dists is None
    ends, seqs, dists = jacobian_plan(400, 512, [200, 300, 399], 4)
    assert ends == [399] and len(seqs) >= 1 and dists is not None and 399 in dists


# ----------------------------------------------------------------------------------------------
# The bound (β_W β_h)^(t-k) holds for every measured product
# ----------------------------------------------------------------------------------------------


def _assert_under_bound(report):
    for e in report["per_layer"]:
        assert e["bound_checked"] > 0
        assert e["bound_violations"] == 0
        for d, (m, b) in enumerate(zip(e["jacobian_max_log_norm"], e["bound_log"],
                                       strict=True)):
            if m is None:
                continue
            assert b is not None, d
            assert m <= b + 1e-9 * max(1.0, abs(b)), (d, m, b)


@pytest.mark.parametrize("cell", BOUND_CELLS)
@pytest.mark.parametrize("radius", [None, 0.5, 1.0, 1.5, 3.0])
def test_measured_products_never_exceed_the_bound(cell, radius):
    x, y = batch(T=30, B=3, seed=5)
    model = tiny(cell, layers=2, residual=True, hidden=6, init_range=0.4, seed=6,
                 dtype=torch.float32)
    report = analyse(model, x, y, spectral_radius=radius, n_targets=3)
    _assert_under_bound(report)
    top = report["per_layer"][0]
    assert report["bound"] == top["bound"] and len(report["bound"]) == 30
    assert report["measured"] == top["jacobian_norm"] and report["measured"][0] == 1.0


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(BOUND_CELLS), seed=st.integers(0, 10_000),
       radius=st.floats(0.2, 4.0), init_range=st.floats(0.05, 2.0))
def test_bound_property(cell, seed, radius, init_range):
    x, y = batch(T=15, B=2, seed=seed)
    model = tiny(cell, hidden=4, init_range=init_range, seed=seed, dtype=torch.float32)
    _assert_under_bound(analyse(model, x, y, spectral_radius=radius, n_targets=2))


def test_gated_cells_report_measured_only():
    x, y = batch(T=12, B=2)
    for cell in ("lstm", "gru"):
        report = analyse(tiny(cell, hidden=4, dtype=torch.float32), x, y, n_targets=2)
        assert report["bound"] is None
        assert len(report["measured"]) == 12
        e = report["per_layer"][0]
        assert "bound_log" not in e
        assert ("cell_state" in e) == (cell == "lstm")
    assert report["decay_rate"] < 0  # small init: the gradient vanishes with distance


# ----------------------------------------------------------------------------------------------
# Controlled regimes: spectral radius 0.5 vanishes, 1.0 is neutral, 1.5 explodes
# ----------------------------------------------------------------------------------------------


def test_spectral_radius_regimes_irnn():
    """IRNN (W_hh = R·I, ReLU, zero bias): each step's Jacobian is R·diag(active units)."""
    x, y = batch(T=40, B=3, seed=7)
    model = fresh_model("irnn", V, hidden=8, seed=1)
    rates = {}
    for radius in (0.5, 1.0, 1.5):
        r = analyse(model, x, y, spectral_radius=radius, n_targets=3)
        rates[radius] = (r["decay_rate"], r["jacobian_decay_rate"])
        assert r["per_layer"][0]["spectral_radius_W"] == pytest.approx(radius)
        _assert_under_bound(r)
    assert rates[0.5][0] < -0.3 and rates[0.5][1] < -0.3  # vanishing
    assert rates[1.5][0] > 0.2 and rates[1.5][1] > 0.2  # exploding
    assert rates[1.5][1] == pytest.approx(math.log(1.5), abs=0.05)
    assert abs(rates[1.0][1]) < 0.05  # neutral: norm 1 while a unit stays active
    assert rates[0.5][0] < rates[1.0][0] < rates[1.5][0]


# ----------------------------------------------------------------------------------------------
# No side effects; limits
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_analysis_changes_nothing(cell):
    from lmlab.neural.config import ModelConfig
    from lmlab.neural.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(model=cell, vocab_size=V, emsize=5, hidden=5, layers=2,
                                    dropout=0.5))
    model.train()
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    random.seed(3)
    np.random.seed(3)
    rng = (torch.get_rng_state().clone(), np.random.get_state(), random.getstate())
    x, y = batch(T=10, B=2)
    analyse(model, x, y, spectral_radius=1.5, n_targets=2)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng[0])
    after = np.random.get_state()
    assert after[0] == rng[1][0] and np.array_equal(after[1], rng[1][1]) and after[2:] == rng[1][2:]
    assert random.getstate() == rng[2]


def test_sequence_length_limit():
    ids = np.arange(3, 3000) % 7 + 3
    with pytest.raises(LmlabError, match=str(MAX_SEQ_LEN)):
        sample_batch(ids, MAX_SEQ_LEN + 1, 1)
    x = torch.zeros(MAX_SEQ_LEN + 1, 1, dtype=torch.long)
    with pytest.raises(LmlabError, match="maximum of 400"):
        analyse(fresh_model("gru", V, hidden=2), x, x)
    with pytest.raises(LmlabError, match="fewer than --seq-len"):
        sample_batch(ids[:10], 20, 1)

