"""The step loops of one LSTM layer (:class:`lmlab.neural.cells._LSTMLayer`) and the matrix
products they use.

Two implementations of the same steps: ``forward_ops``/``backward_ops`` with torch elementwise ops
(any dtype and device), and ``forward_kernel``/``backward_kernel``, where each step's elementwise
work is one call of the compiled kernel (:mod:`lmlab.neural.kernel`; float32 on the CPU), or, with
``loop``, the whole time loop with its recurrent products is one call.
Both save the same tensors for the backward pass: ``A [T, B, G*H]`` the gate activations of every
step (packed order ``o, i, f, z``), ``C [T+1, B, H]`` the cells (``C[0] = c0``), ``S [T, B, H]``
``σ(-2 c_t)`` (so ``tanh(c_t) = 1 - 2 S``; None for noaf) and ``hs [T+1, B, H]`` the outputs
(``hs[0] = h0``, ``hs[t+1] = h_t``, so ``hs[:-1]`` is every ``h_{t-1}`` without a copy). The
backward loops return ``dG [T, B, G*H]``, the gradients of the pre-activations of every step, from
which the layer computes its weight gradients, and the bias and peephole gradients.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from lmlab.neural import kernel

# Matrix products. torch's fused CPU nn.LSTM runs on oneDNN; torch.mm/addmm call MKL, which on
# some CPUs (AMD EPYC, where this was measured) is much slower than oneDNN for these shapes once H
# is a few hundred, and a little faster below (1 thread: a step's [20,650]x[650,2600] product
# takes 1.1-1.4 ms in MKL, 0.85-0.9 ms in oneDNN; at H=200 MKL is ~10% faster). The oneDNN
# linear ops used are torch's own (private; inductor uses them); when missing or failing a
# self-check, or for anything but float32 on CPU, the layer uses torch.addmm (which of the two
# a layer uses is decided by lmlab.neural.cells._onednn_modes).

_dnn_ops: tuple | None | bool = False  # False: not probed yet


def onednn_ops() -> tuple | None:
    """``(linear, linear_add, reorder)`` if torch's oneDNN linear ops work here, else None."""
    global _dnn_ops
    if _dnn_ops is False:
        _dnn_ops = None
        try:
            if torch.backends.mkldnn.is_available():
                ops = torch.ops.mkldnn
                lin, lin_add = ops._linear_pointwise.default, ops._linear_pointwise.binary
                reorder = ops._reorder_linear_weight.default
                gen = torch.Generator().manual_seed(0)
                x, w = torch.rand(3, 5, generator=gen), torch.rand(4, 5, generator=gen)
                b, other = torch.rand(4, generator=gen), torch.rand(3, 4, generator=gen)
                ok = (torch.allclose(lin(x, w, b, "none", [], ""), torch.addmm(b, x, w.t()),
                                     atol=1e-5)
                      and torch.allclose(lin(x.t(), other.t(), None, "none", [], ""),
                                         x.t() @ other, atol=1e-5)
                      and torch.allclose(lin_add(x, other, reorder(w, 3), None, "add"),
                                         torch.addmm(other, x, w.t()), atol=1e-5))
                if ok:
                    _dnn_ops = (lin, lin_add, reorder)
        except (AttributeError, RuntimeError):
            _dnn_ops = None
    return _dnn_ops


def mm(a: Tensor, b: Tensor, dnn: bool) -> Tensor:
    """``a @ b`` (2-D)."""
    if dnn:
        return _dnn_ops[0](a, b.t(), None, "none", [], "")
    return torch.mm(a, b)


def weight_grads(dG: Tensor, inputs: list[Tensor], dnn: bool) -> list[Tensor]:
    """``dG[:, :n].T @ inp`` for each ``inp`` ``[N, n_in]`` of ``inputs`` (``n`` its
    matching number of pre-activation columns): the weight gradients over all steps, contiguous.
    oneDNN's linear op wants its first operand contiguous and takes a transposed second one, so
    ``dG.T`` is made contiguous once (by the kernel's tiled transpose where built) and shared (a
    transposed result would cost a copy when autograd stores it as ``.grad``); torch.mm (MKL) takes
    transposes as they are."""
    if dnn:
        dGT = kernel.transposed(dG)
        return [_dnn_ops[0](dGT[:n], inp.t(), None, "none", [], "") for n, inp in inputs]
    return [torch.mm(dG[:, :n].t(), inp) for n, inp in inputs]


def projections(x2: Tensor, w_ih: Tensor, b: Tensor, w_hh: Tensor, B: int, step_dnn: bool,
                in_dnn: bool) -> tuple[Tensor, Tensor]:
    """The forward pass's products: ``x2 W_ih^T + b`` for all steps at once ``[T*B, G*H]``, and
    ``W_hh`` made ready for the per-step products (pre-packed for oneDNN, else transposed)."""
    if in_dnn:
        A = _dnn_ops[0](x2, w_ih, b, "none", [], "")
    else:
        A = torch.addmm(b, x2, w_ih.t())
    return A, (_dnn_ops[2](w_hh, B) if step_dnn else w_hh.t())


def add_gate_recurrence(g: Tensor, prev: Tensor | None, w_gg_t: Tensor, dnn: bool) -> None:
    """fgr: ``g[:, :3H] += prev @ W_gg^T``, ``prev`` the gate activations (o, i, f) of the previous
    step (None at the first step of a call that carries none). ``w_gg_t``: packed (oneDNN) or
    transposed ``W_gg``."""
    if prev is None:
        return
    H3 = prev.shape[1]
    if dnn:
        g[:, :H3].add_(_dnn_ops[0](prev, w_gg_t, None, "none", [], ""))
    else:
        g[:, :H3].addmm_(prev, w_gg_t)


def backward_weights(w_hh: Tensor, w_gg: Tensor | None, B: int, dnn: bool) -> tuple:
    """The weights of the backward recurrent products, for :func:`to_previous_step`. With oneDNN,
    R is not pre-packed (packing a transposed [H, G*H] weight costs more than the 35 products it
    would speed up); the square fgr matrix is (unpacked, oneDNN is slow on it)."""
    if not dnn:
        return w_hh, w_gg
    return w_hh.t(), (_dnn_ops[2](w_gg.t().contiguous(), B) if w_gg is not None else None)


def to_previous_step(t: int, dG_t: Tensor, d_outl, a0: Tensor | None, w_hh: Tensor,
                     w_gg: Tensor | None, back: tuple, dnn: bool, need_dh0: bool,
                     dh_buf: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
    """The gradients that step ``t`` sends to step ``t - 1`` through the recurrent products:
    ``dh_{t-1} = d_out[t-1] + dG[t] R`` and, for fgr (``w_gg`` given), ``da_{t-1} = dG[t][:, :3H]
    W_gg``. At ``t = 0`` they are the gradients of ``h0`` (None unless ``need_dh0``) and ``a0``
    (None unless given). ``back`` is :func:`backward_weights`."""
    w_back, w_gg_back = back
    da = None
    if w_gg is not None and (t > 0 or a0 is not None):
        g3 = dG_t[:, : w_gg.shape[0]]
        da = _dnn_ops[0](g3, w_gg_back, None, "none", [], "") if dnn else torch.mm(g3, w_gg)
    if t > 0:
        if dnn:
            return _dnn_ops[1](dG_t, d_outl[t - 1], w_back, None, "add"), da
        return torch.addmm(d_outl[t - 1], dG_t, w_hh, out=dh_buf), da
    return (mm(dG_t, w_hh, dnn) if need_dh0 else None), da


def forward_ops(x, h0, c0, a0, w_ih, w_hh, b, p, w_gg, spec, step_dnn, in_dnn):
    """The forward steps as torch ops: ``(hs, A, C, S)``."""
    T, B, _ = x.shape
    H, G = spec.H, spec.G
    col, sig, tail = spec.col, spec.sig, spec.tail
    one, minus_two = x.new_tensor(1.0), x.new_tensor(-2.0)
    x2 = x.reshape(T * B, -1)
    w_in, b_in, w_rec = w_ih, b, w_hh
    if spec.z_tanh:  # z_t = tanh(z̄) = 1 - 2 σ(-2 z̄): scale the z rows by -2 (exact)
        w_in, b_in, w_rec = w_ih.clone(), b.clone(), w_hh.clone()
        for w in (w_in, b_in, w_rec):
            w[col["z"]].mul_(minus_two)
    # Pre-activations of every step from the input: one product. A[t] then receives the
    # activations step by step, so afterwards A holds (o, i, f, z) of every step.
    A, w_rec = projections(x2, w_in, b_in, w_rec, B, step_dnn, in_dnn)
    A = A.view(T, B, G * H)
    act_sig = tail if spec.z_tanh else sig  # columns that go through one sigmoid
    C = x.new_empty(T + 1, B, H)  # C[0] = c0, C[t+1] = c_t
    C[0] = c0
    hs = x.new_empty(T + 1, B, H)  # hs[0] = h0, hs[t+1] = h_t (so hs[:-1] is every h_{t-1})
    hs[0] = h0
    out = hs[1:]
    S = x.new_empty(T, B, H) if spec.h_tanh else None  # σ(-2 c_t): tanh(c_t) = 1 - 2 S[t]
    tmp = x.new_empty(B, H) if spec.cifg else None
    has_i, has_f, has_o = spec.has["i"], spec.has["f"], spec.has["o"]
    # per-step views, made once
    Al, Cl, Ol = A.unbind(0), C.unbind(0), out.unbind(0)
    Sl = S.unbind(0) if S is not None else None
    A_act, Az = A[..., act_sig].unbind(0), A[..., col["z"]].unbind(0)
    Ai = A[..., col["i"]].unbind(0) if has_i else None
    Af = A[..., col["f"]].unbind(0) if has_f else None
    Ao = A[..., col["o"]].unbind(0) if has_o else None
    A3 = A[..., : 3 * H].unbind(0) if spec.fgr else None
    if spec.fgr:
        w_gg_t = _dnn_ops[2](w_gg, B) if step_dnn else w_gg.t()
    if spec.peep:
        p_sig = p[spec.p_sig]  # [n_sig, H]
        p_o = p[spec.p_o] if spec.p_o is not None else None
        C_u = C[:-1].unsqueeze(2).unbind(0)  # c_{t-1} as [B, 1, H]
        A_peep = A[..., sig].view(T, B, spec.n_sig, H).unbind(0)
    else:
        p_sig = p_o = None
    h0 = h0.contiguous()
    h = h0
    for t in range(T):
        c_prev, c, a = Cl[t], Cl[t + 1], Al[t]
        if step_dnn:  # pre-activations in a fresh g; activations go to A[t]
            g = _dnn_ops[1](h, a, w_rec, None, "add")
            if spec.fgr:
                add_gate_recurrence(g, A3[t - 1] if t > 0 else a0, w_gg_t, True)
            if p_sig is not None:
                g[:, sig].view(B, spec.n_sig, H).addcmul_(C_u[t], p_sig)
            torch.sigmoid(g[:, act_sig], out=A_act[t])
            if not spec.z_tanh:
                Az[t].copy_(g[:, col["z"]])
            o_pre = g[:, col["o"]] if has_o else None
        else:  # pre-activations and activations in place in A[t]
            a.addmm_(h, w_rec)
            if spec.fgr:
                add_gate_recurrence(a, A3[t - 1] if t > 0 else a0, w_gg_t, False)
            if p_sig is not None:
                A_peep[t].addcmul_(C_u[t], p_sig)
            A_act[t].sigmoid_()
            o_pre = Ao[t] if has_o else None
        z = Az[t]
        if spec.z_tanh:
            torch.add(one, z, alpha=-2, out=z)
        if spec.cifg:
            torch.sub(z, c_prev, out=tmp)
            torch.addcmul(c_prev, Ai[t], tmp, out=c)
        elif has_i and has_f:
            torch.mul(Af[t], c_prev, out=c)
            c.addcmul_(Ai[t], z)
        elif has_i:  # nfg
            torch.addcmul(c_prev, Ai[t], z, out=c)
        else:  # nig
            torch.addcmul(z, Af[t], c_prev, out=c)
        if spec.h_tanh:
            st = Sl[t]
            torch.mul(c, minus_two, out=st)
            st.sigmoid_()
        h = Ol[t]
        if has_o:
            o = Ao[t]
            if p_o is not None:
                o_pre.addcmul_(c, p_o)
            torch.sigmoid(o_pre, out=o)
            if spec.h_tanh:  # o ⊙ tanh(c) = o - 2 o ⊙ σ(-2c)
                torch.addcmul(o, o, st, value=-2, out=h)
            else:
                torch.mul(o, c, out=h)
        else:  # nog: tanh(c) = 1 - 2 σ(-2c)
            torch.add(one, st, alpha=-2, out=h)
    return hs, A, C, S


def backward_ops(x, h0, a0, w_hh, p, w_gg, A, C, S, d_out, d_hN, d_cN, d_aN, spec, step_dnn,
                 need_dh0):
    """Backward through time as torch ops: ``(dG, dh0, dc0, da0, db, dp)``, ``dG`` the gradients
    of the pre-activations of every step, ``db, dp`` those of the bias and the peepholes."""
    T, B, _ = x.shape
    H, G, col = spec.H, spec.G, spec.col
    has_i, has_f, has_o = spec.has["i"], spec.has["f"], spec.has["o"]
    one = x.new_tensor(1.0)
    C_prev, C_t = C[:-1], C[1:]
    act = {g: A[..., col[g]] for g in spec.gates}

    # --- coefficients of the gradient recursion, for all steps at once -------------------
    n_s = G - 1  # the sigmoid gates (o, i, f present) are the first G-1 blocks, z the last
    D = torch.addcmul(A[..., : n_s * H], A[..., : n_s * H], A[..., : n_s * H], value=-1)
    dsig = {g: D[..., col[g]] for g in spec.gates if g != "z"}  # σ'(ḡ) = g (1 - g)
    TC = torch.add(one, S, alpha=-2) if spec.h_tanh else C_t  # tanh(c_t) (noaf: c_t)
    # dh -> dō: K_o = act(c) σ'(ō); dh -> dc_t directly: K_hc = o act'(c)
    dtanh_c = torch.addcmul(one, TC, TC, value=-1) if spec.h_tanh else None
    if has_o:
        K_o = TC * dsig["o"]
        K_hc = act["o"] * dtanh_c if spec.h_tanh else act["o"]
    else:
        K_o, K_hc = None, dtanh_c
    p_o = p[spec.p_o] if spec.peep and spec.p_o is not None else None
    K_h = torch.addcmul(K_hc, K_o, p_o) if p_o is not None else K_hc  # all dh -> dc_t
    # dc_t -> pre-activations of the tail gates (i, f, z), one [B, n_tail, H] block per step
    K_c = x.new_empty(T, B, spec.n_tail, H)
    k = 0
    if has_i:
        if spec.cifg:
            torch.mul(act["z"] - C_prev, dsig["i"], out=K_c[:, :, k])
        else:
            torch.mul(act["z"], dsig["i"], out=K_c[:, :, k])
        k += 1
    if has_f:
        torch.mul(C_prev, dsig["f"], out=K_c[:, :, k])
        k += 1
    Kz = K_c[:, :, k]
    if spec.z_tanh:
        torch.addcmul(one, act["z"], act["z"], value=-1, out=Kz)
        if has_i:
            Kz.mul_(act["i"])
    elif has_i:
        Kz.copy_(act["i"])
    else:
        Kz.fill_(1)
    # dc_t -> dc_{t-1}: through f_t and the i/f peepholes
    if has_f:
        K_cc = act["f"].clone()
    elif spec.cifg:
        K_cc = torch.sub(one, act["i"])
    else:  # nfg: f_t = 1
        K_cc = torch.ones_like(C_prev)
    if spec.peep:
        p_sig = p[spec.p_sig]
        for j in range(spec.n_sig):
            K_cc.addcmul_(K_c[:, :, j], p_sig[j])

    # --- backward through time ----------------------------------------------------------
    back = backward_weights(w_hh, w_gg, B, step_dnn)
    dG = x.new_empty(T, B, G * H)
    dGl = dG.unbind(0)
    dG_tail = dG[..., spec.tail].view(T, B, spec.n_tail, H).unbind(0)
    dG_o = dG[..., col["o"]].unbind(0) if has_o else None
    d_outl = d_out.unbind(0)
    K_hl, K_cl, K_ccl = K_h.unbind(0), K_c.unbind(0), K_cc.unbind(0)
    K_ol = K_o.unbind(0) if has_o else None
    dh = d_out[T - 1] if d_hN is None else d_out[T - 1] + d_hN
    dh_buf = None if step_dnn else x.new_empty(B, H)
    dc = d_cN.clone() if d_cN is not None else x.new_zeros(B, H)
    dct = x.new_empty(B, H)
    dct_u = dct.unsqueeze(1)
    da = None
    if spec.fgr:
        if d_aN is not None and d_aN.numel():
            da = d_aN
        dao = x.new_empty(B, 3 * H)
        p_i, p_f = p_sig[0], p_sig[1]
        dGi, dGf = dG[..., col["i"]].unbind(0), dG[..., col["f"]].unbind(0)
        dG_if = dG[..., H: 3 * H].unbind(0)
        D_l = D.unbind(0)
        K_hcl, act_f = K_hc.unbind(0), act["f"].unbind(0)
    for t in range(T - 1, -1, -1):
        g = dGl[t]
        if not spec.fgr:
            if has_o:
                torch.mul(dh, K_ol[t], out=dG_o[t])
            if K_h is None:
                torch.add(dc, dh, out=dct)
            else:
                torch.addcmul(dc, dh, K_hl[t], out=dct)
            torch.mul(dct_u, K_cl[t], out=dG_tail[t])
            torch.mul(dct, K_ccl[t], out=dc)
        else:
            go = dG_o[t]
            if da is not None:  # gradient from the next step's gate recurrence
                torch.mul(da, D_l[t], out=dao)
                torch.addcmul(dao[:, :H], dh, K_ol[t], out=go)
            else:
                torch.mul(dh, K_ol[t], out=go)
            torch.addcmul(dc, dh, K_hcl[t], out=dct)
            dct.addcmul_(go, p_o)
            torch.mul(dct_u, K_cl[t], out=dG_tail[t])
            if da is not None:
                dG_if[t].add_(dao[:, H:])
            torch.mul(dct, act_f[t], out=dc)
            dc.addcmul_(dGi[t], p_i)
            dc.addcmul_(dGf[t], p_f)
        dh, da = to_previous_step(t, g, d_outl, a0, w_hh, w_gg, back, step_dnn, need_dh0,
                                  dh_buf)
    db, dp = dG.sum((0, 1)), None
    if spec.peep:
        dp = torch.empty_like(p)
        if p_o is not None:
            dp[spec.p_o] = (dG[..., col["o"]] * C_t).sum((0, 1))
        dG_sig = dG[..., spec.sig].view(T, B, spec.n_sig, H)
        dp[spec.p_sig] = (dG_sig * C_prev.unsqueeze(2)).sum((0, 1))
    return dG, dh, dc, da, db, dp


def _check(status: int, name: str) -> None:
    """Raise for a kernel call's nonzero status (-1: unknown variant flags or no vector code,
    -2: out of memory)."""
    if status == -2:
        raise MemoryError(f"{name}: out of memory")
    if status:
        raise RuntimeError(f"{name}: unknown variant flags or no vector code")


def forward_kernel(x, h0, c0, a0, w_ih, w_hh, b, p, w_gg, spec, step_dnn, in_dnn, loop=False):
    """The forward steps with the compiled kernel: ``(hs, A, C, S)``. Each step is the
    recurrent product in torch (pre-activations into ``A[t]`` or a fresh tensor) and one kernel
    call that turns them into the activations, ``c_t`` and ``h_t``; with ``loop`` the whole time
    loop, products included, is one kernel call (which also puts ``h0, c0`` in ``hs[0], C[0]``)."""
    T, B, _ = x.shape
    H, G = spec.H, spec.G
    A, w_rec = projections(x.view(T * B, -1), w_ih, b, w_hh, B, step_dnn and not loop, in_dnn)
    A = A.view(T, B, G * H)
    C = x.new_empty(T + 1, B, H)
    hs = x.new_empty(T + 1, B, H)
    out = hs[1:]
    S = x.new_empty(T, B, H) if spec.h_tanh else None
    fgr_loop = loop and spec.fgr  # the loop does fgr's gate recurrence too
    w_gg_c = w_gg.contiguous() if fgr_loop else None
    a0_c = a0.contiguous() if fgr_loop and a0 is not None else None
    plan = kernel.make_plan(spec, A, C, S, out, p, w_gg=w_gg_c, a0=a0_c)
    lib, plan_ref = kernel.library(), ctypes.byref(plan)
    if loop:
        _check(lib.lstm_forward_seq(plan_ref, T, h0.data_ptr(), c0.data_ptr(),
                                    w_hh.contiguous().data_ptr(),
                                    kernel.workspace(spec).data_ptr(), torch.get_num_threads()),
               "lstm_forward_seq")
        return hs, A, C, S
    C[0] = c0
    hs[0] = h0
    step, nt = lib.lstm_forward_step, kernel.step_threads(B, H)
    Al, Ol = A.unbind(0), out.unbind(0)
    if spec.fgr:
        A3 = A[..., : 3 * H].unbind(0)
        w_gg_t = _dnn_ops[2](w_gg, B) if step_dnn else w_gg.t()
    h = h0
    for t in range(T):
        if step_dnn:
            g = _dnn_ops[1](h, Al[t], w_rec, None, "add")
        else:
            g = Al[t].addmm_(h, w_rec)
        if spec.fgr:
            add_gate_recurrence(g, A3[t - 1] if t > 0 else a0, w_gg_t, step_dnn)
        step(plan_ref, t, g.data_ptr(), nt)
        h = Ol[t]
    return hs, A, C, S


def backward_kernel(x, h0, a0, w_hh, p, w_gg, A, C, S, d_out, d_hN, d_cN, d_aN, spec, step_dnn,
                    need_dh0, loop=False):
    """Backward through time with the compiled kernel: ``(dG, dh0, dc0, da0, db, dp)``. Each step
    is one kernel call (``dG[t]`` from ``dh``, the carried ``dc`` and the saved activations, adding
    to the bias and peephole gradients ``db, dp``) and the recurrent product
    ``dh_{t-1} = d_out[t-1] + dG[t] R`` in torch; with ``loop`` the whole time loop is one kernel
    call."""
    T, B, _ = x.shape
    H, G = spec.H, spec.G
    dG = x.new_empty(T, B, G * H)
    dc = d_cN.contiguous().clone() if d_cN is not None else x.new_zeros(B, H)
    db = x.new_zeros(G * H)
    dp = torch.zeros_like(p) if spec.peep else None
    da_in = spec.fgr and d_aN is not None and d_aN.numel() > 0
    fgr_loop = loop and spec.fgr  # da: carried gradient w.r.t. the previous step's gates o, i, f
    w_gg_c = w_gg.contiguous() if fgr_loop else None
    da = (d_aN.contiguous().clone() if da_in else x.new_zeros(B, 3 * H)) if fgr_loop else None
    plan = kernel.make_plan(spec, A, C, S, None, p, dG=dG, dc=dc, db=db, dp=dp, w_gg=w_gg_c,
                            da=da)  # (OUT is not read backwards)
    lib, plan_ref = kernel.library(), ctypes.byref(plan)
    dh = d_out[T - 1] if d_hN is None else (d_out[T - 1] + d_hN).contiguous()
    if loop:
        dh = dh.clone() if d_hN is None else dh  # the loop writes dh_{t-1} into it
        w = w_hh.contiguous()
        need_da0 = spec.fgr and a0 is not None
        _check(lib.lstm_backward_seq(plan_ref, T, dh.data_ptr(), d_out.data_ptr(), w.data_ptr(),
                                     kernel.workspace(spec).data_ptr(), torch.get_num_threads(),
                                     int(need_dh0), int(da_in), int(need_da0)),
               "lstm_backward_seq")
        return dG, (dh if need_dh0 else None), dc, (da if need_da0 else None), db, dp
    step, nt = lib.lstm_backward_step, kernel.step_threads(B, H)
    back = backward_weights(w_hh, w_gg, B, step_dnn)
    dGl, d_outl = dG.unbind(0), d_out.unbind(0)
    da = d_aN.contiguous() if da_in else None
    for t in range(T - 1, -1, -1):
        step(plan_ref, t, dh.data_ptr(), da.data_ptr() if da is not None else None, nt)
        dh, da = to_previous_step(t, dGl[t], d_outl, a0, w_hh, w_gg, back, step_dnn, need_dh0)
    return dG, dh, dc, da, db, dp
