"""Issue 29 item 8 (export): `launcher export` onto a full disk says so in one line and leaves no folder or
file behind. On a real 1 MiB tmpfs (mounted by the test; skipped where it cannot be); the model takes ~3 MiB."""
from __future__ import annotations

import pytest

from launcher.cli import main as cli_main
from tests.tmpfs import small_tmpfs


@pytest.fixture
def disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as path:
        yield path


def error_line(capsys) -> str:
    """The one error line (progress bars end their lines with \r: the error starts after them)."""
    err = capsys.readouterr().err
    lines = [line[line.index("error:"):] for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_export_to_a_full_disk(full_run, disk, capsys):
    out = disk / "model"
    assert cli_main(["export", str(full_run), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: no space left on device writing the export to {out}: ")
    assert "free of 1.0 MiB" in line and "the weights alone take 3." in line
    assert list(disk.iterdir()) == [], "a half-written export was left"


def test_gguf_export_to_a_full_disk(full_run, disk, capsys):
    pytest.importorskip("gguf")
    out = disk / "m.gguf"
    assert cli_main(["export", str(full_run), "--format", "gguf", "--dtype", "f32", "--out", str(out)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: no space left on device writing the GGUF file to {out}: "), line
    assert list(disk.iterdir()) == []
