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


def forwards_for(batches: list[list[int]], collective: bool, device) -> list[tuple[list[int], bool]]:
    """(row indices, counted) for each forward this rank runs over its share ``batches`` of a held-out set.

    Sharded engines (FSDP, ZeRO-3) gather weights inside forward: every rank must run as many forwards, or the
    ranks with more batches wait in a collective until the process-group timeout. With ``collective`` every
    rank runs the largest count; a rank with fewer batches runs filler forwards (its first row, or row 0 when
    it has none) whose results must not be counted. Collective itself when ``collective`` is True."""
    if not collective:
        return [(idx, True) for idx in batches]
    from launcher.engines.distributed import all_reduce_max

    n = int(all_reduce_max(torch.tensor(len(batches), device=device)))
    filler = batches[0][:1] if batches else [0]
    return [(batches[k], True) if k < len(batches) else (filler, False) for k in range(n)]


def first_and_last_eval(trainer) -> tuple[Optional[dict], Optional[dict]]:
    """The run's eval record before training (None when there was none) and its latest one (None when none)."""
    first = next((e for e in trainer.evals if e["step"] == 0), None)
    return first, (trainer.evals[-1] if trainer.evals else None)


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

    def data_step(self, step: int) -> int:
        """The step of the data plan (launcher.training.batching.epoch_plan) that optimizer step ``step`` trains
        on: the same, unless several optimizer steps share one batch of rows (GRPO's num_iterations)."""
        return step

    def rows_for_step(self, trainer, step: int, micro_rows: list[list]) -> list[list]:
        """The rows each micro-batch of ``step`` trains on, from the planned ones (online RL: their completions)."""
        return micro_rows

    def state_dict(self) -> Optional[dict]:
        """What this rank's checkpoint keeps of the objective beyond the model, optimizer and RNG (None: nothing)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` gave, on resume."""

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


class RewardObjective(Objective):
    """An objective scored by a reference (DPO's family, KTO): the held-out rows and a probe of the first
    training rows are scored the same way, and the run's summary keeps the reward metrics of the first and the
    last evaluation. A subclass sets ``probe_prefix`` and gives ``probe_count``, ``_eval_stats`` (one batch's
    float64 sums in ``stat_keys`` order) and ``_metrics_from`` (sums -> metrics)."""

    probe_prefix = "train_rows"
    """The eval record's prefix for the probe of training rows."""

    def __init__(self, data, cfg):
        self.data = data
        self.cfg = cfg
        self.scorer: Optional[nn.Module] = None
        """The loss module without wrappers (set once the engine is built): held-out and probe scoring."""

    def probe_count(self) -> int:
        raise NotImplementedError

    def _eval_stats(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def _metrics_from(self, sums: torch.Tensor) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, trainer, rows: list, what: str = "scoring") -> Optional[dict]:
        """The metrics of the current policy on ``rows`` (every rank takes its share). Collective. Rank 0 shows
        a progress bar named ``what`` and logs the pass's cost."""
        from launcher.engines.distributed import all_reduce_sum
        from launcher.training.batching import eval_batches
        from launcher.training.probes import ScoringProgress, forwards_per_batch

        if not rows:
            return None
        dist = trainer.dist
        trainer.engine.eval()
        sums = torch.zeros(len(self.stat_keys), dtype=torch.float64, device=dist.device)
        batches = eval_batches(len(rows), dist.rank, dist.world_size, self.cfg.train.micro_batch_size)
        # Sharded engines: as many forwards on every rank (the reference's too), fillers not counted.
        plan = forwards_for(batches, trainer.engine.forward_is_collective, dist.device)
        progress = ScoringProgress(f"{what}: {len(rows)} rows", len(plan),
                                   forwards_per_batch(self.cfg, precomputed="ref_logps" in rows[0]), dist.is_main)
        for idx, counted in plan:
            batch = to_device(self.collate([rows[i] for i in idx]), dist.device)
            with trainer.precision.autocast():
                stats = self._eval_stats(batch)
            if counted:
                sums += stats
            progress.update()
        progress.close()
        all_reduce_sum(sums)
        trainer.engine.train()
        return self._metrics_from(sums)

    def evaluate(self, trainer) -> Optional[dict]:
        """Held-out rows (``eval/...`` and ``eval_loss``; ``train.eval_max_batches`` bounds them) and the first
        ``probe_count`` training rows (``<probe_prefix>/...``), never more than the run trains on."""
        from launcher.training.probes import held_out_size, probe_size

        t, world = self.cfg.train, trainer.dist.world_size
        when = "before training" if trainer.step == 0 else f"step {trainer.step}"
        fields: dict = {}
        rows = self.data.eval
        if rows is not None:
            rows = rows[: held_out_size(len(rows), t.micro_batch_size, world, t.eval_max_batches)]
        held_out = self.score(trainer, rows, f"held-out {when}")
        count = probe_size(self.probe_count(), trainer.total_steps, t.micro_batch_size * trainer.grad_accum * world)
        probe = self.score(trainer, self.data.train[:count], f"{self.probe_prefix} probe {when}") if count else None
        for prefix, values in (("eval", held_out), (self.probe_prefix, probe)):
            for key, value in (values or {}).items():
                fields[f"{prefix}/{key}"] = value
        if held_out:
            fields["eval_loss"] = held_out["loss"]
        return fields

    def finish(self, trainer, summary: dict) -> None:
        from launcher.training.process_stats import peak_rss_gb

        first, last = first_and_last_eval(trainer)
        summary["rewards_before"] = first and {k: v for k, v in first.items() if "rewards/" in k}
        summary["rewards_after"] = last and {k: v for k, v in last.items() if "rewards/" in k}
        summary["peak_rss_mb"] = round(peak_rss_gb() * 1024, 1)
