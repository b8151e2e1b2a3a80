"""PPO's pieces as pure tensor functions, so they can be checked by hand: the per-token rewards (the reward
model's score at the last token, a KL penalty to the reference at every token), GAE, masked whitening, and the
clipped policy and value losses.

The formulas are those of TRL's PPO (``trl.PPOTrainer``; LLaMA-Factory's ``stage: ppo`` runs TRL 0.8's, whose
``compute_rewards``, ``compute_advantages`` and ``loss`` these follow):
    kl_t      = logp_t - ref_logp_t                                    (the k1 estimator)
    r_t       = -kl_coef * kl_t  (+ score at the completion's last token)
    delta_t   = r_t + gamma * V_{t+1} - V_t        (V after the last token: 0, the episode ended)
    A_t       = delta_t + gamma * lam * A_{t+1};   returns_t = A_t + V_t
    A         = whiten(A) over every completion token of the generation batch (all ranks)
    policy    = max(-A ratio, -A clip(ratio, 1 - cliprange, 1 + cliprange)),  ratio = exp(logp - old_logp)
    value     = 0.5 max((V - R)^2, (clip(V, V_old - cliprange_value, V_old + cliprange_value) - R)^2)
    per token = policy + vf_coef * value
Why our own and not TRL's trainer: ours runs on the shared loop (whole-step normalisation across micro-batches
and ranks, exact resume, preemption, our engines).
"""
from __future__ import annotations

import torch

WHITEN_EPS = 1e-8


def masked_moments(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[sum, sum of squares, count] of ``values`` where ``mask`` is 1 (float64): summed over ranks, the whole
    generation batch's moments."""
    v, m = values.double(), mask.double()
    return torch.stack([(v * m).sum(), (v * v * m).sum(), m.sum()])


def whiten(values: torch.Tensor, mask: torch.Tensor, moments: torch.Tensor | None = None,
           shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8) with the mean and the unbiased variance over the masked entries (or of
    ``moments``, masked_moments summed over ranks); ``shift_mean=False`` adds the mean back (TRL's reward
    whitening). Entries outside the mask are returned as 0."""
    s, sq, n = (moments if moments is not None else masked_moments(values, mask)).tolist()
    mean = s / max(n, 1.0)
    var = max(sq / max(n, 1.0) - mean * mean, 0.0)
    if n > 1:
        var *= n / (n - 1)  # Bessel's correction, as TRL's masked_var
    out = (values - mean) / (var + WHITEN_EPS) ** 0.5
    if not shift_mean:
        out = out + mean
    return out * mask


def token_rewards(logps: torch.Tensor, ref_logps: torch.Tensor | None, scores: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards [B, T], per-token KL [B, T]): -kl_coef * (logp - ref_logp) at every completion token,
    plus the score at the last one. A completion with no token gets no reward (nothing to credit it to)."""
    kl = (logps - ref_logps) * mask if ref_logps is not None else torch.zeros_like(logps)
    rewards = -kl_coef * kl
    lengths = mask.sum(-1).long()
    rows = torch.nonzero(lengths > 0).squeeze(-1)
    rewards = rewards.clone()
    rewards[rows, lengths[rows] - 1] += scores[rows].to(rewards.dtype)
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [B, T] by generalised advantage estimation; values and rewards after the
    completion's end count as 0."""
    values, rewards = values * mask, rewards * mask
    t_len = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    out = []
    for t in reversed(range(t_len)):
        next_value = values[:, t + 1] if t < t_len - 1 else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        out.append(last)
    advantages = torch.stack(out[::-1], dim=1)
    return advantages * mask, (advantages + values) * mask


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, cliprange: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token clipped policy loss [B, T], clipped [B, T] bool: the clipped term won the max)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return torch.max(unclipped, clipped), clipped > unclipped


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, cliprange_value: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token clipped value loss [B, T] (with TRL's 0.5), clipped [B, T] bool: the clipped term won)."""
    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    plain = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(plain, clipped), clipped > plain
