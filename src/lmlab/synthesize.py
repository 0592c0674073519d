"""``lmlab data synthesize``: a corpus of any size sampled from an n-gram model, deterministic for
a seed, so a benchmark corpus of 100M or 1B tokens is a command, not a file.

    lmlab data synthesize -o big.txt --tokens 100M --seed 1 --model wt2-5.lm

The source is ``--model`` (any backoff-form n-gram lmlab reads: ``.lm``, binary, ARPA), else an
MKN 5-gram trained on ``$LMLAB_DATA/wikitext-2/train.txt`` when that exists, else lmlab's
synthetic Markov language (:mod:`lmlab.synth`) through an MKN 3-gram trained on a sample of it.
Sentences are drawn by :mod:`lmlab.ngram.sample` (exact backoff sampling, many sentences at once)
and written one per line until ``--tokens`` tokens (words plus one ``</s>`` per line, lmlab's
count) are reached. The same source, seed and ``--streams`` give the same file.

Empty sentences (a smoothed model gives ``</s>`` right after ``<s>`` some probability) are
skipped, so no line is empty. Lines come in the order their sentences end, ``--streams`` of them
being drawn side by side: short sentences come first at the very start of the file, so its
first few ``--streams`` lines are not a fair sample of sentence lengths (take held-out text from
elsewhere in the file, or from another seed).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError

SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
DEFAULT_STREAMS = 32768
MAX_WORDS = 250  # a sentence this long ends there


def parse_count(text: str, what: str = "--tokens") -> int:
    """``100M`` -> 100,000,000 (k, M, G or B; a decimal number works: ``2.5M``)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kKmMgGbB]?)\s*", str(text))
    if not m or float(m.group(1)) * SUFFIXES[m.group(2).lower()] < 1:
        raise LmlabError(f"{what} must be a positive count such as 1000, 100M or 1B, got {text!r}")
    return int(float(m.group(1)) * SUFFIXES[m.group(2).lower()])


def default_source(data_dir: str | None, seed: int, say=print):
    """WikiText-2's MKN 5-gram if the corpus is there, else the synthetic language's 3-gram."""
    from lmlab.ngram.model import train_ngram

    root = data_dir or os.environ.get("LMLAB_DATA")
    wt2 = Path(root) / "wikitext-2" / "train.txt" if root else None
    if wt2 is not None and wt2.is_file():
        say(f"source: MKN 5-gram trained on {wt2}")
        return train_ngram(wt2, order=5, smoothing="mkn")
    import warnings

    from lmlab.api import train_ngram as train_sentences
    from lmlab.errors import LmlabWarning
    from lmlab.synth import MarkovSource

    say("source: lmlab's synthetic Markov language (order 2, 200 words) through an MKN 3-gram "
        "(no $LMLAB_DATA/wikitext-2: give --model for another)")
    sample = MarkovSource(order=2, vocab_size=200, seed=seed).sample(20000, seed=seed)
    with warnings.catch_warnings():  # (fallback discounts on artificial data: expected here)
        warnings.simplefilter("ignore", LmlabWarning)
        return train_sentences(sample.sentences, order=3, smoothing="mkn")


def synthesize(model, output: str | os.PathLike, tokens: int, seed: int = 0,
               streams: int = DEFAULT_STREAMS, progress: bool = False) -> dict:
    """Write sentences sampled from ``model`` to ``output`` (atomically; ``.gz`` compresses)
    until ``tokens`` tokens; returns what was written."""
    from lmlab.fileio import atomic_output
    from lmlab.ngram.sample import sample_sentences

    if streams < 1:
        raise LmlabError(f"--streams must be >= 1, got {streams}")
    words = np.array(model.vocab.itos, dtype=object)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tokens, unit="tok", unit_scale=True, file=sys.stderr, leave=False)
    written = lines = 0
    try:
        with atomic_output(output, "w") as f:
            batch: list[str] = []
            for sentence in sample_sentences(model, seed=seed, streams=streams,
                                             max_words=MAX_WORDS):
                if not len(sentence):  # (smoothing gives </s> after <s> some mass: no empty line)
                    continue
                batch.append(" ".join(words[sentence]))
                written += len(sentence) + 1
                lines += 1
                if len(batch) >= 4096 or written >= tokens:
                    f.write("\n".join(batch) + "\n")
                    if bar is not None:
                        bar.update(min(written, tokens) - bar.n)
                    batch = []
                if written >= tokens:
                    break
    finally:
        if bar is not None:
            bar.close()
    return {"output": os.fspath(output), "tokens": written, "lines": lines, "seed": seed,
            "streams": streams}
