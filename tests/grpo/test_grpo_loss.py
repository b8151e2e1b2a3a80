"""GRPO's loss pieces against values worked out by hand (launcher.training.grpo_loss, TRL's formulas), and the
reward functions on edge cases (empty and truncated completions, a raising function)."""
from __future__ import annotations

import math

import pytest
import torch

from launcher.training.grpo_loss import aggregate, group_advantages, per_token_loss
from launcher.training.rewards import (CallableReward, Completion, ExactMatch, FormatMatch, LengthReward,
                                       RewardError, score_completions, weighted_total)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv, std = group_advantages(rewards, 4, "group")
    # group 1: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5; group 2: all equal, std 0
    assert std.tolist() == pytest.approx([0.5] * 4 + [0.0] * 4)
    assert adv.tolist() == pytest.approx([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0, 0, 0, 0])
    none, _ = group_advantages(rewards, 4, "none")
    assert none.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    batch, _ = group_advantages(rewards, 4, "batch", torch.tensor(2.0))
    assert batch.tolist() == pytest.approx([0.75 / 2.0001, -0.25 / 2.0001, -0.25 / 2.0001, -0.25 / 2.0001, 0, 0, 0, 0])


def test_clipped_ratio_and_kl_by_hand():
    old = torch.zeros(3, 1)
    logps = torch.log(torch.tensor([[1.5], [1.5], [0.5]]))
    adv = torch.tensor([1.0, -1.0, -1.0])
    loss, kl, clipped = per_token_loss(logps, old, adv, 0.2, 0.2)
    # ratio 1.5, A=+1: min(1.5, 1.2) -> -1.2 (clipped); A=-1: min(-1.5, -1.2) = -1.5 -> 1.5 (not clipped);
    # ratio 0.5, A=-1: min(-0.5, -0.8) = -0.8 -> 0.8 (clipped)
    assert loss.view(-1).tolist() == pytest.approx([-1.2, 1.5, 0.8])
    assert clipped.view(-1).tolist() == [True, False, True]
    assert kl.abs().sum() == 0
    # clip-higher: epsilon_high 0.6 lets ratio 1.5 through for a positive advantage
    loss, _, clipped = per_token_loss(logps, old, adv, 0.2, 0.6)
    assert loss.view(-1).tolist() == pytest.approx([-1.5, 1.5, 0.8]) and not clipped[0]
    # k3 KL with ref - logp = log 2: 2 - log 2 - 1
    ref = logps + math.log(2.0)
    loss_kl, kl, _ = per_token_loss(logps, old, adv, 0.2, 0.2, beta=0.1, ref_logps=ref)
    assert kl.view(-1).tolist() == pytest.approx([1 - math.log(2.0)] * 3)
    assert (loss_kl - loss).view(-1).tolist() != pytest.approx([0.0] * 3)


def test_loss_normalisations_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # one micro-batch holding the whole step: 2 completions, 3 tokens, max length 4
    args = dict(step_completions=2, step_tokens=3, step_micro_batches=1, max_completion_length=4)
    assert float(aggregate(per_token, mask, "grpo", **args)) == pytest.approx((1.5 + 3.0) / 2)
    assert float(aggregate(per_token, mask, "dr_grpo", **args)) == pytest.approx(6.0 / (2 * 4))
    assert float(aggregate(per_token, mask, "dapo", **args)) == pytest.approx(6.0 / 3)
    assert float(aggregate(per_token, mask, "bnpo", **args)) == pytest.approx(6.0 / 3)
    # split in two micro-batches of one completion: the shares add up to the whole step's loss (bnpo: the mean
    # of the micro-batches' token means, TRL's per-batch normalisation)
    split = dict(args, step_micro_batches=2)
    for loss_type, whole in (("grpo", 2.25), ("dr_grpo", 0.75), ("dapo", 2.0), ("bnpo", (1.5 + 3.0) / 2)):
        parts = sum(float(aggregate(per_token[i:i + 1], mask[i:i + 1], loss_type, **split)) for i in range(2))
        assert parts == pytest.approx(whole), loss_type


def _item(text, answer="7", tokens=None, truncated=False, output="even"):
    row = {"prompt": "p", "answer": answer, "row": {"output": output}, "where": "tasks_train.json:3"}
    return Completion(row, text, len(text) if tokens is None else tokens, truncated)


def test_built_in_rewards_score_empty_and_truncated_completions():
    items = [_item(" 7 "), _item(""), _item("77777777", truncated=True), _item("x")]
    assert ExactMatch().score(items) == [1.0, 0.0, 0.0, 0.0]
    assert FormatMatch(r"\d+").score(items) == [1.0, 0.0, 1.0, 0.0]
    assert LengthReward(2, 8).score(items) == pytest.approx([1 - 1 / 8, 1 - 2 / 8, 1 - 6 / 8, 1 - 1 / 8])
    table, errors = score_completions([(ExactMatch(), 2.0), (FormatMatch(r"\d+"), 0.5)], items)
    assert weighted_total(table, [(None, 2.0), (None, 0.5)]).tolist() == pytest.approx([2.5, 0.0, 0.5, 0.0])


def test_a_raising_reward_names_the_function_and_the_row_or_scores_zero():
    fn = CallableReward("tests.grpo.rewards_for_tests:raises_on_odd")
    items = [_item("a"), _item("b", output="odd"), _item("c")]
    with pytest.raises(RewardError, match=r"reward tests.grpo.rewards_for_tests:raises_on_odd raised ValueError: no odd"
                                          r" rows here on row tasks_train.json:3"):
        score_completions([(fn, 1.0)], items)
    table, errors = score_completions([(fn, 1.0)], items, on_error="zero")
    assert table[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert errors == {"tests.grpo.rewards_for_tests:raises_on_odd": 1}


def test_a_reward_that_is_not_a_number_is_named():
    class Bad(ExactMatch):
        name = "bad"

        def score(self, items):
            return [float("nan")] * len(items)

    with pytest.raises(RewardError, match="reward bad returned nan for row tasks_train.json:3"):
        score_completions([(Bad(), 1.0)], [_item("x")])
