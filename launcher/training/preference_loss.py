"""Preference losses as pure functions of per-sequence log-probs: DPO (sigmoid, with label smoothing), IPO,
hinge, and the reference-free SimPO and ORPO.

Inputs are, per pair, the summed log-probs of the answer tokens under the policy (and the reference) and the
answer token counts. Every function returns per-pair losses [B] and per-pair rewards (chosen, rejected); the
recipe sums the losses and divides by the pairs of the whole optimizer step, so micro-batches and ranks are
weighted by their pairs (ORPO's NLL term, by the chosen tokens of the whole step, as in SFT).

The formulas follow TRL 1.16 (trl/trainer/dpo_trainer.py ``_compute_loss``; SimPO in
trl/experimental/cpo ``cpo_loss``; ORPO in trl/experimental/orpo ``odds_ratio_loss``) and are checked against
those in tests/dpo. Why not run TRL's DPOTrainer itself: our own loop normalizes by the pairs/tokens of the
whole step across micro-batches and ranks, computes log-probs in chunks at answer positions only (TRL's
fused head still builds per-token outputs for every position), runs on our engines (DDP now, ZeRO/FSDP with
the same interface), resumes exactly from our atomic checkpoints, and never reloads a reference model from a
hub (DPOTrainer given an in-memory model and no ref_model tries to).

Conventions, per loss (``lr`` = log-ratio policy - reference, summed over the answer tokens):
- sigmoid (DPO, Rafailov et al. 2023): -(1-ε)·logσ(β·Δ) - ε·logσ(-β·Δ), Δ = lr_chosen - lr_rejected
  (ε = label_smoothing, conservative DPO; ε = 0 is TRL's sigmoid).
- ipo (Azar et al. 2023, Eq. 17): (Δ̄ - 1/(2β))², Δ̄ from log-ratios averaged per answer token (as TRL 1.16
  does, confirmed there with the IPO authors).
- hinge (SLiC): relu(1 - β·Δ).
- simpo (Meng et al. 2024): -(1-ε)·logσ(β·(c̄ - r̄) - γ) - ε·logσ(-(β·(c̄ - r̄) - γ)), c̄/r̄ the policy
  log-probs averaged per answer token; no reference.
- orpo (Hong et al. 2024): NLL(chosen) - β·logσ(log odds(c̄) - log odds(r̄)), odds(p) = p / (1 - p) with
  p = exp(mean token log-prob); no reference. The per-pair term returned here is the odds-ratio part only;
  the NLL is the chosen answers' token log-probs (``orpo_nll_sum``).
Rewards: β·lr for the reference-based losses (summed log-ratios, as TRL logs them); β·(mean log-prob) for
SimPO and ORPO.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")


@dataclass
class PairTerms:
    losses: torch.Tensor
    """[B] per-pair loss (ORPO: the odds-ratio term only)."""
    chosen_rewards: torch.Tensor
    """[B], detached."""
    rejected_rewards: torch.Tensor
    """[B], detached."""


def needs_reference(loss_type: str) -> bool:
    return loss_type not in REFERENCE_FREE


def sigmoid_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    delta = chosen_logratios - rejected_logratios
    return -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)


def hinge_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.relu(1 - beta * (chosen_logratios - rejected_logratios))


def ipo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, chosen_tokens: torch.Tensor,
             rejected_tokens: torch.Tensor, beta: float) -> torch.Tensor:
    delta = chosen_logratios / chosen_tokens.clamp(min=1) - rejected_logratios / rejected_tokens.clamp(min=1)
    return (delta - 1 / (2 * beta)) ** 2


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, gamma: float,
               label_smoothing: float = 0.0) -> torch.Tensor:
    logits = beta * (chosen_avg_logps - rejected_avg_logps) - gamma
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Mächler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_odds_ratio_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """-β·logσ(log odds ratio); add the chosen NLL for ORPO's full objective."""
    # log1mexp cancels badly in half precision; never compute it below float32
    c, r = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in (chosen_avg_logps, rejected_avg_logps))
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return -beta * F.logsigmoid(log_odds)


def pair_terms(loss_type: str, beta: float, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
               chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor,
               ref_chosen_logps: Optional[torch.Tensor] = None, ref_rejected_logps: Optional[torch.Tensor] = None,
               label_smoothing: float = 0.0, simpo_gamma: float = 0.5) -> PairTerms:
    """Per-pair losses and rewards from summed answer log-probs ([B] each) and answer token counts ([B])."""
    chosen_tokens, rejected_tokens = chosen_tokens.to(chosen_logps.dtype), rejected_tokens.to(chosen_logps.dtype)
    if loss_type in REFERENCE_FREE:
        c_avg = chosen_logps / chosen_tokens.clamp(min=1)
        r_avg = rejected_logps / rejected_tokens.clamp(min=1)
        if loss_type == "simpo":
            losses = simpo_loss(c_avg, r_avg, beta, simpo_gamma, label_smoothing)
        else:
            losses = orpo_odds_ratio_loss(c_avg, r_avg, beta)
        return PairTerms(losses, beta * c_avg.detach(), beta * r_avg.detach())
    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError(f"loss_type={loss_type} needs reference log-probs")
    c_lr, r_lr = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        losses = sigmoid_loss(c_lr, r_lr, beta, label_smoothing)
    elif loss_type == "hinge":
        losses = hinge_loss(c_lr, r_lr, beta)
    elif loss_type == "ipo":
        losses = ipo_loss(c_lr, r_lr, chosen_tokens, rejected_tokens, beta)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; one of {', '.join(LOSS_TYPES)}")
    return PairTerms(losses, beta * c_lr.detach(), beta * r_lr.detach())


def orpo_nll_sum(chosen_logps: torch.Tensor) -> torch.Tensor:
    """ORPO's SFT term, summed over the chosen answer tokens; the caller divides by the step's chosen tokens."""
    return -chosen_logps.sum()
