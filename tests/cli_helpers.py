"""Running ``lmlab`` in-process in tests: success, or exactly one friendly error line."""

from __future__ import annotations

from lmlab.cli import main


def ok(capsys, *argv) -> str:
    """Run the CLI, expect success and no traceback; return stdout."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in err
    return out


def fails(capsys, *argv) -> str:
    """Run the CLI, expect exit 2 with exactly one 'lmlab: error:' line; return that line."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), err
    return lines[0]
