"""``lmlab demo``: models trained on built-in synthetic languages whose true entropy is known.

Two sources (see :mod:`lmlab.synth`):

* a random order-3 Markov source: n-grams of order >= 3 should approach the true perplexity, and
  smoothing decides how close they get on finite data;
* a long-range language where a key word fixes the word ``d`` positions later: every n-gram of
  order <= d is stuck at its best achievable perplexity, above the true one.

Each row shows the model's test perplexity next to the true perplexity of the source and the
best perplexity any n-gram model of that order could reach with infinite data. A small LSTM
(:data:`LSTM`, a few seconds on a CPU) is scored on the same test text by the same protocol: it
sees past any n-gram's horizon on the long-range language, while on the Markov source the 3-gram
is simply the right model. No model should beat the true perplexity by more than sampling noise:
one that did would be peeking at the word it predicts.

One more pair of rows reads the Markov source's sentences as plain text and scores it with a word
3-gram and a character 10-gram (:mod:`lmlab.tokenizers`): their per-token perplexities measure
different things, their bits per character of the same text compare (:mod:`lmlab.metrics`), and
the source's true entropy in bits per character is known too.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings

from lmlab.corpus import TokenStream, Vocabulary
from lmlab.errors import LmlabError, LmlabWarning
from lmlab.metrics import summarize
from lmlab.ngram.model import train_ngram
from lmlab.synth import LongRangeSource, MarkovSource, sample_splits

MIN_SENTENCES = 100  # fewer leave the held-out perplexities to chance

CHAR_ORDER = 10  # about three words of context: the Markov source's order in characters

# The demo's LSTM: small and briefly trained, so that the whole demo takes seconds.
LSTM = {"emsize": 16, "hidden": 64, "epochs": 3, "lr": 0.01}


def _rows(source, name: str, runs: list[tuple[int, str]], n_sentences: int, seed: int,
          neural: bool) -> list:
    # (train and test keep their seeds whether or not valid, which only the LSTM uses, is drawn)
    splits = sample_splits(source, {"train": n_sentences, "test": max(n_sentences // 10, 200),
                                    "valid": max(n_sentences // 20, 100)}, seed=seed)
    train = splits["train"].sentences
    vocab = Vocabulary.build(train)
    streams = {k: TokenStream.from_sentences(v.sentences, vocab) for k, v in splits.items()}
    test_stream = streams["test"]
    truth = {"true_perplexity": math.exp(source.entropy_nats()),
             "train_tokens": len(streams["train"]), "test_tokens": len(test_stream)}
    rows = []
    for order, smoothing in runs:
        start = time.perf_counter()
        model = train_ngram(stream=streams["train"], vocab=vocab, order=order,
                            smoothing=smoothing, k=0.1, verbose=False)
        result = summarize(model.logprobs(test_stream), test_stream)
        fallback = "*" if model.meta.get("warnings") else ""
        rows.append({"source": name, "model": f"{order}-gram {smoothing}{fallback}",
                     "perplexity": result.perplexity,
                     "best_ngram_perplexity": math.exp(source.ngram_entropy_nats(order)),
                     **truth, "seconds": time.perf_counter() - start})
    if neural:
        start = time.perf_counter()
        lm = _train_lstm(vocab, streams, seed)
        rows.append({"source": name, "model": f"LSTM 1x{LSTM['hidden']}",
                     "perplexity": summarize(lm.logprobs(test_stream), test_stream).perplexity,
                     "best_ngram_perplexity": None, **truth,
                     "seconds": time.perf_counter() - start})
    return rows


def _tokenization_rows(source, n_sentences: int, seed: int) -> list:
    """The Markov source's text scored by a word model and a character model: perplexity per
    token of each, and bits per character of the same raw text, beside the truth."""
    from lmlab.api import train_ngram as train_text

    splits = sample_splits(source, {"train": n_sentences, "test": max(n_sentences // 10, 200)},
                           seed=seed)
    train, test = ([" ".join(s) for s in splits[k].sentences] for k in ("train", "test"))
    true_nats = source.entropy_nats()
    rows = []
    for label, order, tokenizer in (("word", 3, "whitespace"), ("char", CHAR_ORDER, "char")):
        start = time.perf_counter()
        model = train_text(train, order=order, smoothing="mkn", tokenizer=tokenizer)
        r = model.perplexity(test)
        true_bpc = true_nats * splits["test"].n_tokens / r.characters / math.log(2)
        rows.append({"source": "markov-3 as text", "model": f"{label} {order}-gram mkn",
                     "perplexity": r.perplexity, "bits_per_character": r.bits_per_character,
                     "true_bits_per_character": true_bpc,
                     # the truth per token of this tokenization: its bits per character times
                     # the characters per token
                     "true_perplexity": 2 ** (true_bpc * r.characters / r.tokens),
                     "best_ngram_perplexity": None, "train_tokens": model.meta["tokens"],
                     "test_tokens": r.tokens, "seconds": time.perf_counter() - start})
    return rows


def _train_lstm(vocab: Vocabulary, streams: dict, seed: int):
    """The demo's LSTM trained on ``streams["train"]`` (validation: ``streams["valid"]``) with
    lmlab's trainer, its checkpoint in a temporary folder; the model, ready to score."""
    import tempfile
    from pathlib import Path

    from lmlab.neural.config import ModelConfig, RunConfig, TrainConfig
    from lmlab.neural.data import Corpus
    from lmlab.neural.lm import NeuralLM
    from lmlab.neural.trainer import Trainer

    config = RunConfig(ModelConfig(model="lstm", emsize=LSTM["emsize"], hidden=LSTM["hidden"],
                                   layers=1),
                       TrainConfig(epochs=LSTM["epochs"], bptt=20, batch_size=20, lr=LSTM["lr"],
                                   optimizer="adam", clip=1.0, seed=seed, device="cpu"))
    corpus = Corpus(vocab, streams["train"], streams["valid"], None, "(synthetic)")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, corpus, Path(tmp) / "lstm.pt", plot=False)
        try:
            trainer.train()
        finally:
            trainer.close()
    return NeuralLM(trainer.model, vocab, config)


def run_demo(n_sentences: int = 20000, seed: int = 0, as_json: bool = False,
             neural: bool = True) -> int:
    if not isinstance(n_sentences, int) or n_sentences < MIN_SENTENCES:
        raise LmlabError(f"--sentences must be an integer >= {MIN_SENTENCES}, got {n_sentences!r}")
    markov = MarkovSource(order=3, vocab_size=12, seed=seed, concentration=0.3)
    long_range = LongRangeSource(distance=4, n_keys=6, n_fillers=8, seed=seed)
    markov_runs = [(1, "mkn"), (2, "mkn"), (3, "mle"), (3, "addk"), (3, "katz"), (3, "wb"),
                   (3, "absdisc"), (3, "kn"), (3, "mkn"), (4, "mkn")]
    long_runs = [(n, "mkn") for n in (2, 3, 4, 5, 6)]
    rows = _rows(markov, "markov-3", markov_runs, n_sentences, seed, neural) + \
        _rows(long_range, "long-range-d4", long_runs, n_sentences, seed, neural)
    with warnings.catch_warnings():  # (fallback discounts: said below for every row)
        warnings.simplefilter("ignore", LmlabWarning)
        text_rows = _tokenization_rows(markov, n_sentences, seed)
    rows += text_rows
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    out = sys.stdout
    out.write(f"lmlab demo: synthetic languages with known entropy ({n_sentences} training "
              "sentences each; perplexity on held-out text)\n\n")
    out.write(f"{'source':<14} {'model':<14} {'perplexity':>10} {'best n-gram':>11} "
              f"{'true':>7}\n")
    for r in rows[:len(rows) - len(text_rows)]:
        best = r["best_ngram_perplexity"]
        out.write(f"{r['source']:<14} {r['model']:<14} {r['perplexity']:>10.3f} "
                  f"{'-' if best is None else f'{best:.3f}':>11} {r['true_perplexity']:>7.3f}\n")
    out.write("\n'best n-gram' is the lowest perplexity an n-gram of that order can reach with "
              "infinite data;\n'true' is the source's own perplexity. On the long-range "
              "language only order > 4 can see the key.\n"
              "* fallback discounts: on synthetic data some count-of-counts are empty, so "
              "discounts\n  could not be estimated for every order (see 'lmlab ngram train "
              "--help').\n")
    if neural:
        out.write(f"LSTM: 1 layer of {LSTM['hidden']} units, {LSTM['epochs']} epochs of Adam "
                  "with lmlab's trainer,\n  scored by the same protocol as the n-grams.\n")
    word, char = text_rows
    out.write(f"\nsame text, two tokenizations (markov-3 read as text): word 3-gram "
              f"{word['bits_per_character']:.3f} and char {CHAR_ORDER}-gram "
              f"{char['bits_per_character']:.3f} bits per character (true "
              f"{word['true_bits_per_character']:.3f});\n  per token their perplexities "
              f"({word['perplexity']:.3f} per word, {char['perplexity']:.3f} per character) do "
              "not compare, bits per character do.\n")
    return 0
