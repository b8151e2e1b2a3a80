"""Checkpoints written atomically: a temporary dir, a manifest, a completion marker, then a rename.

A dir under ``checkpoints/`` named ``step-NNNNNNN`` with a ``COMPLETE`` file is a whole checkpoint; anything
else (a ``.tmp-`` dir left by a killed writer) is never loaded, and is cleared on the next save.

A complete checkpoint can still be damaged later (a file cut short or overwritten after the marker, a full
disk that lost the end of a file): ``manifest.json``, written before the marker, records every file's size
and a sha256, and ``COMPLETE`` holds the manifest's own sha256. At resume ``latest_valid_checkpoint`` checks
the newest checkpoint against its manifest and falls back to the previous one, saying why in one line.
A checkpoint with an empty ``COMPLETE`` (written before manifests existed) is taken as it is.

The names of the folder and its files, and finding the complete ones: launcher.engines.checkpoint_layout
(torch-free, for the preflight); imported here too, so this module answers every question about a checkpoint.

A damaged checkpoint is moved aside to ``checkpoints/damaged/step-NNNNNNN-<time>`` (named in the log): it is
never loaded, never counted by retention and never deleted by it. Retention keeps the newest ``keep``
checkpoints that pass the check, so a damaged newer one can never push out a good one (with
``keep_checkpoints=1`` it used to delete each new checkpoint right after it was saved).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from launcher.engines.checkpoint_layout import (COMPLETE, LEDGER_FILE, MANIFEST, META_FILE, TMP_PREFIX,
                                               checkpoint_root, complete_checkpoints, latest_checkpoint, rng_file,
                                               step_dir_name)
from launcher.disk_full import disk_full_guard, folder_bytes, human_bytes, written_so_far
from launcher.engines.distributed import DistInfo, barrier, broadcast_object
from launcher.errors import ConfigError

log = logging.getLogger("launcher.checkpoint")

DAMAGED_DIR = "damaged"
"""Under checkpoints/: damaged checkpoints, moved there by ``set_aside_damaged``; kept for a person to look at."""
# Files up to this size are hashed whole; a bigger one (a multi-GB shard) only in its first and last
# HASH_EDGE_BYTES, so saving and checking cost at most 64 MiB of reading per file whatever the model size.
# Its recorded size still catches any truncation or append; a change in its middle is not caught.
HASH_WHOLE_MAX = 64 << 20
HASH_EDGE_BYTES = 16 << 20


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


def objective_file(rank: int) -> str:
    return f"objective_rank{rank}.pt"


def load_objective_state(directory: Path, rank: int) -> Optional[dict]:
    """What the objective kept in this rank's checkpoint (online RL: its current completions), or None."""
    path = Path(directory) / objective_file(rank)
    return torch.load(path, weights_only=False) if path.exists() else None


def save_checkpoint(run_dir: Path, step: int, engine, meta: dict, dist_info: DistInfo, keep: int,
                    objective_state: Optional[dict] = None, ledger: Optional[dict] = None) -> Path:
    """Collective: every rank calls it at the same step. ``objective_state``: this rank's, kept beside its RNG.
    ``ledger``: the sample ledger (launcher.training.ledger), written by rank 0."""
    root = checkpoint_root(run_dir)
    final = root / step_dir_name(step)
    tmp = root / f"{TMP_PREFIX}{step_dir_name(step)}"
    if dist_info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    try:
        # A full disk: one line with the space, and the unfinished folder removed (it is never marked complete).
        with disk_full_guard(final, f"checkpoint {final.name}", lambda: checkpoint_space_needed(run_dir, tmp)):
            engine.save_checkpoint(tmp, {"meta": meta})
            torch.save(rng_state(), tmp / rng_file(dist_info.rank))
            if objective_state is not None:
                torch.save(objective_state, tmp / objective_file(dist_info.rank))
            if ledger is not None and dist_info.is_main:
                (tmp / LEDGER_FILE).write_text(json.dumps(ledger, separators=(",", ":")))
            barrier()
            if dist_info.is_main:
                seal_checkpoint(tmp, meta)
                if final.exists():  # a checkpoint of the same step from an earlier attempt of this run
                    shutil.rmtree(final)
                os.replace(tmp, final)
                _fsync_dir(root)
    except BaseException:
        if dist_info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dist_info.is_main:
        _remember_verified(final)  # just sealed from the files it holds: no need to read them back
        prune_checkpoints(run_dir, keep)
    barrier()
    return final


def checkpoint_space_needed(run_dir: Path, tmp: Path) -> str:
    """For a full disk's message: the size of this run's last checkpoint, or what the failed one had written."""
    previous = latest_checkpoint(run_dir)
    if previous is not None:
        return f"a checkpoint of this run takes {human_bytes(folder_bytes(previous))} ({previous.name})"
    return written_so_far(tmp)


def seal_checkpoint(tmp: Path, meta: dict) -> None:
    """Rank 0, once every rank has written its files: the metadata, the manifest, then the marker that makes
    it complete."""
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    mark_complete(tmp)
    _fsync_dir(tmp)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints that pass ``checkpoint_problem`` (never fewer than one);
    a damaged one met on the way is moved aside, not counted; drop stale temporaries.

    Each checkpoint is checked once per process (``verified_problem``), so a save costs no re-reading of the
    checkpoints already kept."""
    kept = 0
    for directory in reversed(complete_checkpoints(run_dir)):
        if kept >= max(1, keep):
            shutil.rmtree(directory, ignore_errors=True)
            continue
        problem = verified_problem(directory)
        if problem is None:
            kept += 1
        else:
            set_aside_damaged(directory, problem, "not counted by train.keep_checkpoints")
    for stale in checkpoint_root(run_dir).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def set_aside_damaged(directory: Path, problem: str, consequence: str) -> Optional[Path]:
    """Move a damaged checkpoint to ``checkpoints/damaged/<name>-<time>``, out of the way of resume and retention,
    and say so in one line. Returns where it went (None if it could not be moved: it is then only skipped)."""
    directory = Path(directory)
    aside = directory.parent / DAMAGED_DIR
    target = aside / f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while target.exists():
        target = aside / f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        n += 1
    try:
        aside.mkdir(exist_ok=True)
        os.replace(directory, target)
    except OSError as exc:
        log.warning("checkpoint %s is damaged (%s); %s; it could not be moved aside (%s)",
                    directory, problem, consequence, exc)
        return None
    log.warning("checkpoint %s is damaged (%s); moved to %s; %s", directory, problem, target, consequence)
    return target


_VERIFIED: dict = {}
"""Checkpoints this process checked or sealed: path -> the identity of its COMPLETE marker then."""


def _marker_identity(directory: Path):
    st = (Path(directory) / COMPLETE).stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _remember_verified(directory: Path) -> None:
    try:
        _VERIFIED[str(Path(directory).resolve())] = _marker_identity(directory)
    except OSError:
        pass


def verified_problem(directory: Path) -> Optional[str]:
    """``checkpoint_problem``, read once per process: a checkpoint that passed (or that this process sealed)
    is not read again while its marker is the same file."""
    key = str(Path(directory).resolve())
    try:
        if _VERIFIED.get(key) == _marker_identity(directory):
            return None
    except OSError:
        pass
    problem = checkpoint_problem(directory)
    if problem is None:
        _remember_verified(directory)
    return problem


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
    """The newest complete checkpoint whose files match their manifest; damaged newer ones are moved aside
    (``set_aside_damaged``) with a one-line warning each. With ``dist_info``, rank 0 checks and every rank gets
    its answer (a collective call then)."""
    chosen = None
    if dist_info is None or dist_info.is_main:
        candidates = list(reversed(complete_checkpoints(run_dir)))
        for directory in candidates:
            problem = checkpoint_problem(directory)
            if problem is None:
                _remember_verified(directory)
                chosen = directory
                break
            set_aside_damaged(directory, problem, "falling back to the one before it")
        else:
            if candidates:
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
    path = Path(directory) / rng_file(rank)
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
