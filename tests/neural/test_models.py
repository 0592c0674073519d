"""Neural LMs: shapes, state carrying (chunked == whole), exact gradients, initialisation, tying,
config errors, and that every model actually learns."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from lmlab.corpus import EOS_ID
from lmlab.errors import LmlabError
from lmlab.neural.config import ModelConfig
from lmlab.neural.models import NNLM, RecurrentLM, build_model, detach_state

torch.set_num_threads(1)

V = 11


def config(**kw) -> ModelConfig:
    base = dict(model="lstm", vocab_size=V, emsize=6, hidden=6, layers=2, dropout=0.0, window=3)
    base.update(kw)
    return ModelConfig(**base)


def model_of(seed: int = 0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return build_model(config(**kw)).to(dtype)


def cell_variants() -> tuple[str, ...]:
    """The Greff LSTM variants if lmlab.neural.cells is there (it is written separately)."""
    try:
        from lmlab.neural.cells import VARIANTS
    except ImportError:
        return ()
    return tuple(VARIANTS)


VARIANTS = cell_variants()
needs_cells = pytest.mark.skipif(not VARIANTS, reason="lmlab.neural.cells (the LSTM variants) "
                                 "does not import: reinstall lmlab (pip install -e .)")

SPECS = {
    "nnlm": dict(model="nnlm"),
    "nnlm-direct-tied-proj": dict(model="nnlm", direct=True, tied=True, emsize=4, hidden=7),
    "nnlm-window1": dict(model="nnlm", window=1),
    "rnn_tanh": dict(model="rnn_tanh"),
    "rnn_relu": dict(model="rnn_relu", layers=1),
    "irnn": dict(model="irnn", layers=1),
    "irnn-residual": dict(model="irnn", residual=True, layers=2),
    "lstm": dict(model="lstm", forget_bias=1.0),
    "lstm-tied": dict(model="lstm", tied=True, layers=1),
    "gru": dict(model="gru", emsize=5, hidden=7),
    "rnn_tanh-residual": dict(model="rnn_tanh", residual=True, layers=3),
    "lstm-residual": dict(model="lstm", residual=True),
    "gru-residual": dict(model="gru", residual=True),
    "bilm-lstm": dict(model="lstm", bidirectional=True),
    "bilm-gru-residual": dict(model="gru", bidirectional=True, residual=True),
}
SPEC_PARAMS = [pytest.param(kw, id=name) for name, kw in SPECS.items()]
# every Greff variant through the model (fgr carries its gate activations in the state)
VARIANT_PARAMS = [pytest.param(dict(model="lstm", variant=v, forget_bias=1.0), id=f"lstm-{v}")
                  for v in VARIANTS] + [
    pytest.param(dict(model="lstm", variant=v, residual=True), id=f"lstm-{v}-residual")
    for v in ("vanilla", "fgr") if v in VARIANTS]
if not VARIANTS:
    VARIANT_PARAMS = [pytest.param({}, id="lstm-variants", marks=needs_cells)]


def flat(state) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else [t for s in state for t in flat(s)]


# -- shapes and state carrying -------------------------------------------------------------


@pytest.mark.parametrize("kw", SPEC_PARAMS + VARIANT_PARAMS)
def test_shapes_and_chunked_equals_whole(kw):
    model = model_of(**kw, dropout=0.3).eval()  # eval: dropout off
    T, B = 9, 3
    x = torch.randint(V, (T, B))
    state0 = model.init_state(B, "cpu")
    logits, state = model(x, state0)
    assert logits.shape == (T, B, V) and logits.dtype == torch.float64
    assert [t.shape for t in flat(state)] == [t.shape for t in flat(state0)]
    for split in (1, 4, 8):
        a, s = model(x[:split], state0)
        b, s = model(x[split:], s)
        torch.testing.assert_close(torch.cat([a, b]), logits)
        for u, v in zip(flat(s), flat(state), strict=True):
            torch.testing.assert_close(u, v)
    # detach_state keeps values and structure, cuts the graph
    detached = detach_state(state)
    assert type(detached) is type(state)
    assert all(not t.requires_grad for t in flat(detached))


@pytest.mark.parametrize("kw", SPEC_PARAMS)
def test_softmax_is_a_distribution(kw):
    model = model_of(**kw).eval()
    logits, _ = model(torch.randint(V, (5, 2)), model.init_state(2, "cpu"))
    probs = F.softmax(logits, dim=-1)
    assert torch.isfinite(logits).all() and (probs > 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 2, dtype=torch.float64))


def test_none_state_means_initial_state():
    for kw in (SPECS["nnlm"], SPECS["lstm"]):
        model = model_of(**kw).eval()
        x = torch.randint(V, (4, 2))
        torch.testing.assert_close(model(x, None)[0], model(x, model.init_state(2, "cpu"))[0])


def test_training_mode_dropout_is_random_eval_is_not():
    model = model_of(model="lstm", dropout=0.5)
    x = torch.randint(V, (6, 2))
    s = model.init_state(2, "cpu")
    assert not torch.equal(model(x, s)[0], model(x, s)[0])
    model.eval()
    assert torch.equal(model(x, s)[0], model(x, s)[0])


# -- NNLM ----------------------------------------------------------------------------------


def nnlm_reference(model: NNLM, inputs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Bengio's formula, one position at a time: y = b + W x + U tanh(d + H x)."""
    n = model.window
    history = torch.cat([state, inputs])  # the previous batch's last inputs, then this batch
    out = torch.empty(inputs.size(0), inputs.size(1), model.config.vocab_size,
                      dtype=model.embedding.weight.dtype)
    for t in range(inputs.size(0)):
        for b in range(inputs.size(1)):
            words = [history[len(state) + t - k, b] for k in reversed(range(n))]  # oldest first
            x = torch.cat([model.embedding.weight[w] for w in words])
            h = torch.tanh(model.hidden_layer.weight @ x + model.hidden_layer.bias)
            if model.proj is not None:
                h = model.proj.weight @ h
            y = model.decoder.weight @ h + model.decoder.bias
            if model.direct is not None:
                y = y + model.direct.weight @ x
            out[t, b] = y
    return out


@settings(max_examples=25, deadline=None)
@given(window=st.integers(1, 4), T=st.integers(1, 7), B=st.integers(1, 3),
       direct=st.booleans(), tied=st.booleans(), data=st.data())
def test_nnlm_matches_bengio_formula(window, T, B, direct, tied, data):
    model = model_of(model="nnlm", window=window, direct=direct, tied=tied, emsize=4,
                     hidden=data.draw(st.sampled_from([4, 5]))).eval()
    x = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, V - 1), min_size=B,
                                                 max_size=B), min_size=T, max_size=T)))
    state = model.init_state(B, "cpu")
    assert state.shape == (window, B) and (state == EOS_ID).all()
    logits, new = model(x, state)
    torch.testing.assert_close(logits, nnlm_reference(model, x, state))
    torch.testing.assert_close(new, torch.cat([state, x])[-window:])
    # a second batch reads its context from the carried state
    x2 = torch.randint(V, (3, B))
    torch.testing.assert_close(model(x2, new)[0], nnlm_reference(model, x2, new))


def test_nnlm_context_is_exactly_the_window():
    model = model_of(model="nnlm", window=3).eval()
    x = torch.randint(3, V, (10, 1))
    base, _ = model(x, model.init_state(1, "cpu"))
    y = x.clone()
    y[4] = (x[4] + 1) % V  # seen by targets 4, 5, 6 only
    changed = (model(y, model.init_state(1, "cpu"))[0] != base).any(-1)[:, 0]
    assert changed.tolist() == [t in (4, 5, 6) for t in range(10)]


# -- exact gradients -----------------------------------------------------------------------


class _Loss(nn.Module):
    """Loss and carried float state of ``model`` as a module, so functional_call can swap in
    the parameters being checked."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, state):
        loss, new = self.model.loss(inputs, targets, state)
        floats = [t for t in flat(new) if t.is_floating_point()]
        return (loss, *floats)


def gradcheck_model(model) -> None:
    wrapper = _Loss(model.double())
    names, params = zip(*[(n, p.detach().clone().requires_grad_())
                          for n, p in wrapper.named_parameters()], strict=True)
    T, B = 4, 2
    torch.manual_seed(1)
    inputs, targets = torch.randint(V, (T, B)), torch.randint(V, (T, B))
    state = model.init_state(B, "cpu")
    if isinstance(state, torch.Tensor) and state.is_floating_point():
        state = torch.randn_like(state) * 0.5  # a carried, non-zero state
    elif isinstance(state, tuple):
        state = tuple(torch.randn_like(s) * 0.5 for s in state)

    def f(*ps):
        return torch.func.functional_call(wrapper, dict(zip(names, ps, strict=True)),
                                          (inputs, targets, state))

    # the check has power: every parameter gets a clearly non-zero gradient
    grads = torch.autograd.grad(f(*params)[0], params)
    assert all(g.abs().max() > 1e-4 for g in grads), names
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kw", [
    pytest.param(dict(model="nnlm", direct=True, window=2, emsize=3, hidden=4), id="nnlm-direct"),
    pytest.param(dict(model="nnlm", tied=True, window=2, emsize=3, hidden=4), id="nnlm-tied"),
    pytest.param(dict(model="rnn_tanh", residual=True, layers=2), id="rnn_tanh-residual"),
    pytest.param(dict(model="lstm", layers=2, forget_bias=1.0), id="lstm"),
    pytest.param(dict(model="gru", layers=1, tied=True), id="gru-tied"),
])
def test_gradcheck(kw):
    gradcheck_model(model_of(**{"emsize": 3, "hidden": 3, "init_range": 0.7, **kw}))


# -- initialisation, tying, structure --------------------------------------------------------


@pytest.mark.parametrize("residual", [False, True])
def test_irnn_starts_with_identity_recurrence_and_zero_bias(residual):
    model = model_of(model="irnn", layers=2, residual=residual, hidden=6)
    rnns = model.rnn.stack if residual else [model.rnn.rnn]
    checked = 0
    for rnn in rnns:
        assert isinstance(rnn, nn.RNN) and rnn.nonlinearity == "relu"
        for name, p in rnn.named_parameters():
            if name.startswith("weight_hh"):
                torch.testing.assert_close(p, torch.eye(6, dtype=p.dtype))
                checked += 1
            elif name.startswith("bias"):
                assert (p == 0).all()
    assert checked == 2
    # the plain ReLU RNN is not identity-initialised
    plain = model_of(model="rnn_relu", layers=1, hidden=6)
    assert not torch.allclose(plain.rnn.rnn.weight_hh_l0, torch.eye(6, dtype=torch.float64))


def test_uniform_init_and_forget_bias():
    model = model_of(model="lstm", layers=2, hidden=5, emsize=4, init_range=0.05, forget_bias=2.0)
    for name, p in model.named_parameters():
        if name.startswith("rnn.rnn.bias_ih"):
            f = slice(5, 10)  # gates in torch's order: input, forget, cell, output
            assert ((p[f] - 2.0).abs() <= 0.05).all()
            assert (torch.cat([p[:5], p[10:]]).abs() <= 0.05).all()
        else:
            assert (p.abs() <= 0.05).all(), name
    assert model.rnn.rnn.bias_ih_l0.abs().max() > 1  # the forget bias is really there


@pytest.mark.parametrize("kw", [dict(model="lstm"), dict(model="gru", residual=True),
                                dict(model="nnlm", emsize=6, hidden=6),
                                dict(model="nnlm", emsize=4, hidden=9)])
def test_tying_shares_one_parameter(kw):
    model = model_of(tied=True, **kw)
    assert model.decoder.weight is model.embedding.weight
    n_untied = sum(p.numel() for p in model_of(tied=False, **kw).parameters())
    n_tied = sum(p.numel() for p in model.parameters())
    extra = kw["hidden"] * kw["emsize"] if kw.get("emsize", 6) != kw.get("hidden", 6) else 0
    assert n_tied == n_untied - V * kw.get("hidden", 6) + extra  # + the nnlm projection
    loss, _ = model.loss(torch.randint(V, (4, 2)), torch.randint(V, (4, 2)),
                         model.init_state(2, "cpu"))
    loss.backward()
    assert model.embedding.weight.grad is not None


def test_fused_module_unless_residual():
    plain = model_of(model="lstm", layers=3)
    assert isinstance(plain.rnn.rnn, nn.LSTM) and plain.rnn.rnn.num_layers == 3
    assert plain.rnn.stack is None
    res = model_of(model="lstm", layers=3, residual=True)
    assert res.rnn.rnn is None and len(res.rnn.stack) == 3
    assert all(isinstance(m, nn.LSTM) and m.num_layers == 1 for m in res.rnn.stack)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_residual_adds_each_layers_input(cell):
    model = model_of(model=cell, layers=2, residual=True).eval()
    x = torch.randint(V, (5, 2))
    state = model.init_state(2, "cpu")
    logits, new = model(x, state)
    h = model.embedding(x)
    finals = []
    for layer, rnn in enumerate(model.rnn.stack):
        s = (tuple(t[layer:layer + 1] for t in state) if cell == "lstm"
             else state[layer:layer + 1])
        out, s = rnn(h, s)
        h = out + h
        finals.append(s)
    torch.testing.assert_close(logits, model.decoder(h))
    expected_h = torch.cat([s[0] if cell == "lstm" else s for s in finals])
    torch.testing.assert_close(new[0] if cell == "lstm" else new, expected_h)


def test_config_errors_are_lmlab_errors():
    with pytest.raises(LmlabError, match="residual.*equal width"):
        build_model(config(model="lstm", residual=True, emsize=4, hidden=6))
    with pytest.raises(LmlabError, match="variant"):
        build_model(config(model="gru", variant="cifg"))
    with pytest.raises(LmlabError, match="variant"):
        build_model(config(model="nnlm", variant="cifg"))
    with pytest.raises(LmlabError, match="tied"):
        build_model(config(model="lstm", tied=True, emsize=4, hidden=6))
    with pytest.raises(LmlabError, match="vocab_size"):
        build_model(config(vocab_size=0))
    with pytest.raises(LmlabError, match="residual"):
        build_model(config(model="nnlm", residual=True))


def test_build_model_classes():
    assert isinstance(model_of(model="nnlm"), NNLM)
    for cell in ("rnn_tanh", "rnn_relu", "irnn", "lstm", "gru"):
        assert isinstance(model_of(model=cell), RecurrentLM)


@needs_cells
def test_variant_uses_variant_lstm_with_our_init_range():
    from lmlab.neural.cells import VariantLSTM

    model = model_of(model="lstm", variant="fgr", init_range=0.01, layers=2, hidden=5)
    assert isinstance(model.rnn.rnn, VariantLSTM) and model.rnn.rnn.num_layers == 2
    assert all(p.abs().max() <= 0.01 for p in model.parameters())
    h, c, a = model.init_state(3, "cpu")
    assert h.shape == c.shape == (2, 3, 5) and a.shape == (2, 3, 15)
    res = model_of(model="lstm", variant="cifg", residual=True, layers=2)
    assert all(isinstance(m, VariantLSTM) and m.num_layers == 1 for m in res.rnn.stack)


@needs_cells
@pytest.mark.parametrize("variant", ["fgr", "cifg"])
def test_gradcheck_variant_residual(variant):
    gradcheck_model(model_of(model="lstm", variant=variant, residual=True, layers=2, emsize=3,
                             hidden=3, init_range=0.7))


# -- learning ------------------------------------------------------------------------------


def train_on_cycle(model, steps: int = 150, lr: float = 0.02, T: int = 8
                   ) -> tuple[float, float]:
    """Adam on a repeating 8-word sequence, [T, 2] batches, state carried and detached across
    batches (as the trainer does); returns the first loss and the mean of the last five."""
    cycle = torch.tensor([3, 4, 5, 6, 7, 8, 9, 10])
    stream = cycle.repeat(40)
    inputs = torch.cat([torch.tensor([EOS_ID]), stream[:-1]])
    B = 2
    n = len(stream) // B
    xs, ys = inputs[:n * B].view(B, n).t(), stream[:n * B].view(B, n).t()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    state, losses, t = model.init_state(B, "cpu"), [], 0
    for _ in range(steps):
        if t + T > n:
            state, t = model.init_state(B, "cpu"), 0
        loss, state = model.loss(xs[t:t + T], ys[t:t + T], state)
        state = detach_state(state)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
        t += T
    return losses[0], sum(losses[-5:]) / 5


@pytest.mark.parametrize("kw", SPEC_PARAMS + [
    p for p in VARIANT_PARAMS if p.id in ("lstm-cifg", "lstm-fgr-residual", "lstm-variants")])
def test_learns_a_repeating_sequence(kw):
    model = model_of(dtype=torch.float32, **{**kw, "emsize": 16, "hidden": 16})
    first, last = train_on_cycle(model)
    assert first > 0.8 * math.log(V)
    assert last < 0.1 * first, (first, last)
