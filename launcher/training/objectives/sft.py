"""Causal-LM objective: the summed token cross-entropy at trained positions (SFT; pretraining text).

The loss of a step is divided by the trained tokens of the whole step, across micro-batches and ranks
(transformers#34191: a per-micro-batch mean skews variable-length batches). The LM head and the
cross-entropy run only at trained positions, in chunks (launcher.training.loss): no [batch, seq, vocab] logits.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from launcher.config.parallelism import parallelism_of
from launcher.config.schema import ADAPTER_KINDS
from launcher.engines.distributed import all_reduce_sum
from launcher.training.batching import eval_batches
from launcher.training.loss import IGNORE_INDEX, CausalLMLoss
from launcher.training.objectives.base import Objective, forwards_for, to_device, unwrap_loss_module
from launcher.training.probes import ScoringProgress


def trained_tokens(batch: dict) -> int:
    return int((batch["shift_labels"] != IGNORE_INDEX).sum())


class CausalLMObjective(Objective):
    name = "causal_lm"
    stat_keys = ("loss_sum",)

    def __init__(self, data, cfg, sequence_parallel=None):
        self.data = data
        self.cfg = cfg
        self.sequence_parallel = sequence_parallel
        """parallelism.sequence_parallel > 1: this rank's group (launcher.engines.sequence_parallel); each batch is
        collated whole, then keeps this rank's slice of the targets, and the model attends over the group."""

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        # ZeRO-3 gathers a weight only inside its module's forward: there the head must be called, not read.
        zero3 = parallelism_of(cfg.parallelism).zero3
        token_loss = cfg.method.token_loss
        reference = None
        if token_loss.name == "asft" and cfg.method.finetuning not in ADAPTER_KINDS:
            # ASFT's anchor: the starting weights, copied before the engine wraps the policy.
            from launcher.training.objectives.reference import frozen_copy

            reference = frozen_copy(model, next(model.parameters()).device)
        if self.sequence_parallel is not None:
            from launcher.engines.sequence_parallel import enable_sequence_parallel

            enable_sequence_parallel(model, self.sequence_parallel)
        return CausalLMLoss(model, cfg.train.loss_chunk_size, fused=not zero3, token_loss=token_loss,
                            reference=reference)

    def collate(self, rows: list) -> dict:
        batch = self.data.collate(rows)
        sp = self.sequence_parallel
        if sp is not None:
            from launcher.engines.sequence_parallel import shard_batch

            batch = shard_batch(batch, sp.size, sp.rank)
        return batch

    def normalizers(self, batches: list[dict]) -> list[float]:
        return [sum(trained_tokens(b) for b in batches)]

    def micro_batch_loss(self, module, batch, counts, world_size):
        token_loss_sum = module(**batch)
        # DDP averages gradients over ranks; scaling by world size makes the result a mean over every trained
        # token of the step, whatever the micro-batch or rank it came from.
        loss = token_loss_sum * world_size / max(float(counts[0]), 1.0)
        return loss, token_loss_sum.detach().double().reshape(1)

    def step_metrics(self, sums, counts) -> dict:
        trained = float(counts[0])
        return {"loss": float(sums[0]) / max(trained, 1.0), "trained_tokens": int(trained)}

    @torch.no_grad()
    def eval_loss(self, trainer) -> Optional[float]:
        """Loss per trained token over the held-out rows; every rank takes its share."""
        rows = self.data.eval
        if not rows:
            return None
        engine, dist, t = trainer.engine, trainer.dist, self.cfg.train
        engine.eval()
        batches = eval_batches(len(rows), trainer.data_rank, trainer.data_world, t.micro_batch_size)
        if t.eval_max_batches:
            batches = batches[: t.eval_max_batches]
        totals = torch.zeros(2, dtype=torch.float64, device=dist.device)
        loss_module = unwrap_loss_module(engine.module)
        # Sharded engines: as many forwards on every rank, fillers not counted.
        plan = forwards_for(batches, engine.forward_is_collective, dist.device)
        when = "before training" if trainer.step == 0 else f"step {trainer.step}"
        shown = min(len(rows), len(batches) * t.micro_batch_size * trainer.data_world)
        progress = ScoringProgress(f"held-out loss {when}: {shown} rows", len(plan), 1, dist.is_main)
        for idx, counted in plan:
            batch = to_device(self.collate([rows[i] for i in idx]), dist.device)
            with trainer.precision.autocast():
                token_loss = loss_module(**batch).double()
            if counted:
                totals[0] += token_loss
                totals[1] += trained_tokens(batch)
            progress.update()
        progress.close()
        all_reduce_sum(totals)
        engine.train()
        return float(totals[0] / max(float(totals[1]), 1.0))

    def evaluate(self, trainer) -> Optional[dict]:
        value = self.eval_loss(trainer)
        return None if value is None else {"eval_loss": value}
