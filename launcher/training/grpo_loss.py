"""GRPO's pieces as pure tensor functions, with TRL's formulas (trl.GRPOTrainer, 1.16: ``_compute_loss`` and
the advantage computation in ``_generate_and_score_completions``), so they can be checked by hand.

Why our own and not TRL's trainer: ours runs on the shared loop (whole-step normalization across micro-batches
and ranks, exact resume, preemption, our engines); the formulas are TRL's so that results compare.

The loss of one optimizer step, for completion i, token t (mask m, advantage A_i):
    ratio = exp(logp - old_logp);   per_token = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)
    (+ beta * (exp(ref - logp) - (ref - logp) - 1), the k3 KL estimator, when beta > 0)
aggregated by ``loss_type`` over the whole step (every micro-batch, every rank):
    grpo:    sum_i (sum_t m per_token / sum_t m) / N            (N: completions of the step)
    dr_grpo: sum_i sum_t m per_token / (N * max_completion_length)
    dapo:    sum_i sum_t m per_token / (completion tokens of the step)
    bnpo:    mean over the step's micro-batches of (sum m per_token / sum m in that micro-batch)
With equal micro-batches these are TRL's values; they do not depend on how the step is split over ranks (bnpo
excepted: its unit is the micro-batch).
"""
from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group",
                     batch_std: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, group std per completion) of rewards laid out group after group ([P * G]).

    scale: group (divide by the group's std + 1e-4), batch (by ``batch_std`` + 1e-4: the std over the step's
    rewards, all ranks; default: these rewards'), none (not divided). Stds are unbiased (n - 1), as torch.std
    and TRL's nanstd."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1).repeat_interleave(group_size)
    std = grouped.std(dim=1).repeat_interleave(group_size)
    adv = rewards - mean
    if scale == "group":
        adv = adv / (std + 1e-4)
    elif scale == "batch":
        bstd = batch_std if batch_std is not None else rewards.std()
        adv = adv / (bstd + 1e-4)
    elif scale != "none":
        raise ValueError(f"scale_rewards: {scale!r}")
    return adv, std


def per_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
                   epsilon_high: float, beta: float = 0.0, ref_logps: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token loss [B, T], per-token KL [B, T] (zeros when beta is 0), clipped [B, T] bool: the clipped side
    won the min, the ratio outside the band in the advantage's direction)."""
    adv = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * adv, clipped_ratio * adv)
    clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    if beta != 0.0:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
    else:
        kl = torch.zeros_like(loss)
    return loss, kl, clipped


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, step_completions: float,
              step_tokens: float, step_micro_batches: float, max_completion_length: int) -> torch.Tensor:
    """This micro-batch's share of the step's loss (see the module docstring); summed over the step's
    micro-batches and ranks it is the step's loss."""
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / max(step_completions, 1.0)
    if loss_type == "dr_grpo":
        return masked.sum() / (max(step_completions, 1.0) * max_completion_length)
    if loss_type == "dapo":
        return masked.sum() / max(step_tokens, 1.0)
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / max(step_micro_batches, 1.0)
    raise ValueError(f"loss_type: {loss_type!r}")
