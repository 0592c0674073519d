"""``lmlab train --compile``: ``torch.compile`` for a model, eager as the fallback.

What is compiled (chosen by measurement, docs/performance.md): in a model with lmlab's variant
LSTM cells, each cell's step (:func:`lmlab.neural.cells.variant_step`: one step's gate arithmetic
becomes one generated kernel forwards and one backwards; the per-step loop and the large products
stay in Python and torch, so a graph does not depend on the sequence length and compiles in
seconds). Cells of the ``np`` variant run on torch's fused LSTM (cuDNN on CUDA) and are not
compiled; a model without a compiled cell (fused LSTM, GRU, RNN, NNLM, np) gets its whole
``forward`` compiled. The weights, the state dict and checkpoints are those of the eager model.

Any failure, at the first use or later (no C compiler for inductor on the CPU, an unsupported
Python, an op dynamo cannot trace, ...), puts the model back on its eager path for good, with one
:class:`lmlab.errors.LmlabWarning` naming the reason; the call that failed is rerun eagerly.
"""

from __future__ import annotations

import time
import types
import warnings
from collections.abc import Callable

from lmlab.errors import LmlabError, LmlabWarning


class _Group:
    """The compiled parts of one model: the first failure of any of them reverts them all."""

    def __init__(self, undo: Callable[[], None]) -> None:
        self.undo = undo
        self.failed: str | None = None

    def fail(self, err: BaseException) -> None:
        if self.failed is not None:
            return
        reason = " ".join(str(err).split()) or type(err).__name__
        if len(reason) > 300:
            reason = reason[:297] + "..."
        self.failed = f"{type(err).__name__}: {reason}"
        self.undo()
        warnings.warn(f"--compile: torch.compile failed ({self.failed}); running eagerly",
                      LmlabWarning, stacklevel=3)


class Compiled:
    """``torch.compile(fn)``, calling ``fn`` itself once its group has failed."""

    def __init__(self, fn: Callable, group: _Group) -> None:
        import torch

        self.fn = fn
        self.group = group
        self.compiled = torch.compile(fn)

    def __call__(self, *args, **kwargs):
        if self.group.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except LmlabError:
                raise  # the user's mistake (a bad state shape...), not the compiler's
            except Exception as err:  # noqa: BLE001 - any failure: eager, with one warning
                self.group.fail(err)
        return self.fn(*args, **kwargs)


def _own_code(method: types.MethodType) -> types.MethodType:
    """``method`` with a code object of its own. Dynamo keeps its compiled graphs, and its limit
    of 8 recompilations, per code object: one shared by every cell (of every model in the
    process) ran out after a few variants, and past the limit torch silently runs eagerly."""
    fn = method.__func__
    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__,
                             fn.__closure__)
    return types.MethodType(own, method.__self__)


def compiled_cells(model) -> list:
    """The cells of ``model`` whose step ``--compile`` compiles: every VariantLSTM but np's."""
    from lmlab.neural import cells

    return [m for m in model.modules() if isinstance(m, cells.VariantLSTM)
            and not (m.variant == "np" and cells.FUSED_NP)]


def compile_model(model, probe: Callable[[], object] | None = None) -> tuple[str, float | None]:
    """Compile ``model`` in place (see the module docstring), then run ``probe`` (the first use:
    e.g. one training step's forward and backward, which compiles both) and time it. Returns
    ``(what was compiled, the probe's seconds)``; the seconds are None without a probe or when
    compiling failed (then one LmlabWarning was issued and the model runs eagerly)."""
    targets = compiled_cells(model)

    def undo() -> None:
        for cell in targets:
            cell.step_fn = None
        model.__dict__.pop("forward", None)

    group = _Group(undo)
    what = f"the LSTM cell step ({len(targets)} cell(s))" if targets else "the model's forward"
    try:
        if targets:
            for cell in targets:
                cell.step_fn = Compiled(_own_code(cell.eager_step), group)
        else:
            model.forward = Compiled(model.forward, group)
    except Exception as err:  # noqa: BLE001 - e.g. torch.compile unsupported on this Python
        group.fail(err)
        return what, None
    if probe is None:
        return what, None
    tic = time.perf_counter()
    try:
        probe()
    except Exception as err:  # noqa: BLE001
        group.fail(err)
    return what, (None if group.failed else time.perf_counter() - tic)


def is_compiled(model) -> bool:
    """Whether ``model`` (still) runs a compiled part."""
    return (isinstance(model.__dict__.get("forward"), Compiled)
            or any(isinstance(c.step_fn, Compiled) for c in compiled_cells(model)))
