"""The LSTM variants of :mod:`lmlab.neural.cells` as a plain per-step loop, straight from the
named matrices of :meth:`~lmlab.neural.cells.VariantLSTM.gate_params`: the reference every
path of the cell is tested against (slow; any dtype and device)."""

from __future__ import annotations

import torch
from torch import Tensor

from lmlab.neural import cells


def reference_lstm(x: Tensor, state: tuple[Tensor, ...] | None, params: list[dict[str, Tensor]],
                   variant: str) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The variant's equations as a plain per-step loop (tests only; slow, any dtype).

    ``params`` is one dict per layer as :meth:`VariantLSTM.gate_params` returns (missing gates
    and peepholes simply absent). Same state convention as :meth:`VariantLSTM.forward`.
    """
    cells.check_variant(variant)
    T, B, _ = x.shape
    H = params[0]["R_z"].shape[1]
    zeros = x.new_zeros(B, H)
    carry_gates = state is not None and len(state) == 3
    hs, cs, gates_last = [], [], []
    layer_in = list(x.unbind(0))
    for k, P in enumerate(params):
        h = state[0][k] if state is not None else zeros
        c = state[1][k] if state is not None else zeros
        if carry_gates:
            o, i, f = state[2][k].split(H, dim=1)
        else:
            o = i = f = zeros  # FGR: gate activations before the first step
        outs = []
        for t in range(T):
            xt = layer_in[t]
            z = _ref_pre(P, "z", xt, h)
            if variant != "niaf":
                z = torch.tanh(z)
            prev = (i, f, o)
            i = torch.ones_like(z) if variant == "nig" else \
                _ref_gate(P, "i", variant, xt, h, c, prev)
            if variant in ("nfg", "cifg"):
                f = torch.ones_like(z) if variant == "nfg" else 1 - i
            else:
                f = _ref_gate(P, "f", variant, xt, h, c, prev)
            c = f * c + i * z
            o = torch.ones_like(z) if variant == "nog" else \
                _ref_gate(P, "o", variant, xt, h, c, prev)
            if variant == "noaf":
                h = o * c
            else:
                h = o * torch.tanh(c)
            outs.append(h)
        hs.append(h)
        cs.append(c)
        gates_last.append(torch.cat([o, i, f], dim=1))
        layer_in = outs
    new_state = (torch.stack(hs), torch.stack(cs))
    if carry_gates:
        new_state = new_state + (torch.stack(gates_last),)
    return torch.stack(layer_in), new_state


def _ref_pre(P: dict[str, Tensor], g: str, x: Tensor, h: Tensor) -> Tensor:
    """W_g x_t + R_g h_{t-1} + b_g."""
    return x @ P[f"W_{g}"].t() + h @ P[f"R_{g}"].t() + P[f"b_{g}"]


def _ref_gate(P: dict[str, Tensor], g: str, variant: str, x: Tensor, h: Tensor, cell: Tensor,
              prev: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """σ(W_g x_t + R_g h_{t-1} + b_g + p_g ⊙ cell (no peepholes for np) + the gate recurrence
    from the previous (i, f, o) for fgr)."""
    bar = _ref_pre(P, g, x, h)
    if variant != "np":
        bar = bar + P[f"p_{g}"] * cell
    if variant == "fgr":
        bar = bar + _ref_gate_rec(P, g, *prev)
    return torch.sigmoid(bar)


def _ref_gate_rec(P: dict[str, Tensor], g: str, i: Tensor, f: Tensor, o: Tensor) -> Tensor:
    """FGR: R_{g<-i} i_{t-1} + R_{g<-f} f_{t-1} + R_{g<-o} o_{t-1}."""
    return i @ P[f"R_{g}<-i"].t() + f @ P[f"R_{g}<-f"].t() + o @ P[f"R_{g}<-o"].t()
