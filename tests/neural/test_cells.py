"""VariantLSTM: every Greff et al. variant against the transparent float64 reference loop, the NP
variant against torch.nn.LSTM, the gate-fixing variants against their definitions, and the API
(shapes, dropout, state carrying, errors); each on its three paths: the sequence-level Function
(eager default), the plain per-step loop over variant_step, and that loop through torch.compile
(``--compile``; on tiny shapes, one compile per variant)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import lmlab.neural.cells as cells
from lmlab.errors import LmlabError
from lmlab.neural.cells import VARIANTS, VariantLSTM
from lmlab.neural.compiling import compile_model, is_compiled
from tests.neural.lstm_reference import reference_lstm

T, B, IN, H, L = 6, 3, 5, 4, 2

# every variant on its default path, plus np through _LSTMLayer instead of torch's fused kernel
CASES = [pytest.param(v, True, id=v) for v in VARIANTS] + [pytest.param("np", False, id="np-own")]


def make(variant: str, dtype=torch.float64, seed: int = 0, layers: int = L, hidden: int = H,
         scale: float = 0.6, **kw) -> VariantLSTM:
    torch.manual_seed(seed)
    model = VariantLSTM(IN, hidden, layers, variant=variant, **kw).to(dtype)
    with torch.no_grad():  # larger than the default init so every term matters
        for p in model.parameters():
            p.uniform_(-scale, scale)
    return model


def inputs(variant: str, dtype=torch.float64, seed: int = 1, layers: int = L, hidden: int = H,
           steps: int = T):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, B, IN, generator=gen, dtype=torch.float64)
    state = [torch.randn(layers, B, hidden, generator=gen, dtype=torch.float64) * 0.5
             for _ in range(2)]
    if variant == "fgr":  # previous gate activations, in (0, 1)
        state.append(torch.rand(layers, B, 3 * hidden, generator=gen, dtype=torch.float64))
    return x.to(dtype).requires_grad_(), tuple(s.to(dtype).requires_grad_() for s in state)


def results(forward, x, state, params):
    """Outputs, final state and gradients of a fixed random projection of all of them w.r.t. the
    input, the initial state and the parameters."""
    out, new_state = forward()
    gen = torch.Generator().manual_seed(7)
    loss = 0
    for t in (out, *new_state):
        loss = loss + (t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
                       ).sum()
    grads = torch.autograd.grad(loss, [x, *state, *params])
    return [out, *new_state, *grads]


def assert_close_all(got, want, atol, rtol=0.0):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape, k
        torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=rtol, msg=f"item {k}")


def use_path(model: VariantLSTM, path: str) -> VariantLSTM:
    """``function``: the sequence-level autograd Function (default); ``steps``: the per-step loop
    over variant_step under autograd; ``compiled``: that loop through torch.compile (np with
    FUSED_NP: the whole forward compiled)."""
    if path == "steps":
        model.step_fn = model.eager_step
    elif path == "compiled":
        torch._dynamo.reset()  # a fresh cache per test: no recompile limit across variants
        compile_model(model)  # (compiles at the first call; a failure would turn it off)
        assert is_compiled(model)
    return model


PATHS = ["function", "steps"]


# --- the fast path against the transparent reference -------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant,fused_np", CASES)
def test_matches_reference_float64(variant, fused_np, path, monkeypatch):
    monkeypatch.setattr(cells, "FUSED_NP", fused_np)
    model = use_path(make(variant), path)
    x, state = inputs(variant)
    params = list(model.parameters())
    fast = results(lambda: model(x, state), x, state, params)
    ref = results(lambda: reference_lstm(x, state, model.gate_params(), variant), x, state,
                  params)
    assert_close_all(fast, ref, atol=1e-12)


@pytest.mark.parametrize("variant,fused_np", CASES)
def test_float32_fast_path_matches_float64_reference(variant, fused_np, monkeypatch):
    monkeypatch.setattr(cells, "FUSED_NP", fused_np)
    model = make(variant, dtype=torch.float32, hidden=16)
    x, state = inputs(variant, dtype=torch.float32, hidden=16)
    fast = results(lambda: model(x, state), x, state, list(model.parameters()))
    model64 = copy.deepcopy(model).double()
    x64, state64 = inputs(variant, hidden=16)  # the same numbers, in float64
    ref = results(lambda: reference_lstm(x64, state64, model64.gate_params(), variant), x64,
                  state64, list(model64.parameters()))
    assert_close_all(fast, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("used", ["out", "h", "c", "out[:-1]"])
@pytest.mark.parametrize("variant", ["vanilla", "fgr"])
def test_gradients_when_only_some_outputs_are_used(variant, used, dtype):
    """The layers take the gradients of unused outputs as None (not zero tensors): a loss on the
    output sequence alone, on the final h or c alone, or on all but the last step still gives
    the reference gradients."""
    model = make(variant, dtype=dtype, hidden=16)
    x, state = inputs(variant, dtype=dtype, hidden=16)

    def loss_of(out, new_state):
        chosen = {"out": out, "h": new_state[0], "c": new_state[1], "out[:-1]": out[:-1]}[used]
        return (chosen * torch.linspace(-1, 1, chosen.numel(), dtype=dtype).view_as(chosen)).sum()

    wrt = [x, *state, *model.parameters()]
    got = torch.autograd.grad(loss_of(*model(x, state)), wrt, allow_unused=True)
    model64 = copy.deepcopy(model).double()
    x64, state64 = inputs(variant, hidden=16)
    want = torch.autograd.grad(
        loss_of(*reference_lstm(x64, state64, model64.gate_params(), variant)),
        [x64, *state64, *model64.parameters()], allow_unused=True)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        a = torch.zeros_like(b) if a is None else a.double()
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=f"gradient {k}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant,fused_np", CASES)
def test_gradcheck(variant, fused_np, path, monkeypatch):
    monkeypatch.setattr(cells, "FUSED_NP", fused_np)
    model = use_path(make(variant, layers=2, hidden=3), path)
    x, state = inputs(variant, layers=2, hidden=3, steps=4)
    gradcheck(model, x, state)


def gradcheck(model: VariantLSTM, x, state) -> None:
    params = tuple(model.parameters())

    def f(x, *tensors):
        st, ps = tensors[:len(state)], tensors[len(state):]
        out, new_state = torch.func.functional_call(
            model, dict(zip([n for n, _ in model.named_parameters()], ps, strict=True)), (x, st))
        return (out, *new_state)

    assert torch.autograd.gradcheck(f, (x, *state, *params), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("variant,fused_np", CASES)
def test_compiled_matches_reference_and_gradcheck(variant, fused_np, monkeypatch):
    """The compiled path (``--compile``) on a tiny float64 shape, one compile per variant:
    outputs, states and every gradient against the reference loop, then gradcheck."""
    monkeypatch.setattr(cells, "FUSED_NP", fused_np)
    # gradcheck differentiates the same graph more than once, which donated buffers forbid
    import torch._functorch.config as functorch_config

    monkeypatch.setattr(functorch_config, "donated_buffer", False)
    model = use_path(make(variant, layers=2, hidden=3), "compiled")
    x, state = inputs(variant, layers=2, hidden=3, steps=4)
    params = list(model.parameters())
    fast = results(lambda: model(x, state), x, state, params)
    ref = results(lambda: reference_lstm(x, state, model.gate_params(), variant), x, state,
                  params)
    assert_close_all(fast, ref, atol=1e-12)
    gradcheck(model, x, state)
    assert is_compiled(model)  # still compiled: nothing fell back to eager


# --- NP is torch.nn.LSTM -----------------------------------------------------------------------


def copy_from_torch(lstm: nn.LSTM, model: VariantLSTM) -> None:
    """torch packs gates as (i, f, g, o) with two biases; VariantLSTM as (o, i, f, z), one bias."""
    Hs = lstm.hidden_size
    torch_rows = {"i": 0, "f": 1, "z": 2, "o": 3}
    order = torch.cat([torch.arange(torch_rows[g] * Hs, (torch_rows[g] + 1) * Hs)
                       for g in model.gates])
    with torch.no_grad():
        for k in range(lstm.num_layers):
            w_ih, w_hh, b, _, _ = model.layer_params(k)
            w_ih.copy_(getattr(lstm, f"weight_ih_l{k}")[order])
            w_hh.copy_(getattr(lstm, f"weight_hh_l{k}")[order])
            b.copy_((getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}"))[order])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fused_np", [True, False])
def test_np_reproduces_torch_lstm(fused_np, path, monkeypatch):
    monkeypatch.setattr(cells, "FUSED_NP", fused_np)
    torch.manual_seed(3)
    lstm = nn.LSTM(IN, 12, 3)
    model = use_path(VariantLSTM(IN, 12, 3, variant="np"), path)
    assert model.gates == ("o", "i", "f", "z") and not model.peepholes
    copy_from_torch(lstm, model)
    x = torch.randn(T, B, IN, requires_grad=True)
    state = (torch.randn(3, B, 12) * 0.5, torch.randn(3, B, 12) * 0.5)
    want, (wh, wc) = lstm(x, state)
    got, (gh, gc) = model(x, state)
    for a, b in ((got, want), (gh, wh), (gc, wc)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    (gx,) = torch.autograd.grad(got.sum() + gc.sum(), x)
    (wx,) = torch.autograd.grad(want.sum() + wc.sum(), x)
    torch.testing.assert_close(gx, wx, atol=1e-5, rtol=0)
    out_none, _ = model(x)  # state None means zeros, as in nn.LSTM
    torch.testing.assert_close(out_none, lstm(x)[0], atol=1e-5, rtol=0)


# --- the gate-fixing variants do what their names say ------------------------------------------


def one_step(model: VariantLSTM, x, h, c):
    """Gates and new cell of layer 0 for one step, computed here from gate_params()."""
    P = model.gate_params()[0]

    def pre(g):
        return x @ P[f"W_{g}"].t() + h @ P[f"R_{g}"].t() + P[f"b_{g}"]

    return P, pre


@pytest.mark.parametrize("variant,gate", [("nig", "i"), ("nfg", "f"), ("nog", "o")])
def test_removed_gate_is_one(variant, gate):
    """The variant equals the vanilla LSTM with the same weights whose `gate` is saturated at 1
    (its weights and peephole zero, its bias huge: σ(1e4) == 1.0 exactly)."""
    model = make(variant, layers=2)
    assert gate not in model.gates
    assert f"p_{gate}" not in model.gate_params()[0]
    vanilla = make("vanilla", layers=2)
    with torch.no_grad():
        for k in range(2):
            mine, theirs = model.gate_params()[k], vanilla.gate_params()[k]
            for name, value in theirs.items():
                if name.endswith(f"_{gate}"):
                    value.fill_(1e4 if name == f"b_{gate}" else 0.0)
                else:
                    value.copy_(mine[name])
    x, state = inputs(variant)
    got, (gh, gc) = model(x, state)
    want, (wh, wc) = vanilla(x, state)
    assert_close_all([got, gh, gc], [want, wh, wc], atol=1e-12)


def test_cifg_forget_is_one_minus_input():
    model = make("cifg", layers=1)
    assert "f" not in model.gates and model.peepholes == ("o", "i")
    x, (h, c) = inputs("cifg", layers=1, steps=1)
    out, (h1, c1) = model(x, (h, c))
    P, pre = one_step(model, x[0], h[0], c[0])
    i = torch.sigmoid(pre("i") + P["p_i"] * c[0])
    z = torch.tanh(pre("z"))
    f = 1 - i
    want_c = f * c[0] + i * z
    torch.testing.assert_close(c1[0], want_c, atol=1e-12, rtol=0)
    o = torch.sigmoid(pre("o") + P["p_o"] * want_c)
    torch.testing.assert_close(out[0], o * torch.tanh(want_c), atol=1e-12, rtol=0)


def test_vanilla_one_step_by_hand():
    """Peepholes: i and f see c_{t-1}, o sees c_t; tanh on block input and output."""
    model = make("vanilla", layers=1)
    x, (h, c) = inputs("vanilla", layers=1, steps=1)
    out, (h1, c1) = model(x, (h, c))
    P, pre = one_step(model, x[0], h[0], c[0])
    i = torch.sigmoid(pre("i") + P["p_i"] * c[0])
    f = torch.sigmoid(pre("f") + P["p_f"] * c[0])
    z = torch.tanh(pre("z"))
    c_new = f * c[0] + i * z
    o = torch.sigmoid(pre("o") + P["p_o"] * c_new)
    torch.testing.assert_close(c1[0], c_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(out[0], o * torch.tanh(c_new), atol=1e-12, rtol=0)
    torch.testing.assert_close(h1[0], out[0], atol=0, rtol=0)


def test_niaf_noaf_one_step_by_hand():
    x, (h, c) = inputs("niaf", layers=1, steps=1)
    for variant in ("niaf", "noaf"):
        model = make(variant, layers=1)
        out, (_, c1) = model(x, (h, c))
        P, pre = one_step(model, x[0], h[0], c[0])
        i = torch.sigmoid(pre("i") + P["p_i"] * c[0])
        f = torch.sigmoid(pre("f") + P["p_f"] * c[0])
        z = pre("z") if variant == "niaf" else torch.tanh(pre("z"))
        c_new = f * c[0] + i * z
        o = torch.sigmoid(pre("o") + P["p_o"] * c_new)
        h_new = o * c_new if variant == "noaf" else o * torch.tanh(c_new)
        torch.testing.assert_close(out[0], h_new, atol=1e-12, rtol=0)


def test_fgr_gate_recurrence_by_hand():
    model = make("fgr", layers=1)
    assert model.weight_gg_l0.shape == (3 * H, 3 * H)
    x, (h, c, a) = inputs("fgr", layers=1, steps=1)
    out, (_, c1, a1) = model(x, (h, c, a))
    P, pre = one_step(model, x[0], h[0], c[0])
    o_p, i_p, f_p = a[0].split(H, dim=1)

    def rec(g):
        return i_p @ P[f"R_{g}<-i"].t() + f_p @ P[f"R_{g}<-f"].t() + o_p @ P[f"R_{g}<-o"].t()

    i = torch.sigmoid(pre("i") + P["p_i"] * c[0] + rec("i"))
    f = torch.sigmoid(pre("f") + P["p_f"] * c[0] + rec("f"))
    c_new = f * c[0] + i * torch.tanh(pre("z"))
    o = torch.sigmoid(pre("o") + P["p_o"] * c_new + rec("o"))
    torch.testing.assert_close(out[0], o * torch.tanh(c_new), atol=1e-12, rtol=0)
    torch.testing.assert_close(a1[0], torch.cat([o, i, f], 1), atol=1e-12, rtol=0)


def test_parameter_shapes():
    for variant in VARIANTS:
        model = VariantLSTM(IN, H, 2, variant=variant)
        G = len(model.gates)
        assert G == (3 if variant in ("nig", "nfg", "nog", "cifg") else 4)
        for k, n_in in ((0, IN), (1, H)):
            w_ih, w_hh, b, p, w_gg = model.layer_params(k)
            assert w_ih.shape == (G * H, n_in) and w_hh.shape == (G * H, H)
            assert b.shape == (G * H,)
            assert (p is None) == (variant == "np")
            assert (w_gg is not None) == (variant == "fgr")


# --- initialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_forget_bias_shifts_forget_gate_bias(variant):
    torch.manual_seed(5)
    base = VariantLSTM(IN, H, 2, variant=variant)
    torch.manual_seed(5)
    shifted = VariantLSTM(IN, H, 2, variant=variant, forget_bias=1.0)
    for k in range(2):
        b0, b1 = base.layer_params(k)[2], shifted.layer_params(k)[2]
        want = torch.zeros_like(b0)
        if "f" in base.gates:
            want[base.gate_rows("f")] = 1.0
        elif variant == "cifg":  # f = 1 - σ(ī) = σ(-ī)
            want[base.gate_rows("i")] = -1.0
        torch.testing.assert_close(b1 - b0, want, atol=1e-6, rtol=0)
        for (name, p0), p1 in zip(base.named_parameters(), shifted.parameters(), strict=True):
            if not name.startswith("bias"):
                torch.testing.assert_close(p0, p1, atol=0, rtol=0)
    shifted.reset_parameters(init_range=0.05)  # a later re-initialisation keeps the shift
    if "f" in shifted.gates:
        b = shifted.bias_l0.detach()[shifted.gate_rows("f")]
        assert bool(((b > 0.94) & (b < 1.06)).all())
        others = torch.cat([shifted.bias_l0.detach()[shifted.gate_rows(g)] for g in shifted.gates
                            if g != "f"])
        assert float(others.abs().max()) <= 0.05


def test_default_init_range_like_torch():
    model = VariantLSTM(IN, 16, 1)
    bound = 1 / 16 ** 0.5
    for p in model.parameters():
        assert float(p.detach().abs().max()) <= bound


# --- API: shapes, dropout, state -----------------------------------------------------------------


def test_shapes_multilayer_dropout():
    model = VariantLSTM(IN, 7, 3, dropout=0.5)
    x = torch.randn(T, B, IN)
    out, (h, c) = model(x)
    assert out.shape == (T, B, 7) and h.shape == (3, B, 7) and c.shape == (3, B, 7)
    torch.testing.assert_close(h[-1], out[-1], atol=0, rtol=0)
    torch.manual_seed(0)
    a, _ = model(x)
    torch.manual_seed(0)
    b, _ = model(x)
    torch.manual_seed(1)
    d, _ = model(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)  # same seed, same dropout masks
    assert not torch.equal(a, d)  # dropout between layers is on in training mode
    model.eval()
    e1, _ = model(x)
    e2, _ = model(x)
    torch.testing.assert_close(e1, e2, atol=0, rtol=0)
    single = VariantLSTM(IN, 7, 1, dropout=0.5)  # no layer above: no dropout (as in nn.LSTM)
    s1, _ = single(x)
    s2, _ = single(x)
    torch.testing.assert_close(s1, s2, atol=0, rtol=0)


def test_dropout_matches_reference_layerwise():
    """With dropout, layer k+1 sees dropout(out_k): replay it with the same mask by seeding."""
    model = make("vanilla", layers=2, dropout=0.3)
    x, state = inputs("vanilla")
    torch.manual_seed(11)
    got, _ = model(x, state)
    P = model.gate_params()
    torch.manual_seed(11)
    out0, _ = reference_lstm(x, (state[0][:1], state[1][:1]), P[:1], "vanilla")
    mid = nn.functional.dropout(out0, 0.3, True)
    want, _ = reference_lstm(mid, (state[0][1:], state[1][1:]), P[1:], "vanilla")
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant,fused_np", CASES)
def test_two_chunks_equal_one_call(variant, fused_np, path, monkeypatch):
    monkeypatch.setattr(cells, "FUSED_NP", fused_np)
    model = use_path(make(variant, dtype=torch.float32, hidden=8), path)
    x, state = inputs(variant, dtype=torch.float32, hidden=8, steps=9)
    with torch.no_grad():
        whole, s_whole = model(x, state)
        first, s_mid = model(x[:4], state)
        second, s_end = model(x[4:], s_mid)
    torch.testing.assert_close(torch.cat([first, second]), whole, atol=1e-6, rtol=0)
    assert len(s_end) == len(state)
    for a, b in zip(s_end, s_whole, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_fgr_without_gate_state_restarts_gate_history():
    model = make("fgr")
    x, (h, c, _) = inputs("fgr")
    out, new_state = model(x, (h, c))
    assert len(new_state) == 2
    zeros = torch.zeros(L, B, 3 * H, dtype=torch.float64)
    want, (wh, wc, _) = reference_lstm(x, (h, c, zeros), model.gate_params(), "fgr")
    assert_close_all([out, *new_state], [want, wh, wc], atol=1e-12)
    out_none, _ = model(x)
    want_none, _ = reference_lstm(x, None, model.gate_params(), "fgr")
    torch.testing.assert_close(out_none, want_none, atol=1e-12, rtol=0)


def test_gradient_flows_through_carried_state():
    model = make("vanilla")
    x, state = inputs("vanilla")
    out1, s1 = model(x[:3], state)
    out2, _ = model(x[3:], s1)
    (g_chunks,) = torch.autograd.grad(out2.sum(), state[1])
    out, _ = model(x, state)
    (g_whole,) = torch.autograd.grad(out[3:].sum(), state[1])
    torch.testing.assert_close(g_chunks, g_whole, atol=1e-12, rtol=0)


def test_no_grad_and_eval():
    model = make("cifg", dtype=torch.float32)
    x = torch.randn(T, B, IN)
    with torch.no_grad():
        out, (h, c) = model(x)
    assert not out.requires_grad and out.shape == (T, B, H)


def test_invalid_variant_is_one_line_error():
    with pytest.raises(LmlabError) as info:
        VariantLSTM(IN, H, variant="peephole")
    message = str(info.value)
    assert "\n" not in message and "'peephole'" in message
    for v in VARIANTS:
        assert v in message


def test_bad_arguments():
    with pytest.raises(LmlabError):
        VariantLSTM(IN, H, num_layers=0)
    with pytest.raises(LmlabError):
        VariantLSTM(IN, H, dropout=1.0)
    model = VariantLSTM(IN, H)
    with pytest.raises(LmlabError):
        model(torch.randn(T, B, IN + 1))
    with pytest.raises(LmlabError):  # only fgr carries gate activations
        z = torch.zeros(1, B, H)
        model(torch.randn(T, B, IN), (z, z, torch.zeros(1, B, 3 * H)))


@pytest.mark.parametrize("variant", ["vanilla", "fgr", "np"])
def test_state_of_the_wrong_shape_or_dtype_is_one_line_error(variant):
    """A state of another batch size, layer count, width or dtype than the input is refused
    before anything runs, with a one-line error."""
    model = VariantLSTM(IN, H, 2, variant=variant)
    x = torch.randn(T, B, IN)
    good = torch.zeros(2, B, H)
    gates = (torch.zeros(2, B, 3 * H),) if variant == "fgr" else ()
    model(x, (good, good, *gates))  # fine
    bad_states = [(torch.zeros(2, B + 1, H), good), (good, torch.zeros(1, B, H)),
                  (good, torch.zeros(2, B, H + 1)), (good.double(), good)]
    if variant == "fgr":
        bad_states.append((good, good, torch.zeros(2, B, H)))
    for state in bad_states:
        state = state if len(state) == 3 else (*state, *gates)
        with pytest.raises(LmlabError, match="VariantLSTM state"):
            model(x, state)


def test_cudnn_compaction_warning_is_silenced_on_cuda_only():
    """np on CUDA passes fresh weight copies to cuDNN, which warns about compacting them at every
    call (tests/neural/test_cuda.py fails on any warning there); nothing else is silenced."""
    message = "RNN module weights are not part of single contiguous chunk of memory."
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with cells._no_compaction_warning(True):
            warnings.warn(message, UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
        with cells._no_compaction_warning(False):
            warnings.warn(message, UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else", message]
