"""lmlab.fileio and the readers on top of it: permissions and folders of written files, ``-`` as
standard input, byte-order marks and CRLF line ends."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lmlab
from lmlab import fileio
from lmlab.cli import main
from lmlab.corpus import Vocabulary, count_words, read_corpus, read_training_corpus
from lmlab.errors import LmlabError
from lmlab.fileio import atomic_output, check_output_path, head_bytes, open_binary
from tests.cli_helpers import fails, ok

TEXT = "the cat sat\nthe dog sat on the mat\n\na cat\n"
# tiny corpora: Kneser-Ney discounts fall back to defaults, with a warning that is not tested here
pytestmark = pytest.mark.filterwarnings("ignore:mkn. no")

# ----------------------------------------------------------------------------------------------
# atomic_output: permissions and folders
# ----------------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import os, sys
    os.umask(int(sys.argv[2], 8))
    from lmlab.fileio import atomic_output
    with atomic_output(sys.argv[1] + "/plain.txt", "w") as f:
        f.write("x\\n")
    with atomic_output(sys.argv[1] + "/new/dir/zipped.arpa.gz", "w") as f:
        f.write("x\\n")
    if sys.argv[3] == "checkpoint":  # imports torch: in one case only
        from lmlab.neural.checkpoint import save_checkpoint
        save_checkpoint(sys.argv[1] + "/c.pt", {"config": {}, "vocab": [], "model": {}})
""")


@pytest.mark.parametrize(("umask", "expected", "checkpoint"),
                         [("022", 0o644, False), ("027", 0o640, True), ("077", 0o600, False)])
def test_written_files_get_the_umask_permissions(tmp_path, umask, expected, checkpoint):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, str(script), str(out), umask,
                    "checkpoint" if checkpoint else "-"], check=True)
    names = ["plain.txt", "new/dir/zipped.arpa.gz"] + (["c.pt"] if checkpoint else [])
    for name in names:
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == expected, f"{name}: {oct(mode)} under umask {umask}"
    for folder in ("new", "new/dir"):  # created folders: the umask's too
        assert stat.S_IMODE((out / folder).stat().st_mode) == 0o777 & ~int(umask, 8)
    assert sorted(p.name for p in out.iterdir()) == sorted(  # no temp file left
        ["new", "plain.txt"] + (["c.pt"] if checkpoint else []))


def test_umask_is_read_without_changing_it():
    mask = os.umask(0o022)
    os.umask(mask)
    assert fileio._read_umask() == mask
    assert fileio.created_mode(0o027) == 0o640
    now = os.umask(0o022)
    os.umask(now)
    assert now == mask


@pytest.mark.skipif(not fileio._HAVE_PROC_UMASK,
                    reason="needs /proc/self/status (Linux) to see a umask changed after import")
def test_umask_changed_after_import_is_honoured(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic_output(tmp_path / "x.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o600


def test_missing_folders_are_created_only_when_writing(tmp_path):
    target = tmp_path / "runs" / "a" / "x.txt"
    check_output_path(target)  # can be created: fine, and nothing is created yet
    assert not (tmp_path / "runs").exists()
    with atomic_output(target, "w") as f:
        f.write("ok\n")
    assert target.read_text() == "ok\n"


def test_output_inside_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file" / "x.txt", tmp_path / "file" / "deeper" / "x.txt"):
        with pytest.raises(LmlabError, match="is a file, not a folder"):
            check_output_path(target)
        with pytest.raises(LmlabError, match="is a file, not a folder"):
            with atomic_output(target, "w") as f:
                f.write("never")
    with pytest.raises(LmlabError, match="is a directory, expected an output file"):
        check_output_path(tmp_path)


def test_failed_write_leaves_no_folder_litter_or_file(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError), atomic_output(target, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    deep = tmp_path / "new" / "deeper" / "x.txt"  # folders this write created go too
    with pytest.raises(RuntimeError), atomic_output(deep, "w") as f:
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_no_command_writes_over_a_file_it_reads(tmp_path, capsys):
    """`ngram train t.txt -o t.txt` replaced the corpus by the model: every command now refuses an
    output that is one of its inputs (by any name: a link is the same file) or named twice, before
    it starts, and leaves the files as they were."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    model = tmp_path / "m.lm"
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", model)
    (tmp_path / "link.txt").symlink_to(text)
    os.link(text, tmp_path / "hard.txt")
    before = {f: f.read_bytes() for f in (text, model)}
    cases = [
        (("ngram", "train", text, "-n", "2", "-o", text), text),
        (("ngram", "train", tmp_path / "link.txt", "-n", "2", "-o", text), text),
        (("ngram", "train", tmp_path / "hard.txt", "-n", "2", "-o", text), text),
        (("ngram", "train", text, "-n", "2", "-o", tmp_path / "n.lm", "--arpa", text), text),
        (("ngram", "build-binary", model, model), model),
        (("ngram", "prune", model, model, "--entropy", "1e-3"), model),
        (("eval", model, text, "--per-line", text), text),
        (("eval", model, text, "--per-line", model), model),
        (("compare", model, "--text", text, "--plot", model), model),
    ]
    for argv, clobbered in cases:
        line = fails(capsys, *argv)
        assert f"{clobbered}: is read by this command and would be overwritten" in line, argv
    line = fails(capsys, "ngram", "train", text, "-n", "2", "-o", tmp_path / "x.lm", "--arpa",
                 tmp_path / "x.lm")
    assert "x.lm: is given twice as an output" in line
    assert {f: f.read_bytes() for f in (text, model)} == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["hard.txt", "link.txt", "m.lm", "t.txt"]
    ok(capsys, "eval", model, text, "--per-line", tmp_path / "lines.jsonl")  # other files: fine


def test_words_that_are_choices_are_not_inputs(tmp_path, capsys, monkeypatch):
    """An output named like a choice of the command (its default smoothing, a layout, the
    command itself) is no clash: only arguments that name files are inputs."""
    monkeypatch.chdir(tmp_path)
    Path("t.txt").write_text(TEXT)
    for _ in range(2):  # the second time, the outputs exist
        ok(capsys, "ngram", "train", "t.txt", "-n", "2", "-o", "mkn")
        ok(capsys, "ngram", "train", "t.txt", "-n", "2", "-s", "kn", "-o", "kn", "--arpa", "train")
        ok(capsys, "ngram", "build-binary", "mkn", "trie", "--layout", "trie")


def test_standard_input_is_an_input(tmp_path, capsys, monkeypatch):
    """``lmlab eval m.lm - --per-line t.txt < t.txt`` would replace the text read: the file
    standard input reads is an input too."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", tmp_path / "m.lm")
    monkeypatch.setattr(fileio, "_stdin_data", None)
    with open(text, "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        line = fails(capsys, "eval", tmp_path / "m.lm", "-", "--per-line", text)
    assert "t.txt: is read by this command and would be overwritten" in line
    assert text.read_text() == TEXT


def test_synthesize_keeps_its_default_source(tmp_path, capsys, monkeypatch):
    """`data synthesize` samples WikiText-2's model when the corpus is there: its training text
    is an input the output may not replace."""
    source = tmp_path / "wikitext-2" / "train.txt"
    source.parent.mkdir()
    source.write_text(TEXT)
    monkeypatch.setenv("LMLAB_DATA", str(tmp_path))
    line = fails(capsys, "data", "synthesize", "-o", source, "--tokens", "100")
    assert "train.txt: is read by this command and would be overwritten" in line
    assert source.read_text() == TEXT


# ----------------------------------------------------------------------------------------------
# "-" is standard input
# ----------------------------------------------------------------------------------------------


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.fixture
def stdin(monkeypatch):
    """Give standard input ``data``; the cache of a previous test is forgotten."""
    monkeypatch.setattr(fileio, "_stdin_data", None)

    def give(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", FakeStdin(data))

    return give


def test_stdin_is_read_once_and_served_again(stdin, tmp_path):
    stdin(TEXT.encode())
    vocab, stream = read_training_corpus("-")  # a vocabulary pass, then the encoding pass
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    vocab2, stream2 = read_training_corpus(path)
    assert vocab == vocab2 and stream.ids.tolist() == stream2.ids.tolist()
    assert sys.stdin.buffer.read() == b""  # consumed once...
    assert head_bytes("-", 7) == b"the cat"  # ...and still there for every later open


def test_stdin_may_be_gzip(stdin):
    stdin(gzip.compress(TEXT.encode()))
    assert count_words("-")["cat"] == 2
    with open_binary(Path("-")) as f:
        assert f.read() == TEXT.encode()


def test_stdin_errors_name_stdin(stdin):
    stdin(b"good line\nok\n\xff\xfe bad\n")
    with pytest.raises(LmlabError, match=r"^<stdin>:3: not valid UTF-8 text$"):
        count_words("-")


# ----------------------------------------------------------------------------------------------
# Byte-order marks and CRLF
# ----------------------------------------------------------------------------------------------


def _ppl(model, path) -> float:
    """Perplexity of ``path`` under ``model`` (sum of the protocol's per-token log-probs)."""
    stream = read_corpus(path, model.vocab)
    return float(np.exp(-model.logprobs(stream).sum() / len(stream)))


def _files(tmp_path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bom_is_not_part_of_the_first_word(tmp_path):
    from lmlab.ngram.model import train_ngram

    plain = _files(tmp_path, "plain.txt", TEXT.encode())
    bom = _files(tmp_path, "bom.txt", fileio.BOM + TEXT.encode())
    bom_gz = _files(tmp_path, "bom.txt.gz", gzip.compress(fileio.BOM + TEXT.encode()))
    assert count_words(bom) == count_words(plain) == count_words(bom_gz)
    v1, s1 = read_training_corpus(plain)
    v2, s2 = read_training_corpus(bom)
    assert v1 == v2 and "\ufeffthe" not in v2
    assert s1.ids.tolist() == s2.ids.tolist() and not s2.oov.any()
    lm1 = train_ngram(plain, order=2)
    lm2 = train_ngram(bom, order=2)
    test_plain = _files(tmp_path, "t.txt", b"the cat sat on a mat\n")
    test_bom = _files(tmp_path, "tb.txt", fileio.BOM + b"the cat sat on a mat\n")
    ppl = _ppl(lm1, test_plain)
    assert _ppl(lm2, test_plain) == ppl
    assert _ppl(lm1, test_bom) == ppl
    assert read_corpus(test_bom, v1).oov.sum() == 0


def test_crlf_gives_the_same_numbers_as_lf(tmp_path):
    from lmlab.ngram.model import train_ngram

    lf = _files(tmp_path, "lf.txt", TEXT.encode())
    crlf = _files(tmp_path, "crlf.txt", TEXT.replace("\n", "\r\n").encode())
    assert count_words(lf) == count_words(crlf)
    lm_lf, lm_crlf = train_ngram(lf, order=2), train_ngram(crlf, order=2)
    assert lm_lf.vocab == lm_crlf.vocab
    assert len(read_corpus(lf, lm_lf.vocab)) == len(read_corpus(crlf, lm_lf.vocab))
    assert _ppl(lm_lf, lf) == _ppl(lm_crlf, crlf) == _ppl(lm_lf, crlf)
    for tokenizer in ("char", "byte"):  # (a CR was a token of every line of these models)
        char_lf, char_crlf = (lmlab.train_ngram(f, order=3, smoothing="kn", tokenizer=tokenizer)
                              for f in (lf, crlf))
        assert char_lf.vocab.itos == char_crlf.vocab.itos
        r_lf, r_crlf = char_lf.perplexity(lf).to_dict(), char_crlf.perplexity(crlf).to_dict()
        assert r_lf == r_crlf


def test_bom_in_vocabulary_and_arpa_files(tmp_path):
    from lmlab.models import load_model
    from lmlab.ngram.arpa import write_arpa
    from lmlab.ngram.model import train_ngram

    vocab_file = _files(tmp_path, "v.txt", fileio.BOM + b"the\t3\ncat\t2\n")
    assert Vocabulary.load(vocab_file).itos[3:] == ["the", "cat"]
    corpus = _files(tmp_path, "c.txt", TEXT.encode())
    arpa = tmp_path / "m.arpa"
    write_arpa(train_ngram(corpus, order=2), arpa)
    with_bom = _files(tmp_path, "bom.arpa", fileio.BOM + arpa.read_bytes())
    assert _ppl(load_model(with_bom), corpus) == _ppl(load_model(arpa), corpus)


def test_run_files_create_their_folder(tmp_path):
    """What the trainer writes beside ``--out runs/x.pt`` when ``runs/`` does not exist yet."""
    from lmlab.neural.run_files import MetricsLog, sidecar_paths, write_run_config

    paths = sidecar_paths(tmp_path / "runs" / "x.pt")
    check_output_path(tmp_path / "runs" / "x.pt")
    log = MetricsLog(paths["metrics"])
    log.start()
    log.write({"step": 1, "loss": 2.0})
    log.close()
    write_run_config(paths["config"], {"model": {}}, "x.pt", 10, None)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["x.config.json",
                                                                     "x.metrics.jsonl"]


# ----------------------------------------------------------------------------------------------
# outputs that cannot be replaced, and outputs written together
# ----------------------------------------------------------------------------------------------


def test_a_pipe_is_written_through_and_a_link_followed(tmp_path, capsys):
    """An output that is a FIFO (like /dev/null, a device) was replaced by a renamed regular
    file; a symbolic link by a file. Both are written through now; '-' is standard output."""
    import threading

    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    model = tmp_path / "m.lm"
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", model)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    ok(capsys, "eval", model, text, "--per-line", fifo)
    reader.join(10)
    assert got and got[0].count(b"\n") == 4 and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "link.arpa").symlink_to("real.arpa")
    ok(capsys, "ngram", "train", text, "-n", "2", "--arpa", tmp_path / "link.arpa")
    assert (tmp_path / "link.arpa").is_symlink()
    assert (tmp_path / "real.arpa").read_text().startswith("\\data\\")
    out = ok(capsys, "ngram", "train", text, "-n", "2", "--arpa", "-")
    assert out.startswith("\\data\\") and out.rstrip().endswith("\\end\\")
    assert not (tmp_path / "-").exists() and not Path("-").exists()


def test_model_and_arpa_file_are_written_together(tmp_path, capsys, monkeypatch):
    """A failure writing the ARPA file (or Ctrl-C) after the model was written left the new
    model in place of the previous one: now both previous files stay, and no new one."""
    import lmlab.ngram.arpa

    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", tmp_path / "m.lm", "--arpa",
       tmp_path / "m.arpa")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmlab.ngram.arpa, "ngram_lines", interrupted)
    assert main(["ngram", "train", str(text), "-n", "3", "-o", str(tmp_path / "m.lm"),
                 "--arpa", str(tmp_path / "m.arpa")]) == 130
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    capsys.readouterr()


def test_compressed_model_and_mixture_files(tmp_path, capsys):
    """`-o m.lm.gz` failed with a traceback after training (the model is a zip that loading
    seeks in): refused before it. A mixture file is JSON: `.gz` is written and read back."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    assert "cannot be gzip-compressed" in fails(capsys, "ngram", "train", text, "-n", "2", "-o",
                                                tmp_path / "m.lm.gz")
    assert not list(tmp_path.glob("m.lm*"))
    ok(capsys, "ngram", "train", text, "-n", "1", "-o", tmp_path / "a.lm")
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", tmp_path / "b.lm")
    ok(capsys, "interpolate", tmp_path / "a.lm", tmp_path / "b.lm", "--valid", text, "-o",
       tmp_path / "mix.json.gz")
    assert gzip.decompress((tmp_path / "mix.json.gz").read_bytes()).startswith(b"{")
    ok(capsys, "eval", tmp_path / "mix.json.gz", text)


def test_a_named_pipe_is_read_like_standard_input(tmp_path, capsys, monkeypatch):
    """`ngram train <(zcat t.gz)` said "empty corpus": training reads its text twice, and a
    pipe gives its bytes once. A pipe is now held like standard input (format detection of an
    ARPA file in a pipe no longer eats its header either)."""
    import threading

    text = tmp_path / "t.txt"
    text.write_text(TEXT)

    def piped(data: bytes, name: str) -> Path:
        fifo = tmp_path / name
        os.mkfifo(fifo)
        threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True).start()
        return fifo

    ok(capsys, "ngram", "train", piped(TEXT.encode(), "p1"), "-n", "2", "-o", tmp_path / "p.lm",
       "--arpa", tmp_path / "p.arpa")
    assert "give a file, not standard input (-) or a pipe" in fails(  # (read in pieces)
        capsys, "ngram", "train", tmp_path / "p1", "-n", "2", "-o", tmp_path / "x.lm",
        "--memory", "128M")
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", tmp_path / "f.lm")
    ppl = {name: json.loads(ok(capsys, "eval", tmp_path / name, text, "--json"))["perplexity"]
           for name in ("p.lm", "f.lm", "p.arpa")}
    assert ppl["p.lm"] == ppl["f.lm"] and ppl["p.arpa"] == pytest.approx(ppl["f.lm"], rel=1e-6)
    report = ok(capsys, "eval", piped((tmp_path / "p.arpa").read_bytes(), "p2"),
                piped(gzip.compress(TEXT.encode()), "p3"), "--json")
    assert json.loads(report)["perplexity"] == ppl["p.arpa"]
    # a pipe is held for one command only: fed again, it is read again
    os.unlink(tmp_path / "p1")
    ok(capsys, "ngram", "train", piped(b"x y z\n", "p1"), "-n", "1", "-o", tmp_path / "q.lm")
    assert lmlab.load(tmp_path / "q.lm").vocab.itos[3:] == ["x", "y", "z"]


def test_outputs_to_descriptors_devices_and_standard_output(tmp_path, capsys):
    """`--arpa /dev/stdout >> log` replaced log (renamed over what the link resolves to): a
    descriptor is written through, in the mode it is open in. `-` twice is refused; a report
    goes to standard error when the data goes to standard output; a character device is read
    as a stream, not held (/dev/zero was read whole)."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    log = tmp_path / "log.txt"
    log.write_text("PRECIOUS\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with open(log, "ab") as out:
        done = subprocess.run([sys.executable, "-m", "lmlab", "ngram", "train", str(text), "-n",
                               "2", "--arpa", "/dev/stdout"], stdout=out, stderr=subprocess.PIPE,
                              env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert log.read_text().startswith("PRECIOUS\n\\data\\")
    assert "given twice" in fails(capsys, "ngram", "train", text, "-o", "-", "--arpa", "-")
    ok(capsys, "ngram", "train", text, "-n", "1", "-o", tmp_path / "a.lm")
    ok(capsys, "ngram", "train", text, "-n", "2", "-o", tmp_path / "b.lm")
    assert main(["interpolate", str(tmp_path / "a.lm"), str(tmp_path / "b.lm"), "--valid",
                 str(text), "-o", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["format"] and "mixture validation perplexity" in err
    assert not fileio._same_file("/dev/null", "/dev/null")  # (a device twice is no clash)
    assert not fileio.is_pipe("/dev/zero")


def test_output_groups_nest_and_keep_nothing_on_failure(tmp_path):
    """A group inside another renames nothing until the outer one ends well."""
    with pytest.raises(RuntimeError), fileio.output_group():
        with fileio.output_group():
            with atomic_output(tmp_path / "inner.txt", "w") as f:
                f.write("x")
        with atomic_output(tmp_path / "outer.txt", "w") as f:
            f.write("y")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with fileio.output_group():
        with fileio.output_group(), atomic_output(tmp_path / "inner.txt", "w") as f:
            f.write("x")
        assert not (tmp_path / "inner.txt").exists()
    assert (tmp_path / "inner.txt").read_text() == "x"


def test_broken_pipe_on_standard_output_keeps_the_model(tmp_path):
    """`ngram train t -o m.lm --arpa - | head -c 10`: the consumer stopping is no failure of
    the model file, which was dropped with the ARPA output (and the exit status was 0)."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(3000)]
    (tmp_path / "t.txt").write_text("\n".join(" ".join(rng.choice(words, 12))
                                              for _ in range(3000)) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(f"{sys.executable} -m lmlab ngram train t.txt -n 3 -o m.lm --arpa - "
                          "| head -c 10", shell=True, cwd=tmp_path, env=env,
                          capture_output=True, check=False)
    assert done.stdout == b"\\data\\\nngr" and (tmp_path / "m.lm").stat().st_size > 10000
