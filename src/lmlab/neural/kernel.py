"""The compiled kernel of lmlab's LSTM cell (``lstm_kernel.c``): building, loading, its buffers.

Why: a step of the cell is one matrix product plus about ten elementwise ops on ``[B, H]`` tensors;
as torch ops each costs a Python call and a pass over memory, which at the sizes of word-level LMs
costs as much as the product. ``lstm_kernel.c`` does a step's elementwise work in one pass (one
call, through ctypes), split over torch's threads once a step is big enough; and it runs the
whole time loop of a layer, products included, in one call (its own small matrix-product code on
packed weights, AVX2 + FMA; :func:`loop_available`). Measured by ``benchmarks/lstm_cells.py``.

How: on first use the C file is compiled with the system C compiler (``$CC``, else ``cc``) into
``$LMLAB_CACHE`` (default ``~/.cache/lmlab``) under a name that hashes the source, the flags,
the compiler and the CPU, so a rebuild happens only when one of them changes. It tries, in order,
``-O3 -march=native`` with glibc's vector math library (libmvec), without it, and plain ``-O3``,
each first with OpenMP (``-fopenmp``) and then without (then everything runs on one thread).
When nothing compiles (no compiler, not Linux/macOS) or ``LMLAB_LSTM_KERNEL=0`` is set, or for
anything but contiguous float32 tensors on the CPU, the cell uses its torch-op path, which
computes the same function (tests compare both with the float64 reference).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("lstm_kernel.c")
ENABLED = os.environ.get("LMLAB_LSTM_KERNEL", "1") != "0"
# Tried in order; -fopenmp lets the kernel split its work over torch's threads. It is tried only
# where torch itself runs on GNU OpenMP (libgomp already loaded): then the kernel's libgomp is that
# same library (same soname), so there is one OpenMP runtime and one thread pool, not two.
_BASE_FLAGS = (
    (["-O3", "-march=native", "-DLMLAB_LIBMVEC", "-fPIC", "-shared"], ["-lmvec", "-lm"]),
    (["-O3", "-march=native", "-fPIC", "-shared"], ["-lm"]),
    (["-O3", "-fPIC", "-shared"], ["-lm"]),
)
_FLAG_SETS = [(flags + omp, libs) for flags, libs in _BASE_FLAGS for omp in (["-fopenmp"], [])]
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet


class Plan(ctypes.Structure):
    """Mirror of ``lstm_plan`` in lstm_kernel.c: one layer's buffers and variant for a pass."""

    _fields_ = [(n, ctypes.c_int) for n in ("B", "H", "G", "flags", "co", "ci", "cf", "cz")] + [
        (n, ctypes.c_void_p) for n in ("A", "C", "S", "OUT", "DG", "p_o", "p_i", "p_f", "dc", "db",
                                       "dp_o", "dp_i", "dp_f", "Wgg", "a0", "da")]


_HAS_I, _HAS_F, _HAS_O, _CIFG, _Z_TANH, _H_TANH, _PEEP = 1, 2, 4, 8, 16, 32, 64


def _cache_dir() -> Path:
    """``$LMLAB_CACHE/kernels`` (default ``~/.cache/lmlab/kernels``); the temp folder where the
    home folder is unknown or read-only."""
    root = os.environ.get("LMLAB_CACHE") or os.environ.get("XDG_CACHE_HOME")
    try:
        if not root:
            root = os.path.join(Path.home(), ".cache")
        if not os.environ.get("LMLAB_CACHE"):
            root = os.path.join(root, "lmlab")
        folder = Path(root) / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except (OSError, RuntimeError):
        pass
    user = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.gettempdir()) / f"lmlab-kernels-{user}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else its name."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _torch_runs_on_libgomp() -> bool:
    """Whether this process has GNU OpenMP loaded (torch's Linux wheels bring and load it)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:
        return False


def _compile() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    source = SOURCE.read_bytes()
    errors = []
    flag_sets = _FLAG_SETS if _torch_runs_on_libgomp() else [
        (flags, libs) for flags, libs in _FLAG_SETS if "-fopenmp" not in flags]
    for flags, libs in flag_sets:
        key = hashlib.sha256(b"\0".join(
            [source, " ".join(flags + libs).encode(), version.encode(),
             _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:16]
        try:
            target = _cache_dir() / f"lstm_kernel-{key}.so"
        except OSError as err:
            errors.append([str(err)])
            continue
        if not target.exists():
            try:
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
                os.close(fd)
                proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, *libs],
                                      capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    os.unlink(tmp)
                    errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
                    continue
                os.replace(tmp, target)  # atomic: concurrent processes see all or nothing
            except (OSError, subprocess.SubprocessError) as err:
                errors.append([str(err)])
                continue
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as err:
            errors.append([str(err)])
            continue
        if lib.lstm_kernel_version() == 12:
            return lib
    if errors:
        warnings.warn(f"lmlab: could not compile the LSTM cell kernel ({errors[-1][0]}); "
                      f"using the slower torch-op path", RuntimeWarning, stacklevel=3)
    return None


def library() -> ctypes.CDLL | None:
    """The compiled kernel (compiling it on first call), or None where it cannot be built."""
    global _lib
    if _lib is False:
        _lib = _compile() if ENABLED else None
        if _lib is not None:
            for fn in (_lib.lstm_forward_step, _lib.lstm_backward_step):
                fn.restype = ctypes.c_int
            ptr, i = ctypes.c_void_p, ctypes.c_int
            _lib.lstm_forward_step.argtypes = [ptr, i, ptr, i]
            _lib.lstm_backward_step.argtypes = [ptr, i, ptr, ptr, i]
            _lib.lstm_forward_seq.restype = _lib.lstm_backward_seq.restype = i
            _lib.lstm_forward_seq.argtypes = [ptr, i, ptr, ptr, ptr, ptr, i]
            _lib.lstm_backward_seq.argtypes = [ptr, i, ptr, ptr, ptr, ptr, i, i, i, i]
            _lib.lstm_loop_available.restype = i
            _lib.transpose.restype = None
            _lib.transpose.argtypes = [ptr, i, i, ptr, i]
    return _lib


def step_threads(B: int, H: int) -> int:
    """Threads for one per-step kernel call: torch's, once a step has enough elements to pay for
    a parallel region (B*H >= 8192, e.g. B=20, H=650), else 1."""
    return torch.get_num_threads() if B * H >= 8192 else 1


def transposed(x: Tensor) -> Tensor:
    """``x.t().contiguous()`` for a contiguous 2-D float32 CPU tensor, by the kernel's tiled
    transpose where it is built (torch's strided copy is several times slower at [700, 2600])."""
    lib = library()
    if lib is None or not usable(x) or not x.is_contiguous():
        return x.t().contiguous()
    rows, cols = x.shape
    out = x.new_empty(cols, rows)
    lib.transpose(x.data_ptr(), rows, cols, out.data_ptr(), torch.get_num_threads())
    return out


_workspaces = threading.local()


def workspace(spec) -> Tensor:
    """Room for a layer's packed recurrent weights (``G * H8 * H`` floats, fgr ``9 * H8 * H``
    more, ``H8`` = H rounded up to a multiple of 8) for the sequence loop: one buffer per Python
    thread, kept and grown as needed, so that training does not allocate (and page in) a few MB per
    layer and step."""
    need = (spec.G + (9 if spec.fgr else 0)) * -(-spec.H // 8) * 8 * spec.H
    buf = getattr(_workspaces, "buf", None)
    if buf is None or buf.numel() < need:
        buf = _workspaces.buf = torch.empty(need)
    return buf


def loop_available() -> bool:
    """Whether the kernel has its whole-sequence loop (built with AVX2 and FMA vector code)."""
    lib = library()
    return lib is not None and bool(lib.lstm_loop_available())


def usable(x: Tensor) -> bool:
    """Whether the kernel computes this layer: float32 on the CPU, and the kernel compiled."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and library() is not None


def make_plan(spec, A: Tensor, C: Tensor, S: Tensor | None, out: Tensor | None, p: Tensor | None,
              dG: Tensor | None = None, dc: Tensor | None = None, db: Tensor | None = None,
              dp: Tensor | None = None, w_gg: Tensor | None = None, a0: Tensor | None = None,
              da: Tensor | None = None) -> Plan:
    """The kernel's view of one layer's buffers (all contiguous float32; they must outlive the
    plan). Backwards, ``dG, dc`` and the accumulators ``db [G*H]`` and ``dp`` (like ``p``) are
    needed; for fgr's sequence loop ``w_gg`` and ``a0`` (forward, None: no gate history) or
    ``da``. (Called twice per layer and training step, where the step's large products have just
    flushed the caches and Python code runs several times slower than warm, about 60 against 4
    microseconds here: hence pointer arithmetic, and the variant's constants computed once.)"""
    consts = _plan_constants(spec)
    B, H = A.shape[1], spec.H
    peep = [None, None, None]  # p_o, p_i, p_f
    d_peep = [None, None, None]
    if spec.peep:
        base, d_base, row_bytes = _ptr(p), _ptr(dp), 4 * H
        for row, slot in enumerate(consts[2]):
            peep[slot] = base + row * row_bytes
            if d_base is not None:
                d_peep[slot] = d_base + row * row_bytes
    return Plan(B, H, spec.G, consts[0], *consts[1], _ptr(A), _ptr(C), _ptr(S), _ptr(out),
                _ptr(dG), *peep, _ptr(dc), _ptr(db), *d_peep, _ptr(w_gg), _ptr(a0), _ptr(da))


def _ptr(t: Tensor | None) -> int | None:
    """The data address of a contiguous float32 tensor for the kernel (None stays None)."""
    if t is None:
        return None
    assert t.dtype == torch.float32 and t.is_contiguous()
    return t.data_ptr()


_PLAN_CONSTANTS: dict[tuple[str, int], tuple[int, list[int], list[int]]] = {}


def _plan_constants(spec) -> tuple[int, list[int], list[int]]:
    """A spec's variant flags, the column of each gate (o, i, f, z; -1 if absent) and, for each
    peephole row, its slot in (p_o, p_i, p_f); computed once per variant and width."""
    key = (spec.variant, spec.H)
    consts = _PLAN_CONSTANTS.get(key)
    if consts is None:
        has = spec.has
        flags = ((_HAS_I if has["i"] else 0) | (_HAS_F if has["f"] else 0)
                 | (_HAS_O if has["o"] else 0) | (_CIFG if spec.cifg else 0)
                 | (_Z_TANH if spec.z_tanh else 0) | (_H_TANH if spec.h_tanh else 0)
                 | (_PEEP if spec.peep else 0))
        cols = [spec.col[g].start if has[g] else -1 for g in ("o", "i", "f", "z")]
        slots = ["oif".index(g) for g in spec.peep]
        consts = _PLAN_CONSTANTS[key] = (flags, cols, slots)
    return consts
