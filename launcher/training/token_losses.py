"""SFT's reweighted token losses (method.token_loss.name): DFT, EAFT and ASFT, as LLaMA-Factory computes them.

For a trained position t with target y_t, logits z_t and the model's distribution p_t = softmax(z_t), cross-entropy
is ``CE_t = -log p_t(y_t)``. Each variant scales it by a weight w_t that is *detached* (no gradient flows through
it), and the step's loss is ``sum_t loss_t / (trained tokens of the step)``, the normalization of plain SFT here
(launcher.training.objectives.sft; LLaMA-Factory's ``num_items_in_batch``):

- DFT, Dynamic Fine-Tuning (Wu et al. 2025, "On the Generalization of SFT: A Reinforcement Learning Perspective
  with Reward Rectification"): ``loss_t = sg(p_t(y_t)) * CE_t``. Scaling by the token's own probability turns
  SFT's implicit 1/p importance weight back into a plain policy-gradient one.
- EAFT, Entropy-Adaptive Fine-Tuning (2025): ``loss_t = sg((H_t^K / 3) ** alpha) * CE_t``, where ``H_t^K`` is the entropy
  of the distribution renormalized over the K = 20 largest logits, ``q = softmax(topK(z_t))``,
  ``H_t^K = -sum_k q_k log q_k``; 3 ~ log 20 (= 2.996) is its maximum, so the weight is in [0, ~1]. Confident
  positions (low entropy) are pushed less. alpha = method.token_loss.eaft_alpha (LLaMA-Factory's constants: K = 20,
  the divisor 3.0).
- ASFT, Anchored Supervised Fine-Tuning (2025): DFT plus a per-token KL anchor to the
  frozen starting model r: ``loss_t = sg(p_t(y_t)) * CE_t + alpha * KL(r_t || p_t)`` with
  ``KL(r_t || p_t) = sum_v r_t(v) (log r_t(v) - log p_t(v))`` (torch's ``kl_div(log p, r)``, as LLaMA-Factory
  calls it), alpha = method.token_loss.asft_alpha. LLaMA-Factory averages the DFT and KL terms per micro-batch;
  here both are summed and divided by the step's trained tokens like every SFT loss (equal for one micro-batch).

The LM head runs in chunks of positions under activation checkpointing, as the plain loss does
(launcher.training.loss.chunked_ce_sum): no [tokens, vocab] logits beyond one chunk. ASFT's reference logits are
made inside the chunk too (recomputed in backward, never kept).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

EAFT_TOP_K = 20
EAFT_ENTROPY_SCALE = 3.0
"""LLaMA-Factory's normalizer of the top-20 entropy (~ log 20, its largest value)."""


def dft_weights(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """p(y_t): each target's probability, detached ([N] from [N, V], [N])."""
    with torch.no_grad():
        return torch.exp(-F.cross_entropy(logits.float(), targets, reduction="none"))


def eaft_weights(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """(H^K / 3) ** alpha with H^K the entropy over the top-K logits renormalized, detached ([N])."""
    with torch.no_grad():
        top = torch.topk(logits.float(), k=min(EAFT_TOP_K, logits.shape[-1]), dim=-1).values
        log_q = top - torch.logsumexp(top, dim=-1, keepdim=True)
        entropy = -(log_q.exp() * log_q).sum(dim=-1)
        return torch.pow(entropy / EAFT_ENTROPY_SCALE, alpha)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(r || p) per position ([N]): r = softmax(ref_logits), p = softmax(logits)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_r = F.log_softmax(ref_logits.float(), dim=-1)
    return F.kl_div(log_p, log_r, reduction="none", log_target=True).sum(dim=-1)


def token_losses(name: str, logits: torch.Tensor, targets: torch.Tensor, asft_alpha: float = 0.1,
                 eaft_alpha: float = 1.0, ref_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """loss_t per position ([N]) of variant ``name`` (ce, dft, eaft, asft) from logits [N, V] and targets [N]."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    if name == "ce":
        return ce
    if name == "dft":
        return dft_weights(logits, targets) * ce
    if name == "eaft":
        return eaft_weights(logits, eaft_alpha) * ce
    if name == "asft":
        if ref_logits is None:
            raise ValueError("asft needs the reference model's logits")
        return dft_weights(logits, targets) * ce + asft_alpha * kl_to_reference(logits, ref_logits)
    raise ValueError(f"unknown token loss {name!r}")


def _chunk_sum(h, head, y, ref_h, ref_head, name, asft_alpha, eaft_alpha):
    ref_logits = None
    if ref_h is not None:
        with torch.no_grad():
            ref_logits = ref_head(ref_h)
    return token_losses(name, head(h), y, asft_alpha, eaft_alpha, ref_logits).sum()


def chunked_token_loss_sum(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor, chunk_size: int,
                           name: str, asft_alpha: float = 0.1, eaft_alpha: float = 1.0,
                           ref_hidden: Optional[torch.Tensor] = None, ref_head: Optional[nn.Module] = None):
    """sum_t loss_t over the trained positions ([N, H] hidden states, [N] targets), chunked and checkpointed."""
    total = hidden.new_zeros((), dtype=torch.float32)
    if hidden.shape[0] == 0:
        return total + hidden.sum() * 0.0
    for start in range(0, hidden.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        ref_h = ref_hidden[part] if ref_hidden is not None else None
        args = (hidden[part], lm_head, targets[part], ref_h, ref_head, name, asft_alpha, eaft_alpha)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_sum, *args, use_reentrant=False)
        else:
            total = total + _chunk_sum(*args)
    return total
