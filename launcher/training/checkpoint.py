"""Checkpoints written atomically: a temporary dir, a completion marker, then a rename.

A dir under ``checkpoints/`` named ``step-NNNNNNN`` with a ``COMPLETE`` file is a whole checkpoint; anything
else (a ``.tmp-`` dir left by a killed writer) is never loaded, and is cleared on the next save.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from launcher.engines.distributed import DistInfo, barrier

COMPLETE = "COMPLETE"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


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
    """Rank 0, once every rank has written its files: the metadata, then the marker that makes it complete."""
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    (tmp / COMPLETE).write_text("")
    _fsync_dir(tmp)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints (never fewer than one); drop stale temporaries."""
    complete = complete_checkpoints(run_dir)
    for old in complete[: max(0, len(complete) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in checkpoint_root(run_dir).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


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
