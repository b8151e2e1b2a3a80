"""Preprocess once: tokenized data cached under a hash of everything that shapes it.

The key covers the dataset files' content, the tokenizer (vocab, special tokens, chat template), the
template and the data options; the value is a folder (``store``: memory-mapped token files). One process
builds while the others wait on a file lock, then map the result: this works with or without
torch.distributed, across nodes on a shared filesystem, and never sits in a collective that a slow preprocessing would time out (NCCL's watchdog, LlamaFactory#2902).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

CACHE_VERSION = 5
"""Bump when the row format or the preprocessing changes meaning (2: memory-mapped store, was a pickle; 3: per-record
columns (columns.json), KTO rows; 4: image references in the store; 5: KTO's kl_record column)."""
COMPLETE_MARK = "complete"

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
    (a rename is atomic), so no reader ever sees a half-written cache, and a crashed build leaves only a
    ``.tmp`` folder that the next build removes.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / key
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (folder / COMPLETE_MARK).is_file():
                return folder, True
            tmp = cache_dir / f"{key}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                build(tmp)
                (tmp / COMPLETE_MARK).write_text("")
                shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder from an older version
                os.rename(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return folder, False
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
