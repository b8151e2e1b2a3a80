"""What an objective gives the Trainer.

Per optimizer step the Trainer (1) collates each micro-batch with ``collate``, (2) asks ``normalizers`` for the
counts the step's loss is divided by (trained tokens, pairs, ...), which it all-reduces over ranks, (3) calls
``micro_batch_loss`` per micro-batch under the engine's accumulation context and the precision's autocast, and
backpropagates the loss it returns, (4) sums the returned statistics over micro-batches and ranks, and (5) turns
them into the step's metrics with ``step_metrics``. ``evaluate`` gives the fields of an ``eval`` record.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def unwrap_loss_module(module: nn.Module) -> nn.Module:
    """The objective's module without a DDP wrapper: forwards that must not touch gradient sync (eval, scoring)."""
    return module.module if hasattr(module, "no_sync") else module


class Objective:
    name = "objective"
    stat_keys: tuple = ()
    """Names of the per-step sums ``micro_batch_loss`` returns, in order."""

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        """What the engine wraps and calls as ``module(**batch)``."""
        raise NotImplementedError

    def collate(self, rows: list) -> dict:
        raise NotImplementedError

    def normalizers(self, batches: list[dict]) -> list[float]:
        """This rank's counts for the step (summed over ranks by the Trainer before ``micro_batch_loss``)."""
        raise NotImplementedError

    def micro_batch_loss(self, module: nn.Module, batch: dict, counts: torch.Tensor,
                         world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to backpropagate, float64 statistics in ``stat_keys`` order). ``counts``: the step's
        all-reduced ``normalizers`` followed by non-pad tokens and attended pairs."""
        raise NotImplementedError

    def step_metrics(self, sums: torch.Tensor, counts: torch.Tensor) -> dict:
        """The step's metrics from the all-reduced sums: at least ``loss`` and ``trained_tokens``."""
        raise NotImplementedError

    def extra_train_metrics(self, stats: dict) -> dict:
        """More values for a step's metrics record, from what ``step_metrics`` returned."""
        return {}

    def evaluate(self, trainer) -> Optional[dict]:
        """Fields of an ``eval`` record (with ``eval_loss`` when there is held-out data), or None. Collective."""
        return None

    def finish(self, trainer, summary: dict) -> None:
        """Add to the run's summary at the end of training."""

    def log_result(self, trainer) -> None:
        """Rank 0: a line or two in the log about what the run achieved."""
