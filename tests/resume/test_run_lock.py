"""Issue 29 item 9 (the run dir): one process trains in a run dir at a time. A second one is refused with the
first one's PID and host; a lock left by a process that died (kill -9) is taken over, said in the log. Real
processes, real signals."""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher import process_lock
from launcher.config.compose import compose_config
from launcher.errors import LauncherError
from launcher.process_lock import Holder, hold_run_dir
from launcher.launch.rundir import make_run_dir, write_run_config
from tests.resume.helpers import TINY

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
HOLDER = textwrap.dedent("""
    import sys, time
    from launcher.process_lock import hold_run_dir
    lock = hold_run_dir(sys.argv[1])
    if sys.argv[2] == "release":
        lock.release()
        print("held", flush=True)  # and released
    else:
        print("held", flush=True)
        time.sleep(300)
""")


def start_holder(run_dir: Path, then: str = "sleep") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), then], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=ENV)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def end(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=30)  # reaped: its PID is gone, not a zombie
    proc.stdout.close(), proc.stderr.close()


def test_a_second_process_is_refused_naming_the_first(tmp_path):
    first = start_holder(tmp_path)
    try:
        with pytest.raises(LauncherError) as refused:
            hold_run_dir(tmp_path)
        message = str(refused.value)
        assert f"PID {first.pid} on host {socket.gethostname()}" in message and "is in use" in message
        assert "\n" not in message
    finally:
        end(first)


def test_a_second_recipe_process_stops_with_one_line(output_root):
    """Wired into every rank's start (training/entry.py): the refused run writes nothing and exits 2."""
    cfg = compose_config([f"run.output_root={output_root}", "train.max_steps=2", *TINY])
    run_dir = make_run_dir(output_root, "busy")
    write_run_config(run_dir, cfg)
    first = start_holder(run_dir)
    try:
        before = sorted(p.name for p in run_dir.iterdir())
        second = subprocess.run([sys.executable, "-m", "recipes.sft", "--run-dir", str(run_dir)], cwd=REPO_ROOT,
                                env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, second.stderr[-3000:]
        assert f"PID {first.pid} on host {socket.gethostname()}" in errors[0]
        assert "Traceback" not in second.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == before, "the refused run wrote into the run dir"
    finally:
        end(first)


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    first = start_holder(tmp_path)
    end(first, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="launcher.lock"):
        lock = hold_run_dir(tmp_path)
    try:
        [line] = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
        assert f"PID {first.pid} on host {socket.gethostname()}" in line
        assert Holder.parse((tmp_path / process_lock.RUN_LOCK_FILE).read_text()).pid == os.getpid()
        with pytest.raises(LauncherError, match=f"PID {os.getpid()}"):
            hold_run_dir(tmp_path)  # not twice in one process either
    finally:
        lock.release()


def test_a_clean_end_leaves_nothing_to_take_over(tmp_path, caplog):
    end(start_holder(tmp_path, then="release"))
    with caplog.at_level(logging.WARNING, logger="launcher.lock"):
        hold_run_dir(tmp_path).release()
    assert not [r for r in caplog.records if "took over" in r.getMessage()]


@pytest.fixture
def no_locks(monkeypatch):
    """A file system without fcntl locks (some Lustre mounts): the recorded holder decides."""
    def lockf(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(process_lock.fcntl, "lockf", lockf)


def write_holder(run_dir: Path, pid: int, host: str = None, **slurm) -> None:
    holder = Holder(pid, host or socket.gethostname(), 0.0, **slurm)
    (run_dir / process_lock.RUN_LOCK_FILE).write_text(holder.text())


def test_without_locks_a_live_holder_is_refused_and_a_dead_one_taken_over(tmp_path, no_locks, caplog):
    live = start_holder(tmp_path)  # its own lockf is real; here the lock file is read as if none could be taken
    try:
        with pytest.raises(LauncherError, match=f"PID {live.pid} on host"):
            hold_run_dir(tmp_path)
    finally:
        end(live)
    with caplog.at_level(logging.WARNING, logger="launcher.lock"):
        hold_run_dir(tmp_path).release()  # its PID is dead now
    assert any("took over" in r.getMessage() and "does not lock" in r.getMessage() for r in caplog.records)


def test_without_locks_another_hosts_holder_is_refused_unless_an_earlier_attempt_of_this_job(
        tmp_path, no_locks, monkeypatch):
    write_holder(tmp_path, 4242, "node-elsewhere", slurm_job="77", slurm_restart=0)
    with pytest.raises(LauncherError, match="PID 4242 on host node-elsewhere, SLURM job 77"):
        hold_run_dir(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued attempt: SLURM ended the first one
    hold_run_dir(tmp_path).release()


def test_a_requeued_attempt_waits_for_the_lock_of_its_earlier_attempt(tmp_path, monkeypatch, caplog):
    """SLURM ended attempt 0, but its lock is still held (an NFS lease of a dead node): attempt 1 waits for it."""
    import threading

    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "sleep"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                             env={**ENV, "SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "0"})
    assert first.stdout.readline().strip() == "held"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setattr(process_lock, "EARLIER_ATTEMPT_WAIT_S", 30)
    threading.Timer(2.0, lambda: end(first)).start()  # the lease runs out
    with caplog.at_level(logging.WARNING, logger="launcher.lock"):
        hold_run_dir(tmp_path).release()
    messages = [r.getMessage() for r in caplog.records]
    assert any("an earlier attempt of this job; waiting" in m for m in messages)
    assert any("took over" in m and f"PID {first.pid}" in m for m in messages)


def test_another_job_is_not_waited_for(tmp_path, monkeypatch):
    first = start_holder(tmp_path)
    try:
        monkeypatch.setenv("SLURM_JOB_ID", "78")
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
        with pytest.raises(LauncherError, match="is in use"):
            hold_run_dir(tmp_path)
    finally:
        end(first)
