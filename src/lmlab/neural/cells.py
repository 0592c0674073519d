r"""One LSTM, every variant of Greff et al. (2017) "LSTM: A Search Space Odyssey", as options.

:class:`VariantLSTM` is called like ``torch.nn.LSTM`` (``batch_first=False``): ``x`` is
``[T, B, input_size]``, the state ``(h, c)`` is ``([L, B, H], [L, B, H])`` or ``None`` (zeros), and
it returns ``(out [T, B, H], (h, c))``. Dropout is applied to the outputs of every layer but the
last, as in ``nn.LSTM``. The variant is an option of the one cell, not a copy of it.

Equations (one layer, one step; ``x_t`` is the layer's input, ``⊙`` elementwise, ``σ`` the
logistic sigmoid; bars are pre-activations). The **vanilla** LSTM, with peepholes::

    z̄_t = W_z x_t + R_z h_{t-1} + b_z                     z_t = tanh(z̄_t)     (block input)
    ī_t = W_i x_t + R_i h_{t-1} + p_i ⊙ c_{t-1} + b_i     i_t = σ(ī_t)        (input gate)
    f̄_t = W_f x_t + R_f h_{t-1} + p_f ⊙ c_{t-1} + b_f     f_t = σ(f̄_t)        (forget gate)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t                                           (cell)
    ō_t = W_o x_t + R_o h_{t-1} + p_o ⊙ c_t + b_o         o_t = σ(ō_t)        (output gate)
    h_t = o_t ⊙ tanh(c_t)                                                     (block output)

Each variant changes exactly the named part of the vanilla equations and keeps everything else:

* ``nig``  (no input gate):          ``i_t = 1``, so ``c_t = f_t ⊙ c_{t-1} + z_t``
  (no ``W_i, R_i, b_i, p_i``).
* ``nfg``  (no forget gate):         ``f_t = 1``, so ``c_t = c_{t-1} + i_t ⊙ z_t``
  (no ``W_f, R_f, b_f, p_f``).
* ``nog``  (no output gate):         ``o_t = 1``, so ``h_t = tanh(c_t)``
  (no ``W_o, R_o, b_o, p_o``).
* ``niaf`` (no input activation):    ``z_t = z̄_t`` (linear block input).
* ``noaf`` (no output activation):   ``h_t = o_t ⊙ c_t``.
* ``np``   (no peepholes):           ``p_i = p_f = p_o = 0`` (the parameters do not exist); this
  is exactly ``torch.nn.LSTM`` with ``b = b_ih + b_hh``.
* ``cifg`` (coupled input and forget gate): ``f_t = 1 - i_t``, so
  ``c_t = c_{t-1} + i_t ⊙ (z_t - c_{t-1})`` (no ``W_f, R_f, b_f, p_f``).
* ``fgr``  (full gate recurrence): every gate also sees all three gates' activations of the
  previous step through nine extra recurrent matrices ``R_{g←k}`` (``g, k ∈ {i, f, o}``)::

      ī_t += R_{i←i} i_{t-1} + R_{i←f} f_{t-1} + R_{i←o} o_{t-1}
      f̄_t += R_{f←i} i_{t-1} + R_{f←f} f_{t-1} + R_{f←o} o_{t-1}
      ō_t += R_{o←i} i_{t-1} + R_{o←f} f_{t-1} + R_{o←o} o_{t-1}

  with ``i_{-1} = f_{-1} = o_{-1} = 0`` at the start of a call unless the state carries them (see
  below).

Parameters of layer ``k`` (packed, gate order ``self.gates``: ``o, i, f, z`` minus absent gates):
``weight_ih_l{k}`` ``[G·H, in]`` (the ``W``), ``weight_hh_l{k}`` ``[G·H, H]`` (the ``R``),
``bias_l{k}`` ``[G·H]`` (one bias per gate, not torch's two), ``peephole_l{k}`` ``[P, H]`` (the
present ones of ``p_o, p_i, p_f``, in that order; absent for ``np``) and, for ``fgr``,
``weight_gg_l{k}`` ``[3H, 3H]`` (rows: ``ō, ī, f̄``; columns: ``o_{t-1}, i_{t-1}, f_{t-1}``).
:meth:`VariantLSTM.gate_params` unpacks them into the named matrices above.

``forget_bias`` is added to ``b_f`` at initialisation (Jozefowicz et al. 2015 use 1). For ``cifg``,
where ``f_t = 1 - σ(ī_t) = σ(-ī_t)``, it is subtracted from ``b_i`` instead; ``nfg`` has no forget
gate (``f_t = 1`` already) and ignores it.

FGR state: with ``state=(h, c)`` or ``None`` the previous gate activations start at zero on every
call, and ``(h, c)`` is returned. Pass ``state=(h, c, a)`` with ``a`` ``[L, B, 3H]`` (activations
``o, i, f`` of the last step, zeros at the start) to carry them too; then ``(h, c, a)`` comes back,
and two chunks give exactly one call's result. Other variants accept only ``(h, c)``.

How it runs (chosen by measurement, see ``benchmarks/lstm_cells.py`` and docs/performance.md):

* **Eager** (the default): each layer is one sequence-level ``torch.autograd.Function``
  (:class:`_LSTMLayer`) with a hand-written backward pass and no per-step autograd graph. The
  input projection of all time steps is one matrix product; each step is one recurrent product
  plus about ten torch elementwise ops (:mod:`lmlab.neural.cell_steps`); backwards, each step is
  its elementwise ops and one product, and the weight gradients are one product each over all
  steps at the end.
* **Compiled** (``lmlab train --compile``, :mod:`lmlab.neural.compiling`): the same input
  projection, then a per-step loop over :func:`variant_step`, the equations above written out for
  one step, run through ``torch.compile`` (``step_fn``), so each step's elementwise work is one
  generated kernel forwards and one backwards, differentiated by autograd step by step. On a
  2-core CPU this is slower than eager (per-call overhead and per-step weight gradients; measured
  in docs/performance.md); fusing the ten elementwise ops is meant for GPUs.

``np`` is exactly ``torch.nn.LSTM`` and by default runs on torch's own fused kernel (``FUSED_NP``:
oneDNN on the CPU, cuDNN on CUDA), compiled or not. The tests check every path against the same
model written as a plain per-step loop straight from the named matrices
(``tests/neural/lstm_reference.py``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lmlab.errors import LmlabError
from lmlab.neural import cell_steps as steps
from lmlab.neural.config import VARIANTS

_GATE_ORDER = ("o", "i", "f", "z")  # packed order: gates that see c_t first, then those fed by dc


def check_variant(variant: str) -> str:
    """Return ``variant`` if it is one of :data:`VARIANTS`, else raise a one-line LmlabError."""
    if variant not in VARIANTS:
        raise LmlabError(f"unknown LSTM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return variant


def variant_gates(variant: str) -> tuple[str, ...]:
    """Gates that exist (have weights) in ``variant``, in packed order."""
    absent = {"nig": "i", "nfg": "f", "nog": "o", "cifg": "f"}.get(check_variant(variant))
    return tuple(g for g in _GATE_ORDER if g != absent)


def variant_peepholes(variant: str) -> tuple[str, ...]:
    """Gates with a peephole weight in ``variant``, in packed order (``o, i, f``)."""
    if variant == "np":
        return ()
    return tuple(g for g in variant_gates(variant) if g != "z")


class _Spec:
    """Static description of one layer's computation (plain data, no tensors)."""

    def __init__(self, variant: str, hidden: int) -> None:
        self.H = H = hidden
        self.gates = variant_gates(variant)
        self.G = len(self.gates)
        self.has = {g: g in self.gates for g in _GATE_ORDER}
        self.peep = variant_peepholes(variant)
        self.fgr = variant == "fgr"
        self.cifg = variant == "cifg"
        self.z_tanh = variant != "niaf"
        self.h_tanh = variant != "noaf"
        col = {g: slice(k * H, (k + 1) * H) for k, g in enumerate(self.gates)}
        self.col = col
        sig = [g for g in ("i", "f") if self.has[g]]  # the sigmoid gates before c_t (contiguous)
        self.sig = slice(col[sig[0]].start, col[sig[-1]].stop)
        self.n_sig = len(sig)
        self.tail = slice(H if self.has["o"] else 0, self.G * H)  # gates fed by dc_t (i, f, z)
        self.n_tail = self.G - (1 if self.has["o"] else 0)
        # peephole rows: o first (if present), then the contiguous i/f block
        self.p_o = 0 if "o" in self.peep else None
        first = 1 if "o" in self.peep else 0
        self.p_sig = slice(first, first + self.n_sig) if self.peep else None


# np is exactly torch.nn.LSTM: by default it runs on torch's own fused kernel (torch.lstm: oneDNN's
# RNN primitive on CPU, cuDNN on CUDA) instead of _LSTMLayer; False runs it like the others.
FUSED_NP = True


class _LSTMLayer(torch.autograd.Function):
    """One LSTM layer over a whole sequence, with a hand-written backward through time.

    Inputs: ``x [T,B,in]``, ``h0, c0 [B,H]`` (all contiguous), ``a0 [B,3H]`` or None (FGR gate
    history), ``w_ih, w_hh, b``, ``p [P,H]`` or None, ``w_gg [3H,3H]`` or None, the layer's
    :class:`_Spec`. Outputs: ``out [T,B,H]``, ``hN, cN [B,H]``,
    ``aN [B,3H]`` (FGR; else an empty tensor).

    Speed notes: ``tanh(u)`` is evaluated as ``1 - 2 σ(-2u)`` (torch's CPU sigmoid is several
    times cheaper than its tanh and not multi-threaded for small tensors), with the block-input rows
    of the pre-activations scaled by -2 (exact), so one sigmoid covers the i, f and z gates. The
    per-step loops index precomputed lists of views, reuse buffers through ``out=``, and pass no
    Python float scalars to tensor ops (each costs a conversion).
    """

    @staticmethod
    def forward(ctx, x, h0, c0, a0, w_ih, w_hh, b, p, w_gg, spec: _Spec):
        T = x.shape[0]
        hs, A, C, S = steps.forward_ops(x, h0, c0, a0, w_ih, w_hh, b, p, w_gg, spec)
        ctx.spec = spec
        # gradients of unused outputs (mostly hN, cN: the carried state is detached) arrive as
        # None, not as zero tensors the backward would add and copy
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, a0, w_ih, w_hh, p, w_gg, hs, A, C, S)  # (h0 is hs[0])
        out = hs[1:]
        hN = hs[T].clone()
        cN = C[T].clone()
        aN = A[T - 1, :, : 3 * spec.H].clone() if spec.fgr else x.new_empty(0)
        if not spec.fgr:
            ctx.mark_non_differentiable(aN)
        return out, hN, cN, aN

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out, d_hN, d_cN, d_aN):
        spec = ctx.spec
        x, a0, w_ih, w_hh, p, w_gg, hs, A, C, S = ctx.saved_tensors
        T, B, _ = x.shape
        H, G = spec.H, spec.G
        needs = ctx.needs_input_grad
        d_out = torch.zeros_like(hs[1:]) if d_out is None else d_out.contiguous()
        dG, dh, dc, da, db, dp = steps.backward_ops(
            x, a0, w_hh, p, w_gg, A, C, S, d_out, d_hN, d_cN, d_aN, spec, needs[1])

        # --- parameter and input gradients: one product over all steps each ------------------
        dG2 = dG.view(T * B, G * H)
        dx = torch.mm(dG2, w_ih).view_as(x) if needs[0] else None
        dw_ih = dG2.t() @ x.view(T * B, -1) if needs[4] else None
        dw_hh = dG2.t() @ hs[:-1].reshape(T * B, H) if needs[5] else None  # h_{t-1} for all t
        dw_gg = None
        if spec.fgr and needs[8]:  # gate activations (o, i, f) of the previous step for all t
            a_first = a0.unsqueeze(0) if a0 is not None else x.new_zeros(1, B, 3 * H)
            a_prev = torch.cat([a_first, A[:-1, :, : 3 * H]]).view(T * B, 3 * H)
            dw_gg = dG2[:, : 3 * H].t() @ a_prev
        da0 = da if spec.fgr and a0 is not None and needs[3] else None
        return (dx, dh, dc if needs[2] else None, da0, dw_ih, dw_hh, db if needs[6] else None,
                dp if needs[7] else None, dw_gg, None)


class VariantLSTM(nn.Module):
    """A multi-layer LSTM whose Greff et al. variant is an option (see the module docstring)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 variant: str = "vanilla", dropout: float = 0.0, forget_bias: float = 0.0) -> None:
        super().__init__()
        self.variant = check_variant(variant)
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise LmlabError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise LmlabError(f"LSTM dropout must be in [0, 1), got {dropout}")
        self.input_size = input_size
        self.hidden_size = H = hidden_size
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.forget_bias = float(forget_bias)
        self._spec = _Spec(variant, H)
        self.gates = self._spec.gates
        self.peepholes = self._spec.peep
        G = len(self.gates)
        # None: each layer is one _LSTMLayer; else a callable like variant_step without its spec
        # (eager_step, or its torch.compile from lmlab.neural.compiling) run step by step
        self.step_fn: Callable | None = None
        for k in range(num_layers):
            n_in = input_size if k == 0 else H
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(G * H, n_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(G * H, H)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(G * H)))
            if self.peepholes:
                self.register_parameter(f"peephole_l{k}",
                                        nn.Parameter(torch.empty(len(self.peepholes), H)))
            if self._spec.fgr:
                self.register_parameter(f"weight_gg_l{k}", nn.Parameter(torch.empty(3 * H, 3 * H)))
        self.reset_parameters()

    def eager_step(self, *args) -> tuple[Tensor, Tensor, Tensor | None]:
        """:func:`variant_step` of this cell's variant (what ``step_fn`` compiles)."""
        return variant_step(self._spec, *args)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"variant={self.variant!r}, dropout={self.dropout}, "
                f"forget_bias={self.forget_bias}")

    def gate_rows(self, gate: str) -> slice:
        """Rows of ``weight_ih_l*``, ``weight_hh_l*`` and ``bias_l*`` that belong to ``gate``
        (one of ``self.gates``: ``"o"``, ``"i"``, ``"f"``, ``"z"``)."""
        return self._spec.col[gate]

    def reset_parameters(self, init_range: float | None = None) -> None:
        """Uniform(-r, r) for every parameter (r = 1/sqrt(H) like nn.LSTM unless given), then add
        ``forget_bias`` to the forget-gate bias (cifg: subtract it from the input-gate bias)."""
        r = 1.0 / math.sqrt(self.hidden_size) if init_range is None else init_range
        with torch.no_grad():
            for param in self.parameters():
                param.uniform_(-r, r)
            if self.forget_bias:
                for k in range(self.num_layers):
                    bias = getattr(self, f"bias_l{k}")
                    if "f" in self.gates:
                        bias[self.gate_rows("f")] += self.forget_bias
                    elif self.variant == "cifg":
                        bias[self.gate_rows("i")] -= self.forget_bias

    def layer_params(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(weight_ih, weight_hh, bias, peephole or None, weight_gg or None)`` of layer ``k``."""
        params = self._parameters  # (plain dict lookups: nn.Module's __getattr__ is Python code)
        return (params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"], params[f"bias_l{k}"],
                params.get(f"peephole_l{k}"), params.get(f"weight_gg_l{k}"))

    def gate_params(self) -> list[dict[str, Tensor]]:
        """Per layer, the named matrices of the equations, as views of the packed parameters
        (so gradients flow back): ``W_g, R_g, b_g`` for each present gate ``g`` in ``z, i, f, o``,
        ``p_g`` for each peephole, and for fgr ``R_{g<-k}`` for ``g, k`` in ``i, f, o``."""
        layers = []
        spec = self._spec
        for k in range(self.num_layers):
            w_ih, w_hh, b, p, w_gg = self.layer_params(k)
            d = {}
            for g in spec.gates:
                rows = spec.col[g]
                d[f"W_{g}"], d[f"R_{g}"], d[f"b_{g}"] = w_ih[rows], w_hh[rows], b[rows]
            for n, g in enumerate(spec.peep):
                d[f"p_{g}"] = p[n]
            if spec.fgr:
                H = self.hidden_size
                for a, ga in enumerate(("o", "i", "f")):
                    for m, gm in enumerate(("o", "i", "f")):
                        d[f"R_{ga}<-{gm}"] = w_gg[a * H:(a + 1) * H, m * H:(m + 1) * H]
            layers.append(d)
        return layers

    def forward(self, x: Tensor, state: tuple[Tensor, ...] | None = None
                ) -> tuple[Tensor, tuple[Tensor, ...]]:
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise LmlabError(f"VariantLSTM expects input [T, B, {self.input_size}], got "
                             f"{list(x.shape)}")
        L, H, B = self.num_layers, self.hidden_size, x.size(1)
        carry_gates = state is not None and len(state) == 3
        if carry_gates and not self._spec.fgr:
            raise LmlabError(f"only the fgr variant carries gate activations; give (h, c) to "
                             f"{self.variant!r}")
        if state is None:
            h0 = c0 = x.new_zeros(L, B, H)
        else:
            self._check_state(x, state)
            h0, c0 = state[0], state[1]
        a0 = state[2] if carry_gates else None
        if self.variant == "np" and FUSED_NP:
            return self._torch_lstm(x, h0, c0)
        h0, c0 = h0.contiguous(), c0.contiguous()
        if self._spec.fgr and a0 is None and self.step_fn is not None:
            a0 = x.new_zeros(L, B, 3 * H)  # (one compiled graph: never None)
        hs, cs, as_ = [], [], []
        inp = x
        for k in range(L):
            w_ih, w_hh, b, p, w_gg = self.layer_params(k)
            if k > 0 and self.dropout and self.training:
                inp = nn.functional.dropout(inp, self.dropout, True)
            a0k = a0[k] if a0 is not None else None
            if self.step_fn is not None:
                inp, hN, cN, aN = self._layer_steps(inp, h0[k], c0[k], a0k, w_ih, w_hh, b, p,
                                                    w_gg)
            else:
                inp, hN, cN, aN = _LSTMLayer.apply(inp.contiguous(), h0[k], c0[k], a0k, w_ih,
                                                   w_hh, b, p, w_gg, self._spec)
            hs.append(hN)
            cs.append(cN)
            as_.append(aN)
        new_state = (torch.stack(hs), torch.stack(cs))
        if carry_gates:
            new_state = new_state + (torch.stack(as_),)
        return inp, new_state

    def _layer_steps(self, x, h, c, a, w_ih, w_hh, b, p, w_gg):
        """One layer as a loop over :attr:`step_fn`, differentiated by autograd step by step:
        ``(out, hN, cN, aN)`` like :class:`_LSTMLayer`."""
        T, B, _ = x.shape
        xp = torch.addmm(b, x.reshape(T * B, -1), w_ih.t()).view(T, B, -1)
        step = self.step_fn  # (a compile failure resets step_fn; this call goes on with it)
        outs = []
        for xp_t in xp.unbind(0):
            h, c, a = step(xp_t, h, c, a, w_hh, p, w_gg)
            outs.append(h)
        return torch.stack(outs), h, c, a

    def _check_state(self, x: Tensor, state: tuple[Tensor, ...]) -> None:
        """A one-line LmlabError unless every state tensor has the shape ``[L, B, H]`` (fgr's gate
        activations ``[L, B, 3H]``) and the input's dtype and device."""
        L, B, H = self.num_layers, x.size(1), self.hidden_size
        for name, t, width in zip(("h", "c", "gate activations"), state, (H, H, 3 * H),
                                  strict=False):  # (h, c) or (h, c, gates)
            if tuple(t.shape) != (L, B, width) or t.dtype != x.dtype or t.device != x.device:
                raise LmlabError(
                    f"VariantLSTM state {name} must be [{L}, {B}, {width}] {x.dtype} on "
                    f"{x.device} like the input; got {list(t.shape)} {t.dtype} on {t.device}")

    def _torch_lstm(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """np through torch's own fused LSTM kernel, the weights reordered to its (i, f, g, o).

        Packed (o, i, f, z) rolled up by one block is (i, f, z, o): one copy each way (indexing
        the four blocks and concatenating them cost a full-size zero tensor per block and weight
        in the backward; the roll made a 2x650 model's training step 1.6% faster)."""
        H = self.hidden_size
        flat = []
        for k in range(self.num_layers):
            w_ih, w_hh, b, _, _ = self.layer_params(k)
            flat += [torch.roll(w, -H, 0) for w in (w_ih, w_hh, b)]
            flat.append(b.new_zeros(b.shape))  # torch's second bias
        with _no_compaction_warning(x.is_cuda):
            out, h, c = torch.lstm(x, (h0, c0), flat, True, self.num_layers, self.dropout,
                                   self.training, False, False)
        return out, (h, c)


def variant_step(spec: _Spec, xp: Tensor, h: Tensor, c: Tensor, a: Tensor | None, w_hh: Tensor,
                 p: Tensor | None, w_gg: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """One step of one layer, the module docstring's equations as written: ``xp [B, G·H]`` is the
    step's ``W x_t + b`` (packed gates), ``h, c [B, H]`` the previous state and ``a [B, 3H]`` fgr's
    previous gate activations (``o, i, f``; None for the other variants). Returns
    ``(h_t, c_t, a_t)``, ``a_t`` None but for fgr."""
    pre = dict(zip(spec.gates, torch.addmm(xp, h, w_hh.t()).split(spec.H, 1), strict=True))
    if spec.fgr:  # + R_{g<-i} i_{t-1} + R_{g<-f} f_{t-1} + R_{g<-o} o_{t-1}
        rec = (a @ w_gg.t()).split(spec.H, 1)
        for g, r in zip(("o", "i", "f"), rec, strict=True):
            pre[g] = pre[g] + r
    peep = dict(zip(spec.peep, p.unbind(0), strict=True)) if spec.peep else {}

    def gate(g: str, cell: Tensor) -> Tensor | None:  # σ(ḡ + p_g ⊙ cell); None: absent (1)
        if g not in pre:
            return None
        return torch.sigmoid(pre[g] + peep[g] * cell if g in peep else pre[g])

    z = torch.tanh(pre["z"]) if spec.z_tanh else pre["z"]
    i = gate("i", c)
    f = 1 - i if spec.cifg else gate("f", c)
    c_new = (c if f is None else f * c) + (z if i is None else i * z)
    o = gate("o", c_new)
    act = torch.tanh(c_new) if spec.h_tanh else c_new
    h_new = act if o is None else o * act
    return h_new, c_new, (torch.cat([o, i, f], 1) if spec.fgr else None)


@contextlib.contextmanager
def _no_compaction_warning(cuda: bool):
    """On CUDA, cuDNN copies weights that are not one flat buffer into one and warns, at every
    call, that this costs memory. np's weights are fresh copies made for the call alone, so that
    copy is one more of the same size, not a forgotten ``flatten_parameters()``: the warning would
    only puzzle the user. The CPU path warns nothing and gets no filter (``catch_warnings`` swaps
    process-wide state)."""
    if not cuda:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "RNN module weights are not part of single")
        yield
