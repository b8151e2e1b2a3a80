"""A full disk, said in one line: what was being written, where, how much space it needs and how much is free.

Writers of big files (checkpoints, the tokenized data cache, exports, the metrics log) run inside
``disk_full_guard``, which turns the errors a full disk causes into a ``DiskFullError`` (a LauncherError: the CLI
and every rank print it as one line). Those are ``OSError`` ENOSPC / EDQUOT; torch's ``RuntimeError`` from its
zip writer, which loses the errno (``unexpected pos 576 vs 534``, ``basic_ios::clear: iostream error``,
``PytorchStreamWriter failed writing file``); numpy's short ``tofile`` (the GGUF writer); and other writers'
errors that carry the OS's message (safetensors' ``SafetensorError``). Each writer writes under a temporary name
and removes it on any error, so nothing half-written is ever marked complete; the guard only words the error.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from launcher.errors import LauncherError

WRITE_FAILURES_WITHOUT_ERRNO = ("unexpected pos", "basic_ios::clear", "PytorchStreamWriter failed writing",
                                "file write failed", "requested and")
"""What torch's serializer ("unexpected pos 576 vs 534") and numpy's ``tofile`` ("49152 requested and 1512
written") say when a write fails: no errno, so the message tells the cause from the free space."""

LOW_SPACE = 64 << 20
"""Less free than this after a write failed without an errno: the disk is full."""


class DiskFullError(LauncherError):
    """A write failed for lack of space (or quota) on the file system of a path."""


def disk_full_cause(exc: BaseException) -> Optional[str]:
    """'space' (ENOSPC), 'quota' (EDQUOT), 'no errno' (a write that failed without saying why: torch's, numpy's)
    or None, from ``exc`` or the exceptions it was raised from."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return "space"
        if isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
            return "quota"
        text = str(exc)
        # Writers in other languages pass the OS's words on, not an OSError (safetensors: "I/O error: No space
        # left on device (os error 28)").
        if os.strerror(errno.ENOSPC) in text:
            return "space"
        if os.strerror(errno.EDQUOT) in text:
            return "quota"
        if (isinstance(exc, RuntimeError) or (isinstance(exc, OSError) and exc.errno is None)) and \
                any(failure in text for failure in WRITE_FAILURES_WITHOUT_ERRNO):
            return "no errno"
        exc = exc.__cause__ or exc.__context__
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: Path) -> tuple[int, int]:
    """(free, total) bytes of the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it is gone): what a failed write had written so far."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for p in path.rglob("*") if path.is_dir() else ():
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def written_so_far(path: Path) -> str:
    """For a message: what a failed write had put under ``path`` (a lower bound of what it needs)."""
    return f"it had written {human_bytes(folder_bytes(path))} when the write failed (it needs more)"


def disk_full_message(path: Path, what: str, cause: str, needed: Optional[str] = None) -> str:
    free, total = free_bytes(path)
    space = f"{human_bytes(free)} free of {human_bytes(total)} on its file system"
    need = f"; {needed}" if needed else ""
    if cause == "quota":
        head = f"disk quota exceeded writing {what} to {path}"
        space += " (the quota is per user or group: `quota -s` or `lfs quota` shows it)"
    elif cause == "no errno" and free >= LOW_SPACE:
        head = f"writing {what} to {path} failed (the writer gave no reason; not for lack of space: a quota?)"
    else:
        head = f"no space left on device writing {what} to {path}"
    return f"{head}: {space}{need}; free space there or write to another file system"


@contextmanager
def disk_full_guard(path: Path, what: str, needed: Optional[Callable[[], Optional[str]]] = None):
    """Run a write; a full disk (or quota) becomes a one-line ``DiskFullError`` naming ``path``, ``what`` was
    written, the free space and what ``needed()`` says was needed (called only then). Other errors pass."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as exc:
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        try:
            need = needed() if needed is not None else None
        except Exception:
            need = None
        raise DiskFullError(disk_full_message(path, what, cause, need)) from exc
