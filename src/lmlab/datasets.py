"""The benchmark corpora lmlab knows: where they come from, their checksums, how to find them.

lmlab never ships these files. Point it at a folder holding ``ptb/``, ``wikitext-2/`` ... (each
with train/valid/test) with ``--data`` or the ``LMLAB_DATA`` environment variable, and check
your copy byte for byte with ``lmlab data verify``. ``lmlab train --data ptb`` and ``lmlab ablate
--data ptb`` find a corpus there by name (:func:`data_folder`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import LmlabError


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    source_url: str  # canonical public download
    archive_members: dict[str, str]  # our split file -> member path inside the archive
    sha256: dict[str, str] = field(default_factory=dict)  # split file -> sha256 of its bytes
    license: str = ""


CORPORA = {
    "ptb": Corpus(
        "ptb", "Penn Treebank, Mikolov's word-level version (10k vocabulary, <unk>)",
        "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
        {"train.txt": "simple-examples/data/ptb.train.txt",
         "valid.txt": "simple-examples/data/ptb.valid.txt",
         "test.txt": "simple-examples/data/ptb.test.txt"},
        {"train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
         "valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
         "test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"},
        "LDC Penn Treebank (WSJ text); research use only"),
    "wikitext-2": Corpus(
        "wikitext-2", "WikiText-2 v1, tokenized, with <unk> (Merity et al. 2016)",
        "https://wikitext.smerity.com/wikitext-2-v1.zip",
        {"train.txt": "wikitext-2/wiki.train.tokens",
         "valid.txt": "wikitext-2/wiki.valid.tokens",
         "test.txt": "wikitext-2/wiki.test.tokens"},
        {"train.txt": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
         "valid.txt": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
         "test.txt": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"},
        "CC BY-SA 3.0"),
    "ptb-char": Corpus(
        "ptb-char", "Penn Treebank, character level (Mikolov), gzip-compressed here",
        "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
        {"train.txt.gz": "simple-examples/data/ptb.char.train.txt",
         "valid.txt.gz": "simple-examples/data/ptb.char.valid.txt",
         "test.txt.gz": "simple-examples/data/ptb.char.test.txt"},
        {"train.txt.gz": "bfe1c3eda8bcc757be2e685093d94ae9610ec4e062d50efed2444f1421577dc8",
         "valid.txt.gz": "e4be541ff951695f186c0e9a3737f019467dde91b9ca870d026c34080daed326",
         "test.txt.gz": "17fddeac8a46a1bcb04ea9b11c0e1fbc1606e382b9edaf55322c59de70316334"},
        "LDC Penn Treebank (WSJ text); research use only"),
    "zh-fortunes": Corpus(
        "zh-fortunes", "Chinese prose, raw (not segmented into words): the fortunes-zh "
        "collection, one paragraph per line",
        "Debian package fortunes-zh 2.98 (https://packages.debian.org/fortunes-zh); "
        "the splits are made as $LMLAB_DATA/README.md says",
        {"train.txt": "/usr/share/games/fortunes/chinese (records k % 10 not 8 or 9)",
         "valid.txt": "/usr/share/games/fortunes/chinese (records k % 10 == 8)",
         "test.txt": "/usr/share/games/fortunes/chinese (records k % 10 == 9)"},
        {"train.txt": "1483154c8f3433d4951a9a52fae207baa298f76d05e0717c1338187a27fa12be",
         "valid.txt": "6a6f4de01c7c6e170f63acd4e8ecc1c51730b1059312cfecc28010f860c49202",
         "test.txt": "d2a25a568f53aaafddf6ab84c5d90d2162fd022ec5793e32283dc955e36e6abb"},
        "GPL-2+ for the collection; quotations by their authors"),
}


def find_corpus(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder of corpus ``name`` under ``data_dir`` or ``$LMLAB_DATA`` if it holds a training
    file, else None (for callers that skip quietly; :func:`corpus_dir` raises instead)."""
    root = data_dir or os.environ.get("LMLAB_DATA")
    folder = Path(root) / name if root else None
    if folder and ((folder / "train.txt").exists() or (folder / "train.txt.gz").exists()):
        return folder
    return None


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    root = data_dir or os.environ.get("LMLAB_DATA")
    if not root:
        raise LmlabError("no data folder: pass --data DIR or set LMLAB_DATA")
    path = Path(root)
    if not path.is_dir():
        raise LmlabError("data folder does not exist", path)
    return path


def corpus_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of corpus ``name`` under the data root, checked to hold its split files."""
    if name not in CORPORA:
        raise LmlabError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    folder = data_root(data_dir) / name
    missing = [f for f in CORPORA[name].sha256 if not (folder / f).exists()]
    if missing:
        raise LmlabError(f"missing {', '.join(missing)}; download {CORPORA[name].source_url}",
                         folder)
    return folder


def data_folder(spec: str | os.PathLike) -> Path:
    """The folder a ``--data`` value names: a folder (holding train.txt, valid.txt, test.txt), or
    else the name of a corpus under ``$LMLAB_DATA`` (``ptb``). A folder of that name in the
    working directory wins over the corpus."""
    path = Path(spec)
    if path.is_dir():
        return path
    name = os.fspath(spec)
    if name in CORPORA and os.environ.get("LMLAB_DATA"):
        return corpus_dir(name)  # a known corpus: says which files are missing and where to get it
    found = find_corpus(name)
    if found is not None:
        return found
    root = os.environ.get("LMLAB_DATA")
    where = f"nor a corpus in $LMLAB_DATA ({root})" if root else \
        "nor a corpus name (LMLAB_DATA is not set)"
    raise LmlabError(f"no such data directory (train.txt, valid.txt, test.txt), {where}", name)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    folder = corpus_dir(name, data_dir)
    return {f: sha256_file(folder / f) == digest for f, digest in CORPORA[name].sha256.items()}


def data_command(action: str, name: str | None, data_dir: str | None) -> int:
    names = [name] if name else list(CORPORA)
    for n in names:
        if n not in CORPORA:
            raise LmlabError(f"unknown corpus {n!r}; known: {', '.join(CORPORA)}")
    if action == "info":
        for n in names:
            c = CORPORA[n]
            print(f"{c.name}: {c.description}\n  source  {c.source_url}\n  license {c.license}")
            for f, member in c.archive_members.items():
                print(f"  {f:<13} <- {member}  sha256 {c.sha256[f]}")
        return 0
    bad = 0
    for n in names:
        for f, ok in verify(n, data_dir).items():
            print(f"{n}/{f}: {'OK' if ok else 'CHECKSUM MISMATCH'}")
            bad += not ok
    return 1 if bad else 0
