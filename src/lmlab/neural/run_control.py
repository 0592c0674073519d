"""What a training run does to its process: the settings it applies (threads, cuDNN's mode,
glibc's memory thresholds) and how it stops on a signal (Ctrl-C; SIGTERM under torchrun).

Used by :class:`lmlab.neural.trainer.Trainer`; see its docstring for when each applies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

import torch

from lmlab.neural.distributed import Dist
from lmlab.neural.heap import keep_freed_memory


def apply_process_settings(threads: int, device: torch.device) -> None:
    """The run's settings for the rest of the process (``process_settings=True``, what a
    command-line program wants): the thread count (when set), glibc's memory thresholds (no
    page faults on each step's large buffers) and, on CUDA, deterministic cuDNN."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def run_settings(threads: int, device: torch.device) -> Iterator[None]:
    """The run's thread count and, on CUDA, cuDNN's deterministic mode while the trainer
    computes (as ``torch.backends.cudnn.flags`` scopes cuDNN's flags); the caller's settings
    are back afterwards. Nothing changes where they are in force already
    (``process_settings=True``, or a nested call)."""
    before = torch.get_num_threads()
    cudnn = torch.backends.cudnn
    flags = (cudnn.deterministic, cudnn.benchmark)
    if threads and threads != before:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
        if (cudnn.deterministic, cudnn.benchmark) != flags:
            cudnn.deterministic, cudnn.benchmark = flags


class StopSignals:
    """A run's stop requests. First Ctrl-C: finish the current step, save, stop; a second one
    stops at once (KeyboardInterrupt from the handler).

    Under ``dist`` SIGTERM (torchrun's agent passes Ctrl-C on as it) does the same, and no
    signal stops at once: every rank must stop after the same step to save together
    (:meth:`agreed`). ``main``: this process prints the one-line notice."""

    def __init__(self, dist: Dist | None, main: bool) -> None:
        self.dist, self.main = dist, main
        self.requested = False
        self.in_step = False  # under dist: a stop requested on some rank, found by this step

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """The handlers, while the block runs (nothing off the main thread: Python runs
        handlers there only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.requested and self.dist is None:
                raise KeyboardInterrupt
            if not self.requested and self.main:
                again = "" if self.dist else " (Ctrl-C again to stop now)"
                sys.stderr.flush()  # (os.write: print may be inside a write of the bar's)
                os.write(2, f"\nlmlab: stopping after this step{again}\n".encode())
            self.requested = True

        signals = [signal.SIGINT] + ([signal.SIGTERM] if self.dist else [])
        previous = [signal.signal(s, handler) for s in signals]
        try:
            yield
        finally:
            for s, handler_before in zip(signals, previous, strict=True):
                signal.signal(s, handler_before)

    def agreed(self, device: torch.device, step: bool = False) -> bool:
        """Whether to stop here: a stop was requested (on any rank, under ``dist``: after a
        step, as that step's all-reduce of the loss found it (``in_step``), else by an
        all-reduce here). ``requested`` is only read: the handler may set it while an
        all-reduce returns."""
        if self.dist is None:
            return self.requested
        if step:
            return self.in_step
        return self.dist.any(self.requested, device)
