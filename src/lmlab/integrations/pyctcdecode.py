"""Speech decoding with pyctcdecode over an lmlab n-gram model (``pip install lmlab[ctc]``).

:func:`build_ctcdecoder` mirrors ``pyctcdecode.build_ctcdecoder`` with any lmlab n-gram file (an
ARPA file, plain or gzip; an lmlab ``.lm`` model; an lmlab binary model) in place of a KenLM
model::

    from lmlab.integrations.pyctcdecode import build_ctcdecoder

    decoder = build_ctcdecoder(["", " ", "a", "b", ...], "lm.arpa", alpha=0.5, beta=1.0)
    text = decoder.decode(log_probs)          # log_probs: (frames, labels) CTC log-probabilities

The model is read through :mod:`lmlab.kenlm` (KenLM's query API, same scores and states as the
``kenlm`` module), and :class:`LanguageModel` is pyctcdecode's own ``LanguageModel`` (unigram
trie, partial-word and unknown-word scores, ``alpha``/``beta`` shallow fusion) with its states made
by that model: decoding gives the beams and scores pyctcdecode gives with ``kenlm`` on the same
ARPA file. One difference: without ``unigrams``, pyctcdecode reads them only from a file named
``*.arpa`` (its unigram lines with a backoff), this reads the vocabulary of any lmlab n-gram file.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from lmlab.errors import LmlabError
from lmlab.kenlm import Model, State

try:  # absolute import: the pyctcdecode package, not this module
    import pyctcdecode
    import pyctcdecode.language_model as _pyctc_lm
    from pyctcdecode.alphabet import Alphabet, verify_alphabet_coverage
    from pyctcdecode.constants import (
        DEFAULT_ALPHA,
        DEFAULT_BETA,
        DEFAULT_SCORE_LM_BOUNDARY,
        DEFAULT_UNK_LOGP_OFFSET,
        LOG_BASE_CHANGE_FACTOR,
    )
except ImportError as exc:  # a clear error when used, not when lmlab is imported
    pyctcdecode = None
    _MISSING = exc
    DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_UNK_LOGP_OFFSET = 0.5, 1.5, -10.0
    DEFAULT_SCORE_LM_BOUNDARY = True
    _Base: type = object
else:
    _MISSING = None
    _Base = _pyctc_lm.LanguageModel

__all__ = ["LanguageModel", "build_ctcdecoder"]


def _require_pyctcdecode() -> None:
    if pyctcdecode is None:
        raise LmlabError(f"speech decoding needs pyctcdecode ({_MISSING}): "
                         "pip install lmlab[ctc]")


def _open(model) -> Model:
    if isinstance(model, Model):
        return model
    if not isinstance(model, str | bytes | os.PathLike):
        raise LmlabError(f"expected an n-gram model file or an lmlab.kenlm.Model, got "
                         f"{type(model).__name__}")
    return Model(model)


class LanguageModel(_Base):
    """pyctcdecode's ``LanguageModel`` over an lmlab n-gram model: ``model`` is an
    :class:`lmlab.kenlm.Model` or the path of an n-gram file; the other arguments are
    pyctcdecode's. Only the state handling differs from pyctcdecode's class (which makes
    ``kenlm.State`` objects): states are :class:`lmlab.kenlm.State`."""

    def __init__(self, model, unigrams: Collection[str] | None = None,
                 alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
                 unk_score_offset: float = DEFAULT_UNK_LOGP_OFFSET,
                 score_boundary: bool = DEFAULT_SCORE_LM_BOUNDARY) -> None:
        _require_pyctcdecode()
        super().__init__(_open(model), unigrams, alpha=alpha, beta=beta,
                         unk_score_offset=unk_score_offset, score_boundary=score_boundary)

    def get_start_state(self) -> State:
        """``<s>`` when scoring sentence boundaries, else the empty context."""
        state = State()
        if self.score_boundary:
            self._kenlm_model.BeginSentenceWrite(state)
        else:
            self._kenlm_model.NullContextWrite(state)
        return state

    def _get_raw_end_score(self, start_state: State) -> float:
        """log10 p(</s> | start_state) when scoring sentence boundaries, else 0."""
        if not self.score_boundary:
            return 0.0
        return self._kenlm_model.BaseScore(start_state, "</s>", State())

    def score(self, prev_state: State, word: str,
              is_last_word: bool = False) -> tuple[float, State]:
        """pyctcdecode's fused score of ``word`` after ``prev_state`` (natural log, times
        ``alpha``, plus ``beta``; ``unk_score_offset`` added for a word outside the unigrams or
        the model; ``</s>`` included for the last word) and the state after ``word``."""
        model = self._kenlm_model
        out = State()
        log10 = model.BaseScore(prev_state, word, out)
        known = (not self._unigram_set or word in self._unigram_set) and word in model
        if not known:
            log10 += self.unk_score_offset
        if is_last_word:
            log10 = log10 + self._get_raw_end_score(out)
        return self.alpha * log10 * LOG_BASE_CHANGE_FACTOR + self.beta, out


def model_unigrams(model: Model) -> list[str]:
    """Every word of the model's vocabulary (``<unk>`` excepted), the unigrams pyctcdecode
    would read from the model's ARPA file."""
    return [w for w in model.vocab.itos if w in model]  # (`in` leaves out <unk>, as KenLM)


def build_ctcdecoder(labels: list[str], model_path=None,
                     unigrams: Collection[str] | None = None, alpha: float = DEFAULT_ALPHA,
                     beta: float = DEFAULT_BETA,
                     unk_score_offset: float = DEFAULT_UNK_LOGP_OFFSET,
                     lm_score_boundary: bool = DEFAULT_SCORE_LM_BOUNDARY):
    """A ``pyctcdecode.BeamSearchDecoderCTC`` for the CTC ``labels`` (blank ``""``, space
    ``" "``, characters or BPE pieces, as pyctcdecode's ``build_ctcdecoder``) with the lmlab
    n-gram model at ``model_path`` (an ARPA, ``.lm`` or lmlab binary file, or an
    :class:`lmlab.kenlm.Model`; None: no language model). ``unigrams`` default to the model's
    vocabulary. ``alpha``, ``beta``, ``unk_score_offset`` and ``lm_score_boundary`` are
    pyctcdecode's."""
    _require_pyctcdecode()
    language_model = None
    if model_path is not None:
        model = _open(model_path)
        if unigrams is None:
            unigrams = model_unigrams(model)
        language_model = LanguageModel(model, unigrams, alpha=alpha, beta=beta,
                                       unk_score_offset=unk_score_offset,
                                       score_boundary=lm_score_boundary)
    alphabet = Alphabet.build_alphabet(labels)
    if unigrams is not None:
        verify_alphabet_coverage(alphabet, unigrams)
    return pyctcdecode.BeamSearchDecoderCTC(alphabet, language_model)
