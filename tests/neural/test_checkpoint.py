"""Checkpoint files: atomic saves that survive kill -9, safe loading (weights_only), one-line errors
for anything that is not a usable checkpoint, RNG state round trips."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.models import is_torch_archive, load_model
from lmlab.neural.checkpoint import (
    FORMAT,
    VERSION,
    get_rng_state,
    load_checkpoint,
    plain,
    save_checkpoint,
    set_rng_state,
    temp_path,
)

torch.set_num_threads(1)


def payload(size: int = 4, tag: str = "a") -> dict:
    return {"config": {"model": {"model": "lstm"}}, "vocab": ["<unk>", "<s>", "</s>", "x"],
            "model": OrderedDict(w=torch.arange(size, dtype=torch.float32)),
            "tag": tag, "nested": {"list": [1, 2.5, None, True, "s"], "tuple": (1, (2, 3))}}


def test_roundtrip_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload())
    data = load_checkpoint(path)
    assert data["format"] == FORMAT and data["version"] == 1  # (2: holds a tokenizer)
    assert torch.equal(data["model"]["w"], torch.arange(4, dtype=torch.float32))
    assert data["nested"] == {"list": [1, 2.5, None, True, "s"], "tuple": (1, (2, 3))}
    # the file itself opens with weights_only=True, no allow-listing needed
    assert torch.load(path, weights_only=True)["tag"] == "a"
    assert not temp_path(path).exists()
    assert is_torch_archive(path.read_bytes()[:256])


def test_plain_converts_subclasses_and_rejects_objects():
    out = plain({"v": torch.__version__, "n": np.float64(1.5), "i": np.int64(3),
                 "t": torch.zeros(1)})
    assert type(out["v"]) is str and type(out["n"]) is float and type(out["i"]) is int
    with pytest.raises(TypeError, match="cannot go in a checkpoint"):
        plain({"bad": object()})


def test_rng_state_roundtrip():
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    # and it survives a trip through a checkpoint file
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    data = plain({"rng": state})
    set_rng_state(data["rng"])
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case", ["truncated", "garbage", "empty", "foreign", "pickle", "newer",
                                  "incomplete", "directory", "missing"])
def test_unusable_files_are_one_line_errors(tmp_path, case):
    path = tmp_path / "c.pt"
    good = tmp_path / "good.pt"
    save_checkpoint(good, payload(1000))
    if case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    elif case == "pickle":
        torch.save({"format": FORMAT, "x": Evil()}, path)
    elif case == "newer":
        torch.save({"format": FORMAT, "version": VERSION + 1, "config": {}, "vocab": [],
                    "model": {}}, path)
    elif case == "incomplete":
        torch.save({"format": FORMAT, "version": VERSION}, path)
    elif case == "directory":
        path.mkdir()
    with pytest.raises(LmlabError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    expected = {"truncated": "truncated or corrupt", "garbage": "truncated or corrupt",
                "empty": "truncated or corrupt", "foreign": "not an lmlab checkpoint",
                "pickle": "refusing to load", "newer": "newer", "incomplete": "missing",
                "directory": "directory", "missing": "no such file"}[case]
    assert expected in msg


def test_load_model_routes_checkpoints_and_garbage(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, payload(1000))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(LmlabError, match="truncated or corrupt"):
        load_model(trunc)  # a checkpoint error, not an n-gram or "not a model" one
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(LmlabError, match="not a model lmlab can read"):
        load_model(junk)


def test_stale_temp_file_does_not_break_next_save(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload(tag="old"))
    temp_path(path).write_bytes(b"half a checkpoint from a killed process")
    save_checkpoint(path, payload(tag="new"))
    assert load_checkpoint(path)["tag"] == "new"
    assert not temp_path(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_unwritable_target_is_one_line_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LmlabError, match="is a file, not a folder"):
        save_checkpoint(tmp_path / "afile" / "sub" / "c.pt", payload())


def test_missing_folders_are_created(tmp_path):
    path = tmp_path / "runs" / "deep" / "c.pt"
    save_checkpoint(path, payload())
    assert load_checkpoint(path)["tag"] == "a"
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]


KILLER = textwrap.dedent("""
    import os, sys, time, torch
    from lmlab.neural import checkpoint
    path, mode = sys.argv[1], sys.argv[2]
    big = {"config": {}, "vocab": [], "model": {"w": torch.ones(8_000_000)}, "tag": "new"}
    if mode == "before-rename":
        def stuck(fd):
            print("writing", flush=True)
            time.sleep(60)
        checkpoint.os.fsync = stuck
        checkpoint.save_checkpoint(path, big)
    else:
        print("writing", flush=True)
        while True:
            checkpoint.save_checkpoint(path, big)
""")


@pytest.mark.parametrize("mode", ["before-rename", "mid-write"])
def test_kill_9_during_save_keeps_previous_checkpoint(tmp_path, mode):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload(tag="old"))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.Popen([sys.executable, str(script), str(path), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        if mode == "mid-write":
            deadline = time.monotonic() + 20
            while not (temp_path(path).exists() and temp_path(path).stat().st_size > 1_000_000):
                assert time.monotonic() < deadline, "the writer never started writing"
                time.sleep(0.005)
        else:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    data = load_checkpoint(path)  # the previous checkpoint, or a complete new one
    assert data["tag"] in ("old", "new")
    if mode == "before-rename":
        assert data["tag"] == "old"
        assert temp_path(path).exists()  # the litter the kill left...
    save_checkpoint(path, payload(tag="after"))  # ...does not stop the next save
    assert load_checkpoint(path)["tag"] == "after"
    assert not temp_path(path).exists()
    assert Path(path).exists()
