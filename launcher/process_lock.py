"""Which process owns a folder: its PID and host, in a lock file (a run dir) or a marker (a cache build).

A run dir is trained in by one process at a time. Rank 0 of the run holds ``RUN_DIR/run.lock`` (an fcntl
lock, with the holder's PID, host and SLURM job in the file) for as long as it trains; a second process that
starts in the same run dir is refused with the first one's PID and host. The lock dies with its process, so a
restart that legitimately reuses the run dir (a SLURM requeue on any node, a torchrun restart, a rerun after a
kill -9) takes it over; the log says whose it was. A clean end empties the file, so a non-empty file found
free means its holder died. A requeued SLURM attempt that finds the lock still held by an earlier attempt of its
own job (SLURM has ended that one, but an NFS server keeps a dead node's locks until its lease runs out) waits
for it, up to EARLIER_ATTEMPT_WAIT_S. On a file system without fcntl locks (some Lustre mounts), the recorded holder
decides: a dead PID on this host, or an earlier attempt of this same SLURM job (SLURM starts a requeued
attempt only once the old one is gone), is taken over; a live or unknowable one is refused.

Why fcntl (POSIX) locks and not flock: a flock is shared with forked children (data-loader and tokenizer
workers), which can outlive a killed rank 0 and keep its lock; a POSIX lock belongs to the process alone.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import LauncherError

log = logging.getLogger("launcher.lock")

RUN_LOCK_FILE = "run.lock"
EARLIER_ATTEMPT_WAIT_S = 120
"""How long a requeued attempt waits for the lock of an earlier attempt of its job (an NFS lease: 90 s)."""
NO_LOCKS_HERE = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
"""What fcntl says on a file system that does not do locks."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float
    slurm_job: str = ""
    slurm_restart: int = 0

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), time.time(), os.environ.get("SLURM_JOB_ID", ""),
                   int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))

    @classmethod
    def parse(cls, text: str) -> Optional["Holder"]:
        try:
            raw = json.loads(text)
            return cls(int(raw["pid"]), str(raw["host"]), float(raw.get("since", 0)), str(raw.get("slurm_job", "")),
                       int(raw.get("slurm_restart", 0)))
        except (ValueError, KeyError, TypeError):
            return None

    def text(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)) if self.since else "?"
        return f"PID {self.pid} on host {self.host}{job}, since {started}"

    def earlier_attempt_of_this_job(self) -> bool:
        """An earlier attempt of the SLURM job this process belongs to: SLURM requeues only once it has ended."""
        me = Holder.me()
        return bool(self.slurm_job) and self.slurm_job == me.slurm_job and self.slurm_restart < me.slurm_restart

    def gone(self) -> Optional[bool]:
        """True: it no longer runs; False: it runs; None: it cannot be told from here (another host)."""
        if self.earlier_attempt_of_this_job():
            return True
        if self.host != socket.gethostname():
            return None
        return not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """A process with this PID runs on this host (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunDirLock:
    """Held by the process that trains in a run dir; ``release`` at the end (a crash releases it too)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty file found free: its holder ended cleanly
        except OSError:
            pass
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1
        _HELD.discard(str(self.path))


_HELD: set = set()
"""Lock files this process holds: a POSIX lock does not stop its own process from locking again."""


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def _busy(run_dir: Path, holder: Optional[Holder], path: Path) -> LauncherError:
    who = holder.describe() if holder else "another process (no PID recorded)"
    return LauncherError(
        f"run dir {run_dir} is in use: {who} trains in it (lock file {path}); two processes in one run dir"
        " would overwrite each other's checkpoints and metrics: wait for it to end or stop it, or start a new run")


def _wait_for_earlier_attempt(fd: int, run_dir: Path, path: Path) -> bool:
    """The lock is held. By an earlier attempt of this SLURM job, which SLURM has ended, on a node that died: an
    NFS server keeps a dead client's lock until its lease runs out (90 s by default), so wait that long. By
    anyone else: refused."""
    holder = Holder.parse(_read(fd))
    if holder is None or not holder.earlier_attempt_of_this_job():
        raise _busy(run_dir, holder, path)
    log.warning("run dir %s: its lock is still held by %s, an earlier attempt of this job; waiting up to %d s for"
                " the file system to release it", run_dir, holder.describe(), EARLIER_ATTEMPT_WAIT_S)
    deadline = time.monotonic() + EARLIER_ATTEMPT_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
    raise _busy(run_dir, holder, path)


def hold_run_dir(run_dir: Path) -> RunDirLock:
    """Take ``RUN_DIR/run.lock`` for this process, or raise a LauncherError naming the process that has it."""
    run_dir = Path(run_dir)
    path = (run_dir / RUN_LOCK_FILE).resolve()
    if str(path) in _HELD:
        raise _busy(run_dir, Holder.me(), path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                locked = _wait_for_earlier_attempt(fd, run_dir, path)
            elif exc.errno in NO_LOCKS_HERE:
                locked = False
            else:
                raise
        previous = Holder.parse(_read(fd))
        if previous is not None and (previous.pid, previous.host) != (os.getpid(), socket.gethostname()):
            gone = previous.gone()
            if not locked and gone is not True:
                raise _busy(run_dir, previous, path)
            how = "the file system does not lock; " if not locked else ""
            log.warning("run dir %s: took over its lock from %s (%sthat process is gone)", run_dir,
                        previous.describe(), how)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, Holder.me().text().encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    _HELD.add(str(path))
    return RunDirLock(path, fd)
