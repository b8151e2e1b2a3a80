"""Preprocess once: tokenized data cached under a hash of everything that shapes it.

The key covers the dataset files' content, the tokenizer (vocab, special tokens, chat template), the
template and the data options; the value is a folder (``store``: memory-mapped token files). One process
builds while the others wait on a file lock, then map the result: this works with or without
torch.distributed, across nodes on a shared filesystem, and never sits in a collective that a slow preprocessing would time out (NCCL's watchdog, LlamaFactory#2902).

A build writes into ``<key>.tmp-<host>-<pid>`` (with a ``builder`` marker: PID, host) and renames it into place
when complete. SIGTERM during a build removes that folder before the process ends; a build killed outright
(kill -9, a node lost) leaves it, and the next build in the cache dir removes every such folder whose key's
lock is free (its builder held that lock while it ran, so a free lock means the builder is gone).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from launcher.disk_full import disk_full_guard, written_so_far
from launcher.process_lock import Holder

log = logging.getLogger("launcher.data")

CACHE_VERSION = 6
"""Bump when the row format or the preprocessing changes meaning (2: memory-mapped store, was a pickle; 3: per-record
columns (columns.json), KTO rows; 4: image references in the store; 5: KTO's kl_record column; 6: the named template
qwen adds LF's default system prompt)."""
COMPLETE_MARK = "complete"
BUILDER_MARK = "builder"
"""In a build's .tmp folder: the building process (process_lock.Holder), for the message when it is removed."""

HASH_CONTENT_UP_TO = 1 << 30
"""Files up to this size are hashed by content (a copy hits the cache); bigger ones by size and mtime."""


def file_fingerprint(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        parts = [f"{p.relative_to(path)}:{file_fingerprint(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    if not path.exists():
        return "missing"
    stat = path.stat()
    if stat.st_size > HASH_CONTENT_UP_TO:
        return f"size={stat.st_size},mtime={stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


def tokenizer_fingerprint(tokenizer) -> str:
    """What the tokenization depends on. From the tokenizer's files when it was loaded from a folder (a
    151k-entry vocabulary takes ~0.4 s to serialize, the files ~20 ms to hash), else from its vocabulary."""
    parts = [type(tokenizer).__name__, str(len(tokenizer)), tokenizer.chat_template or "",
             json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)]
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    files = [folder / name for name in TOKENIZER_FILES] if folder.is_dir() else []
    files = [f for f in files if f.is_file()]
    if files:
        parts += [f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}" for f in files]
    else:
        parts.append(json.dumps(sorted(tokenizer.get_vocab().items())))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def cache_key(parts: dict) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached(cache_dir: Path, key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """(folder, hit). The first caller builds under an exclusive lock; the others block, then use its folder.

    ``build(tmp)`` writes the whole result into an empty folder; it is renamed into place only when complete
    (a rename is atomic), so no reader ever sees a half-written cache. A full disk is one line
    (launcher/disk_full.py) and leaves nothing behind. A build stopped by SIGTERM removes its folder; one
    killed outright leaves it for the next build to remove (``remove_orphaned_builds``).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / key
    with open(cache_dir / f"{key}.lock", "w") as lock:
        wait_for_lock(lock, cache_dir, key)
        try:
            if (folder / COMPLETE_MARK).is_file():
                return folder, True
            remove_orphaned_builds(cache_dir, holding=key)
            tmp = cache_dir / f"{key}.tmp-{socket.gethostname()}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                (tmp / BUILDER_MARK).write_text(Holder.me().text())
                with sigterm_exits(), disk_full_guard(folder, "the tokenized data cache", lambda: written_so_far(tmp)):
                    build(tmp)
                    (tmp / BUILDER_MARK).unlink()
                    (tmp / COMPLETE_MARK).write_text("")
                shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder from an older version
                os.rename(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return folder, False
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


LOCK_WAIT_LOG_S = 30.0
"""While another process builds the data, a line in the log this often (no timeout: a build takes what it takes)."""


def wait_for_lock(lock, cache_dir: Path, key: str, log_every_s: float = LOCK_WAIT_LOG_S) -> None:
    """The build lock of ``key``, waited for as long as it takes, saying in the log who builds and for how long
    we have waited (the other ranks of a job wait here, without a collective, while one rank tokenizes)."""
    import time

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    started = time.monotonic()
    log.warning("data: waiting for the tokenized data (cache key %s), which %s is building", key,
                _builder_of(cache_dir, key))
    while True:
        time.sleep(min(1.0, log_every_s))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log.warning("data: the tokenized data is ready after %.0f s of waiting", time.monotonic() - started)
            return
        except BlockingIOError:
            waited = time.monotonic() - started
            if int(waited // log_every_s) != int((waited - min(1.0, log_every_s)) // log_every_s):
                log.warning("data: still waiting for %s to finish tokenizing (%.0f s)", _builder_of(cache_dir, key),
                            waited)


def _builder_of(cache_dir: Path, key: str) -> str:
    for marker in Path(cache_dir).glob(f"{key}.tmp-*/{BUILDER_MARK}"):
        try:
            return f"process {marker.read_text().strip()}"
        except OSError:
            continue
    return "another process"


def remove_orphaned_builds(cache_dir: Path, holding: str) -> list[Path]:
    """Remove the .tmp folders of builds that died (every one of key ``holding``, whose lock this process
    holds; another key's when its lock is free), saying whose each was. Returns what was removed."""
    removed = []
    for tmp in sorted(Path(cache_dir).glob("*.tmp*")):
        key = tmp.name.split(".tmp", 1)[0]
        if not tmp.is_dir() or not key:
            continue
        if key == holding:
            _remove_orphan(tmp)
            removed.append(tmp)
            continue
        with open(Path(cache_dir) / f"{key}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being built right now
            try:
                if tmp.is_dir():
                    _remove_orphan(tmp)
                    removed.append(tmp)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return removed


def _orphan_note(tmp: Path) -> str:
    try:
        holder = Holder.parse((tmp / BUILDER_MARK).read_text())
    except OSError:
        holder = None
    return f"left by {holder.describe()}" if holder else "left by a build that died"


def _remove_orphan(tmp: Path) -> None:
    log.warning("data cache: removing the unfinished build %s (%s)", tmp, _orphan_note(tmp))
    shutil.rmtree(tmp, ignore_errors=True)


class _Terminated(SystemExit):
    """SIGTERM during a build: unwinds the build (its ``finally`` blocks remove what it wrote), then ends the
    process with the status a shell gives a SIGTERM (143)."""


@contextmanager
def sigterm_exits():
    """While a build runs, SIGTERM ends the process through the Python stack instead of at once, so the
    build's folder is removed on the way out. Only where SIGTERM would otherwise end the process abruptly
    (its default action, in the main thread): a rank whose SIGTERM means "checkpoint and stop" keeps that."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    owner = os.getpid()

    def on_term(signum, frame):
        if os.getpid() != owner:  # a forked encoder worker: the default action, as before
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        log.warning("data cache: SIGTERM during preprocessing; removing its unfinished folder and exiting")
        raise _Terminated(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
