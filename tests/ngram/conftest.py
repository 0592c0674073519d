"""Fixtures locating the real corpora and KenLM reference outputs; tests skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _data_root() -> Path | None:
    root = os.environ.get("LMLAB_DATA")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("real-corpus test: set LMLAB_DATA to the corpora folder (holding ptb/, "
                    "wikitext-2/; see `lmlab data`)")
    return root


@pytest.fixture(scope="session")
def kenlm_reference() -> Path:
    ref = os.environ.get("LMLAB_REFERENCE")
    root = _data_root()
    path = Path(ref) if ref else (root.parent / "reference" / "kenlm" if root else None)
    if path is None or not (path / "ptb-valid-UNK.o5.arpa.gz").exists():
        pytest.skip("KenLM reference ARPA files (ptb-valid-UNK.o3/o5.arpa.gz, made by lmplz) "
                    "not found: set LMLAB_REFERENCE to their folder, or put them in "
                    "$LMLAB_DATA/../reference/kenlm")
    return path


@pytest.fixture(scope="session")
def ptb_unk(data_root, tmp_path_factory) -> Path:
    """PTB with literal <unk> replaced by the ordinary word UNK, as the KenLM fixtures were made."""
    src = data_root / "ptb"
    if not (src / "train.txt").exists():
        pytest.skip(f"PTB not found in {data_root}: put ptb/train.txt, valid.txt, test.txt "
                    "under $LMLAB_DATA (see `lmlab data`)")
    out = tmp_path_factory.mktemp("ptb_unk")
    for split in ("train", "valid", "test"):
        text = (src / f"{split}.txt").read_text(encoding="utf-8")
        (out / f"{split}.txt").write_text(text.replace("<unk>", "UNK"), encoding="utf-8")
    return out
