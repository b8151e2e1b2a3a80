"""What the online-RL objectives (GRPO, PPO) share: each step of the data plan is one generation batch, sampled at
its first optimizer step and trained by several (``optimizer_steps_per_batch``); the batch's rows are kept for the
others and in checkpoints (an exact resume mid generation batch)."""
from __future__ import annotations

import time
from typing import Optional

from launcher.training.objectives.base import Objective


class GenerationBatchObjective(Objective):
    """Subclasses call ``init_generation_batches()`` in ``__init__`` and define ``rollout(trainer, index,
    micro_rows)`` (prompt rows per micro-batch -> trained rows per micro-batch, setting ``self._times``) and
    ``optimizer_steps_per_batch``."""

    optimizer_steps_per_batch: int

    def init_generation_batches(self) -> None:
        self._cache: Optional[list] = None
        self._cache_index = -1
        self._times = {"generation": 0.0, "scoring": 0.0}
        self._prepared_at = time.monotonic()

    def data_step(self, step: int) -> int:
        """Each generation batch (one step of the data plan) trains optimizer_steps_per_batch optimizer steps."""
        return step // self.optimizer_steps_per_batch

    def rows_for_step(self, trainer, step: int, micro_rows: list[list]) -> list[list]:
        """Prompt rows per micro-batch -> trained rows per micro-batch: fresh ones at the first step of a
        generation batch, the kept ones at the others."""
        index = self.data_step(step)
        if self._cache is None or self._cache_index != index:
            self._cache = self.rollout(trainer, index, micro_rows)
            self._cache_index = index
        else:
            self._times = {"generation": 0.0, "scoring": 0.0}
        self._prepared_at = time.monotonic()
        return self._cache

    def state_dict(self) -> dict:
        """What a checkpoint keeps for an exact resume mid generation batch: its rows."""
        return {"index": self._cache_index, "rows": self._cache}

    def load_state_dict(self, state: dict) -> None:
        self._cache_index, self._cache = state["index"], state["rows"]
