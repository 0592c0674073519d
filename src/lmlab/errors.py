"""User-facing errors.

Anything the user can cause (a missing file, a corrupt model, an option out of range) raises
:class:`LmlabError`. The CLI prints its message as one line and exits non-zero; a Python traceback
means a bug in lmlab, never a mistake of the user's.
"""

from __future__ import annotations

import os


class LmlabError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None) -> None:
        where = ""
        if path is not None:
            name = file_label(path)
            where = f"{name}:{line}: " if line is not None else f"{name}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


def file_label(path: str | os.PathLike) -> str:
    """How messages name a file: its path, or ``<stdin>`` for ``-`` (standard input)."""
    name = os.fspath(path)
    return "<stdin>" if name == "-" else name


def require(condition: bool, message: str) -> None:
    """Raise :class:`LmlabError` with ``message`` unless ``condition`` holds (option checks)."""
    if not condition:
        raise LmlabError(message)


class LmlabWarning(UserWarning):
    """Something worth a user's attention that does not stop the work (fallback discounts, text
    mostly outside the vocabulary). Library code warns through :mod:`warnings`; the CLI prints
    each as one ``lmlab: warning: ...`` line."""
