"""``lmlab.kenlm``, KenLM's Python query API, against the ``kenlm`` package on the same ARPA files:
every score within 1e-4 log10, every ngram_length and oov equal, states equal where kenlm's are."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from lmlab import kenlm as lk
from lmlab.errors import LmlabError

KENLM_MISSING = "the kenlm Python module is not installed: pip install kenlm (or .[test])"
TOL = 1e-4

# Hand-made ARPAs. TINY: backoffs written as 0 both for n-grams that are contexts and for ones
# that are not (state minimisation), a <unk> entry with backoff 0. SRI: n-grams a longer one ends
# with are missing ("b c", "b c d", "c d", "</s> a b"), which KenLM fills with blank entries (the
# padding words give its probing hash table room for them).
TINY = """\\data\\
ngram 1=6
ngram 2=5
ngram 3=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.7\t</s>
-0.6\ta\t-0.3
-0.8\tb\t-0.2
-0.9\tc

\\2-grams:
-0.3\t<s> a\t-0.1
-0.4\ta b\t0
-0.5\tb c
-0.2\tb </s>
-0.6\t<s> b\t0

\\3-grams:
-0.1\t<s> a b
-0.05\ta b c

\\end\\
"""


def _sri_arpa() -> str:
    pad = [f"w{i}" for i in range(40)]
    sections = [
        ["-1.0\t<unk>", "-99\t<s>\t-0.5", "-0.7\t</s>", "-0.6\ta\t-0.3", "-0.8\tb\t-0.2",
         "-0.9\tc\t-0.25", "-1.1\td\t-0.35"] + [f"-2.0\t{w}\t-0.1" for w in pad],
        ["-0.3\t<s> a\t-0.1", "-0.4\ta b\t-0.15", "-0.2\tb </s>\t-0.05"]
        + [f"-1.0\t{w} </s>\t-0.01" for w in pad],
        ["-0.05\ta b c\t-0.07"] + [f"-0.5\t{w} </s> a\t-0.02" for w in pad[:30]],
        ["-0.01\ta b c d"] + [f"-0.3\t{w} </s> a b" for w in pad[:25]],
    ]
    head = "".join(f"ngram {n}={len(s)}\n" for n, s in enumerate(sections, 1))
    body = "".join(f"\n\\{n}-grams:\n" + "\n".join(s) + "\n" for n, s in enumerate(sections, 1))
    return "\\data\\\n" + head + body + "\n\\end\\\n"


NO_UNK = TINY.replace("ngram 1=6", "ngram 1=5").replace("-1.0\t<unk>\t0\n", "")

ODD = ["", "   ", "a", "a b c", "a b c a b c", "x y", "zz1 zz2 zz3", "<s>", "a <s> b", "</s>",
       "a </s> b", "<unk> a", "b b b b", "b c", "x b c", "a b c d", "x a b c d", "w1 </s> a b c d",
       "a\u00a0b c", "a\x1cb", " a \t b\n", "é ü 中文", "a b c " * 2000]


@pytest.fixture(scope="module")
def kenlm():
    return pytest.importorskip("kenlm", reason=KENLM_MISSING)


@pytest.fixture(scope="module")
def tiny_arpas(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kenlm_api")
    out = {}
    for name, text in {"tiny": TINY, "sri": _sri_arpa(), "no_unk": NO_UNK}.items():
        out[name] = d / f"{name}.arpa"
        out[name].write_text(text, encoding="utf-8")
    return out


def _load(path) -> lk.Model:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a file without <unk> warns; not what is tested here
        return lk.Model(path)


def assert_same(theirs, mine, sentences, full=True):
    """score, full_scores and perplexity of every sentence, every bos/eos combination."""
    for s in sentences:
        for bos, eos in itertools.product([True, False], repeat=2):
            assert mine.score(s, bos=bos, eos=eos) == pytest.approx(
                theirs.score(s, bos=bos, eos=eos), abs=TOL), (s[:60], bos, eos)
            if not full:
                continue
            a = list(theirs.full_scores(s, bos=bos, eos=eos))
            b = list(mine.full_scores(s, bos=bos, eos=eos))
            assert [x[1:] for x in b] == [x[1:] for x in a], (s[:60], bos, eos)
            assert all(abs(x[0] - y[0]) <= TOL for x, y in zip(a, b, strict=True)), s[:60]
        assert mine.perplexity(s) == pytest.approx(theirs.perplexity(s), rel=TOL * 2.31)


def assert_same_states(kenlm, theirs, mine, sentences, bos=True):
    """The state API word by word (then </s>): same scores, lengths, OOV flags; and the states
    fall into the same equality classes (equal exactly where kenlm's are)."""
    ks, ko, ms, mo = kenlm.State(), kenlm.State(), lk.State(), lk.State()
    classes_k: dict = {}
    classes_m: dict = {}
    pairs = []
    for s in sentences:
        if bos:
            theirs.BeginSentenceWrite(ks)
            mine.BeginSentenceWrite(ms)
        else:
            theirs.NullContextWrite(ks)
            mine.NullContextWrite(ms)
        for w in s.split() + ["</s>"]:
            a = theirs.BaseFullScore(ks, w, ko)
            b = mine.BaseFullScore(ms, w, mo)
            assert abs(a.log_prob - b.log_prob) <= TOL, (s[:60], w)
            assert (a.ngram_length, a.oov) == (b.ngram_length, b.oov), (s[:60], w)
            assert mine.BaseScore(ms, w, lk.State()) == pytest.approx(a.log_prob, abs=TOL)
            ks, ko, ms, mo = ko, ks, mo, ms
            kc, mc = ks.__copy__(), ms.__copy__()
            pairs.append((classes_k.setdefault(kc, len(classes_k)),
                          classes_m.setdefault(mc, len(classes_m))))
    # one class of kenlm's states <-> one class of ours: the same partition
    assert len(set(pairs)) == len(classes_k) == len(classes_m)


@pytest.mark.parametrize("name", ["tiny", "sri", "no_unk"])
def test_hand_made_arpas_match_kenlm(kenlm, tiny_arpas, name):
    theirs = kenlm.Model(str(tiny_arpas[name]))
    mine = _load(tiny_arpas[name])
    assert mine.order == theirs.order
    assert_same(theirs, mine, ODD)
    assert_same_states(kenlm, theirs, mine, [s for s in ODD if len(s) < 100])
    assert_same_states(kenlm, theirs, mine, ODD[:12], bos=False)


@pytest.fixture(scope="module")
def ptb_sentences(data_root) -> list[str]:
    path = data_root / "ptb" / "test.txt"
    if not path.exists():
        pytest.skip(f"PTB test text not found in {data_root}")
    lines = path.read_text(encoding="utf-8").splitlines()
    unk = [line.replace("<unk>", "UNK") for line in lines]  # as the reference models were made
    return unk + lines[:200] + ["", "zzz qqq", " ".join(unk[:300])]


@pytest.mark.parametrize("name", ["ptb-valid-UNK.o3.arpa.gz", "ptb-valid-UNK.o5.arpa.gz",
                                  "ptb-valid-UNK.o5.prune01111.arpa.gz"])
def test_reference_arpas_match_kenlm(kenlm, kenlm_reference, ptb_sentences, name):
    path = kenlm_reference / name
    theirs, mine = kenlm.Model(str(path)), lk.Model(path)
    assert mine.order == theirs.order
    assert_same(theirs, mine, ptb_sentences)
    assert_same_states(kenlm, theirs, mine, ptb_sentences[:1500])


def test_lmlab_written_arpa_and_model_match_kenlm(kenlm, ptb_unk, ptb_sentences, tmp_path):
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.model import train_ngram

    model = train_ngram(ptb_unk / "valid.txt", order=4, smoothing="mkn")
    write_arpa(model, tmp_path / "m.arpa")
    model.save(tmp_path / "m.lm")
    theirs = kenlm.Model(str(tmp_path / "m.arpa"))
    sentences = ptb_sentences[:1200] + ptb_sentences[-3:]
    for mine in (lk.Model(tmp_path / "m.arpa"), lk.Model(tmp_path / "m.lm")):
        assert_same(theirs, mine, sentences)
        assert_same_states(kenlm, theirs, mine, sentences[:600])


def test_api_surface(kenlm, tiny_arpas):
    theirs = kenlm.Model(str(tiny_arpas["tiny"]))
    mine = lk.Model(str(tiny_arpas["tiny"]))
    assert issubclass(lk.LanguageModel, lk.Model)
    assert lk.LanguageModel(str(tiny_arpas["tiny"])).order == 3
    assert mine.path == theirs.path and repr(mine) == repr(theirs)
    for word in ["a", "c", "</s>", "<s>", "<unk>", "zz", b"a", ""]:
        assert (word in mine) == (word in theirs), word
    r = mine.BaseFullScore(lk.State(), "zz", lk.State())
    assert (r.ngram_length, r.oov) == (1, True)
    assert repr(r) == repr(theirs.BaseFullScore(kenlm.State(), "zz", kenlm.State()))
    assert isinstance(mine.score("a b"), float)
    a, b = lk.State(), lk.State()
    assert a == b and hash(a) == hash(b)  # a fresh State is the empty context, as in kenlm
    mine.BeginSentenceWrite(a)
    assert a != b and a > b  # shorter states order first
    with pytest.raises(TypeError):
        mine.score(None)
    with pytest.raises(TypeError):
        mine.BaseScore(a, b"a", b)


def test_works_without_the_kenlm_package(tiny_arpas):
    code = ("import sys; sys.modules['kenlm'] = None\n"
            "import lmlab.kenlm as k\n"
            f"m = k.Model({str(tiny_arpas['tiny'])!r})\n"
            "s = m.score('a b c')\n"
            "assert abs(s - -1.15) < 1e-6, s\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_models_without_backoff_form_are_errors(tmp_path, tiny_arpas):
    ckpt = tmp_path / "nn.pt"  # what a torch checkpoint's first zip member looks like
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("nn/data.pkl", b"not really")
    with pytest.raises(LmlabError, match="neural checkpoint has no backoff form"):
        lk.Model(ckpt)
    mix = tmp_path / "mix.json"
    mix.write_text('{"format": "lmlab-mixture", "models": ["tiny.arpa", "tiny.arpa"], '
                   '"weights": [0.5, 0.5]}', encoding="utf-8")
    with pytest.raises(LmlabError, match="mixture has no backoff form"):
        lk.Model(mix)
    from lmlab.ngram.model import train_ngram

    text = tmp_path / "t.txt"
    text.write_text("a b c\na b\nc a\n", encoding="utf-8")
    addk = train_ngram(text, order=2, smoothing="addk")
    addk.save(tmp_path / "addk.lm")
    with pytest.raises(LmlabError, match="not a backoff n-gram model"):
        lk.Model(tmp_path / "addk.lm")
    with pytest.raises(LmlabError, match="no such file"):
        lk.Model(tmp_path / "missing.arpa")



def test_order_one_model_scores_like_lmlab(tmp_path):
    """KenLM itself refuses unigram models; lmlab.kenlm scores them (the state is always empty)."""
    import lmlab

    lm = lmlab.train_ngram(["a b c", "b c a", "c c"], order=1, smoothing="wb")
    lm.save(tmp_path / "m1.lm")
    model = lk.Model(str(tmp_path / "m1.lm"))
    for sentence in ["a b", "", "zz a"]:
        want = sum(t.log10prob for t in lm.token_logprobs(sentence))
        assert model.score(sentence) == pytest.approx(want, abs=1e-5)
        assert all(n == 1 for _, n, _ in model.full_scores(sentence))
    state, out = lk.State(), lk.State()
    model.BeginSentenceWrite(state)
    model.BaseScore(state, "a", out)
    assert state == out == lk.State()
