"""Checkpoints written atomically: a temporary dir, a manifest, a completion marker, then a rename.

A dir under ``checkpoints/`` named ``step-NNNNNNN`` with a ``COMPLETE`` file is a whole checkpoint; anything
else (a ``.tmp-`` dir left by a killed writer) is never loaded, and is cleared on the next save.

A complete checkpoint can still be damaged later (a file cut short or overwritten after the marker, a full
disk that lost the end of a file): ``manifest.json``, written before the marker, records every file's size
and a sha256, and ``COMPLETE`` holds the manifest's own sha256. At resume ``latest_valid_checkpoint`` checks
the newest checkpoint against its manifest and falls back to the previous one, saying why in one line.
A checkpoint with an empty ``COMPLETE`` (written before manifests existed) is taken as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from launcher.engines.distributed import DistInfo, barrier, broadcast_object
from launcher.errors import ConfigError
from launcher.paths import CHECKPOINTS_DIR

log = logging.getLogger("launcher.checkpoint")

COMPLETE = "COMPLETE"
MANIFEST = "manifest.json"
# Files up to this size are hashed whole; a bigger one (a multi-GB shard) only in its first and last
# HASH_EDGE_BYTES, so saving and checking cost at most 64 MiB of reading per file whatever the model size.
# Its recorded size still catches any truncation or append; a change in its middle is not caught.
HASH_WHOLE_MAX = 64 << 20
HASH_EDGE_BYTES = 16 << 20


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, engine, meta: dict, dist_info: DistInfo, keep: int) -> Path:
    """Collective: every rank calls it at the same step."""
    root = checkpoint_root(run_dir)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    if dist_info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    engine.save_checkpoint(tmp, {"meta": meta})
    torch.save(rng_state(), tmp / f"rng-rank{dist_info.rank}.pt")
    barrier()
    if dist_info.is_main:
        seal_checkpoint(tmp, meta)
        if final.exists():  # a checkpoint of the same step from an earlier attempt of this run
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(run_dir, keep)
    barrier()
    return final


def seal_checkpoint(tmp: Path, meta: dict) -> None:
    """Rank 0, once every rank has written its files: the metadata, the manifest, then the marker that makes
    it complete."""
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    mark_complete(tmp)
    _fsync_dir(tmp)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints (never fewer than one); drop stale temporaries."""
    complete = complete_checkpoints(run_dir)
    for old in complete[: max(0, len(complete) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in checkpoint_root(run_dir).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def file_digest(path: Path, size: int) -> str:
    """sha256 of the whole file, or of its first and last HASH_EDGE_BYTES when it is bigger than HASH_WHOLE_MAX."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= HASH_WHOLE_MAX:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
            return digest.hexdigest()
        for offset in (0, size - HASH_EDGE_BYTES):
            fh.seek(offset)
            left = HASH_EDGE_BYTES
            while left and (chunk := fh.read(min(1 << 20, left))):
                digest.update(chunk)
                left -= len(chunk)
    return "edges:" + digest.hexdigest()


def _checkpoint_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.name not in (MANIFEST, COMPLETE))


def mark_complete(directory: Path) -> None:
    """Write the manifest of every file in ``directory``, then the COMPLETE marker that names it."""
    directory = Path(directory)
    files = {}
    for path in _checkpoint_files(directory):
        size = path.stat().st_size
        files[path.relative_to(directory).as_posix()] = {"size": size, "sha256": file_digest(path, size)}
    text = json.dumps({"files": files}, indent=1)
    (directory / MANIFEST).write_text(text)
    (directory / COMPLETE).write_text(f"manifest sha256 {hashlib.sha256(text.encode()).hexdigest()}\n")


def checkpoint_problem(directory: Path) -> Optional[str]:
    """Why a complete checkpoint cannot be trusted (a file missing, cut short, changed), or None."""
    directory = Path(directory)
    if not (directory / COMPLETE).is_file():
        return f"no {COMPLETE} marker"
    marker = (directory / COMPLETE).read_text().strip()
    if not marker:
        return None  # written before manifests: nothing to check against
    try:
        text = (directory / MANIFEST).read_text()
    except OSError:
        return f"{MANIFEST} is missing"
    if marker != f"manifest sha256 {hashlib.sha256(text.encode()).hexdigest()}":
        return f"{MANIFEST} does not match its {COMPLETE} marker"
    for name, want in json.loads(text)["files"].items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} when saved"
        if file_digest(path, size) != want["sha256"]:
            return f"{name} changed since it was saved (sha256 differs)"
    return None


def latest_valid_checkpoint(run_dir: Path, dist_info: Optional[DistInfo] = None) -> Optional[Path]:
    """The newest complete checkpoint whose files match their manifest; damaged newer ones are skipped
    with a one-line warning each. With ``dist_info``, rank 0 checks and every rank gets its answer
    (a collective call then)."""
    chosen = None
    if dist_info is None or dist_info.is_main:
        for directory in reversed(complete_checkpoints(run_dir)):
            problem = checkpoint_problem(directory)
            if problem is None:
                chosen = directory
                break
            log.warning("checkpoint %s is damaged (%s); falling back to the one before it", directory, problem)
        else:
            if complete_checkpoints(run_dir):
                log.warning("no undamaged checkpoint left in %s: training starts from step 0", checkpoint_root(run_dir))
    if dist_info is not None:
        chosen = broadcast_object(None if chosen is None else str(chosen))
        chosen = None if chosen is None else Path(chosen)
    return chosen


def check_resume_checkpoint(directory: Path) -> None:
    """For an explicit ``run.resume=PATH``: refuse a checkpoint that is incomplete or damaged, with the reason."""
    problem = checkpoint_problem(directory)
    if problem == f"no {COMPLETE} marker":
        raise ConfigError(f"run.resume: {directory} is not a complete checkpoint (no {COMPLETE} marker)")
    if problem:
        raise ConfigError(f"run.resume: checkpoint {directory} is damaged ({problem}); pick another or use run.resume=auto")


def load_rng(directory: Path, rank: int) -> None:
    path = Path(directory) / f"rng-rank{rank}.pt"
    if path.exists():
        set_rng_state(torch.load(path, weights_only=False))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
