"""lmlab: train, evaluate, compare and dissect language models, from n-grams to LSTMs.

Every model answers the same question, log P(w_t | w_1..w_{t-1}), and every number is measured
the same way (see :mod:`lmlab.metrics`), so a 5-gram and an LSTM can be compared honestly::

    import lmlab
    lm = lmlab.train_ngram("train.txt", order=5, smoothing="mkn")
    lm.perplexity("test.txt").perplexity
    lm.next_words("the cat", k=5)

The names below load on first use (:pep:`562`), so ``import lmlab`` stays light and imports
no torch; torch loads only when a neural model is trained or opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lmlab.errors import LmlabError, LmlabWarning

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "train_ngram": "lmlab.api", "train": "lmlab.api", "load": "lmlab.api",
    "interpolate": "lmlab.api", "compare": "lmlab.api",
    "EvalResult": "lmlab.metrics", "TokenScore": "lmlab.scoring",
    "Vocabulary": "lmlab.corpus", "Comparison": "lmlab.comparison", "Mixture": "lmlab.mixture",
}

__all__ = ["Comparison", "EvalResult", "LmlabError", "LmlabWarning", "Mixture", "TokenScore",
           "Vocabulary", "__version__", "compare", "interpolate", "load", "train", "train_ngram"]

if TYPE_CHECKING:
    from lmlab.api import compare, interpolate, load, train, train_ngram
    from lmlab.comparison import Comparison
    from lmlab.corpus import Vocabulary
    from lmlab.metrics import EvalResult
    from lmlab.mixture import Mixture
    from lmlab.scoring import TokenScore


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
