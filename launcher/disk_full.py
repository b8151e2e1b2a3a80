"""A full disk, said in one line: what was being written, where, how much space it needs and how much is free.

Writers of big files (checkpoints, the tokenized data cache, exports, the metrics log) run inside
``disk_full_guard``, which turns the errors a full disk causes into a ``DiskFullError`` (a LauncherError: the CLI
and every rank print it as one line). Those are ``OSError`` ENOSPC / EDQUOT, and torch's ``RuntimeError`` from its
zip writer, which loses the errno (``unexpected pos 576 vs 534``, ``basic_ios::clear: iostream error``,
``PytorchStreamWriter failed writing file``). Each writer writes under a temporary name and removes it on any
error, so nothing half-written is ever marked complete; the guard only words the error.
"""
from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from launcher.errors import LauncherError

TORCH_WRITE_FAILURES = ("unexpected pos", "basic_ios::clear", "PytorchStreamWriter failed writing",
                        "file write failed")
"""What torch's serializer says when a write fails; it keeps no errno, so the cause is told from free space."""

LOW_SPACE = 64 << 20
"""Less free than this (or than the write needs) after a failed torch write: the disk is full."""


class DiskFullError(LauncherError):
    """A write failed for lack of space (or quota) on the file system of a path."""


def disk_full_cause(exc: BaseException) -> Optional[str]:
    """'space' (ENOSPC), 'quota' (EDQUOT), 'torch' (a torch write failure, errno unknown) or None, from ``exc``
    or the exceptions it was raised from."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return "space"
        if isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
            return "quota"
        if isinstance(exc, RuntimeError) and any(text in str(exc) for text in TORCH_WRITE_FAILURES):
            return "torch"
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
    elif cause == "torch" and free >= LOW_SPACE:
        head = f"writing {what} to {path} failed (torch's writer lost the reason: a quota or an I/O error?)"
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
