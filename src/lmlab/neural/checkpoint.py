"""Neural checkpoints: one file holding everything needed to evaluate a model or resume its run
bit for bit.

A checkpoint is a ``torch.save`` zip archive of a plain dict (format tag ``FORMAT``, ``VERSION``):
``config`` (the full RunConfig dict), ``vocab`` (the id -> word list), ``model`` (state_dict),
``optimizer`` (state_dict), ``schedule`` (learning rate, best validation, counters), ``rng``
(python, numpy, torch CPU and CUDA generator states, as tensors and lists), ``progress`` (epoch,
step, position within the epoch, carried hidden state, running sums), ``history`` (metrics).

Only tensors, dicts, lists, tuples, str, int, float, bool and None go in, so loading uses
``torch.load(weights_only=True)``: opening a checkpoint never unpickles arbitrary objects.

Saving is atomic (:func:`lmlab.fileio.atomic_output`): the archive is written to ``.NAME.tmp``
beside the target, fsynced and renamed over it. A process killed half way leaves the previous
checkpoint intact; the stale temp file is simply overwritten by the next save.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from lmlab.errors import LmlabError
from lmlab.fileio import atomic_output

FORMAT = "lmlab-neural-checkpoint"
# 2: holds a tokenizer (an older lmlab would read its text as whitespace words); a whitespace
# model's checkpoint is still version 1
VERSION = 2
REQUIRED = ("config", "vocab", "model")


def temp_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` writes before renaming (fixed, so a leftover is reused)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (plus the format tag and version) to ``path`` atomically (missing
    folders are created; the file gets the umask's permissions, see :func:`atomic_output`)."""
    path = Path(path)
    data = plain({"format": FORMAT, "version": VERSION if "tokenizer" in payload else 1,
                  **payload})
    try:
        with atomic_output(path, "wb", temp=temp_path(path)) as f:
            torch.save(data, f)
    except OSError as err:  # the temp file is already gone (atomic_output removes it)
        raise LmlabError(f"cannot write checkpoint ({err.strerror or err})", path) from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint; a one-line :class:`LmlabError` for anything unusable."""
    path = Path(path)
    if not path.exists():
        raise LmlabError("no such file", path)
    if path.is_dir():
        raise LmlabError("is a directory, expected a checkpoint file", path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise LmlabError("not a readable lmlab checkpoint (truncated or corrupt file?): not "
                             "a PyTorch zip archive", path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        text = str(err)
        if "Weights only load failed" in text or "WeightsUnpickler" in text:
            lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
            detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln
                           or "WeightsUnpickler" in ln), lines[0] if lines else "")
            detail = detail.removeprefix("WeightsUnpickler error:").strip().split(". ")[0]
            raise LmlabError("refusing to load: the file holds Python objects other than "
                             f"tensors and plain data ({detail})", path) from None
        raise LmlabError("not a readable lmlab checkpoint (truncated or corrupt file?): "
                         f"{_first_line(err)}", path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LmlabError("a PyTorch file but not an lmlab checkpoint", path)
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise LmlabError(f"checkpoint format version {version!r} is newer than this lmlab "
                         f"reads ({VERSION}); upgrade lmlab", path)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise LmlabError(f"incomplete checkpoint (missing {', '.join(missing)})", path)
    return data


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    line = line.split(". This is an internal")[0]
    return line if len(line) <= 160 else line[:157] + "..."


_PLAIN = (bool, int, float, str, type(None))


def plain(obj, where: str = "checkpoint"):
    """``obj`` with only what ``torch.load(weights_only=True)`` accepts without allow-listing:
    tensors, dicts, lists, tuples, str, int, float, bool, None (str/int/float subclasses such as
    ``torch.__version__`` or numpy scalars become the plain type). Anything else is a bug."""
    if isinstance(obj, torch.Tensor):
        return obj
    if type(obj) in _PLAIN:
        return obj
    if isinstance(obj, dict):
        items = [(plain(k, where), plain(v, f"{where}[{k!r}]")) for k, v in obj.items()]
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, list | tuple):  # a namedtuple becomes a plain tuple
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, np.generic):
        return obj.item()
    for kind in (bool, int, float, str):  # subclasses, e.g. torch.__version__
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError(f"{where}: {type(obj).__name__} cannot go in a checkpoint")


def get_rng_state() -> dict:
    """Every generator lmlab's training touches, as tensors/lists (weights_only-safe)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
    }


def set_rng_state(rng: dict) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only where CUDA is in use)."""
    py = rng["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(rng["torch"].cpu())
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all that :func:`get_rng_state` saves)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_cpu(obj):
    """A deep copy of ``obj`` with every tensor cloned to the CPU (for in-memory snapshots)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return _rebuild(obj, [to_cpu(v) for v in obj])
    return obj


def to_device(obj, device: torch.device):
    """``obj`` with every tensor moved to ``device`` (hidden states on resume)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return _rebuild(obj, [to_device(v, device) for v in obj])
    return obj


def _rebuild(like, items: list):
    if hasattr(like, "_fields"):  # a namedtuple
        return type(like)(*items)
    return type(like)(items)
