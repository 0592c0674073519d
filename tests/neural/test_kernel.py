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
                                  reason="no C compiler here: the kernel cannot be built")


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
    torch.manual_seed(0)
    model = VariantLSTM(5, hidden, 2, variant=variant, forget_bias=1.0)
    x = torch.randn(6, 3, 5, requires_grad=True)
    state = [torch.randn(2, 3, hidden), torch.randn(2, 3, hidden)]
    if variant == "fgr":
        state.append(torch.rand(2, 3, 3 * hidden))
    state = tuple(s.requires_grad_() for s in state)
    fast = run(model, x, state, True, monkeypatch)
    ops = run(model, x, state, False, monkeypatch)
    for k, (a, b) in enumerate(zip(fast, ops, strict=True)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=f"item {k}")


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
