"""``lmlab embed ...`` and :mod:`lmlab.analysis.embeddings` / :mod:`lmlab.analysis.ppmi` (the
vector files themselves: test_embedding_formats.py).

Most tests use a checkpoint whose embedding matrix is set by hand (no training), so every
neighbour, analogy answer, accuracy and correlation is known in advance; one test trains a tiny
LSTM through ``lmlab train`` for the end-to-end path. Numbers are checked against independent
computations (numpy, scipy, a dict-based PPMI) and against gensim's own KeyedVectors.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch
from scipy import stats

from lmlab.analysis import embeddings as E
from lmlab.analysis import ppmi as P
from lmlab.cli import main
from tests.analysis.embedding_helpers import DIM, HAVE_GENSIM, WORDS, make_checkpoint, needs_gensim
from tests.cli_helpers import fails, ok

torch.set_num_threads(1)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# neighbours and analogies
# ----------------------------------------------------------------------------------------------


def test_neighbors_match_numpy_cosines(crafted, capsys):
    ckpt, vectors, _ = crafted
    out = json.loads(ok(capsys, "embed", "neighbors", ckpt, "king", "-k", "4", "--json"))
    words = ["<unk>", "</s>"] + WORDS  # <s> is left out: never trained
    allv = np.vstack([np.eye(DIM)[10], np.eye(DIM)[11], vectors])
    cos = unit(allv) @ unit(allv)[words.index("king")]
    order = [words[i] for i in np.argsort(-cos) if words[i] != "king"][:4]
    assert [r["word"] for r in out["neighbors"]] == order
    assert order[:2] == ["man", "queen"]
    for r in out["neighbors"]:
        assert r["cosine"] == pytest.approx(cos[words.index(r["word"])], abs=1e-6)
    text = ok(capsys, "embed", "neighbours", ckpt, "King", "-k", "2")  # case fallback
    assert "king (for King)" in text and "man" in text


def test_analogies_add_and_mul(crafted, capsys):
    ckpt = crafted[0]
    out = json.loads(ok(capsys, "embed", "analogy", ckpt, "man", "woman", "king", "--json"))
    assert out["3CosAdd"][0]["word"] == "queen" and out["3CosMul"][0]["word"] == "queen"
    for rows in (out["3CosAdd"], out["3CosMul"]):
        assert not {"man", "woman", "king"} & {r["word"] for r in rows}
        assert len(rows) == 5 and rows[0]["score"] >= rows[1]["score"]
    out = json.loads(ok(capsys, "embed", "analogy", ckpt, "Athens", "Greece", "Beijing",
                        "--method", "mul", "-k", "1", "--json"))
    assert [r["word"] for r in out["3CosMul"]] == ["china"] and "3CosAdd" not in out
    assert out["resolved"] == {"Athens": "athens", "Greece": "greece", "Beijing": "beijing"}
    text = ok(capsys, "embed", "analogy", ckpt, "man", "woman", "king")
    assert "3CosAdd" in text and "3CosMul" in text and "queen" in text


@needs_gensim
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # gensim's own init_sims call
def test_analogy_and_neighbors_agree_with_gensim():
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(60)]
    emb = E.Embeddings(words, rng.normal(size=(60, 7)))
    kv = emb.to_keyed_vectors()
    for a, b, c in [("w1", "w2", "w3"), ("w10", "w4", "w33"), ("w59", "w0", "w7")]:
        ours = emb.analogy(a, b, c, k=8, method="add")
        theirs = [(w, s) for w, s in kv.most_similar(positive=[b, c], negative=[a], topn=11)
                  if w not in (a, b, c)][:8]
        assert [w for w, _ in ours] == [w for w, _ in theirs]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)
        ours = emb.analogy(a, b, c, k=8, method="mul", eps=1e-6)  # gensim's epsilon
        theirs = [(w, s) for w, s in kv.most_similar_cosmul(positive=[b, c], negative=[a],
                                                            topn=11) if w not in (a, b, c)][:8]
        assert [w for w, _ in ours] == [w for w, _ in theirs]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-4)
    ours = emb.neighbors("w5", 10)
    theirs = kv.most_similar("w5", topn=10)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)


def test_output_embeddings_tied_nnlm_bidirectional(crafted, tmp_path, capsys):
    ckpt, vectors, output = crafted
    emb = E.load_embeddings(ckpt, "output")
    assert emb.words == ["<unk>", "</s>"] + WORDS and emb.kind == "output"
    np.testing.assert_array_equal(emb.vectors, output[[0] + list(range(2, len(output)))])
    assert not emb.meta["tied"]
    tied = make_checkpoint(tmp_path / "tied.pt", vectors, tied=True)
    a, b = E.load_embeddings(tied, "input"), E.load_embeddings(tied, "output")
    assert b.meta["tied"] and np.array_equal(a.vectors, b.vectors)
    rc = main(["embed", "neighbors", str(tied), "king", "--which", "output"])
    assert rc == 0 and "tied" in capsys.readouterr().err
    for kind, extra in (("nnlm", {}), ("gru", {"bidirectional": True})):
        path = make_checkpoint(tmp_path / f"{kind}.pt", vectors, model=kind, **extra)
        emb = E.load_embeddings(path)
        np.testing.assert_array_equal(emb.vectors[2:], vectors)
        assert emb.meta["model"] == kind
        assert E.load_embeddings(path, "output").dim == DIM


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------

ANALOGIES = """: family
man woman king queen
king queen man woman
man woman king princess
: capital
athens greece berlin germany
athens greece beijing iraq
"""
PAIRS = "# word1\tword2\tscore\nking\tqueen\t8.0\nman\twoman\t7.5\nking\tman\t6.0\n" \
        "athens\tgreece\t5.0\nparis\tfrance\t9.0\nathens\tberlin\t4.0\n"


@needs_gensim
def test_evaluate_on_handmade_files(crafted, tmp_path, capsys):
    ckpt, vectors, _ = crafted
    (tmp_path / "a.txt").write_text(ANALOGIES)
    (tmp_path / "p.tsv").write_text(PAIRS)
    out = json.loads(ok(capsys, "embed", "evaluate", ckpt, "--analogies", tmp_path / "a.txt",
                        "--pairs", tmp_path / "p.tsv", "--json"))
    a = out["analogies"]
    assert (a["questions"], a["covered"], a["correct"]) == (5, 4, 3)
    assert a["accuracy"] == 0.75 and a["coverage"] == 0.8 and a["accuracy_all"] == 0.6
    assert [(s["section"], s["questions"], s["covered"], s["correct"]) for s in a["sections"]] \
        == [("family", 3, 2, 2), ("capital", 2, 2, 1)]
    p = out["pairs"]["p"]
    assert (p["pairs"], p["covered"]) == (6, 5) and p["coverage"] == pytest.approx(5 / 6)
    index = {w: i for i, w in enumerate(WORDS)}
    u = unit(vectors.astype(np.float64))
    pairs = [("king", "queen", 8.0), ("man", "woman", 7.5), ("king", "man", 6.0),
             ("athens", "greece", 5.0), ("athens", "berlin", 4.0)]
    cos = [u[index[x]] @ u[index[y]] for x, y, _ in pairs]
    gold = [s for *_, s in pairs]
    assert p["spearman"] == pytest.approx(stats.spearmanr(gold, cos)[0], abs=1e-6)
    assert p["pearson"] == pytest.approx(stats.pearsonr(gold, cos)[0], abs=1e-5)
    text = ok(capsys, "embed", "evaluate", ckpt, "--analogies", tmp_path / "a.txt", "--pairs",
              tmp_path / "p.tsv", "--sections")
    assert "75.0% of 4 covered questions (coverage 80.0% of 5" in text
    assert "capital" in text and "on 5/6 pairs" in text


def _covered(path, vocab, n_words, lower=True):
    total = hit = 0
    for line in open(path, encoding="utf-8"):
        if line.startswith((":", "#")) or not line.strip():
            continue
        parts = (line.lower() if lower else line).split()[:n_words]
        total += 1
        hit += all(w in vocab for w in parts)
    return hit, total


@needs_gensim
def test_evaluate_on_gensim_benchmarks(crafted, capsys):
    """The real Google / WordSim-353 / SimLex-999 files: coverage counted here independently;
    the capitalised benchmark words match the model's lower-case ones unless --case-sensitive."""
    ckpt = crafted[0]
    out = json.loads(ok(capsys, "embed", "evaluate", ckpt, "--json"))
    vocab = set(WORDS)
    hit, total = _covered(E.benchmark_path("questions-words.txt"), vocab, 4)
    a = out["analogies"]
    assert (a["covered"], a["questions"]) == (hit, total) and total == 19544 and hit > 20
    assert a["accuracy"] == 1.0  # the geometry answers every covered question
    assert set(a["groups"]) == {"semantic", "syntactic"}
    for name, fname in E.PAIR_FILES.items():
        hit, total = _covered(E.benchmark_path(fname), vocab, 2)
        p = out["pairs"][name]
        assert (p["covered"], p["pairs"]) == (hit, total)
        assert p["coverage"] == pytest.approx(hit / total)
    assert out["pairs"]["wordsim353"]["pairs"] == 353 and out["pairs"]["simlex999"]["pairs"] == 999
    strict = json.loads(ok(capsys, "embed", "evaluate", ckpt, "--json", "--case-sensitive"))
    hit, total = _covered(E.benchmark_path("questions-words.txt"), vocab, 4, lower=False)
    assert strict["analogies"]["covered"] == hit < a["covered"]  # only "king queen man woman"
    assert strict["analogies"]["groups"]["semantic"]["covered"] == hit


@needs_gensim
@pytest.mark.parametrize("kind,content,needle", [
    ("analogies", "man woman king queen\n", ":1: question before the first ': SECTION'"),
    ("analogies", ": s\nman woman king\n", ":2: expected four words"),
    ("analogies", ": s\n", "no analogy questions"),
    ("pairs", "king queen 3\n", ":1: expected 'word1<TAB>word2<TAB>score'"),
    ("pairs", "king\tqueen\thigh\n", ":1: expected 'word1<TAB>word2<TAB>score'"),
    ("pairs", "# only a comment\n", "no word pairs"),
])
def test_malformed_evaluation_files(crafted, tmp_path, capsys, kind, content, needle):
    path = tmp_path / "bench.txt"
    path.write_text(content)
    assert needle in fails(capsys, "embed", "evaluate", crafted[0], f"--{kind}", path)


def test_gensim_missing_names_the_extra(crafted, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "gensim" or m.startswith("gensim.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "gensim", None)
    msg = fails(capsys, "embed", "evaluate", crafted[0])
    assert "pip install 'lmlab[embeddings]'" in msg and "gensim" in msg
    # neighbours, analogies, export and plots do not need gensim
    assert "queen" in ok(capsys, "embed", "analogy", crafted[0], "man", "woman", "king")


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_unknown_words_suggest_close_matches(crafted, capsys):
    ckpt = crafted[0]
    msg = fails(capsys, "embed", "neighbors", ckpt, "kng")
    assert "'kng' is not in the vocabulary" in msg and "close matches: king" in msg
    msg = fails(capsys, "embed", "analogy", ckpt, "man", "womn", "king")
    assert "'womn'" in msg and "woman" in msg
    assert "no close match" in fails(capsys, "embed", "neighbors", ckpt, "xyzzy")
    assert "is not in the vocabulary" in fails(capsys, "embed", "plot", ckpt, "king", "qqq",
                                               "--out", "x.png")


def test_ngram_models_have_no_embeddings(train_file, tmp_path, capsys):
    lm, arpa = tmp_path / "m.lm", tmp_path / "m.arpa.gz"
    ok(capsys, "ngram", "train", train_file, "--order", "2", "-o", lm, "--arpa", arpa)
    for path in (lm, arpa):
        cmds = [["neighbors", path, "w1"], ["export", path, "-o", "o.txt"], ["plot", path, "a", "b",
                                                                       "--out", "p.png"]]
        for cmd in cmds + ([["evaluate", path]] if HAVE_GENSIM else []):
            assert "n-gram models have no word embeddings" in fails(capsys, "embed", *cmd)


@needs_gensim
def test_other_bad_input(crafted, tmp_path, capsys):
    ckpt = crafted[0]
    assert "--top must be >= 1" in fails(capsys, "embed", "neighbors", ckpt, "king", "-k", "0")
    assert "no such file" in fails(capsys, "embed", "neighbors", tmp_path / "nope.pt", "king")
    w2v = tmp_path / "v.txt"
    ok(capsys, "embed", "export", ckpt, "-o", w2v)
    assert "--which output needs a neural checkpoint" in fails(
        capsys, "embed", "neighbors", w2v, "king", "--which", "output")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(ckpt.read_bytes()[:3000])
    assert "truncated or corrupt" in fails(capsys, "embed", "neighbors", trunc, "king")
    assert "no such file" in fails(capsys, "embed", "evaluate", ckpt, "--analogies",
                                   tmp_path / "missing.txt")
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in fails(capsys, "embed", "export", ckpt, "-o",
                                              tmp_path / "afile" / "dir" / "v.txt")
    ok(capsys, "embed", "export", ckpt, "-o", tmp_path / "no" / "dir" / "v.txt")  # folders created
    assert (tmp_path / "no" / "dir" / "v.txt").is_file()
    assert "at least two different words" in fails(capsys, "embed", "plot", ckpt, "king",
                                                   "king", "--out", tmp_path / "p.png")
    mixture = tmp_path / "mix.json"
    mixture.write_text('{"format": "lmlab-mixture", "models": []}')
    msg = fails(capsys, "embed", "neighbors", mixture, "king")
    assert "mixture of models has no word embeddings" in msg


# ----------------------------------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------------------------------


def test_plot_writes_png(crafted, tmp_path, capsys):
    out = tmp_path / "pca.png"
    info = json.loads(ok(capsys, "embed", "plot", crafted[0], "king", "queen", "man", "woman",
                         "Athens", "greece", "--out", out, "--json"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p["word"] for p in info["points"]] == ["king", "queen", "man", "woman", "athens",
                                                   "greece"]
    assert 0 < sum(info["explained_variance"]) <= 1 + 1e-9
    # an independent PCA of the unit vectors (sign-free check: pairwise distances in 2-D)
    index = {w: i for i, w in enumerate(WORDS)}
    x = unit(crafted[1].astype(np.float64))[[index[p["word"]] for p in info["points"]]]
    x -= x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    want = u[:, :2] * s[:2]
    got = np.array([[p["x"], p["y"]] for p in info["points"]])
    dist = lambda z: np.linalg.norm(z[:, None] - z[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(got), dist(want), atol=1e-5)
    np.testing.assert_allclose(info["explained_variance"], s[:2] ** 2 / (s ** 2).sum(),
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------
# PPMI + SVD baseline
# ----------------------------------------------------------------------------------------------


def naive_ppmi(sentences, window, weighting, alpha):
    counts: dict = defaultdict(float)
    for s in sentences:
        for i, w in enumerate(s):
            for d in range(1, window + 1):
                if i + d < len(s):
                    wt = 1.0 if weighting == "uniform" else 1.0 / d
                    counts[w, s[i + d]] += wt
                    counts[s[i + d], w] += wt
    total = sum(counts.values())
    row, col = defaultdict(float), defaultdict(float)
    for (w, c), n in counts.items():
        row[w] += n
        col[c] += n
    norm = sum(v ** alpha for v in col.values())
    return counts, {k: max(0.0, np.log((n / total) / ((row[k[0]] / total)
                                                      * (col[k[1]] ** alpha / norm))))
                    for k, n in counts.items()}


@pytest.mark.parametrize("window,weighting,alpha", [(1, "uniform", 1.0), (3, "harmonic", 0.75)])
def test_ppmi_matches_dict_implementation(window, weighting, alpha):
    sentences = [["a", "b", "c", "a"], ["b"], ["c", "c", "d", "a", "b"], [], ["d", "a"]]
    vocab = {w: i for i, w in enumerate("abcd")}
    ids = np.array([vocab[w] for s in sentences for w in s])
    sent = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
    counts = P.cooccurrence(ids, sent, 4, window, weighting)
    pmi = P.ppmi(counts, alpha=alpha).toarray()
    want_counts, want_pmi = naive_ppmi(sentences, window, weighting, alpha)
    dense = counts.toarray()
    for (w, c), n in want_counts.items():
        assert dense[vocab[w], vocab[c]] == pytest.approx(n)
        assert pmi[vocab[w], vocab[c]] == pytest.approx(want_pmi[w, c])
    assert dense.sum() == pytest.approx(sum(want_counts.values()))
    assert (pmi >= 0).all()


def test_svd_sparse_path_equals_dense(monkeypatch):
    from scipy import sparse

    rng = np.random.default_rng(0)
    m = sparse.random(60, 60, density=0.2, random_state=1, format="csr")
    m = m + m.T
    dense_vec, dense_s = P.svd_vectors(m, 5, eig=1.0)
    monkeypatch.setattr(P, "DENSE_LIMIT", 0)
    sparse_vec, sparse_s = P.svd_vectors(m, 5, eig=1.0, seed=int(rng.integers(100)))
    np.testing.assert_allclose(sparse_s, dense_s, rtol=1e-8)
    np.testing.assert_allclose(sparse_vec, dense_vec, atol=1e-4)
    assert list(dense_s) == sorted(dense_s, reverse=True)


def test_ppmi_cli_and_embed_commands_on_its_output(train_file, tmp_path, capsys):
    out = tmp_path / "ppmi.w2v"
    report = json.loads(ok(capsys, "embed", "ppmi", train_file, "--dim", "6", "--window", "2",
                           "--out", out, "--json"))
    assert report["vocabulary"] == 30 and report["dim"] == 6  # w0..w29, no specials
    emb = E.load_embeddings(out)
    assert emb.dim == 6 and sorted(emb.words) == sorted(f"w{i}" for i in range(30))
    again = P.ppmi_embeddings(train_file, dim=6, window=2)
    np.testing.assert_array_equal(again.vectors, emb.vectors)  # deterministic, exact file
    # the conftest corpus prefers w_i -> w_{i+1}: w_{i+1} and w_{i-1} share contexts with w_i
    nb = json.loads(ok(capsys, "embed", "neighbors", out, "w5", "-k", "3", "--json"))
    assert len(nb["neighbors"]) == 3
    ok(capsys, "embed", "analogy", out, "w1", "w2", "w3")
    ok(capsys, "embed", "ppmi", train_file, "--dim", "4", "--out", tmp_path / "tsv", "--format",
       "tsv", "--weighting", "harmonic")
    assert len((tmp_path / "tsv" / "metadata.tsv").read_text().split()) == 30
    assert "--dim 30 must be smaller" in fails(capsys, "embed", "ppmi", train_file, "--dim", "30",
                                               "--out", tmp_path / "x.w2v")
    assert "--window must be" in fails(capsys, "embed", "ppmi", train_file, "--window", "0",
                                       "--out", tmp_path / "x.w2v")
    assert "--alpha must be" in fails(capsys, "embed", "ppmi", train_file, "--alpha", "0",
                                      "--out", tmp_path / "x.w2v")
    assert not (tmp_path / "x.w2v").exists()


# ----------------------------------------------------------------------------------------------
# a really trained checkpoint, end to end
# ----------------------------------------------------------------------------------------------


@needs_gensim
def test_trained_lstm_end_to_end(tmp_path, capsys):
    from lmlab.synth import MarkovSource, sample_splits

    for name, c in sample_splits(MarkovSource(order=2, vocab_size=8, seed=4),
                                 {"train": 60, "valid": 10, "test": 5}, seed=0).items():
        c.write(tmp_path / f"{name}.txt")
    ckpt = tmp_path / "lstm.pt"
    ok(capsys, "train", "lstm", "--data", tmp_path, "--out", ckpt, "--epochs", "1", "--emsize",
       "8", "--hidden", "8", "--layers", "1", "--bptt", "5", "--batch-size", "4", "--threads",
       "1", "--device", "cpu", "--seed", "3")
    nb = json.loads(ok(capsys, "embed", "neighbors", ckpt, "w1", "-k", "3", "--json"))
    assert len(nb["neighbors"]) == 3 and "<s>" not in [r["word"] for r in nb["neighbors"]]
    ok(capsys, "embed", "neighbors", ckpt, "w1", "--which", "output")
    ok(capsys, "embed", "analogy", ckpt, "w1", "w2", "w3", "-k", "2")
    ev = json.loads(ok(capsys, "embed", "evaluate", ckpt, "--json"))  # no benchmark word at all
    assert ev["analogies"]["coverage"] == 0 and ev["pairs"]["simlex999"]["spearman"] is None
    ok(capsys, "embed", "export", ckpt, "-o", tmp_path / "v.bin", "--format", "word2vec-binary")
    assert E.load_embeddings(tmp_path / "v.bin").words == E.load_embeddings(ckpt).words
