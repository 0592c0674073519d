"""The compiled LSTM step kernel: same function as the torch-op path, built once and cached, and a
clean fallback where it cannot be built."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import lmlab.neural.cells as cells
from lmlab.neural import kernel
from lmlab.neural.cells import VARIANTS, VariantLSTM

needs_kernel = pytest.mark.skipif(kernel.library() is None,
                                  reason="the C kernel could not be built: install a C "
                                  "compiler (cc/gcc, e.g. apt-get install gcc) and rerun")


def make_state(layers: int, batch: int, hidden: int, variant: str) -> tuple:
    """A random (h, c) state, plus the gate history a for fgr, all requiring gradients."""
    state = [torch.randn(layers, batch, hidden), torch.randn(layers, batch, hidden)]
    if variant == "fgr":
        state.append(torch.rand(layers, batch, 3 * hidden))
    return tuple(s.requires_grad_() for s in state)


def run(model: VariantLSTM, x, state, use_kernel: bool, monkeypatch):
    """Outputs, new state and every gradient of one call, with or without the kernel."""
    monkeypatch.setattr(cells, "KERNEL", use_kernel)
    monkeypatch.setattr(cells, "FUSED_NP", False)
    out, new_state = model(x, state)
    loss = (out ** 2).sum() + sum((s * s.detach().sin()).sum() for s in new_state)
    grads = torch.autograd.grad(loss, [x, *state, *model.parameters()])
    return [out, *new_state, *grads]


@needs_kernel
@pytest.mark.parametrize("hidden,onednn_min", [(37, 10**6), (37, 0), (300, 256)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_equals_torch_ops(variant, hidden, onednn_min, monkeypatch):
    """Every variant, with and without carried fgr gates, both product backends, a hidden size
    that is not a multiple of the vector width and one at which the products switch to oneDNN."""
    monkeypatch.setattr(cells, "ONEDNN_STEP_MIN_H", onednn_min)
    monkeypatch.setattr(cells, "ONEDNN_SEQ_MIN_H", onednn_min)
    monkeypatch.setattr(cells, "ONEDNN_INPUT_MIN_H", onednn_min)
    torch.manual_seed(0)
    model = VariantLSTM(5, hidden, 2, variant=variant, forget_bias=1.0)
    x = torch.randn(6, 3, 5, requires_grad=True)
    state = make_state(2, 3, hidden, variant)
    fast = run(model, x, state, True, monkeypatch)
    ops = run(model, x, state, False, monkeypatch)
    for k, (a, b) in enumerate(zip(fast, ops, strict=True)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=f"item {k}")


needs_loop = pytest.mark.skipif(not kernel.loop_available(),
                                reason="the whole-sequence loop needs the C kernel (install a "
                                "C compiler) and an x86-64 CPU with AVX2 and FMA")


@needs_loop
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [3, 13])
@pytest.mark.parametrize("hidden", [5, 37, 70])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_loop_equals_step_loop(variant, hidden, batch, threads, monkeypatch):
    """The whole-sequence kernel call computes what the per-step loop does, outputs, carried
    state (fgr: with its gate history) and every gradient. Batch 3: every thread takes every row
    and the units are split (in groups of 8, walked 16 at a time: with H=5 one thread has nothing
    to do, with 37 and 70 threads end on tiles of 8 and fewer). Batch 13: each thread takes rows of
    its own (6 + 7, 4 + 4 + 5), all units, weights packed by all, and bias and peephole gradients
    summed per row group."""
    monkeypatch.setattr(cells, "ONEDNN_STEP_MIN_H", 10**6)
    monkeypatch.setattr(cells, "ONEDNN_SEQ_MIN_H", 10**6)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(1)
        model = VariantLSTM(4, hidden, 2, variant=variant, forget_bias=1.0)
        x = torch.randn(7, batch, 4, requires_grad=True)
        state = make_state(2, batch, hidden, variant)
        results = []
        for loop in (True, False):
            monkeypatch.setattr(cells, "KERNEL_LOOP", loop)
            results.append(run(model, x, state, True, monkeypatch))
    finally:
        torch.set_num_threads(saved)
    for k, (a, b) in enumerate(zip(*results, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"item {k}")


@needs_loop
@pytest.mark.parametrize("batch", [1, 4, 5, 6, 9, 10, 11, 12, 16, 20, 23, 31])
def test_sequence_loop_batch_sizes(batch, monkeypatch):
    """The loop's products work on row tiles of equal height up to 10 rows with AVX-512, else 5,
    over the rows a thread owns: all of them below 4 rows per thread (batch 6 on 2 threads:
    6 or 3 + 3), else its own share (23 = 11 + 12 rows: tiles 6 + 5 and 6 + 6, or 4 + 4 + 3
    and 4 + 4 + 4), and column panels of 16 (H=37: partial panels on both threads)."""
    torch.manual_seed(6)
    model = VariantLSTM(4, 37, 1)
    x = torch.randn(3, batch, 4, requires_grad=True)
    state = make_state(1, batch, 37, "vanilla")
    results = []
    for loop in (True, False):
        monkeypatch.setattr(cells, "KERNEL_LOOP", loop)
        results.append(run(model, x, state, True, monkeypatch))
    for k, (a, b) in enumerate(zip(*results, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"item {k}")


@needs_loop
def test_sequence_loop_without_state_gradients(monkeypatch):
    """No gradient asked for h0 (a fresh zero state): the loop skips dh0 and the rest agrees."""
    monkeypatch.setattr(cells, "ONEDNN_STEP_MIN_H", 10**6)
    torch.manual_seed(2)
    model = VariantLSTM(4, 24, 1)
    x = torch.randn(5, 2, 4, requires_grad=True)
    grads = []
    for loop in (True, False):
        monkeypatch.setattr(cells, "KERNEL_LOOP", loop)
        out, _ = model(x)
        grads.append(torch.autograd.grad(out.sin().sum(), [x, *model.parameters()]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_without_the_loop_the_step_path_runs(monkeypatch):
    """Where the kernel has no vector loop (no AVX2) the per-step path runs: same result."""
    monkeypatch.setattr(kernel, "loop_available", lambda: False)
    torch.manual_seed(3)
    model = VariantLSTM(3, 9, 1)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        out, _ = model(x)
        params = [{k: v.double() for k, v in layer.items()} for layer in model.gate_params()]
        ref, _ = cells.reference_lstm(x.double(), None, params, "vanilla")
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
def test_step_kernel_split_over_threads(variant, monkeypatch):
    """The per-step kernel with its units split over 3 threads (as at B*H >= 8192) equals the
    torch-op path (H=40: the last thread gets nothing)."""
    monkeypatch.setattr(kernel, "step_threads", lambda B, H: 3)
    monkeypatch.setattr(cells, "ONEDNN_STEP_MIN_H", 0)  # the per-step path, not the loop
    monkeypatch.setattr(cells, "KERNEL_LOOP", False)
    torch.manual_seed(4)
    model = VariantLSTM(5, 40, 2, variant=variant)
    x = torch.randn(6, 3, 5, requires_grad=True)
    state = make_state(2, 3, 40, variant)
    fast = run(model, x, state, True, monkeypatch)
    ops = run(model, x, state, False, monkeypatch)
    for k, (a, b) in enumerate(zip(fast, ops, strict=True)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=f"item {k}")


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (37, 5), (33, 65), (700, 800)])
def test_tiled_transpose(shape):
    x = torch.randn(*shape)
    assert torch.equal(kernel.transposed(x), x.t().contiguous())
    assert torch.equal(kernel.transposed(x.t()), x)  # not contiguous: torch's copy


@needs_kernel
def test_kernel_without_openmp(monkeypatch, tmp_path):
    """Built without -fopenmp (torch not on GNU OpenMP, or a compiler without it) the loops run
    on one thread and give the same results."""
    monkeypatch.setattr(kernel, "_torch_runs_on_libgomp", lambda: False)
    commands = []
    real_run = kernel.subprocess.run

    def spy(cmd, **kw):
        commands.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(kernel.subprocess, "run", spy)
    assert fresh_compile(monkeypatch, tmp_path) is not None
    builds = [c for c in commands if str(kernel.SOURCE) in c]
    assert builds and not any("-fopenmp" in c for c in builds)
    monkeypatch.setattr(kernel, "step_threads", lambda B, H: 2)
    monkeypatch.setattr(cells, "ONEDNN_STEP_MIN_H", 10**6)
    torch.manual_seed(5)
    model = VariantLSTM(4, 20, 1)
    x = torch.randn(5, 2, 4, requires_grad=True)
    state = make_state(1, 2, 20, "vanilla")
    results = []
    for use_kernel, loop in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(cells, "KERNEL_LOOP", loop)
        results.append(run(model, x, state, use_kernel, monkeypatch))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


@needs_kernel
def test_kernel_propagates_nan(monkeypatch):
    """The trainer's NaN rollback needs a NaN input to give NaN outputs, not saturated gates
    (the kernel is compiled without -ffast-math for this reason)."""
    monkeypatch.setattr(cells, "KERNEL", True)
    model = VariantLSTM(4, 8, 1)
    x = torch.randn(3, 2, 4)
    x[1, 0, 0] = float("nan")
    with torch.no_grad():
        out, _ = model(x)
    assert torch.isnan(out[1:, 0]).all() and torch.isfinite(out[:, 1]).all()


@needs_kernel
def test_kernel_saturates_at_large_inputs(monkeypatch):
    """tanh and sigmoid at +-1e4 are exactly their limits (no inf/inf = nan)."""
    monkeypatch.setattr(cells, "KERNEL", True)
    model = VariantLSTM(2, 4, 1)
    x = torch.tensor([[[1e4, -1e4]], [[-1e4, 1e4]]])
    with torch.no_grad():
        out, (h, c) = model(x)
    assert torch.isfinite(out).all() and torch.isfinite(c).all()
    assert (out.abs() <= 1).all()


def fresh_compile(monkeypatch, tmp_path, **env):
    monkeypatch.setattr(kernel, "_lib", False)
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return kernel.library()


@needs_kernel
def test_kernel_is_compiled_once_and_cached(monkeypatch, tmp_path):
    assert fresh_compile(monkeypatch, tmp_path) is not None
    built = list((tmp_path / "kernels").glob("lstm_kernel-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    assert fresh_compile(monkeypatch, tmp_path) is not None  # a new process would do this
    assert built[0].stat().st_mtime_ns == stamp
    assert not [p for p in os.listdir(tmp_path / "kernels") if not p.endswith(".so")]


def test_without_a_compiler_the_torch_path_runs(monkeypatch, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no compiler at all is not worth a warning
        assert fresh_compile(monkeypatch, tmp_path, CC="no-such-compiler-lmlab") is None
    model = VariantLSTM(3, 5, 2)
    x = torch.randn(4, 2, 3)
    assert not kernel.usable(x)
    out, _ = model(x)
    assert out.shape == (4, 2, 5)


def test_a_failing_compiler_warns_and_falls_back(monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo fake 1.0; exit 0; }\n"
                    "echo 'error: broken' >&2; exit 1\n")
    fake.chmod(0o755)
    with pytest.warns(RuntimeWarning, match="could not compile the LSTM cell kernel"):
        assert fresh_compile(monkeypatch, tmp_path / "cache", CC=str(fake)) is None


def test_disabled_by_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "ENABLED", False)
    assert fresh_compile(monkeypatch, tmp_path) is None


@needs_kernel
def test_unwritable_cache_falls_back_to_the_temp_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(kernel.tempfile, "gettempdir", lambda: str(tmp_path))
    assert fresh_compile(monkeypatch, blocker) is not None
    assert list(tmp_path.glob("lmlab-kernels-*/lstm_kernel-*.so"))
