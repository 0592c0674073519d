"""Keep the memory a training step frees for the next step (glibc's malloc, Linux).

Why: every training step allocates and frees the same large tensors (the logits, their softmax
and gradient: 28 MB each for 700 tokens and a 10k vocabulary). glibc serves blocks from 128 KB up
with fresh ``mmap`` pages, and trims the top of its heap once 128 KB are free there, so each step
returns those pages to the kernel and the next faults every one of them in again: training a 2x200
LSTM LM (10k words) took 10,000-22,000 minor page faults and 18-42 ms of system time (both
threads) per 90-130 ms step, and none once the thresholds were raised (steps of 80-100 ms). Raising
glibc's mmap and trim thresholds makes freed blocks stay in the process for reuse; the resident
size stays at the step's peak, which training reaches every step anyway.

It is a process-wide setting (as ``torch.set_num_threads`` is), so a library never makes it
behind its caller's back: ``lmlab train`` and the ablation workers opt in
(``Trainer(..., process_settings=True)``); a Python program that trains with a large vocabulary
calls :func:`keep_freed_memory` itself for the same speed. ``LMLAB_KEEP_FREED_MEMORY=0`` leaves
glibc's defaults alone even then. Blocks larger than glibc's
largest mmap threshold (32 MiB on 64-bit), e.g. the logits of a 33k-word vocabulary, are still
mapped and unmapped each time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); whether they are raised.

    False where the C library is not glibc (``mallopt`` missing), on refusal, or when
    ``LMLAB_KEEP_FREED_MEMORY=0``."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("LMLAB_KEEP_FREED_MEMORY", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            # mallopt returns 1 on success; the mmap threshold first, so that a refusal leaves
            # the trim threshold at its default too
            _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
