"""Open any model file lmlab knows, by content: ARPA (plain or gzip) or an lmlab n-gram model.

Neural checkpoints will register here too; n-gram loading must never import torch, so `lmlab
ngram ...` and `lmlab eval model.arpa` start fast.
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
    raise LmlabError("not a model lmlab can read (expected an lmlab n-gram model or an ARPA "
                     "file)", path)
