"""The sample ledger: which rows of the current epoch were already trained, kept in every checkpoint.

A resume continues the epoch with the rows the ledger does not hold (launcher.training.batching.epoch_plan),
so across a change of world size every row of the epoch is trained exactly once and the order goes on where
it stopped. Each rank records the rows it really trained, step by step; at a checkpoint they are gathered and
rank 0 writes them, after the rows the resumed checkpoint's ledger held, to ``ledger.json``:
``{"epoch": E, "n_rows": N, "seed": S, "trained": [row, ...]}`` (row indices of the epoch's first steps).
Pure functions on plain data: the trainer does the gathering.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from launcher.engines.checkpoint_layout import LEDGER_FILE
from launcher.errors import ConfigError


def read_ledger(directory: Path) -> Optional[dict]:
    """A checkpoint's ledger, or None (written before ledgers existed)."""
    path = Path(directory) / LEDGER_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def merged_ledger(base: Optional[dict], epoch: int, n_rows: int, seed: int, per_rank: list[dict]) -> dict:
    """The ledger of ``epoch``: the resumed checkpoint's rows of that epoch, then every step recorded since
    (``per_rank``: each rank's {step index in the epoch: rows it trained}), step by step, rank by rank."""
    trained = list(base["trained"]) if base is not None and base.get("epoch") == epoch else []
    for index in sorted({i for recorded in per_rank for i in recorded}):
        for recorded in per_rank:
            trained.extend(recorded.get(index, ()))
    return {"epoch": epoch, "n_rows": n_rows, "seed": seed, "trained": trained}


def rows_to_skip(ledger: Optional[dict], name: str, epoch: int, index: int, global_batch: int, n_rows: int,
                 seed: int, where: str) -> list[int]:
    """The rows of ``epoch`` that a resume at its step ``index`` must not train again: the ledger's, checked to
    be exactly ``index`` global batches of distinct rows of this data; [] where the ledger is of an earlier
    epoch (finished) or absent. ``where``: the checkpoint's world, for the message."""
    if ledger is None or ledger.get("epoch") != epoch:
        return []
    trained = ledger["trained"]
    if ledger.get("n_rows") != n_rows or ledger.get("seed") != seed:
        raise ConfigError(
            f"run.resume: checkpoint {name}'s sample ledger is of {ledger.get('n_rows')} rows shuffled with seed"
            f" {ledger.get('seed')}, this run has {n_rows} rows and train.seed={seed}; resume with the same data"
            " and seed, or start fresh with run.resume=never")
    if len(trained) != index * global_batch or len(set(trained)) != len(trained):
        raise ConfigError(
            f"run.resume: checkpoint {name} was written with {where}; its sample ledger holds {len(trained)}"
            f" rows ({len(set(trained))} distinct) of epoch {epoch}, where {index} steps of global batch"
            f" {global_batch} trained {index * global_batch}: the checkpoint does not add up, so its data position"
            " cannot be continued; resume from another checkpoint, or start fresh with run.resume=never")
    return trained
