r"""Gradient dynamics of recurrent language models: how far back does the gradient reach?

For a trained (checkpoint) or freshly initialised :class:`~lmlab.neural.models.RecurrentLM` and a
batch of real text this module measures, per layer ``l`` and as a function of the distance
``d = t - k``:

* **loss gradients** ``‖∂L_t/∂h_k^(l)‖`` (Euclidean norm, total derivative through every path of
  the network) for every ``k <= t`` and a few target positions ``t``, averaged over the targets
  and the sequences of the batch; for LSTMs also ``‖∂L_t/∂c_k^(l)‖`` through the cell state
  (``c_k`` as carried to step ``k+1``: the state is the pair ``(h_k, c_k)``, so this excludes
  the same-step path ``h_k = o_k tanh(c_k)``, which ``∂L_t/∂h_k`` already covers).
  ``L_t`` is the cross-entropy of the word predicted at position ``t``;
* **Jacobian products** ``‖∏_{j=k+1..t} ∂s_j/∂s_{j-1}‖₂`` (exact spectral norm of the product of
  the layer's per-step state Jacobians, the layer's input held fixed), where the recurrent state
  ``s`` is ``h`` for RNN/GRU and ``(h, c)`` for LSTM (whose report also gives the ``c -> c`` block
  of the product);
* for the plain RNN cells (``rnn_tanh``, ``rnn_relu``, ``irnn``) the textbook bound
  (Pascanu et al. 2013): with ``∂h_j/∂h_{j-1} = diag(σ'(a_j)) W_hh``,
  ``‖∏ ∂h_j/∂h_{j-1}‖₂ <= (β_W β_h)^(t-k)`` where ``β_W = ‖W_hh‖₂`` and ``β_h`` is the largest
  ``|σ'(a)|`` observed on the analysed batch (tanh: ``1 - tanh²(a)``; relu: 0 or 1). Every
  measured product is checked against it (``bound_violations``, always 0);
* a **decay rate**: the least-squares slope of ``ln(mean norm)`` against the distance over
  ``d >= 1`` (nats per step: negative = vanishing, positive = exploding; ``e_fold_distance`` is
  ``1/|rate|``).

How: the recurrence is re-run step by step (:mod:`lmlab.analysis.recurrence`) from the model's own
weights (copied, in float64: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}`` of the fused ``nn.RNN``/``nn.LSTM``/``nn.GRU``, or of each single-layer module of a
residual stack, where ``h^(l) = RNN^(l)(h^(l-1)) + h^(l-1)``), keeping every ``h_k`` in the autograd
graph, and ``torch.autograd.grad`` of ``L_t`` (summed over the batch: sequences are independent)
gives ``∂L_t/∂h_k`` for all ``k`` and layers in one backward pass per target ``t``, on one retained
graph. The step-by-step run reproduces the fused module (``reproduction_max_abs_diff`` in the
report). Per-step Jacobians come from ``torch.func.jacrev`` (vmapped over the batch), and all
products are accumulated in one pass backwards through time, renormalised after every step so that
neither underflow nor overflow occurs (logs are accumulated).

Analysis is done in eval mode (no dropout) on copies: the model's parameters, gradients, training
flag and every random generator are left exactly as they were. ``spectral_radius`` rescales the
copied ``W_hh`` of every layer (each gate's ``H x H`` block for LSTM/GRU) to that spectral radius
(largest ``|eigenvalue|``): 0.5 shows vanishing, 1.0 the neutral regime, 1.5 explosion (an
IRNN, ``W_hh = R·I`` with ReLU, shows ``R^d`` exactly).

In a deep stack the two measurements differ by design: the Jacobian product is the layer's own
recurrence, while ``∂L_t/∂h_k^(l)`` also flows through the layers above (and their recurrences),
so it usually decays more slowly than the product of layer ``l`` alone.

Cost and memory: the retained graph holds ``O(T · B · layers · gates · H)`` floats and the
logits are decoded one target at a time (``O(B · V)``). Sequences are limited to
:data:`MAX_SEQ_LEN` steps (longer ones are refused with an :class:`LmlabError`). Jacobian
products cost ``O(T · W³)`` each (``W`` the state width): :func:`jacobian_plan` keeps as many
(target, sequence) products as :data:`JACOBIAN_FLOP_BUDGET` allows (always the last target),
takes the spectral norm at every distance for small states and on a grid of distances (every
distance up to 20, then ~60 geometrically spaced; ``null`` elsewhere) for wide ones, and states
wider than :data:`MAX_JACOBIAN_WIDTH` get the loss gradients only, with a note.

Report (:func:`analyse`; :mod:`lmlab.analysis.gradients_report` runs it for ``lmlab gradients``
and writes it to files): ``measured`` (mean Jacobian-product norm of layer 1 by distance, index =
``t - k``), ``bound`` (plain RNN cells; ``null`` otherwise), ``decay_rate`` (of layer 1's loss
gradient) and ``jacobian_decay_rate``, and ``per_layer``: ``grad_norm``/``grad_log_norm``,
``jacobian_norm``/``jacobian_log_norm``/``jacobian_max_log_norm``, their decay rates,
``spectral_radius_W``, ``spectral_norm_W``, ``beta_W``, ``beta_h``, ``bound``/``bound_log``,
``bound_violations`` and, for LSTMs, ``cell_state`` (the same for ``c``). Logs are natural.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from lmlab.analysis.recurrence import LayerWeights, Stepwise, Trace, cell_step, token_losses
from lmlab.errors import LmlabError

BOUND_CELLS = ("rnn_tanh", "rnn_relu", "irnn")  # the bound (β_W β_h)^d applies to these
MAX_SEQ_LEN = 400  # longest analysed sequence (memory grows linearly with it)
MAX_SEQUENCES = 64
MAX_JACOBIAN_WIDTH = 512  # exact Jacobian products up to this state width (LSTM: 2H)
JACOBIAN_FLOP_BUDGET = 2e11  # matrix products per layer; fewer products beyond (jacobian_plan)
SVD_EVERY_STEP_LIMIT = 2e9  # above (products x T x W³), spectral norms on a grid of distances
BOUND_RTOL = 1e-9  # numerical slack of the bound check (float64)


# ----------------------------------------------------------------------------------------------
# Loss gradients and Jacobian products on a step-by-step run (lmlab.analysis.recurrence)
# ----------------------------------------------------------------------------------------------


def loss_gradients(trace: Trace, targets: Tensor, t: int, retain: bool = True
                   ) -> dict[str, list[list[Tensor]]]:
    """``∂L_t/∂h_k^(l)`` (and ``∂L_t/∂c_k^(l)``) for every layer ``l`` and ``k <= t``, one
    [B, H] tensor each, from a ``track=True`` trace; ``L_t`` is summed over the batch (the
    sequences do not interact, so row ``b`` is sequence ``b``'s own gradient)."""
    loss = token_losses(trace.logits_at(t), targets[t]).sum()
    L = len(trace.h)
    nodes = [trace.h[n][k] for n in range(L) for k in range(t + 1)]
    if trace.c is not None:
        nodes += [trace.c[n][k] for n in range(L) for k in range(t + 1)]
    grads = torch.autograd.grad(loss, nodes, retain_graph=retain, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(v) for g, v in zip(grads, nodes,
                                                                          strict=True)]
    per = t + 1
    out = {"h": [grads[n * per:(n + 1) * per] for n in range(L)]}
    if trace.c is not None:
        out["c"] = [grads[(L + n) * per:(L + n + 1) * per] for n in range(L)]
    return out


def _state(trace: Trace, layer: int, t: int) -> Tensor:
    h = trace.h[layer][t].detach()
    if trace.c is None:
        return h
    return torch.cat([h, trace.c[layer][t].detach()], dim=-1)


def step_jacobians(w: LayerWeights, state: Tensor, x: Tensor) -> Tensor:
    """``∂s_t/∂s_{t-1}`` [B, W, W] of one layer at one step, for a batch of previous states
    ``state`` [B, W] and layer inputs ``x`` [B, D] (the input held fixed)."""
    H = w.hidden

    def f(s: Tensor, xx: Tensor) -> Tensor:
        if w.kind == "lstm":
            h, c, _ = cell_step("lstm", w, xx, s[:H], s[H:])
            return torch.cat([h, c])
        return cell_step(w.kind, w, xx, s, None)[0]

    return torch.func.vmap(torch.func.jacrev(f))(state, x.detach())


def jacobian_products(sw: Stepwise, trace: Trace, layer: int, ends: list[int],
                      sequences: list[int] | None = None, distances: set[int] | None = None
                      ) -> dict[str, np.ndarray]:
    """``ln ‖∏_{j=k+1..t} ∂s_j/∂s_{j-1}‖₂`` for every end ``t`` in ``ends``, every sequence of
    ``sequences`` (default: the whole batch) and every ``k < t``: array ``log_norm``
    [len(ends), len(sequences), max(ends)+1] indexed by distance ``t - k`` (NaN beyond ``t``, and
    at distances not in ``distances`` when that is given). LSTM: also ``log_norm_cc``, the
    ``c_t <- c_k`` block. One pass backwards through time computes each step's Jacobians once for
    all products; the products are renormalised (Frobenius norm, logs accumulated) after every
    step, and the exact spectral norm is taken where requested."""
    w = sw.layers[layer]
    seq = list(range(trace.h[layer][0].shape[0])) if sequences is None else list(sequences)
    B = len(seq)
    W, H = w.width, w.hidden
    lstm = w.kind == "lstm"
    n, D = len(ends), max(ends) + 1
    log_norm = np.full((n, B, D), np.nan)
    log_cc = np.full((n, B, D), np.nan) if lstm else None
    dtype = trace.h[layer][0].dtype
    P = torch.empty(0, B, W, W, dtype=dtype)
    logscale = torch.empty(0, B, dtype=dtype)
    rows: list[int] = []  # the index in ``ends`` of each product in P

    def log_spectral(M: Tensor, scale: Tensor) -> np.ndarray:
        norm = torch.linalg.matrix_norm(M, ord=2)
        return (torch.where(norm > 0, norm.log(), -math.inf) + scale).numpy()

    for j in range(max(ends), 0, -1):
        for i in sorted(range(n), key=lambda i: ends[i]):
            if ends[i] == j:
                P = torch.cat([P, torch.eye(W, dtype=dtype).expand(1, B, W, W)])
                logscale = torch.cat([logscale, torch.zeros(1, B, dtype=dtype)])
                rows.append(i)
                log_norm[i, :, 0] = 0.0
                if lstm:
                    log_cc[i, :, 0] = 0.0
        if not rows:
            continue
        J = step_jacobians(w, _state(trace, layer, j - 1)[seq], trace.inputs[layer][j][seq])
        P = P @ J.unsqueeze(0)  # now ∂s_t/∂s_{j-1}, up to exp(logscale)
        fro = torch.linalg.matrix_norm(P)
        positive = fro > 0
        logscale = logscale + torch.where(positive, fro.log(), -math.inf)
        P = P / torch.where(positive, fro, 1.0)[..., None, None]
        due = [r for r, i in enumerate(rows) if distances is None
               or ends[i] - (j - 1) in distances]
        if not due:
            continue
        values = log_spectral(P[due], logscale[due])
        cc = log_spectral(P[due][..., H:, H:], logscale[due]) if lstm else None
        for m, r in enumerate(due):
            i = rows[r]
            log_norm[i, :, ends[i] - (j - 1)] = values[m]
            if lstm:
                log_cc[i, :, ends[i] - (j - 1)] = cc[m]
    out = {"log_norm": log_norm}
    if lstm:
        out["log_norm_cc"] = log_cc
    return out


def jacobian_plan(seq_len: int, width: int, ends: list[int], batch: int
                  ) -> tuple[list[int], list[int], set[int] | None]:
    """Which products to compute within :data:`JACOBIAN_FLOP_BUDGET`: (ends, sequences,
    distances at which to take the spectral norm, None = all). The last end (the longest reach)
    is always kept; wide states get the norm on a grid of distances (all up to 20, then ~60
    geometrically spaced)."""
    per_product = 2.0 * seq_len * width ** 3
    n = int(max(1, min(len(ends) * batch, JACOBIAN_FLOP_BUDGET // per_product)))
    n_seq = min(batch, n)
    n_ends = max(1, min(len(ends), n // n_seq))
    chosen = ends[-n_ends:]
    distances = None
    if n_seq * n_ends * seq_len * width ** 3 > SVD_EVERY_STEP_LIMIT:
        grid = np.unique(np.round(np.geomspace(1, seq_len - 1, 60)).astype(int))
        distances = set(range(21)) | {int(d) for d in grid}
    return chosen, list(range(n_seq)), distances


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean_by_distance(log_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log_values`` [..., D] (NaN: no sample) -> per distance ln(mean), ln(max), count, with the
    mean taken over the linear values (log-sum-exp, no overflow)."""
    flat = log_values.reshape(-1, log_values.shape[-1])
    have = ~np.isnan(flat)
    count = have.sum(0)
    filled = np.where(have, flat, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = filled.max(0)
        safe_top = np.where(np.isfinite(top), top, 0.0)
        s = np.exp(filled - safe_top).sum(0)
        log_mean = np.where(np.isfinite(top), safe_top + np.log(s) - np.log(np.maximum(count, 1)),
                            top)
    log_mean = np.where(count > 0, log_mean, np.nan)
    top = np.where(count > 0, top, np.nan)
    return log_mean, top, count


def count_bound_violations(log_norm: np.ndarray, bound_log: np.ndarray) -> tuple[int, int]:
    """(violations, products checked): products ``log_norm`` [..., D] (NaN: none) above the
    bound ``bound_log`` [D] beyond float64 slack (a zero bound, -inf, admits only zero)."""
    have = ~np.isnan(log_norm)
    b = np.broadcast_to(bound_log, log_norm.shape)
    finite_b = np.isfinite(b)
    slack = BOUND_RTOL * np.maximum(1.0, np.abs(np.where(finite_b, b, 0.0)))
    with np.errstate(invalid="ignore"):
        over = np.where(finite_b, log_norm > b + slack, log_norm > -np.inf)
    return int((over & have).sum()), int(have.sum())


def decay_rate(log_values: np.ndarray, first: int = 1) -> float | None:
    """Least-squares slope of ``log_values`` (indexed by distance) over distances >= ``first``
    with a finite value: nats per step (< 0: vanishing, > 0: exploding)."""
    d = np.arange(len(log_values))
    ok = np.isfinite(log_values) & (d >= first)
    if ok.sum() < 2:
        return None
    slope = np.polyfit(d[ok].astype(float), log_values[ok], 1)[0]
    return float(slope)


def _curve(log_mean: np.ndarray) -> tuple[list, list]:
    """(linear values, natural logs) for JSON: non-finite -> None (0 where the log is -inf)."""
    lin, logs = [], []
    for v in log_mean:
        if v == -np.inf:
            lin.append(0.0)
            logs.append(None)
        elif np.isfinite(v):
            e = math.exp(v) if v < 709 else math.inf
            lin.append(_finite_or_none(e))
            logs.append(float(v))
        else:
            lin.append(None)
            logs.append(None)
    return lin, logs


def _rate_entry(rate: float | None) -> dict:
    return {"decay_rate": rate,
            "e_fold_distance": (1 / abs(rate) if rate else None)}


# ----------------------------------------------------------------------------------------------
# The analysis
# ----------------------------------------------------------------------------------------------


def target_positions(seq_len: int, n_targets: int) -> list[int]:
    """``n_targets`` positions spread evenly over the second half of the sequence, always
    including the last one (so every distance up to ``seq_len - 1`` is measured)."""
    if n_targets < 1:
        raise LmlabError(f"--targets must be >= 1, got {n_targets}")
    lo = seq_len // 2
    pos = np.unique(np.round(np.linspace(seq_len - 1, lo, n_targets)).astype(int))
    return sorted(int(p) for p in pos)


def check_batch(inputs: Tensor, targets: Tensor) -> None:
    if inputs.dim() != 2 or inputs.shape != targets.shape:
        raise LmlabError(f"inputs and targets must both be [T, B], got {list(inputs.shape)} "
                         f"and {list(targets.shape)}")
    T, B = inputs.shape
    if T < 2:
        raise LmlabError(f"sequence length must be >= 2, got {T}")
    if T > MAX_SEQ_LEN:
        raise LmlabError(f"sequence length {T} exceeds the maximum of {MAX_SEQ_LEN} steps the "
                         "gradient analysis keeps in memory; use a shorter --seq-len")
    if not 1 <= B <= MAX_SEQUENCES:
        raise LmlabError(f"number of sequences must be in 1..{MAX_SEQUENCES}, got {B}")


def reproduction_error(model: nn.Module, sw: Stepwise, inputs: Tensor, max_sequences: int = 2
                       ) -> float:
    """Largest |difference| between the model's own logits (eval mode) and the step-by-step
    run, on the first ``max_sequences`` sequences; the model's training flag is restored and no
    random generator is used."""
    inputs = inputs[:, :max_sequences]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            ref, _ = model(inputs.to(device), None)
            mine = sw.run(inputs).logits
        return float((ref.double().cpu() - mine).abs().max())
    finally:
        model.train(was_training)


def analyse(model: nn.Module, inputs: Tensor, targets: Tensor, *,
            spectral_radius: float | None = None, n_targets: int = 4,
            jacobians: bool = True) -> dict:
    """The full measurement on one batch (``inputs``/``targets`` [T, B] ids, as
    :func:`~lmlab.analysis.gradients_report.sample_batch` gives); returns a JSON-ready dict (see
    :func:`~lmlab.analysis.gradients_report.write_report`)."""
    check_batch(inputs, targets)
    inputs, targets = inputs.cpu().long(), targets.cpu().long()
    T, B = inputs.shape
    base = Stepwise.from_model(model)
    V = base.embedding.shape[0]
    if int(inputs.max()) >= V or int(targets.max()) >= V or int(inputs.min()) < 0:
        raise LmlabError(f"word ids out of range for the model's vocabulary of {V}")
    repro = reproduction_error(model, base, inputs)
    sw = base.with_spectral_radius(spectral_radius) if spectral_radius is not None else base
    ends = target_positions(T, n_targets)
    lstm = sw.kind == "lstm"
    L = len(sw.layers)

    with torch.enable_grad():
        trace = sw.run(inputs, track=True)
        losses = trace.losses(targets)
        # log-norms [ends, B, T] by distance, NaN where k > t
        g_h = np.full((L, len(ends), B, T), np.nan)
        g_c = np.full((L, len(ends), B, T), np.nan) if lstm else None
        for i, t in enumerate(ends):
            grads = loss_gradients(trace, targets, t, retain=i < len(ends) - 1)
            for n in range(L):
                for part, store in (("h", g_h), ("c", g_c)):
                    if store is None:
                        continue
                    norms = torch.stack(grads[part][n]).norm(dim=-1)  # [t+1, B]
                    with np.errstate(divide="ignore"):
                        store[n, i, :, :t + 1] = np.log(norms.numpy()[::-1].T)
        del grads

    per_layer = []
    for n, w in enumerate(sw.layers):
        entry: dict = {"layer": n, "hidden": w.hidden}
        lm, lmax, cnt = _mean_by_distance(g_h[n])
        lin, logs = _curve(lm)
        entry["grad_norm"] = lin
        entry["grad_log_norm"] = logs
        entry["grad_samples"] = cnt.tolist()
        entry.update({f"grad_{k}": v for k, v in _rate_entry(decay_rate(lm)).items()})
        if lstm:
            lmc, _, _ = _mean_by_distance(g_c[n])
            lin, logs = _curve(lmc)
            entry["cell_state"] = {"grad_norm": lin, "grad_log_norm": logs,
                                   **{f"grad_{k}": v for k, v in
                                      _rate_entry(decay_rate(lmc)).items()}}
        H = w.hidden
        radii = [float(torch.linalg.eigvals(w.w_hh[g * H:(g + 1) * H]).abs().max())
                 for g in range(w.gates)]  # per gate block for LSTM/GRU
        entry["spectral_radius_W"] = radii[0] if w.gates == 1 else radii
        entry["spectral_norm_W"] = float(torch.linalg.matrix_norm(w.w_hh, ord=2))
        if jacobians and w.width <= MAX_JACOBIAN_WIDTH:
            plan_ends, plan_seq, plan_d = jacobian_plan(T, w.width, ends, B)
            jp = jacobian_products(sw, trace, n, plan_ends, plan_seq, plan_d)
            entry["jacobian_products"] = {
                "targets": plan_ends, "sequences": len(plan_seq),
                "distances_evaluated": "all" if plan_d is None else len(plan_d)}
            jm, jmax, _ = _mean_by_distance(jp["log_norm"])
            lin, logs = _curve(jm)
            entry["jacobian_norm"] = lin
            entry["jacobian_log_norm"] = logs
            entry["jacobian_max_log_norm"] = [_finite_or_none(v) if not np.isnan(v) else None
                                              for v in jmax]
            entry.update({f"jacobian_{k}": v for k, v in _rate_entry(decay_rate(jm)).items()})
            if lstm:
                cm, _, _ = _mean_by_distance(jp["log_norm_cc"])
                lin, logs = _curve(cm)
                entry["cell_state"].update(jacobian_cc_norm=lin, jacobian_cc_log_norm=logs,
                                           **{f"jacobian_cc_{k}": v for k, v in
                                              _rate_entry(decay_rate(cm)).items()})
            if sw.cell in BOUND_CELLS:
                pre = torch.stack(trace.pre[n]).detach()
                if w.kind == "tanh":
                    beta_h = float((1 - torch.tanh(pre) ** 2).max())
                else:
                    beta_h = float((pre > 0).any())
                beta_w = entry["spectral_norm_W"]
                rate = math.log(beta_w * beta_h) if beta_w * beta_h > 0 else -math.inf
                d = np.arange(T, dtype=float)
                with np.errstate(invalid="ignore"):
                    blog = np.where(d == 0, 0.0, d * rate)
                lin, logs = _curve(blog)
                violations, checked = count_bound_violations(jp["log_norm"], blog)
                entry.update(beta_W=beta_w, beta_h=beta_h, bound=lin, bound_log=logs,
                             bound_log_rate=_finite_or_none(rate), bound_violations=violations,
                             bound_checked=checked)
        elif jacobians:
            entry["jacobian_skipped"] = (f"state width {w.width} > {MAX_JACOBIAN_WIDTH}: exact "
                                         "Jacobian products not computed")
        per_layer.append(entry)

    first = per_layer[0]
    report = {
        "cell": sw.cell,
        "residual": sw.residual,
        "num_layers": L,
        "hidden": sw.layers[0].hidden,
        "vocab_size": V,
        "seq_len": T,
        "sequences": B,
        "targets": ends,
        "spectral_radius": spectral_radius,
        "rescaled": sw.rescaled,
        "mean_loss": float(losses.mean()),
        "reproduction_max_abs_diff": repro,
        "distance": list(range(T)),
        "measured": first.get("jacobian_norm", []),
        "measured_is": ("mean spectral norm of the layer-1 state Jacobian product "
                        "∏_{j=k+1..t} ∂s_j/∂s_{j-1} (s = h; LSTM: s = (h, c)) by distance t-k"),
        "bound": first.get("bound", []) if sw.cell in BOUND_CELLS else None,
        "bound_is": ("(β_W β_h)^(t-k), β_W = ‖W_hh‖₂, β_h = max |σ'(a)| on the batch"
                     if sw.cell in BOUND_CELLS else "no bound for gated cells"),
        "decay_rate": first["grad_decay_rate"],
        "jacobian_decay_rate": first.get("jacobian_decay_rate"),
        "per_layer": per_layer,
    }
    return report

