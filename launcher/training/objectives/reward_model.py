"""Reward-model objective: one scalar score per sequence, trained on preference pairs with the pairwise
(Bradley-Terry) loss -log sigmoid(r_chosen - r_rejected), as LLaMA-Factory's ``stage: rm``.

The model is a ``*ForSequenceClassification`` with one label (launcher.models.reward): its forward gives the
score at each row's last non-pad token, exactly what the saved model gives when reloaded. The loss is summed
over pairs and divided by the pairs of the whole optimizer step (all micro-batches, all ranks). The metrics
are DPO's names with the scores as rewards: rewards/chosen, rewards/rejected, rewards/accuracy (chosen scored
higher), rewards/margin.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from launcher.training.objectives.base import RewardObjective
from launcher.training.objectives.preference import log_pair_rewards

log = logging.getLogger("launcher.rm")

STAT_KEYS = ("pair_loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "pairs")
"""Sums kept per step / per evaluation, in this order; divided by pairs at the end."""


class SequenceScores(nn.Module):
    """``forward(input_ids, attention_mask)`` -> the model's score per row [N] (float32).

    What the engine wraps (DDP / FSDP / DeepSpeed see an ordinary module, holding the HF model as ``model``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, **_unused):
        # Only what a user of the saved model passes: position ids default to 0..n-1, as the right-padded rows'
        # are; the labels are not the head's (they would make transformers compute a regression loss).
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits[:, 0].float()


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected) per pair."""
    return -F.logsigmoid(chosen - rejected)


class RewardModelObjective(RewardObjective):
    name = "reward_model"
    probe_prefix = "train_pairs"
    stat_keys = STAT_KEYS

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        return SequenceScores(model)

    def collate(self, rows: list) -> dict:
        batch = self.data.collate(rows)  # 2B rows: the B chosen first, then the B rejected, right-padded
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    # ------------------------------------------------------------------------------------ scoring

    @staticmethod
    def _stats(scores: torch.Tensor) -> torch.Tensor:
        b = scores.shape[0] // 2
        c, r = scores[:b].detach().double(), scores[b:].detach().double()
        return torch.stack([
            pairwise_loss(c, r).sum(), c.sum(), r.sum(), (c > r).double().sum(), (c - r).sum(),
            torch.tensor(float(b), dtype=torch.float64, device=c.device),
        ])

    def _metrics_from(self, sums: torch.Tensor) -> dict:
        s = dict(zip(STAT_KEYS, sums.tolist()))
        pairs = max(s["pairs"], 1.0)
        return {"loss": s["pair_loss"] / pairs, **{k: s[k] / pairs for k in STAT_KEYS[1:5]}}

    # ------------------------------------------------------------------------------------ training

    def normalizers(self, batches: list[dict]) -> list[float]:
        return [sum(b["input_ids"].shape[0] // 2 for b in batches)]

    def micro_batch_loss(self, module, batch, counts, world_size):
        scores = module(**batch)
        b = scores.shape[0] // 2
        # DDP averages gradients over ranks; the world-size factor makes this a mean over every pair of the step.
        loss = pairwise_loss(scores[:b], scores[b:]).sum() * world_size / max(float(counts[0]), 1.0)
        return loss, self._stats(scores)

    def step_metrics(self, sums, counts) -> dict:
        # Every token of both rows feeds the score: the step's non-pad tokens.
        return {**self._metrics_from(sums), "trained_tokens": int(counts[1])}

    def extra_train_metrics(self, stats: dict) -> dict:
        return {k: v for k, v in stats.items() if "/" in k}

    def probe_count(self) -> int:
        return self.cfg.method.rm.probe_pairs

    def _eval_stats(self, batch: dict) -> torch.Tensor:
        return self._stats(self.scorer(**batch))

    @torch.no_grad()
    def scores(self, rows: list, device: torch.device) -> torch.Tensor:
        """(chosen, rejected) scores [len(rows), 2] of ``rows`` by the unwrapped model, one micro-batch at a
        time, on this rank alone (not for sharded engines)."""
        from launcher.training.objectives.base import to_device

        out = []
        size = self.cfg.train.micro_batch_size
        for i in range(0, len(rows), size):
            s = self.scorer(**to_device(self.collate(rows[i:i + size]), device))
            out.append(s.view(2, -1).T.cpu())
        return torch.cat(out) if out else torch.zeros(0, 2)

    # ------------------------------------------------------------------------------------ evaluation

    def log_result(self, trainer) -> None:
        log_pair_rewards(trainer, log, "pair accuracy")
