"""The step loops of one LSTM layer (:class:`lmlab.neural.cells._LSTMLayer`).

``forward_ops``/``backward_ops`` run the steps as torch ops (any dtype and device). The forward
saves these tensors for the backward pass: ``A [T, B, G*H]`` the gate activations of every
step (packed order ``o, i, f, z``), ``C [T+1, B, H]`` the cells (``C[0] = c0``), ``S [T, B, H]``
``σ(-2 c_t)`` (so ``tanh(c_t) = 1 - 2 S``; None for noaf) and ``hs [T+1, B, H]`` the outputs
(``hs[0] = h0``, ``hs[t+1] = h_t``, so ``hs[:-1]`` is every ``h_{t-1}`` without a copy). The
backward loops return ``dG [T, B, G*H]``, the gradients of the pre-activations of every step, from
which the layer computes its weight gradients, and the bias and peephole gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_previous_step(t: int, dG_t: Tensor, d_outl, a0: Tensor | None, w_hh: Tensor,
                     w_gg: Tensor | None, need_dh0: bool,
                     dh_buf: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """The gradients that step ``t`` sends to step ``t - 1`` through the recurrent products:
    ``dh_{t-1} = d_out[t-1] + dG[t] R`` (into ``dh_buf``) and, for fgr (``w_gg`` given),
    ``da_{t-1} = dG[t][:, :3H] W_gg``. At ``t = 0`` they are the gradients of ``h0`` (None unless
    ``need_dh0``) and ``a0`` (None unless given)."""
    da = None
    if w_gg is not None and (t > 0 or a0 is not None):
        da = torch.mm(dG_t[:, : w_gg.shape[0]], w_gg)
    if t > 0:
        return torch.addmm(d_outl[t - 1], dG_t, w_hh, out=dh_buf), da
    return (torch.mm(dG_t, w_hh) if need_dh0 else None), da


def forward_ops(x, h0, c0, a0, w_ih, w_hh, b, p, w_gg, spec):
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
    A = torch.addmm(b_in, x2, w_in.t()).view(T, B, G * H)
    w_rec = w_rec.t()
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
        w_gg_t = w_gg.t()
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
        # pre-activations, then activations, in place in A[t]
        a.addmm_(h, w_rec)
        prev = A3[t - 1] if spec.fgr and t > 0 else a0  # fgr: the previous gates (o, i, f)
        if spec.fgr and prev is not None:
            a[:, : 3 * H].addmm_(prev, w_gg_t)
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


def backward_ops(x, a0, w_hh, p, w_gg, A, C, S, d_out, d_hN, d_cN, d_aN, spec, need_dh0):
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
    dG = x.new_empty(T, B, G * H)
    dGl = dG.unbind(0)
    dG_tail = dG[..., spec.tail].view(T, B, spec.n_tail, H).unbind(0)
    dG_o = dG[..., col["o"]].unbind(0) if has_o else None
    d_outl = d_out.unbind(0)
    K_hl, K_cl, K_ccl = K_h.unbind(0), K_c.unbind(0), K_cc.unbind(0)
    K_ol = K_o.unbind(0) if has_o else None
    dh = d_out[T - 1] if d_hN is None else d_out[T - 1] + d_hN
    dh_buf = x.new_empty(B, H)
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
        dh, da = to_previous_step(t, g, d_outl, a0, w_hh, w_gg, need_dh0, dh_buf)
    db, dp = dG.sum((0, 1)), None
    if spec.peep:
        dp = torch.empty_like(p)
        if p_o is not None:
            dp[spec.p_o] = (dG[..., col["o"]] * C_t).sum((0, 1))
        dG_sig = dG[..., spec.sig].view(T, B, spec.n_sig, H)
        dp[spec.p_sig] = (dG_sig * C_prev.unsqueeze(2)).sum((0, 1))
    return dG, dh, dc, da, db, dp
