"""Shared fixtures: small seeded text files for corpus, metrics and CLI tests (no real corpora)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

TRAIN_WORDS = [f"w{i}" for i in range(30)]  # the training text uses all 30
UNSEEN_WORDS = ["zz1", "zz2", "zz3"]  # never in training: OOV in the test text


def random_sentences(seed: int, n: int, words: list[str], max_len: int = 9,
                     allow_empty: bool = False) -> list[list[str]]:
    """``n`` sentences of words drawn by a seeded generator, with a little structure (a bigram
    preference) so higher orders have something to learn."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(0 if allow_empty else 1, max_len)
        sent: list[str] = []
        for _ in range(length):
            if sent and rng.random() < 0.5 and sent[-1] in words:
                i = words.index(sent[-1])
                sent.append(words[(i + 1) % len(words)])
            else:
                sent.append(rng.choice(words))
        out.append(sent)
    return out


def write_lines(path: Path, sentences: list[list[str]]) -> Path:
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory) -> Path:
    """A folder with ``train.txt`` (400 sentences over 30 words) and ``test.txt`` (40 sentences,
    a few unseen words and empty lines). Session-scoped: treat as read-only."""
    d = tmp_path_factory.mktemp("texts")
    train = random_sentences(1, 400, TRAIN_WORDS)
    assert {w for s in train for w in s} == set(TRAIN_WORDS)
    write_lines(d / "train.txt", train)
    test = random_sentences(2, 40, TRAIN_WORDS + UNSEEN_WORDS, allow_empty=True)
    test[0] = ["w1", "zz1", "w2"]  # at least one OOV and one empty line, whatever the seed gives
    test[1] = []
    write_lines(d / "test.txt", test)
    return d


@pytest.fixture(scope="session")
def train_file(text_dir) -> Path:
    return text_dir / "train.txt"


@pytest.fixture(scope="session")
def test_file(text_dir) -> Path:
    return text_dir / "test.txt"
