"""SLURM honesty on the test cluster: a pending job's reason in status and logs -f; a job id that does not
exist is said to be unknown, with a non-zero exit, by status, logs and cancel (scancel alone exits 0)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[2]


def sbatch(args: list, run_dir: Path) -> str:
    done = subprocess.run(["sbatch", "--parsable", f"--comment=launcher:{run_dir}", *args, "--wrap", "sleep 1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


@pytest.fixture
def pending_jobs(slurm_cluster, tmp_path):
    """One job held by its user, one asking for more nodes than the partition has (it stays pending)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    jobs = {"JobHeldUser": sbatch(["--hold"], run_dir), "PartitionNodeLimit": sbatch(["-N", "3"], run_dir)}
    yield jobs, run_dir
    subprocess.run(["scancel", *jobs.values()], capture_output=True, timeout=30)


def test_status_shows_why_a_job_is_pending(pending_jobs, capsys):
    jobs, run_dir = pending_jobs
    for reason, job_id in jobs.items():
        assert cli_main(["status", job_id]) == 0
        out = capsys.readouterr().out
        # SLURM names a request beyond the partition's nodes PartitionNodeLimit or PartitionConfig (as it
        # evaluates the partition first or the job first); either is SLURM's reason, shown as given.
        accepted = {"PartitionNodeLimit": ("PartitionNodeLimit", "PartitionConfig")}.get(reason, (reason,))
        assert any(f"job {job_id}: PENDING (reason: {r})" in out for r in accepted), out
        assert str(run_dir) in out


def test_logs_follow_says_the_job_is_pending_then_ends(pending_jobs):
    jobs, _ = pending_jobs
    job_id = jobs["JobHeldUser"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "logs", "-f", job_id], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"[launcher] job {job_id} is PENDING (reason: JobHeldUser)"), first
        assert "waiting" in first
        time.sleep(1)
        assert proc.poll() is None  # still following
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert f"[launcher] job {job_id} ended: CANCELLED" in rest, rest


def test_a_job_that_does_not_exist_is_said_to_be_unknown(slurm_cluster, capsys):
    missing = "987654"
    assert subprocess.run(["scancel", missing], capture_output=True, timeout=30).returncode == 0  # SLURM's own: silent
    for command in ("status", "cancel", "logs"):
        assert cli_main([command, missing]) == 2, command
        err = capsys.readouterr().err
        assert f"error: job {missing}: no such job" in err and err.count("\n") == 1, (command, err)


def test_cancelling_an_ended_job_says_so(pending_jobs, capsys):
    jobs, _ = pending_jobs
    job_id = jobs["PartitionNodeLimit"]
    assert cli_main(["cancel", job_id]) == 0
    assert f"cancelled job {job_id}" in capsys.readouterr().out
    deadline = time.time() + 30
    while time.time() < deadline:
        assert cli_main(["cancel", job_id]) == 0
        out = capsys.readouterr().out
        if "already ended" in out:
            break
        time.sleep(1)
    assert f"job {job_id} already ended (CANCELLED" in out and "nothing to cancel" in out
