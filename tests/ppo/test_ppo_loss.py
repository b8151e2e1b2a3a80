"""PPO's pure functions (launcher.training.ppo_loss) against values worked out by hand."""
from __future__ import annotations

import math

import torch

from launcher.training.ppo_loss import gae, masked_moments, policy_loss, token_rewards, value_loss, whiten


def close(got: torch.Tensor, want: list) -> bool:
    return torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-6)


def test_token_rewards_put_the_score_on_the_last_token_and_the_kl_penalty_on_every_token():
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the second completion is empty
    rewards, kl = token_rewards(logps, ref, torch.tensor([2.0, 5.0]), mask, kl_coef=0.1)
    assert close(kl, [[0.5, -1.0, 0.0], [0.0, 0.0, 0.0]])
    assert close(rewards, [[-0.05, 2.1, 0.0], [0.0, 0.0, 0.0]])
    # no reference (kl_coef 0): the score alone
    rewards, kl = token_rewards(logps, None, torch.tensor([2.0, 5.0]), mask, kl_coef=0.0)
    assert close(rewards, [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]) and not kl.any()


def test_gae_by_hand():
    rewards = torch.tensor([[0.1, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 9.0]])  # the third position is padding: its value counts as 0
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=1: delta = 1.0 + 0 - 0.2 = 0.8, A = 0.8;  t=0: delta = 0.1 + 0.2 - 0.5 = -0.2, A = -0.2 + 0.5 * 0.8 = 0.2
    assert close(adv, [[0.2, 0.8, 0.0]])
    assert close(ret, [[0.7, 1.0, 0.0]])
    adv, _ = gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # t=1: A = 0.8; t=0: delta = 0.1 + 0.5 * 0.2 - 0.5 = -0.3, A = -0.3 + 0.5 * 0.8 = 0.1
    assert close(adv, [[0.1, 0.8, 0.0]])


def test_whitening_uses_the_masked_entries_and_moments_summed_over_ranks():
    values = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = whiten(values, mask)  # mean 2, unbiased variance 1
    assert close(out, [[-1.0, 0.0], [1.0, 0.0]])
    assert close(whiten(values, mask, shift_mean=False), [[1.0, 2.0], [3.0, 0.0]])
    # two "ranks" holding a row each: their summed moments whiten each as the whole batch does
    moments = masked_moments(values[:1], mask[:1]) + masked_moments(values[1:], mask[1:])
    assert close(whiten(values[1:], mask[1:], moments), [[1.0, 0.0]])


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    logps = torch.tensor([[math.log(1.5), math.log(1.5), math.log(0.5)]])
    adv = torch.tensor([[1.0, -1.0, -1.0]])
    loss, clipped = policy_loss(logps, old, adv, cliprange=0.2)
    # ratio 1.5, A=1: max(-1.5, -1.2) = -1.2 (clipped); A=-1: max(1.5, 1.2) = 1.5; ratio 0.5, A=-1: max(0.5, 0.8)
    assert close(loss, [[-1.2, 1.5, 0.8]])
    assert clipped.tolist() == [[True, False, True]]
    # the gradient flows through the unclipped term only
    logps = logps.clone().requires_grad_(True)
    policy_loss(logps, old, adv, 0.2)[0].sum().backward()
    assert close(logps.grad, [[0.0, 1.5, 0.0]])


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 1.0]])
    old = torch.tensor([[0.5, 0.5, 0.5]])
    returns = torch.tensor([[0.0, 1.0, 2.0]])
    loss, clipped = value_loss(values, old, returns, cliprange_value=0.2)
    # (1-0)^2=1 vs (0.7-0)^2; (0-1)^2=1 vs (0.3-1)^2; (1-2)^2=1 vs (0.7-2)^2=1.69 -> 0.5 * max
    assert close(loss, [[0.5, 0.5, 0.845]])
    assert clipped.tolist() == [[False, False, True]]
