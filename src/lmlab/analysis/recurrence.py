"""A recurrent LM re-run as an explicit loop over layers and time, in float64, from copies of its
weights: the object that :mod:`lmlab.analysis.gradients` differentiates.

:class:`Stepwise` copies the weights of a :class:`~lmlab.neural.models.RecurrentLM` (a fused
``nn.RNN``/``nn.LSTM``/``nn.GRU``, or the single-layer modules of a residual stack) and
:meth:`Stepwise.run` computes the same outputs with :func:`cell_step`, torch's own equations,
keeping every state in a :class:`Trace` (optionally in the autograd graph, so that the gradient
with respect to any ``h_k`` or ``c_k`` can be asked for). The model itself is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lmlab.errors import LmlabError

CELLS = ("rnn_tanh", "rnn_relu", "irnn", "lstm", "gru")


@dataclass
class LayerWeights:
    """One recurrent layer in torch's layout (gates stacked: LSTM ``i, f, g, o``; GRU
    ``r, z, n``)."""

    kind: str  # "tanh", "relu", "lstm", "gru"
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor
    b_hh: Tensor

    @property
    def hidden(self) -> int:
        return self.w_hh.shape[1]

    @property
    def width(self) -> int:
        """Width of the recurrent state: ``h``, or ``(h, c)`` concatenated for LSTM."""
        return 2 * self.hidden if self.kind == "lstm" else self.hidden

    @property
    def gates(self) -> int:
        return self.w_hh.shape[0] // self.hidden


def cell_step(kind: str, w: LayerWeights, x: Tensor, h: Tensor, c: Tensor | None
              ) -> tuple[Tensor, Tensor | None, Tensor]:
    """One step of one layer, exactly torch's equations: ``(h_t, c_t or None, pre-activation)``.
    Works batched (``x`` [B, D], ``h`` [B, H]) and unbatched (``[D]``, ``[H]``)."""
    if kind in ("tanh", "relu"):
        a = x @ w.w_ih.T + w.b_ih + h @ w.w_hh.T + w.b_hh
        return (torch.tanh(a) if kind == "tanh" else torch.relu(a)), None, a
    if kind == "lstm":
        g = x @ w.w_ih.T + w.b_ih + h @ w.w_hh.T + w.b_hh
        i, f, z, o = g.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new, g
    if kind == "gru":
        gi = x @ w.w_ih.T + w.b_ih
        gh = h @ w.w_hh.T + w.b_hh
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, None, gi + gh
    raise ValueError(f"unknown cell kind {kind!r}")


@dataclass
class Trace:
    """What a step-by-step run keeps: per layer, per step (lists of [B, ...] tensors)."""

    top: list[Tensor]  # top[t]: the output of the last layer at step t, [B, H]
    inputs: list[list[Tensor]]  # inputs[l][t]: the input of layer l at step t
    h: list[list[Tensor]]  # h[l][t]: recurrent hidden state after step t
    c: list[list[Tensor]] | None  # LSTM cell states
    pre: list[list[Tensor]]  # pre-activations (RNN: a_t; LSTM/GRU: gate pre-activations)
    dec_w: Tensor
    dec_b: Tensor

    def logits_at(self, t: int) -> Tensor:
        """[B, V] next-word logits at step ``t`` (decoded on demand: [T, B, V] can be large)."""
        return self.top[t] @ self.dec_w.T + self.dec_b

    @property
    def logits(self) -> Tensor:
        """[T, B, V], all steps."""
        return torch.stack(self.top) @ self.dec_w.T + self.dec_b

    def losses(self, targets: Tensor, chunk: int = 32) -> Tensor:
        """[T, B] cross-entropy of every target, without gradient, decoded ``chunk`` steps at a
        time."""
        with torch.no_grad():
            return torch.cat([token_losses(torch.stack(self.top[s:s + chunk]).detach()
                                           @ self.dec_w.T + self.dec_b, targets[s:s + chunk])
                              for s in range(0, len(self.top), chunk)])


@dataclass
class Stepwise:
    """A RecurrentLM's forward pass as an explicit loop over layers and time (float64 copies)."""

    cell: str
    layers: list[LayerWeights]
    residual: bool
    embedding: Tensor  # [V, E]
    dec_w: Tensor  # [V, H]
    dec_b: Tensor  # [V]
    rescaled: list[dict] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.layers[0].kind

    @classmethod
    def from_model(cls, model: nn.Module, dtype: torch.dtype = torch.float64) -> Stepwise:
        """Copy the weights of ``model`` (a RecurrentLM over a fused or residual recurrence);
        the model itself is not touched."""
        from lmlab.neural.models import RecurrentLM

        if not isinstance(model, RecurrentLM):
            kind = getattr(getattr(model, "config", None), "model", type(model).__name__)
            extra = (" (bidirectional models are not supported)"
                     if getattr(getattr(model, "config", None), "bidirectional", False) else "")
            raise LmlabError(f"gradient analysis needs a recurrent LM ({', '.join(CELLS)}), "
                             f"not {kind}{extra}")
        c = model.config
        if c.model not in CELLS:
            raise LmlabError(f"gradient analysis supports {', '.join(CELLS)}, not {c.model}")
        if c.variant is not None:
            raise LmlabError(f"gradient analysis supports the fused torch LSTM only, not the "
                             f"{c.variant!r} variant")
        rec = model.rnn
        modules = list(rec.stack) if rec.residual else [rec.rnn]
        kind = {"rnn_tanh": "tanh", "rnn_relu": "relu", "irnn": "relu", "lstm": "lstm",
                "gru": "gru"}[c.model]
        layers = []
        with torch.no_grad():
            for m in modules:
                if not isinstance(m, nn.RNN | nn.LSTM | nn.GRU) or m.bidirectional \
                        or m.batch_first or getattr(m, "proj_size", 0):
                    raise LmlabError(f"gradient analysis cannot read a {type(m).__name__} "
                                     "recurrence")
                for k in range(m.num_layers):
                    w_ih = getattr(m, f"weight_ih_l{k}").detach().to("cpu", dtype, copy=True)
                    w_hh = getattr(m, f"weight_hh_l{k}").detach().to("cpu", dtype, copy=True)
                    if m.bias:
                        b_ih = getattr(m, f"bias_ih_l{k}").detach().to("cpu", dtype, copy=True)
                        b_hh = getattr(m, f"bias_hh_l{k}").detach().to("cpu", dtype, copy=True)
                    else:
                        b_ih = w_ih.new_zeros(w_ih.shape[0])
                        b_hh = w_hh.new_zeros(w_hh.shape[0])
                    layers.append(LayerWeights(kind, w_ih, w_hh, b_ih, b_hh))
            emb = model.embedding.weight.detach().to("cpu", dtype, copy=True)
            dec_w = model.decoder.weight.detach().to("cpu", dtype, copy=True)
            dec_b = (model.decoder.bias.detach().to("cpu", dtype, copy=True)
                     if model.decoder.bias is not None else dec_w.new_zeros(dec_w.shape[0]))
        return cls(c.model, layers, bool(rec.residual), emb, dec_w, dec_b)

    def with_spectral_radius(self, radius: float) -> Stepwise:
        """A copy whose recurrent matrices have spectral radius ``radius`` (each gate block of
        LSTM/GRU separately); the original copy is unchanged."""
        if not (isinstance(radius, int | float) and math.isfinite(radius) and radius > 0):
            raise LmlabError(f"--spectral-radius must be a positive number, got {radius!r}")
        layers, notes = [], []
        for n, w in enumerate(self.layers):
            H = w.hidden
            blocks = []
            for g in range(w.gates):
                block = w.w_hh[g * H:(g + 1) * H]
                rho = float(torch.linalg.eigvals(block).abs().max())
                if not rho > 0:
                    raise LmlabError(f"layer {n}: W_hh has spectral radius 0; it cannot be "
                                     "rescaled")
                blocks.append(block * (radius / rho))
                notes.append({"layer": n, "gate": g, "from": rho, "to": float(radius)})
            layers.append(LayerWeights(w.kind, w.w_ih, torch.cat(blocks), w.b_ih, w.b_hh))
        return Stepwise(self.cell, layers, self.residual, self.embedding, self.dec_w, self.dec_b,
                        notes)

    def run(self, inputs: Tensor, track: bool = False,
            perturb: dict[tuple[int, int, str], Tensor] | None = None) -> Trace:
        """Run ``inputs`` ([T, B] word ids) from a zero state. ``track``: build the autograd graph
        (the embedded inputs are made a leaf that requires grad, so every ``h_k`` is a node whose
        gradient ``torch.autograd.grad`` can return). ``perturb[(layer, t, "h" or "c")]`` is added
        to that state right after it is computed (finite-difference tests)."""
        perturb = perturb or {}
        x = self.embedding[inputs]  # [T, B, E]
        if track:
            x = x.detach().requires_grad_(True)
        T, B = inputs.shape
        layer_in = list(x.unbind(0))
        all_in, all_h, all_c, all_pre = [], [], [], []
        lstm = self.kind == "lstm"
        for n, w in enumerate(self.layers):
            h = x.new_zeros(B, w.hidden)
            c = x.new_zeros(B, w.hidden) if lstm else None
            hs, cs, pres = [], [], []
            for t in range(T):
                h, c, a = cell_step(w.kind, w, layer_in[t], h, c)
                if lstm and track:
                    # c_k as carried to the next step: a node of its own, so ∂L/∂c_k excludes
                    # the same-step path into h_k = o_k tanh(c_k) (the state is (h_k, c_k)).
                    c = c.clone()
                if (n, t, "h") in perturb:
                    h = h + perturb[(n, t, "h")]
                if lstm and (n, t, "c") in perturb:
                    c = c + perturb[(n, t, "c")]
                hs.append(h)
                cs.append(c)
                pres.append(a)
            all_in.append(layer_in)
            all_h.append(hs)
            all_c.append(cs)
            all_pre.append(pres)
            layer_in = [hh + xx for hh, xx in zip(hs, layer_in, strict=True)] if self.residual \
                else hs
        return Trace(layer_in, all_in, all_h, all_c if lstm else None, all_pre, self.dec_w,
                     self.dec_b)


def token_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """[T, B] cross-entropy (nats) of each target."""
    return -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
