"""Relative-entropy pruning (Stolcke 1998), as SRILM's ``ngram -prune THRESHOLD``.

Works on any backoff-form model (an lmlab model or an ARPA file). Orders are visited from the
highest down to 2; within an order every n-gram (h, w) is judged against the model as it is then,
with the backoff normalisers of its context computed once::

    num(h) = 1 - sum_{w' stored after h} p(w'|h)    den(h) = 1 - sum_{w' stored after h} p(w'|h')
    bow'(h) = (num(h) + p(w|h)) / (den(h) + p(w|h'))          (the backoff if (h, w) were removed)
    dH = -P(h) [ p(w|h) log10(bow'(h) p(w|h') / p(w|h)) + num(h) log10(bow'(h) / bow(h)) ]

and removed when the relative change in perplexity 10^dH - 1 is below the threshold. P(h) is the
chain probability of the context (a leading ``<s>`` counts as ``</s>``, as in SRILM). An n-gram
that is the context of a kept longer n-gram stays. Afterwards every backoff weight is recomputed
so that each distribution sums to 1 again. All of it on whole arrays, one order at a time.
"""

from __future__ import annotations

import numpy as np

from lmlab.corpus import BOS_ID, EOS_ID
from lmlab.errors import LmlabError
from lmlab.ngram.arpa import ngram_word_ids, score_rows
from lmlab.ngram.prune import drop_pruned


def check_entropy_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise LmlabError(f"entropy pruning threshold must be a number >= 0 (a relative perplexity "
                         f"change such as 1e-8), got {threshold}")
    return threshold


def _context_logprobs(model) -> list[np.ndarray]:
    """Per order, log10 P(n-gram as a word sequence) by the chain rule over stored n-grams."""
    V = len(model.vocab)
    first = model.logp[0].copy()
    first[BOS_ID] = model.logp[0][EOS_ID]  # SRILM: the context <s> has the probability of </s>
    out = [first]
    for n in range(2, model.order + 1):
        out.append(out[-1][model.keys[n - 1] // V] + model.logp[n - 1])
    return out


def _normalisers(context: np.ndarray, n_contexts: int, logp: np.ndarray,
                 lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per context: 1 - mass of its stored followers, 1 - their mass in the lower order."""
    num = 1.0 - np.bincount(context, weights=10.0 ** logp, minlength=n_contexts)
    den = 1.0 - np.bincount(context, weights=10.0 ** lower, minlength=n_contexts)
    return num, den


def _lower_logprobs(keys, logp, bow, V, rows: np.ndarray) -> np.ndarray:
    """log10 p(w | h') for n-gram rows (h, w), h' = h without its first word."""
    if rows.shape[1] == 2:
        return logp[0][rows[:, 1]]
    return score_rows(keys, logp, bow, V, rows[:, 1:])


def entropy_prune(model, threshold: float):
    """A copy of ``model`` without the n-grams whose removal changes perplexity by less than
    ``threshold`` (relative), backoffs renormalised. ``threshold`` 0 prunes nothing."""
    from lmlab.ngram.model import NGramModel, require_backoff_form

    threshold = check_entropy_threshold(threshold)
    require_backoff_form(model, "entropy pruning needs one")
    if not model.normalised:
        raise LmlabError("entropy pruning needs normalised probabilities; stupid backoff scores "
                         "are not")
    V = len(model.vocab)
    keys, logp, bow = list(model.keys), list(model.logp), list(model.bow)
    keep = _kept(model, threshold) if threshold > 0 else [np.ones(len(k), dtype=bool)
                                                          for k in keys]
    pruned_keys, (new_logp, kept_bow) = drop_pruned(keys, [logp, bow], keep, V)
    pruned = NGramModel(model.vocab, pruned_keys, new_logp, kept_bow,  # (masking copied them)
                        {**model.meta, "entropy_pruned": threshold})
    renormalise_backoffs(pruned)
    return pruned


def _kept(model, threshold: float) -> list[np.ndarray]:
    """Per order, which n-grams stay: those whose removal would change perplexity by at least
    ``threshold`` (relative), and the contexts of kept longer ones; highest order first."""
    V, N = len(model.vocab), model.order
    keys, logp, bow = list(model.keys), list(model.logp), list(model.bow)
    rows = ngram_word_ids(model)
    context_logp = _context_logprobs(model)
    keep = [np.ones(len(k), dtype=bool) for k in keys]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for n in range(N, 1, -1):
            if len(keys[n - 1]) == 0:  # nothing stored at this order: the lower ones still are
                continue
            context = keys[n - 1] // V
            p_log = logp[n - 1]
            lower = _lower_logprobs(keys[:n - 1], logp[:n - 1], bow[:n - 1], V, rows[n - 1])
            num, den = _normalisers(context, len(keys[n - 2]), p_log, lower)
            num, den = num[context], den[context]
            old_bow = np.log10(num) - np.log10(den)
            new_bow = np.log10(num + 10.0 ** p_log) - np.log10(den + 10.0 ** lower)
            delta = -10.0 ** context_logp[n - 2][context] * (
                10.0 ** p_log * (lower + new_bow - p_log) + num * (new_bow - old_bow))
            prune = (10.0 ** delta - 1.0) < threshold  # nan (zero probabilities): kept
            if n < N:  # the context of a kept longer n-gram stays
                needed = np.zeros(len(keys[n - 1]), dtype=bool)
                needed[keys[n][keep[n]] // V] = True
                prune &= ~needed
            keep[n - 1] = ~prune
    return keep


def renormalise_backoffs(model) -> None:
    """Recompute ``model``'s backoff weights in place, lowest order first, so every context's
    distribution sums to 1 (a context with no stored followers gets backoff 1)."""
    V, keys, logp, bow = len(model.vocab), model.keys, model.logp, model.bow
    rows = ngram_word_ids(model)
    with np.errstate(divide="ignore", invalid="ignore"):
        for n in range(2, len(keys) + 1):
            context = keys[n - 1] // V
            lower = _lower_logprobs(keys[:n - 1], logp[:n - 1], bow[:n - 1], V, rows[n - 1])
            num, den = _normalisers(context, len(keys[n - 2]), logp[n - 1], lower)
            new = np.log10(np.maximum(num, 0.0)) - np.log10(den)
            has = np.bincount(context, minlength=len(keys[n - 2])) > 0
            ok = has & (den > 1e-12) & np.isfinite(new)
            bow[n - 2] = np.where(ok, new, np.where(has, bow[n - 2], 0.0))
