"""Issue 29 item 8: a full disk is one line naming the path, the free space and what was needed, and nothing
half-written is left marked complete. On a real, small tmpfs (mounted by the test; skipped where it cannot be)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.data import cache
from launcher.disk_full import DiskFullError, disk_full_guard
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.engines import checkpoint as ckpt
from launcher.training.metrics import MetricsLogger
from tests.resume.helpers import TINY
from tests.tmpfs import fill, small_tmpfs

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "2m") as path:
        yield path


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_torchs_write_failure_is_said_as_a_full_disk(disk):
    """torch's zip writer loses the errno (`unexpected pos`, `basic_ios::clear`): told from the free space."""
    target = disk / "state.pt"
    with pytest.raises(DiskFullError) as err:
        with disk_full_guard(target, "a checkpoint"):
            torch.save({"w": torch.zeros(1 << 20)}, target)  # 4 MiB into 2 MiB
    text = one_line(err)
    assert text.startswith(f"no space left on device writing a checkpoint to {target}: ") and "free of 2.0 MiB" in text
    assert isinstance(err.value.__cause__, RuntimeError)


def test_other_errors_pass_through(disk):
    with pytest.raises(RuntimeError, match="unrelated"):
        with disk_full_guard(disk, "x"):
            raise RuntimeError("unrelated")


def test_a_cache_build_that_fills_the_disk_leaves_nothing(disk):
    def build(tmp):
        (tmp / "input_ids.bin").write_bytes(b"\1" * (3 << 20))

    with pytest.raises(DiskFullError) as err:
        cache.cached(disk, "k1", build)
    text = one_line(err)
    assert f"writing the tokenized data cache to {disk / 'k1'}" in text and "it had written" in text
    assert sorted(p.name for p in disk.iterdir() if p.is_dir()) == []


def test_the_metrics_log_on_a_full_disk(disk):
    logger = MetricsLogger(compose_config([]), disk, enabled=True)
    logger.log({"kind": "train", "step": 1, "loss": 1.0})
    fill(disk)
    with pytest.raises(DiskFullError) as err:
        for step in range(2, 2000):  # the page already allocated takes a few lines
            logger.log({"kind": "train", "step": step, "loss": 1.0, "pad": "x" * 200})
    assert f"writing the metrics log to {disk / 'metrics.jsonl'}" in one_line(err)


def test_a_run_whose_checkpoint_does_not_fit_stops_with_one_line(tmp_path):
    """A real rank process (python -m recipes.sft): its first checkpoint (~9.6 MB) meets a 6 MiB disk."""
    with small_tmpfs(tmp_path / "outputs", "6m") as root:
        cfg = compose_config([f"run.output_root={root}", "train.max_steps=4", "train.save_every=2", *TINY,
                              f"data.cache_dir={tmp_path / 'cache'}"])
        run_dir = make_run_dir(root, "full")
        write_run_config(run_dir, cfg)
        done = subprocess.run([sys.executable, "-m", "recipes.sft", "--run-dir", str(run_dir)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert done.returncode == 2, done.stderr[-4000:]
        assert "Traceback" not in done.stderr, done.stderr[-4000:]
        # the progress bar ends its line with \r: the error starts after it
        errors = [line[line.index("error:"):] for line in done.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, done.stderr[-4000:]
        expected = ckpt.checkpoint_root(run_dir) / "step-0000002"
        assert f"error: no space left on device writing checkpoint step-0000002 to {expected}: " in errors[0]
        assert "free of 6.0 MiB" in errors[0] and "it had written" in errors[0]
        assert ckpt.complete_checkpoints(run_dir) == []
        assert not list(ckpt.checkpoint_root(run_dir).glob(".tmp-*")), "the unfinished checkpoint was left behind"
        assert not (run_dir / "summary.json").exists()
        assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
