"""Speech decoding with pyctcdecode over lmlab n-grams (``lmlab.integrations.pyctcdecode``): the
same CTC log-probabilities decoded with pyctcdecode + ``kenlm`` and with pyctcdecode + lmlab on the
same ARPA file give the same beams (text, word frames) and scores (within 1e-4)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import lmlab
from lmlab.errors import LmlabError
from lmlab.integrations import pyctcdecode as ctc
from lmlab.ngram.arpa import write_arpa
from lmlab.ngram.binary import write_binary
from tests.test_docs_examples import python_blocks, run_blocks

TOL = 1e-4
PYCTC_MISSING = "pyctcdecode is not installed: pip install lmlab[ctc] (or pyctcdecode)"
KENLM_MISSING = "the kenlm Python module is not installed: pip install kenlm (or .[test])"
LABELS = ["", " "] + list("abcdefghijklmnopqrstuvwxyz'")
WORDS = "the cat sat on a mat dog ran to red big hat it is was".split()
SPOKEN = ["the cat sat on the mat", "a big red dog ran to the cat", "it was the hat",
          "the dog is on a mat"]


@pytest.fixture(scope="module")
def pyctc():
    return pytest.importorskip("pyctcdecode", reason=PYCTC_MISSING)


@pytest.fixture(scope="module")
def kenlm():
    return pytest.importorskip("kenlm", reason=KENLM_MISSING)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict:
    """A 3-gram MKN model lmlab estimates from a seeded text over WORDS, as ARPA, .lm, binary."""
    rng = np.random.default_rng(19)
    sentences = [" ".join(rng.choice(WORDS, size=rng.integers(1, 8))) for _ in range(300)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data: fallback discounts
        model = lmlab.train_ngram(sentences + SPOKEN, order=3)
    d = tmp_path_factory.mktemp("ctc")
    write_arpa(model, d / "tiny.arpa")
    model.save(d / "tiny.lm")
    write_binary(model, d / "tiny.bin")
    return {"arpa": d / "tiny.arpa", "lm": d / "tiny.lm", "binary": d / "tiny.bin"}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def random_logits(seed: int, frames: int = 40, scale: float = 3.0) -> np.ndarray:
    return log_softmax(np.random.default_rng(seed).normal(size=(frames, len(LABELS))) * scale)


def spelled_logits(text: str, seed: int, noise: float = 1.5) -> np.ndarray:
    """A noisy CTC matrix whose best path spells ``text``: per character two frames peaked on it
    and a blank frame, each frame with a runner-up character, so the language model matters."""
    rng = np.random.default_rng(seed)
    rows = []
    for ch in text:
        for target in (ch, ch, ""):
            row = rng.normal(size=len(LABELS)) * noise
            row[LABELS.index(target)] += 6.0
            row[rng.integers(2, len(LABELS))] += 4.5
            rows.append(row)
    return log_softmax(np.array(rows))


def assert_same_beams(theirs, mine, logits, **options) -> None:
    a = theirs.decode_beams(logits, **options)
    b = mine.decode_beams(logits, **options)
    assert [x[0] for x in b] == [x[0] for x in a]  # texts, in order
    assert [x[2] for x in b] == [x[2] for x in a]  # word frames
    for x, y in zip(a, b, strict=True):
        assert abs(x[3] - y[3]) <= TOL and abs(x[4] - y[4]) <= TOL, (x[0], x[3:], y[3:])
    options.pop("prune_history", None)  # decode() has no such option
    assert mine.decode(logits, **options) == theirs.decode(logits, **options)


def decoders(pyctc, kenlm_path, lmlab_path, **options):
    theirs = pyctc.build_ctcdecoder(LABELS, str(kenlm_path), **options)
    mine = ctc.build_ctcdecoder(LABELS, lmlab_path, **options)
    return theirs, mine


@pytest.mark.parametrize("fmt, options", [
    ("arpa", dict(alpha=0.5, beta=1.0)),
    ("arpa", dict(alpha=1.5, beta=0.0, unk_score_offset=-5.0)),
    ("arpa", dict(alpha=0.8, beta=2.0, lm_score_boundary=False)),
    ("lm", dict(alpha=0.5, beta=1.0)),
    ("binary", dict(alpha=0.8, beta=2.0, lm_score_boundary=False)),
])
def test_tiny_model_same_beams_as_kenlm(pyctc, kenlm, tiny_models, fmt, options):
    """lmlab reads the ARPA kenlm reads, or the same model as .lm or lmlab binary."""
    theirs, mine = decoders(pyctc, tiny_models["arpa"], tiny_models[fmt], **options)
    try:
        for seed in range(3):
            assert_same_beams(theirs, mine, random_logits(seed))
        assert_same_beams(theirs, mine, random_logits(7, frames=25), beam_width=8,
                          prune_history=True)
        for seed, text in enumerate(SPOKEN):
            assert_same_beams(theirs, mine, spelled_logits(text, seed))
        assert mine.decode(spelled_logits(SPOKEN[0], 0, noise=0.3)) == SPOKEN[0]
    finally:
        theirs.cleanup()
        mine.cleanup()


def test_reference_arpa_same_beams_as_kenlm(pyctc, kenlm, kenlm_reference, tmp_path):
    """KenLM's own PTB 3-gram (lmplz); kenlm reads it decompressed (pyctcdecode takes unigrams
    only from a plain ``.arpa``), lmlab the gzip file; unigrams from the model on both sides."""
    gz = kenlm_reference / "ptb-valid-UNK.o3.arpa.gz"
    plain = tmp_path / "ptb.o3.arpa"
    with gzip.open(gz, "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    theirs, mine = decoders(pyctc, plain, gz, alpha=0.6, beta=1.2)
    try:
        for seed in range(2):
            assert_same_beams(theirs, mine, random_logits(100 + seed, frames=30))
        for seed, text in enumerate(["the company said it expects", "stock prices fell sharply",
                                     "mr. brown 's bank"]):
            assert_same_beams(theirs, mine, spelled_logits(text.replace(".", ""), seed))
    finally:
        theirs.cleanup()
        mine.cleanup()


def test_language_model_and_loaded_model(pyctc, tiny_models):
    model = lmlab.kenlm.Model(tiny_models["lm"])
    lm = ctc.LanguageModel(model, ctc.model_unigrams(model), alpha=1.0, beta=0.0)
    assert isinstance(lm, pyctc.language_model.AbstractLanguageModel) and lm.order == 3
    start = lm.get_start_state()
    score, state = lm.score(start, "the")
    out = lmlab.kenlm.State()
    assert score == pytest.approx(model.BaseScore(start, "the", out) / np.log10(np.e))
    assert state == out
    decoder = ctc.build_ctcdecoder(LABELS, model)
    try:
        assert decoder.decode(spelled_logits(SPOKEN[1], 1, noise=0.3)) == SPOKEN[1]
    finally:
        decoder.cleanup()
    no_lm = ctc.build_ctcdecoder(LABELS)
    try:
        assert no_lm.decode(spelled_logits("big hat", 2, noise=0.3)) == "big hat"
    finally:
        no_lm.cleanup()


def test_module_imports_the_real_pyctcdecode(pyctc):
    assert ctc.pyctcdecode is pyctc and hasattr(ctc.pyctcdecode, "BeamSearchDecoderCTC")
    assert ctc.__name__ == "lmlab.integrations.pyctcdecode"


def test_bad_model_argument(pyctc, tmp_path):
    with pytest.raises(LmlabError, match="no such file"):
        ctc.build_ctcdecoder(LABELS, tmp_path / "missing.arpa")
    with pytest.raises(LmlabError, match="n-gram model file"):
        ctc.build_ctcdecoder(LABELS, 3)


def test_missing_pyctcdecode_is_a_one_line_error():
    code = ("import sys; sys.modules['pyctcdecode'] = None\n"
            "from lmlab.integrations.pyctcdecode import build_ctcdecoder, LanguageModel\n"
            "from lmlab.errors import LmlabError\n"
            "for call in (lambda: build_ctcdecoder(['', 'a']), lambda: LanguageModel('x')):\n"
            "    try:\n        call()\n    except LmlabError as e:\n        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("pip install lmlab[ctc]" in line for line in lines)


def test_docs_example_runs(pyctc, tmp_path, monkeypatch, capsys):
    """The example of docs/ngram.md's "Speech decoding with pyctcdecode" runs as written."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "ngram.md"
    section = doc.read_text(encoding="utf-8").split("## Speech decoding with pyctcdecode")[1]
    (tmp_path / "section.md").write_text(section.split("\n## ")[0], encoding="utf-8")
    blocks = python_blocks(tmp_path / "section.md")
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    ns = run_blocks(blocks, "docs/ngram.md (pyctcdecode)")
    ns["decoder"].cleanup()
    assert capsys.readouterr().out.startswith("the cat sat\n'the cat sat': acoustic")
