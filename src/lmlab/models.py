"""Open any model file lmlab knows, by content: ARPA (plain or gzip), an lmlab n-gram model, or
a neural checkpoint.

Neural checkpoints (torch zip archives) load through :mod:`lmlab.neural.lm`, imported only for
them: n-gram loading never imports torch, so `lmlab ngram ...` and `lmlab eval model.arpa` start
fast.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.fileio import head_bytes

ZIP_MAGIC = b"PK\x03\x04"


def load_model(path: str | os.PathLike):
    """Load the model stored at ``path``; a one-line :class:`LmlabError` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise LmlabError("no such file", path)
    if path.is_dir():
        raise LmlabError("is a directory, expected a model file", path)
    from lmlab.ngram.model import is_ngram_file, load_ngram

    head = head_bytes(path, 256)
    if is_torch_archive(head):
        from lmlab.neural.lm import load_neural  # imports torch: only for checkpoints

        return load_neural(path)
    # A file that starts like a zip but is not a readable one is a truncated or corrupt lmlab
    # model: let load_ngram say so rather than "not a model".
    if is_ngram_file(path) or (head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path)):
        return load_ngram(path)
    head = head.lstrip()
    from lmlab.mixture import is_mixture_file, load_mixture

    if is_mixture_file(head):
        return load_mixture(path)
    if head.startswith(b"\\data\\"):
        from lmlab.ngram.arpa import read_arpa

        return read_arpa(path)
    raise LmlabError("not a model lmlab can read (expected an lmlab n-gram model, an ARPA "
                     "file or a neural checkpoint)", path)


def is_torch_archive(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts a ``torch.save`` zip archive, as lmlab's
    neural checkpoints are: its first member is ``<archive>/data.pkl``. Read without importing
    torch; a truncated checkpoint still has this first member, so it gets a checkpoint error."""
    if not head.startswith(ZIP_MAGIC) or len(head) < 30:
        return False
    name_len = int.from_bytes(head[26:28], "little")
    name = head[30:30 + name_len]
    return len(name) == name_len and name.endswith(b"/data.pkl")
