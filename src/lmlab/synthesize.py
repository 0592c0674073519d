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
skipped, so no line is empty. Tokens are the model's (a ``char`` model's characters, joined back
into text by its tokenizer); the last line may take the count past ``--tokens`` by up to
``MAX_WORDS``. A smaller ``--tokens`` with the same seed writes a prefix of the larger file.

Lines come in the order their sentences end, ``--streams`` of them being drawn side by
side: short sentences come first at the very start of the file, so its first few ``--streams``
lines are not a fair sample of sentence lengths (take held-out text from elsewhere in the file,
or from another seed: the seed chooses the sample, never the language).
"""

from __future__ import annotations

import os
import re
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError

SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
DEFAULT_STREAMS = 32768
MAX_STREAMS = 1 << 20  # (each holds a MAX_WORDS buffer: 2 GB at this many)
SYNTHETIC_LANGUAGE_SEED = 0  # the default synthetic language is one language; --seed samples it
MAX_WORDS = 250  # a sentence this long ends there


def parse_count(text: str, what: str = "--tokens") -> int:
    """``100M`` -> 100,000,000 (k, M, G or B; a decimal number works: ``2.5M``)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kKmMgGbB]?)\s*", str(text))
    value = Decimal(m.group(1)) * SUFFIXES[m.group(2).lower()] if m else Decimal(0)
    if value < 1 or value != value.to_integral_value():
        raise LmlabError(f"{what} must be a positive whole count such as 1000, 100M, 2.5k or "
                         f"1B, got {text!r}")
    return int(value)


def check_options(seed: int, streams: int) -> None:
    """One-line errors for what can be checked before a model is loaded or trained."""
    if seed < 0:
        raise LmlabError(f"--seed must be >= 0, got {seed}")
    if not 1 <= streams <= MAX_STREAMS:
        raise LmlabError(f"--streams must be between 1 and {MAX_STREAMS}, got {streams}")


def default_source_text(data_dir: str | None) -> Path | None:
    """The text :func:`default_source` trains on: WikiText-2's training text under ``data_dir``
    (else ``$LMLAB_DATA``) if it is there."""
    root = data_dir or os.environ.get("LMLAB_DATA")
    wt2 = Path(root) / "wikitext-2" / "train.txt" if root else None
    return wt2 if wt2 is not None and wt2.is_file() else None


def default_source(data_dir: str | None, say=print):
    """WikiText-2's MKN 5-gram if the corpus is there, else the synthetic language's 3-gram."""
    import warnings

    from lmlab.api import train_ngram
    from lmlab.errors import LmlabWarning
    from lmlab.synth import MarkovSource

    wt2 = default_source_text(data_dir)
    if wt2 is not None:
        say(f"source: MKN 5-gram trained on {wt2}")
        return train_ngram(wt2, order=5, smoothing="mkn")

    say("source: lmlab's synthetic Markov language (order 2, 200 words) through an MKN 3-gram "
        "(no $LMLAB_DATA/wikitext-2: give --model for another)")
    source = MarkovSource(order=2, vocab_size=200, seed=SYNTHETIC_LANGUAGE_SEED)
    sample = source.sample(20000, seed=SYNTHETIC_LANGUAGE_SEED)
    with warnings.catch_warnings():  # (fallback discounts on artificial data: expected here)
        warnings.simplefilter("ignore", LmlabWarning)
        return train_ngram(sample.sentences, order=3, smoothing="mkn")


def synthesize(model, output: str | os.PathLike, tokens: int, seed: int = 0,
               streams: int = DEFAULT_STREAMS, progress: bool = False) -> dict:
    """Write sentences sampled from ``model`` to ``output`` (atomically; ``.gz`` compresses)
    until ``tokens`` tokens; returns what was written."""
    from lmlab.fileio import atomic_output
    from lmlab.ngram.sample import sample_sentences

    check_options(seed, streams)
    words = np.array(model.vocab.itos, dtype=object)
    join = model.vocab.tokenizer.join  # (a char or subword model's tokens as text)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tokens, unit="tok", unit_scale=True, file=sys.stderr, leave=False)
    written = lines = empty = 0
    try:
        with atomic_output(output, "w") as f:
            batch: list[str] = []
            for sentence in sample_sentences(model, seed=seed, streams=streams,
                                             max_words=MAX_WORDS):
                if not len(sentence):  # (smoothing gives </s> after <s> some mass: no empty line)
                    empty += 1
                    if empty > 100 * streams + 10_000 and not lines:
                        raise LmlabError("the model samples only empty sentences")
                    continue
                batch.append(join(list(words[sentence])))
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
