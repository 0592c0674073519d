"""One CLI vocabulary: every flag means one thing in every command, every ``--help`` ends with an
example, defaults agree between commands, ``-`` reads standard input, ``--version`` works."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmlab
from lmlab.cli import build_parser, command_line_text, main
from lmlab.errors import LmlabError
from lmlab.scoring import tokens_of
from tests.cli_helpers import fails, ok


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the top-level parser and every (sub-)command, aliases once."""
    yield path, parser
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from walk(sub, (*path, name))


PARSERS = list(walk(build_parser()))


def options():
    """(command path, option string, action) for every option of every command."""
    for path, parser in PARSERS:
        for action in parser._actions:
            for flag in action.option_strings:
                yield path, flag, action


def test_walk_sees_every_command():
    names = {" ".join(path) for path, _ in PARSERS}
    for cmd in ("", "ngram", "ngram train", "ngram next", "train", "eval", "score", "generate",
                "interpolate", "demo", "data", "compare", "gradients", "ablate", "embed",
                "embed neighbors", "embed analogy", "embed evaluate", "embed export",
                "embed plot", "embed ppmi"):
        assert cmd in names


@pytest.mark.parametrize("path,parser", PARSERS, ids=[" ".join(p) or "lmlab" for p, _ in PARSERS])
def test_every_help_ends_with_a_one_line_example(path, parser):
    assert parser.epilog and parser.epilog.startswith("example: lmlab "), path
    assert "\n" not in parser.epilog
    # the example is printed as written (not re-wrapped), as the last line of --help
    assert parser.format_help().rstrip("\n").splitlines()[-1] == parser.epilog
    if path:  # sub-commands name themselves in their example
        assert parser.epilog.startswith(f"example: lmlab {path[0]}")


def test_no_option_string_means_two_things():
    dests: dict[str, set[str]] = {}
    for _, flag, action in options():
        dests.setdefault(flag, set()).add(action.dest)
    ambiguous = {flag: d for flag, d in dests.items() if len(d) > 1}
    assert ambiguous == {}
    assert dests["-o"] == dests["--output"] == {"output"}
    assert dests["-k"] == dests["--top"] == {"top"}
    assert dests["--data"] == {"data"}
    for gone in ("--out", "--data-dir", "--k"):
        assert gone not in dests


def test_short_and_long_forms_come_together():
    """-o is always --output and -k always --top (never one without the other)."""
    for path, flag, action in options():
        if flag in ("-o", "--output"):
            assert set(action.option_strings) == {"-o", "--output"}, path
        if flag in ("-k", "--top"):
            assert set(action.option_strings) == {"-k", "--top"}, path


def test_writing_commands_all_use_output():
    with_output = {" ".join(path) for path, flag, _ in options() if flag == "--output"}
    assert with_output == {"ngram train", "train", "interpolate", "gradients", "ablate",
                           "embed export", "embed plot", "embed ppmi", "data"}


def test_defaults_agree_between_commands():
    from lmlab.neural.config import RunConfig

    defaults = RunConfig()
    assert defaults.train.seed == 0 and defaults.train.device == "auto"
    for path, flag, action in options():
        if flag == "--seed":
            # lmlab train's defaults are None: its values come from RunConfig
            assert action.default == (None if path == ("train",) else 0), path
        if flag == "--device":
            assert action.default == (None if path == ("train",) else "auto"), path


def test_help_shows_defaults_and_choices():
    parsers = {" ".join(path): parser for path, parser in PARSERS}
    train = parsers["train"].format_help()
    for text in ("layers (default 2)", "epochs (default 13)", "(default 20)", "(default 0)",
                 "{vanilla,nig,nfg,nog,niaf,noaf,np,cifg,fgr}", "{sgd,adam,adamw}",
                 "(default auto)"):
        assert text in train, text
    ngram = " ".join(parsers["ngram train"].format_help().split())
    assert "n-gram order" in ngram and "(default 3)" in ngram and "(default mkn)" in ngram
    assert "Kneser-Ney" in ngram and "--add-k K" in ngram
    assert "(default 10)" in parsers["ngram next"].format_help()
    assert "(default None)" not in "".join(p.format_help() for _, p in PARSERS)


def test_torch_free_copies_match_their_sources():
    from lmlab.analysis.ablation import StudyConfig
    from lmlab.analysis.ablation_cli import STUDY_DEFAULTS, VARIANTS
    from lmlab.neural.cells import VARIANTS as CELL_VARIANTS

    assert tuple(VARIANTS) == tuple(CELL_VARIANTS)
    study = StudyConfig()
    assert STUDY_DEFAULTS == {k: getattr(study, k) for k in STUDY_DEFAULTS}


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"lmlab {lmlab.__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "lmlab 0.1.0\n")


@pytest.mark.parametrize("argv", [
    ["train", "lstm", "--data", "d", "--out", "x.pt"],
    ["ablate", "--synthetic", "--out", "study"],
    ["gradients", "--cell", "lstm", "--text", "t.txt", "--out", "g"],
    ["embed", "plot", "v.w2v", "a", "b", "--out", "p.png"],
    ["embed", "ppmi", "t.txt", "--out", "v.w2v"],
    ["embed", "export", "v.w2v", "--out", "w.w2v"],
])
def test_out_still_works_as_an_abbreviation(argv):
    assert build_parser().parse_args(argv).output == argv[-1]


@pytest.mark.parametrize("argv", [
    ["ngram", "train", "t.txt", "-o", "m.lm", "--k", "0.5"],
    ["embed", "neighbors", "v.w2v", "king", "--k", "3"],
    ["data", "verify", "--data-dir", "d"],
])
def test_old_flags_are_gone(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_add_k_and_top():
    args = build_parser().parse_args(["ngram", "train", "t.txt", "-o", "m", "--add-k", "0.5"])
    assert args.add_k == 0.5
    for argv in (["ngram", "next", "m.lm", "-k", "3"], ["embed", "neighbors", "v", "w", "-k", "3"],
                 ["embed", "analogy", "v", "a", "b", "c", "--top", "3"]):
        assert build_parser().parse_args(argv).top == 3


def test_command_line_words_are_one_rule():
    def split_words(args):
        return tokens_of(command_line_text(args))

    assert split_words(["And God"]) == split_words(["And", "God"]) == ["And", "God"]
    assert split_words([" a\tb ", "c"]) == ["a", "b", "c"]
    assert split_words([]) == []


# -- --data: a folder or a corpus name under $LMLAB_DATA ----------------------------------------
def test_data_folder_resolves_folders_and_names(tmp_path, monkeypatch):
    from lmlab.datasets import data_folder

    root = tmp_path / "corpora"
    (root / "mini").mkdir(parents=True)
    (root / "mini" / "train.txt").write_text("a b\n")
    local = tmp_path / "local"
    local.mkdir()
    monkeypatch.setenv("LMLAB_DATA", str(root))
    assert data_folder(local) == local
    assert data_folder("mini") == root / "mini"
    monkeypatch.chdir(tmp_path)
    assert data_folder("local") == Path("local")  # a folder here wins over a corpus name
    with pytest.raises(LmlabError, match="missing train.txt, valid.txt, test.txt; download"):
        data_folder("ptb")  # a known corpus not downloaded: where to get it
    with pytest.raises(LmlabError, match=r"nosuch: no such data directory .* nor a corpus in"):
        data_folder("nosuch")
    monkeypatch.delenv("LMLAB_DATA")
    with pytest.raises(LmlabError, match="LMLAB_DATA is not set"):
        data_folder("mini")


def test_missing_data_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LMLAB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    for argv in (["ablate", "--data", "nosuch", "-o", "study"],
                 ["train", "lstm", "--data", "nosuch", "-o", "m.pt"]):
        assert "nosuch: no such data directory" in fails(capsys, *argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_train_finds_a_corpus_by_name(tmp_path, monkeypatch, capsys):
    from lmlab.synth import MarkovSource, write_splits

    write_splits(MarkovSource(order=2, vocab_size=8, seed=4), tmp_path / "data" / "mini",
                 {"train": 40, "valid": 5, "test": 5}, seed=0)
    monkeypatch.setenv("LMLAB_DATA", str(tmp_path / "data"))
    out = tmp_path / "runs" / "m.pt"
    (tmp_path / "runs").mkdir()
    report = json.loads(ok(capsys, "train", "lstm", "--data", "mini", "-o", out, "--json",
                           "--emsize", "4", "--hidden", "4", "--layers", "1", "--bptt", "5",
                           "--batch-size", "2", "--epochs", "1", "--threads", "1",
                           "--device", "cpu"))
    assert report["checkpoint"] == str(out) and out.exists()


# -- `-` reads standard input --------------------------------------------------------------------
def lmlab_cli(*argv, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmlab.cli", *map(str, argv)], input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def bigram(train_file, tmp_path_factory) -> Path:
    m = tmp_path_factory.mktemp("stdin") / "m2.lm"
    assert main(["ngram", "train", str(train_file), "-n", "2", "-o", str(m)]) == 0
    return m


def test_eval_reads_standard_input(bigram, test_file, capsys):
    from_file = json.loads(ok(capsys, "eval", bigram, test_file, "--json"))
    proc = lmlab_cli("eval", bigram, "-", "--json", stdin=test_file.read_text())
    assert proc.returncode == 0, proc.stderr
    from_stdin = json.loads(proc.stdout)
    assert from_stdin.pop("text") == "-"
    from_file.pop("text")
    assert from_stdin == from_file


def test_ngram_train_reads_standard_input(bigram, train_file, test_file, tmp_path, capsys):
    m = tmp_path / "stdin.lm"
    proc = lmlab_cli("ngram", "train", "-", "-n", "2", "-o", m, stdin=train_file.read_text())
    assert proc.returncode == 0, proc.stderr
    a = json.loads(ok(capsys, "eval", m, test_file, "--json"))
    b = json.loads(ok(capsys, "eval", bigram, test_file, "--json"))
    assert a["perplexity"] == b["perplexity"] and a["tokens"] == b["tokens"]


def test_compare_and_interpolate_read_standard_input(bigram, models_pair, test_file, tmp_path):
    uni = models_pair
    proc = lmlab_cli("compare", bigram, uni, "--text", "-", "--json",
                     stdin=test_file.read_text())
    assert proc.returncode == 0, proc.stderr
    from_stdin = json.loads(proc.stdout)
    proc = lmlab_cli("compare", bigram, uni, "--text", test_file, "--json")
    from_file = json.loads(proc.stdout)
    for a, b in zip(from_stdin["models"], from_file["models"], strict=True):
        assert (a["perplexity"], a["tokens"]) == (b["perplexity"], b["tokens"])
    mix = tmp_path / "mix.json"
    proc = lmlab_cli("interpolate", bigram, uni, "--valid", "-", "-o", mix,
                     stdin=test_file.read_text())
    assert proc.returncode == 0, proc.stderr
    assert mix.exists()


@pytest.fixture(scope="module")
def models_pair(train_file, tmp_path_factory) -> Path:
    m = tmp_path_factory.mktemp("stdin1") / "m1.lm"
    assert main(["ngram", "train", str(train_file), "-n", "1", "-s", "wb", "-o", str(m)]) == 0
    return m


def test_usage_errors_are_one_line_naming_the_command(capsys):
    cases = [(["eval", "m.lm", "t.txt", "--jsn"], "lmlab eval: error: unrecognized arguments: "
              "--jsn (see 'lmlab eval --help')"),
             (["train", "lstm", "-o", "x.pt"], "lmlab train: error: the following arguments "
              "are required: --data (see 'lmlab train --help')"),
             (["ngram", "next", "m.lm", "--top", "x"], "lmlab ngram next: error: argument "
              "-k/--top: invalid int value: 'x' (see 'lmlab ngram next --help')")]
    for argv, line in cases:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert capsys.readouterr().err.splitlines() == [line]
