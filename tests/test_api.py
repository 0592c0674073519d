"""The Python front door (``import lmlab``): every number equals what the CLI prints for the same
model and text, the examples in docstrings run, and bad input raises the CLI's one-line error."""

from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

import lmlab
from lmlab.errors import LmlabError, LmlabWarning
from tests.cli_helpers import ok
from tests.conftest import random_sentences, write_lines


def _cli_json(capsys, *argv):
    return json.loads(ok(capsys, *argv))


def test_import_is_light_and_lazy():
    code = ("import sys, lmlab; lmlab.load; lmlab.train_ngram; lmlab.train; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_public_names():
    for name in ("train_ngram", "train", "load", "interpolate", "compare", "LmlabError",
                 "EvalResult", "TokenScore", "__version__"):
        assert name in dir(lmlab) and getattr(lmlab, name) is not None
    assert lmlab.LmlabError is LmlabError
    with pytest.raises(AttributeError):
        lmlab.no_such_name  # noqa: B018


def test_compare_function_survives_the_cli_importing_its_module():
    import lmlab.cli  # registers every command, importing their modules

    lmlab.cli.build_parser()
    assert callable(lmlab.compare) and not isinstance(lmlab.compare, type(lmlab))


@pytest.mark.parametrize("module", ["lmlab.scoring", "lmlab.api", "lmlab"])
def test_docstring_examples_run(module):
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LmlabWarning)  # tiny data: fallback discounts
        result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and (result.attempted > 0 or module == "lmlab")


@pytest.fixture(scope="module")
def fresh_corpus(tmp_path_factory):
    """A corpus no other test uses: its own seed, words and sizes."""
    d = tmp_path_factory.mktemp("fresh")
    words = [f"v{i}x" for i in range(57)]
    write_lines(d / "train.txt", random_sentences(101, 700, words, max_len=14))
    write_lines(d / "valid.txt", random_sentences(102, 80, words, max_len=14))
    write_lines(d / "test.txt", random_sentences(103, 90, words + ["unseen1", "unseen2"],
                                                 max_len=14, allow_empty=True))
    return d


def _same_as_cli(capsys, lm, path, text):
    """The API's numbers for model file ``path`` equal `lmlab eval/score/next/generate`'s."""
    r = lm.perplexity(text)
    cli = _cli_json(capsys, "eval", path, text, "--json")
    for key in ("tokens", "oov", "sentences", "logprob", "perplexity", "perplexity_excl_oov",
                "cross_entropy_bits", "cross_entropy_nats"):
        assert r.to_dict()[key] == cli[key], key
    assert r.cross_entropy == cli["cross_entropy_nats"]
    assert r.bits_per_token == cli["cross_entropy_bits"]
    first = open(text, encoding="utf-8").readline().split() or ["the"]
    rows = _cli_json(capsys, "score", path, *first, "--json")
    assert [t.to_dict() for t in lm.token_logprobs(" ".join(first))] == rows
    assert lm.logprob(first) == pytest.approx(sum(row["logprob"] for row in rows), abs=1e-12)
    nxt = _cli_json(capsys, "ngram", "next", path, *first[:2], "-k", "4", "--json")
    assert [(w, p) for w, p in lm.next_words(first[:2], k=4)] == \
        [(row["word"], row["prob"]) for row in nxt]
    text_out = ok(capsys, "generate", path, "--words", "12", "--seed", "3", "--temperature",
                  "0.9")
    assert lm.generate(12, seed=3, temperature=0.9) == text_out.splitlines()


def test_ngram_api_equals_cli_on_an_unseen_corpus(capsys, fresh_corpus, tmp_path):
    lm = lmlab.train_ngram(fresh_corpus / "train.txt", order=4, smoothing="mkn")
    path = tmp_path / "m.lm"
    lm.save(path)
    ok(capsys, "ngram", "train", fresh_corpus / "train.txt", "--order", "4", "-o",
       tmp_path / "cli.lm")
    # byte for byte, whatever the clock said (zip members were dated when written: two saves
    # a second apart differed)
    assert (tmp_path / "cli.lm").read_bytes() == path.read_bytes()
    _same_as_cli(capsys, lm, path, fresh_corpus / "test.txt")
    _same_as_cli(capsys, lmlab.load(path), path, fresh_corpus / "test.txt")


def test_ngram_api_equals_cli_on_ptb(capsys, tmp_path):
    from lmlab.datasets import find_corpus

    ptb = find_corpus("ptb")
    if ptb is None:
        pytest.skip("needs the PTB corpus: set LMLAB_DATA to the corpora folder")
    lm = lmlab.train_ngram(ptb / "train.txt", order=5, smoothing="mkn")
    lm.save(tmp_path / "ptb5.lm")
    _same_as_cli(capsys, lm, tmp_path / "ptb5.lm", ptb / "test.txt")
    assert round(lm.perplexity(ptb / "test.txt").perplexity, 2) == 141.19  # KenLM's


def test_sentences_in_memory_equal_the_file(fresh_corpus):
    lines = (fresh_corpus / "train.txt").read_text(encoding="utf-8").splitlines()
    from_file = lmlab.train_ngram(fresh_corpus / "train.txt", order=3, smoothing="kn")
    as_str = lmlab.train_ngram(lines, order=3, smoothing="kn")
    as_tokens = lmlab.train_ngram((line.split() for line in lines), order=3, smoothing="kn")
    test = fresh_corpus / "test.txt"
    test_lines = test.read_text(encoding="utf-8").splitlines()
    want = from_file.perplexity(test)
    for lm in (as_str, as_tokens):
        assert lm.vocab == from_file.vocab
        assert lm.perplexity(test) == want
        assert lm.perplexity(test_lines) == want
    assert sum(from_file.logprob(s) for s in test_lines) == pytest.approx(want.logprob)


@pytest.mark.parametrize("smoothing", ["addk", "stupid", "wb", "katz"])
def test_every_model_kind_has_the_methods(smoothing, fresh_corpus, tmp_path):
    lm = lmlab.train_ngram(fresh_corpus / "train.txt", order=3, smoothing=smoothing,
                           add_k=0.5, backoff_factor=0.3)
    words = lm.next_words("v1x", k=3)
    assert len(words) == 3 and all(w != "<s>" for w, _ in words)
    assert words == sorted(words, key=lambda wp: -wp[1])
    assert len(lm.generate(5, seed=0)) >= 1
    path = tmp_path / "m.lm"
    lm.save(path)
    assert lmlab.load(path).perplexity(fresh_corpus / "test.txt") == \
        lm.perplexity(fresh_corpus / "test.txt")
    if smoothing != "stupid":  # a distribution: the next-word probabilities sum to 1
        p = np.exp(lm.next_logprobs(["v1x"]))
        assert p.sum() == pytest.approx(1.0, abs=1e-9)


def test_arpa_and_mixture(capsys, fresh_corpus, tmp_path):
    a = lmlab.train_ngram(fresh_corpus / "train.txt", order=2, smoothing="wb")
    b = lmlab.train_ngram(fresh_corpus / "train.txt", order=4, smoothing="mkn")
    a.save(tmp_path / "a.lm")
    ok(capsys, "ngram", "train", fresh_corpus / "train.txt", "--order", "4", "--arpa",
       tmp_path / "b.arpa")
    arpa = lmlab.load(tmp_path / "b.arpa")
    valid = fresh_corpus / "valid.txt"
    mix = lmlab.interpolate([a, arpa], valid=valid)
    ok(capsys, "interpolate", tmp_path / "a.lm", tmp_path / "b.arpa", "--valid", valid, "-o",
       tmp_path / "cli.mix")
    cli_mix = lmlab.load(tmp_path / "cli.mix")
    assert mix.weights.tolist() == cli_mix.weights.tolist()
    assert mix.em_perplexity[-1] < min(mix.member_perplexity)
    mix.save(tmp_path / "api.mix")
    _same_as_cli(capsys, mix, tmp_path / "api.mix", fresh_corpus / "test.txt")
    unsaved = lmlab.interpolate([a, b], valid=valid)
    with pytest.raises(LmlabError, match="member 2 of the mixture has no file"):
        unsaved.save(tmp_path / "x.mix")
    b.save(tmp_path / "b.lm")  # as the message says: then the mixture saves
    unsaved.save(tmp_path / "x.mix")
    assert lmlab.load(tmp_path / "x.mix").perplexity(valid) == unsaved.perplexity(valid)
    table = lmlab.compare([a, tmp_path / "b.arpa", mix], fresh_corpus / "test.txt")
    cli = _cli_json(capsys, "compare", tmp_path / "a.lm", tmp_path / "b.arpa",
                    tmp_path / "api.mix", "--text", fresh_corpus / "test.txt", "--json")
    assert [m.perplexity for m in table.scores] == [m["perplexity"] for m in cli["models"]]
    cli_text = ok(capsys, "compare", tmp_path / "a.lm", tmp_path / "b.arpa", tmp_path / "api.mix",
                  "--text", fresh_corpus / "test.txt")
    assert str(table).splitlines()[:2] == cli_text.splitlines()[:2]  # header and column names


def test_neural_api_equals_cli(capsys, fresh_corpus, tmp_path):
    ckpt = tmp_path / "runs" / "gru.pt"
    nn = lmlab.train("gru", data=fresh_corpus, output=ckpt, hidden=16, emsize=16, layers=1,
                     epochs=1, max_steps=25, seed=3)
    assert ckpt.exists()
    _same_as_cli(capsys, nn, ckpt, fresh_corpus / "test.txt")
    loaded = lmlab.load(ckpt)
    assert loaded.perplexity(fresh_corpus / "test.txt") == nn.perplexity(fresh_corpus /
                                                                         "test.txt")
    nn.save(tmp_path / "weights.pt")  # weights only: still a model every command reads
    _same_as_cli(capsys, lmlab.load(tmp_path / "weights.pt"), tmp_path / "weights.pt",
                 fresh_corpus / "test.txt")


def test_train_without_output_writes_nothing_and_leaves_the_process_alone(fresh_corpus, tmp_path,
                                                                        monkeypatch):
    import random

    import torch

    monkeypatch.chdir(tmp_path)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    want = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    nn = lmlab.train("rnn_tanh", data=fresh_corpus, hidden=8, emsize=8, layers=1, epochs=1,
                     max_steps=5, threads=1)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == want
    assert torch.get_num_threads() == threads
    assert list(tmp_path.iterdir()) == []
    assert math.isfinite(nn.perplexity(["v1x v2x"]).perplexity)


def test_errors_are_the_cli_errors(capsys, tmp_path, fresh_corpus):
    from tests.cli_helpers import fails

    missing = tmp_path / "missing.lm"
    with pytest.raises(LmlabError) as err:
        lmlab.load(missing)
    assert fails(capsys, "eval", missing, fresh_corpus / "test.txt") == f"lmlab: error: {err.value}"
    lm = lmlab.train_ngram(["a b"], order=2, smoothing="wb")
    with pytest.raises(LmlabError, match="reserved token '<s>'"):
        lm.logprob("a <s> b")
    with pytest.raises(LmlabError, match="unknown training option 'hiden'"):
        lmlab.train("lstm", data=fresh_corpus, hiden=10)
    with pytest.raises(LmlabError, match="resume=True continues the run saved in output="):
        lmlab.train("lstm", data=fresh_corpus, resume=True)
    with pytest.raises(LmlabError) as err:
        lmlab.train("lstm", data=tmp_path / "nowhere")
    assert fails(capsys, "train", "lstm", "--data", tmp_path / "nowhere", "-o",
                 tmp_path / "x.pt") == f"lmlab: error: {err.value}"
    with pytest.raises(LmlabError, match="give its path"):
        lmlab.compare([lm], ["a b"])
    with pytest.raises(LmlabError, match="unknown smoothing"):
        lmlab.train_ngram(["a b"], smoothing="nope")
    with pytest.raises(LmlabError, match="k must be >= 1"):
        lm.next_words("a", k=0)


def test_mostly_oov_text_warns(fresh_corpus):
    lm = lmlab.train_ngram(fresh_corpus / "train.txt", order=2, smoothing="kn")
    with pytest.warns(LmlabWarning, match=r"75\.0% of the words \(3 of 4\)"):
        lm.perplexity(["v1x foo bar baz"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm.perplexity(["v1x v2x v3x v4x foo"])  # 20%: not above the threshold


def test_mostly_oov_validation_text_warns_in_interpolation(fresh_corpus):
    a = lmlab.train_ngram(fresh_corpus / "train.txt", order=1, smoothing="wb")
    b = lmlab.train_ngram(fresh_corpus / "train.txt", order=2, smoothing="wb")
    with pytest.warns(LmlabWarning, match="outside the model's vocabulary"):
        lmlab.interpolate([a, b], valid=["v1x foo bar", "baz v2x qux"])


def test_api_resume_keeps_the_run_options(fresh_corpus, tmp_path):
    ckpt = tmp_path / "r.pt"
    lmlab.train("gru", fresh_corpus, output=ckpt, hidden=8, emsize=8, layers=1, epochs=2,
                max_steps=4, seed=2)
    resumed = lmlab.train("gru", fresh_corpus, output=ckpt, resume=True, max_steps=0)
    whole = lmlab.train("gru", fresh_corpus, output=tmp_path / "w.pt", hidden=8, emsize=8,
                        layers=1, epochs=2, seed=2)
    assert resumed.config.model.hidden == 8 and resumed.meta["step"] == whole.meta["step"]
    for p, q in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert (p == q).all()


def test_library_does_not_print(capsys, fresh_corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = lmlab.train_ngram(["a b", "b a"], order=3, smoothing="mkn")  # fallback discounts
        lm.perplexity(["a b"])
    out, err = capsys.readouterr()
    assert out == "" and err == ""
