"""Open any model file lmlab knows, by content: ARPA (plain or gzip), an lmlab n-gram model
(``.lm`` or binary), a neural checkpoint or a mixture of any of these.

:func:`detect_format` is the one place that tells them apart; :func:`load_model` (and the
embedding tools) dispatch on it. Neural checkpoints (torch zip archives) load through
:mod:`lmlab.neural.lm`, imported only for them: n-gram loading never imports torch, so
`lmlab ngram ...` and `lmlab eval model.arpa` start fast.

Dependencies point one way: this module loads mixtures (their members are any models, so it
needs :func:`load_model` itself), :mod:`lmlab.mixture` never loads files.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.fileio import head_bytes, strip_bom

ZIP_MAGIC = b"PK\x03\x04"
BINARY_MAGIC = b"LMLABBIN"  # lmlab.ngram.binary's files start so (defined here: light to import)


def detect_format(path: str | os.PathLike) -> str | None:
    """What ``path`` (an existing file) holds, by content, not by name: ``"checkpoint"`` (a
    neural checkpoint, a torch zip archive, even truncated), ``"ngram"`` (an lmlab n-gram
    model), ``"binary"`` (an lmlab binary n-gram model, even truncated), ``"zip"`` (another zip
    archive, or a corrupt one), ``"mixture"`` (an lmlab mixture file), ``"arpa"`` (plain or
    gzip, a byte-order mark allowed) or None (none of these)."""
    head = head_bytes(path, 256)
    if head.startswith(BINARY_MAGIC) or (head and BINARY_MAGIC.startswith(head)):
        return "binary"
    if is_torch_archive(head):
        return "checkpoint"
    if head.startswith(ZIP_MAGIC):
        from lmlab.ngram.model import is_ngram_file

        return "ngram" if is_ngram_file(path) else "zip"
    head = strip_bom(head).lstrip()
    from lmlab.mixture import is_mixture_file

    if is_mixture_file(head):
        return "mixture"
    if head.startswith(b"\\data\\"):
        return "arpa"
    return None


def load_model(path: str | os.PathLike):
    """Load the model stored at ``path``; a one-line :class:`LmlabError` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise LmlabError("no such file", path)
    if path.is_dir():
        raise LmlabError("is a directory, expected a model file", path)
    kind = detect_format(path)
    if kind == "checkpoint":
        from lmlab.neural.lm import load_neural  # imports torch: only for checkpoints

        return load_neural(path)
    if kind == "binary":
        from lmlab.ngram.binary import load_binary

        return load_binary(path)
    # A file that starts like a zip but is not a readable one is a truncated or corrupt lmlab
    # model: let load_ngram say so rather than "not a model".
    if kind == "ngram" or (kind == "zip" and not zipfile.is_zipfile(path)):
        from lmlab.ngram.model import load_ngram

        return load_ngram(path)
    if kind == "mixture":
        return load_mixture(path)
    if kind == "arpa":
        from lmlab.ngram.arpa import read_arpa

        return read_arpa(path)
    raise LmlabError("not a model lmlab can read (expected an lmlab n-gram model, an ARPA "
                     "file, a neural checkpoint or a mixture file)", path)


def load_mixture(path: str | os.PathLike):
    """The :class:`~lmlab.mixture.Mixture` a mixture file describes, its members loaded."""
    from lmlab.mixture import Mixture, read_mixture_file

    paths, weights = read_mixture_file(path)
    return Mixture([load_model(p) for p in paths], weights, paths)


def interpolate(paths: list[str], valid: str | os.PathLike, iterations: int | None = None):
    """Load the models at ``paths``, tune weights on ``valid`` by EM (``lmlab interpolate``).
    Returns the :class:`~lmlab.mixture.Mixture`, the EM perplexity history and each member's
    own validation perplexity."""
    from lmlab.mixture import fit_mixture

    if len(paths) < 2:
        raise LmlabError("interpolation needs at least two models")
    mixture = fit_mixture([load_model(p) for p in paths], list(paths), valid, iterations)
    return mixture, mixture.em_perplexity, mixture.member_perplexity


def is_torch_archive(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts a ``torch.save`` zip archive, as lmlab's
    neural checkpoints are: its first member is ``<archive>/data.pkl``. Read without importing
    torch; a truncated checkpoint still has this first member, so it gets a checkpoint error."""
    if not head.startswith(ZIP_MAGIC) or len(head) < 30:
        return False
    name_len = int.from_bytes(head[26:28], "little")
    name = head[30:30 + name_len]
    return len(name) == name_len and name.endswith(b"/data.pkl")
