"""What a checkpoint is on disk: the names of its folder and its files, torch-free.

The engines write into it (launcher.engines.checkpoint seals it), the trainer resumes from it, the
after-training tools read it back and the preflight checks a ``run.resume`` path against it: all of them take
the names from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.paths import CHECKPOINTS_DIR

STEP_PREFIX = "step-"
"""A checkpoint folder is ``step-NNNNNNN`` (the optimizer step, seven digits) under ``RUN_DIR/checkpoints``."""
TMP_PREFIX = ".tmp-"
"""A checkpoint being written; never loaded, cleared on the next save."""
COMPLETE = "COMPLETE"
"""Written last: the checkpoint is whole. It holds the manifest's sha256 (empty before manifests existed)."""
MANIFEST = "manifest.json"
"""Every file's size and sha256, written before COMPLETE."""
META_FILE = "meta.json"
"""The step, world size and data position the checkpoint was written at."""
STATE_FILE = "state.pt"
"""The trainable weights and optimizer (DDP), or the scheduler and metadata (sharded engines), with ``engine``."""
FSDP_SHARDS_DIR = "fsdp"
"""FSDP: the DCP shards (every rank its own), the loss wrapper's state under ``model.``."""
DEEPSPEED_TAG = "deepspeed"
"""DeepSpeed: the tag (sub-folder) of its ZeRO shards."""
LEDGER_FILE = "ledger.json"
"""The sample ledger: the rows of the current epoch already trained (launcher.training.ledger)."""


def rng_file(rank: int) -> str:
    """Each rank's RNG state (python, numpy, torch, cuda)."""
    return f"rng-rank{rank}.pt"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(STEP_PREFIX) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None
