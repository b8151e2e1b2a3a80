"""Which rows each rank trains on, step by step: a pure, deterministic plan, so a resume can find its place."""
from __future__ import annotations

import random
from typing import Sequence


def steps_per_epoch(n_rows: int, world_size: int, micro_batch_size: int, grad_accum: int) -> int:
    """Full optimizer steps in one pass over the data (the ragged tail is dropped, as usual)."""
    return n_rows // (world_size * micro_batch_size * grad_accum)


def epoch_order(n_rows: int, seed: int, epoch: int) -> list[int]:
    """The epoch's shuffled row order; it depends only on (seed, epoch), so every rank and every world agrees."""
    order = list(range(n_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def epoch_plan(n_rows: int, seed: int, epoch: int, rank: int, world_size: int, micro_batch_size: int,
               grad_accum: int, trained: Sequence[int] = (), first_step: int = 0) -> list[list[list[int]]]:
    """steps -> micro-batches -> row indices for one rank in one epoch.

    The shuffle depends only on (seed, epoch), so every rank agrees on it and a resumed run sees the same
    order; each global batch is split across ranks so that all ranks take the same number of steps.

    A resume (launcher.training.ledger): ``trained`` rows (the ledger's, this epoch's first ``first_step`` steps)
    are left out and the rest of the order fills steps ``first_step`` onward; the steps before it are empty.
    With the same global batch this is exactly the plan of the uninterrupted run, whatever the world size.
    """
    order = epoch_order(n_rows, seed, epoch)
    if trained:
        done = set(trained)
        order = [i for i in order if i not in done]
    per_step = world_size * micro_batch_size * grad_accum
    plan: list[list[list[int]]] = [[] for _ in range(first_step)]
    for s in range(steps_per_epoch(n_rows, world_size, micro_batch_size, grad_accum) - first_step):
        chunk = order[s * per_step: (s + 1) * per_step]
        mine = chunk[rank::world_size]
        plan.append([mine[m * micro_batch_size: (m + 1) * micro_batch_size] for m in range(grad_accum)])
    return plan


def eval_batches(n_rows: int, rank: int, world_size: int, micro_batch_size: int) -> list[list[int]]:
    """Every eval row exactly once across ranks (ranks may get different counts)."""
    mine = list(range(rank, n_rows, world_size))
    return [mine[i: i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]
