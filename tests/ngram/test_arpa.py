"""ARPA writing and reading: round trips, foreign files, and broken files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from lmlab.corpus import TokenStream, Vocabulary
from lmlab.errors import LmlabError, LmlabWarning
from lmlab.models import load_model
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.model import load_ngram, train_ngram

TRAIN = [s.split() for s in [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog",
    "the cat saw the dog", "on the mat sat a cat", "the log", "a dog sat"]]
TEST = [s.split() for s in ["the cat sat on the log", "a bird sat", "dog dog dog", ""]]


def fit(method="mkn", order=3):
    vocab = Vocabulary.build(TRAIN)
    return train_ngram(stream=TokenStream.from_sentences(TRAIN, vocab), vocab=vocab,
                       order=order, smoothing=method)


def score(model, sentences=TEST):
    return model.logprobs(TokenStream.from_sentences(sentences, model.vocab))


@pytest.mark.parametrize("method", ["mkn", "kn", "wb", "katz", "absdisc", "mle", "stupid"])
@pytest.mark.parametrize("suffix", [".arpa", ".arpa.gz"])
def test_round_trip_scores_identically(tmp_path, method, suffix):
    model = fit(method)
    path = tmp_path / f"m{suffix}"
    write_arpa(model, path)
    if suffix.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    again = load_model(path)
    a, b = score(model), score(again)
    assert np.array_equal(np.isneginf(a), np.isneginf(b))
    fin = np.isfinite(a)
    assert np.allclose(a[fin], b[fin], rtol=1e-7, atol=1e-7)


def test_native_format_round_trip_is_exact(tmp_path):
    for method in ("mkn", "addk"):
        model = fit(method)
        model.save(tmp_path / "m.lm")
        again = load_ngram(tmp_path / "m.lm")
        assert np.array_equal(score(model), score(again))
        assert again.vocab == model.vocab


def test_addk_has_no_arpa_form(tmp_path):
    with pytest.raises(LmlabError, match="cannot be written as ARPA"):
        write_arpa(fit("addk"), tmp_path / "x.arpa")
    assert not list(tmp_path.iterdir())


HAND = """
\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0 <unk> 0
-99 <s> -0.5
-0.5 </s>
-0.7 a -0.3
-0.9 b -0.2

\\2-grams:
-0.2 <s> a
-0.3 a b
-0.4 b </s>

\\end\\
"""


def test_hand_written_arpa_scores_by_the_backoff_rule(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(HAND)
    model = read_arpa(path)
    lp = model.log10probs(TokenStream.from_sentences([["a", "b"], ["b", "a"]], model.vocab))
    # a|<s> stored; b|a stored; </s>|b stored; b|<s> = bo(<s>) + p(b); a|b = bo(b) + p(a);
    # </s>|a = bo(a) + p(</s>)
    assert np.allclose(lp, [-0.2, -0.3, -0.4, -0.5 - 0.9, -0.2 - 0.7, -0.3 - 0.5])


def test_missing_context_is_inserted_with_backed_off_probability(tmp_path):
    """SRILM-pruned files can hold 'x y z' without 'x y'; scoring must not change."""
    text = HAND.replace("ngram 2=3", "ngram 2=3\nngram 3=1").replace(
        "\\end\\", "\\3-grams:\n-0.05 b a b\n\n\\end\\")
    path = tmp_path / "pruned.arpa"
    path.write_text(text)
    model = read_arpa(path)
    assert len(model.keys[1]) == 4  # 'b a' was added
    lp = model.log10probs(TokenStream.from_sentences([["b", "a", "b"]], model.vocab))
    # b|<s> = -0.5-0.9; a|<s> b = (no 3-gram '<s> b a', no 'b a' context stored originally):
    # bo(b) + p(a) = -0.2-0.7; b|b a = -0.05; </s>|a b = bo(a b)=0 + p(</s>|b) = -0.4
    assert np.allclose(lp, [-1.4, -0.9, -0.05, -0.4])


def test_file_without_unk_gets_kenlm_default(tmp_path, capsys):
    path = tmp_path / "nounk.arpa"
    path.write_text(HAND.replace("ngram 1=5", "ngram 1=4").replace("-1.0 <unk> 0\n", ""))
    with pytest.warns(LmlabWarning, match="no <unk> unigram"):
        model = read_arpa(path)
    assert model.logp[0][0] == -100.0
    assert capsys.readouterr() == ("", "")  # library code warns, never prints


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t.replace("\\data\\", "data"), "not an ARPA file"),
    (lambda t: t.replace("-0.3 a b", "-0.3 a"), "malformed 2-gram"),
    (lambda t: t.replace("-0.3 a b", "x.y a b"), "malformed number"),
    (lambda t: t.replace("-0.3 a b", "-0.3 a zebra"), "no unigram"),
    (lambda t: t.split("\\2-grams:")[0], "truncated"),
    (lambda t: t.replace("\\end\\", ""), "truncated"),
    (lambda t: t.replace("ngram 2=3", "ngram 2=4"), "promises 4 2-grams"),
    (lambda t: t.replace("-0.3 a b", "nan a b"), "invalid log10"),
    (lambda t: t.replace("-0.9 b -0.2", "-0.9 a -0.2"), "lists the unigram 'a' twice"),
    (lambda t: t.replace("-0.4 b </s>", "-0.4 a b"), "lists the 2-gram 'a b' twice"),
])
def test_broken_files_are_one_line_errors(tmp_path, mutate, message):
    path = tmp_path / "bad.arpa"
    path.write_text(mutate(HAND))
    with pytest.raises(LmlabError, match=message) as err:
        read_arpa(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_truncated_gzip_is_an_error(tmp_path):
    path = tmp_path / "m.arpa.gz"
    write_arpa(fit(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmlabError, match=str(path)):
        read_arpa(path)


def test_reads_plain_gzip_without_gz_suffix(tmp_path):
    path = tmp_path / "model.lm"
    path.write_bytes(gzip.compress(HAND.encode()))
    assert load_model(path).order == 2
