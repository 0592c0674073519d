"""The Python examples of README.md and docs/python.md run as written, on the real corpora (from
the corpora folder, as the docs say), so they cannot rot."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from lmlab.datasets import find_corpus

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"),
                      re.S | re.M)


@pytest.fixture
def in_corpora(tmp_path, monkeypatch):
    """A working folder laid out like $LMLAB_DATA (its ptb linked in), as the current folder."""
    ptb = find_corpus("ptb")
    if ptb is None:
        pytest.skip("needs the PTB corpus: set LMLAB_DATA to the corpora folder")
    (tmp_path / "ptb").symlink_to(ptb, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_blocks(blocks: list[str], where: str) -> dict:
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an example that warns is a bad example
        for i, code in enumerate(blocks, 1):
            exec(compile(code, f"{where} block {i}", "exec"), namespace)  # noqa: S102
    return namespace


def test_docs_python_md_runs(in_corpora, capsys):
    blocks = python_blocks(ROOT / "docs" / "python.md")
    assert len(blocks) >= 5
    ns = run_blocks(blocks, "docs/python.md")
    out = capsys.readouterr().out
    assert "perplexity 141." in out  # PTB test, MKN 5-gram (KenLM: 141.19)
    assert "no-such-model.lm: no such file" in out
    assert (in_corpora / "ptb-mix.json").exists()
    assert ns["best"].perplexity <= ns["r"].perplexity


def test_readme_python_example_runs(in_corpora, capsys):
    import lmlab

    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) == 1
    # the checkpoint the README's CLI example trains, made small and quick here
    lmlab.train("lstm", data="ptb", output="runs/lstm.pt", hidden=16, emsize=16, layers=1,
                max_steps=20)
    run_blocks(blocks, "README.md")
    out = capsys.readouterr().out
    assert "perplexity 141.19, 0 OOV" in out  # PTB test, MKN 5-gram (KenLM: 141.19)
    assert "lstm.pt" in out  # the comparison table names the checkpoint
