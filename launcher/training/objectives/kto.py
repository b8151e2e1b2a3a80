"""KTO objective (Ethayarajh et al. 2024): unpaired thumbs-up/down answers, each pulled up or down against a
reference point, the KL between policy and reference estimated on mismatched prompt/answer pairs.

Per row, lr = log p_policy(y|x) - log p_ref(y|x) (summed over the answer tokens). With z = the KL estimate,
mean over the micro-batch's mismatched rows (x_i, y_j) of (log p_policy - log p_ref), clamped at 0 and
detached (it sets the reference point and gets no gradient), as TRL 1.16 computes it
(trl/trainer/kto_trainer.py ``_compute_loss``, loss_type="kto"):
- desirable:   w_d * (1 - sigmoid(beta * (lr - z)))
- undesirable: w_u * (1 - sigmoid(beta * (z - lr)))
Rewards are beta * lr. The loss is summed over rows and divided by the rows of the whole optimizer step (all
micro-batches, all ranks): TRL's mean over one batch when there is one micro-batch on one rank. Under several
ranks z is averaged over them (TRL gathers it), once per micro-batch.

A batch (``launcher.data.collate.collate_feedback``) holds the B rows, then their B mismatched rows: row i's
prompt with row i-1's answer, made when the micro-batch is collated (TRL 1.16 rotates the answers within each
batch the same way, and requires sequential sampling so that its precomputed rotation is the batch's); a
micro-batch of one row (LLaMA-Factory's qwen3_lora_kto.yaml) has no other row, so its KL row takes the answer
LLaMA-Factory 0.9.5 pairs it with when it preprocesses: the previous sample's in file order, within blocks of
1000 (``launcher.data.kl_partner_records``). The mismatched rows are scored without gradient. The reference is what ``reference`` is, as for DPO
(launcher.training.objectives.reference): a frozen copy, or the policy with its adapters off. Reference
log-probs are not precomputed for KTO: a mismatched row exists only within its micro-batch, so its reference
log-prob depends on which rows were batched together.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from launcher.engines.distributed import all_reduce_sum
from launcher.training.loss import IGNORE_INDEX
from launcher.training.objectives.base import RewardObjective, first_and_last_eval
from launcher.training.objectives.preference import SequenceLogProbs

log = logging.getLogger("launcher.kto")

STAT_KEYS = ("row_loss", "rows", "desirable", "undesirable", "rewards/chosen", "rewards/rejected",
             "logps/chosen", "logps/rejected", "kl", "kl_estimates")
"""Sums kept per step / per evaluation, in this order: chosen = desirable, rejected = undesirable (TRL's names)."""


def kto_kl_estimate(kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor, world_size: int = 1) -> torch.Tensor:
    """The reference point z: mean of (policy - reference) log-probs of the mismatched rows, averaged over
    ranks, clamped at 0, without gradient."""
    kl = (kl_logps.detach().float() - ref_kl_logps.detach().float()).mean()
    if world_size > 1:
        kl = kl.clone()
        all_reduce_sum(kl)
        kl = kl / world_size
    return kl.clamp(min=0)


def kto_losses(logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor,
               beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row weighted losses [B] and rewards [B] (beta * log-ratio); ``desirable`` is the kto_tag [B] bool."""
    logratios = logps - ref_logps
    good = desirable_weight * (1 - F.sigmoid(beta * (logratios - kl)))
    bad = undesirable_weight * (1 - F.sigmoid(beta * (kl - logratios)))
    return torch.where(desirable, good, bad), beta * logratios.detach()


class KTOObjective(RewardObjective):
    name = "kto"
    probe_prefix = "train_rows"
    stat_keys = STAT_KEYS

    def __init__(self, data, cfg):
        super().__init__(data, cfg)  # and ``scorer``: the policy's SequenceLogProbs without wrappers
        self.kto = cfg.method.kto
        self.uses_reference = True
        self.reference: Optional[Callable[[dict], torch.Tensor]] = None
        """batch -> reference log-probs [2B] (rows, then mismatched rows)."""

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        return SequenceLogProbs(model, cfg.train.loss_chunk_size)

    def collate(self, rows: list) -> dict:
        return self.data.collate(rows)

    # ------------------------------------------------------------------------------------ scoring

    @staticmethod
    def _half(batch: dict, second: bool) -> dict:
        """The B rows (or their B mismatched rows) of a 2B-row batch, as the scorer takes them."""
        b = batch["input_ids"].shape[0] // 2
        part = slice(b, None) if second else slice(0, b)
        return {k: (v[part] if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == 2 * b else v)
                for k, v in batch.items() if k != "kto_tag"}

    def _score(self, batch: dict, scorer, world_size: int):
        tags = batch["kto_tag"]
        ref = self.reference({k: v for k, v in batch.items() if k != "kto_tag"})
        b = tags.shape[0]
        with torch.no_grad():  # the mismatched rows only set the reference point
            kl_logps = scorer(**self._half(batch, second=True))[0]
        logps = scorer(**self._half(batch, second=False))[0]
        kl = kto_kl_estimate(kl_logps, ref[b:], world_size)
        k = self.kto
        losses, rewards = kto_losses(logps, ref[:b].to(logps.dtype), tags, kl, k.beta, k.desirable_weight,
                                     k.undesirable_weight)
        return losses, rewards, logps, tags, kl

    @staticmethod
    def _stats(losses, rewards, logps, tags, kl) -> torch.Tensor:
        d = tags.double()
        r, lp = rewards.double(), logps.detach().double()
        return torch.stack([
            losses.detach().double().sum(), torch.tensor(float(tags.shape[0]), dtype=torch.float64, device=r.device),
            d.sum(), (1 - d).sum(), (r * d).sum(), (r * (1 - d)).sum(), (lp * d).sum(), (lp * (1 - d)).sum(),
            kl.double(), torch.tensor(1.0, dtype=torch.float64, device=r.device),
        ])

    @staticmethod
    def _metrics_from(sums: torch.Tensor) -> dict:
        s = dict(zip(STAT_KEYS, sums.tolist()))
        out = {"loss": s["row_loss"] / max(s["rows"], 1.0)}
        for key, count in (("rewards/chosen", "desirable"), ("logps/chosen", "desirable"),
                           ("rewards/rejected", "undesirable"), ("logps/rejected", "undesirable")):
            if s[count] > 0:
                out[key] = s[key] / s[count]
        if "rewards/chosen" in out and "rewards/rejected" in out:
            out["rewards/margin"] = out["rewards/chosen"] - out["rewards/rejected"]
        out["kl"] = s["kl"] / max(s["kl_estimates"], 1.0)
        return out

    # ------------------------------------------------------------------------------------ training

    def normalizers(self, batches: list[dict]) -> list[float]:
        trained = [b["shift_labels"][: b["shift_labels"].shape[0] // 2] != IGNORE_INDEX for b in batches]
        return [sum(b["kto_tag"].shape[0] for b in batches), sum(int(t.sum()) for t in trained)]

    def micro_batch_loss(self, module, batch, counts, world_size):
        global_rows = float(counts[0])
        losses, rewards, logps, tags, kl = self._score(batch, module, world_size)
        # DDP averages gradients over ranks; the world-size factor makes this a mean over every row of the step.
        loss = losses.sum() * world_size / max(global_rows, 1.0)
        stats = self._stats(losses, rewards, logps, tags, kl)
        stats[STAT_KEYS.index("kl")] /= world_size  # every rank holds the same z; the sum over ranks counts it once
        stats[STAT_KEYS.index("kl_estimates")] /= world_size
        return loss, stats

    def step_metrics(self, sums, counts) -> dict:
        return {**self._metrics_from(sums), "trained_tokens": int(counts[1])}

    def extra_train_metrics(self, stats: dict) -> dict:
        return {k: v for k, v in stats.items() if "/" in k or k == "kl"}

    def probe_count(self) -> int:
        return self.kto.probe_rows

    def _eval_stats(self, batch: dict) -> torch.Tensor:
        # A batch of one row pairs its prompt with LLaMA-Factory's partner answer (launcher.data.collate).
        return self._stats(*self._score(batch, self.scorer, world_size=1))

    # ------------------------------------------------------------------------------------ evaluation

    def log_result(self, trainer) -> None:
        first, last = first_and_last_eval(trainer)
        for prefix in ("train_rows", "eval"):
            key = f"{prefix}/rewards/margin"
            if first and last and key in first and key in last:
                log.info("%s: reward margin (desirable - undesirable) %.4f -> %.4f, kl %.4f -> %.4f", prefix,
                         first[key], last[key], first[f"{prefix}/kl"], last[f"{prefix}/kl"])
