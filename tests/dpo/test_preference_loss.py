"""The preference losses against hand-computed values, and against TRL 1.16's own loss code."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from launcher.training.preference_loss import (
    hinge_loss,
    ipo_loss,
    orpo_odds_ratio_loss,
    pair_terms,
    sigmoid_loss,
    simpo_loss,
)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_sigmoid_by_hand():
    # Δ = (−5 − −6) − (−9 − −7) = 1 + 2 = 3; β = 0.5 → −logσ(1.5)
    policy_c, policy_r, ref_c, ref_r = t(-5.0), t(-9.0), t(-6.0), t(-7.0)
    terms = pair_terms("sigmoid", 0.5, policy_c, policy_r, t(4), t(4), ref_c, ref_r)
    assert terms.losses.item() == pytest.approx(-logsig(1.5), abs=1e-12)
    assert terms.chosen_rewards.item() == pytest.approx(0.5) and terms.rejected_rewards.item() == pytest.approx(-1.0)
    smoothed = sigmoid_loss(t(1.0), t(-2.0), 0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(-0.9 * logsig(1.5) - 0.1 * logsig(-1.5), abs=1e-12)
    # at the start policy == reference: loss log 2 whatever the sequences
    assert sigmoid_loss(t(0.0), t(0.0), 0.1).item() == pytest.approx(math.log(2))


def test_ipo_hinge_by_hand():
    # chosen log-ratio 2 over 4 tokens, rejected −3 over 2 tokens: Δ̄ = 0.5 + 1.5 = 2; β = 0.25 → (2 − 2)² = 0
    assert ipo_loss(t(2.0), t(-3.0), t(4), t(2), 0.25).item() == pytest.approx(0.0, abs=1e-12)
    assert ipo_loss(t(2.0), t(-3.0), t(4), t(2), 0.5).item() == pytest.approx((2.0 - 1.0) ** 2)
    assert hinge_loss(t(2.0), t(-3.0), 0.1).item() == pytest.approx(0.5)
    assert hinge_loss(t(20.0), t(-3.0), 0.1).item() == 0.0


def test_simpo_orpo_by_hand():
    # SimPO: mean log-probs −1 (−4 over 4) and −2 (−6 over 3); β = 2, γ = 0.5 → −logσ(2·1 − 0.5)
    terms = pair_terms("simpo", 2.0, t(-4.0), t(-6.0), t(4), t(3), simpo_gamma=0.5)
    assert terms.losses.item() == pytest.approx(-logsig(1.5), abs=1e-12)
    assert terms.chosen_rewards.item() == pytest.approx(-2.0) and terms.rejected_rewards.item() == pytest.approx(-4.0)
    assert simpo_loss(t(-1.0), t(-2.0), 2.0, 0.5, label_smoothing=0.2).item() == pytest.approx(
        -0.8 * logsig(1.5) - 0.2 * logsig(-1.5), abs=1e-12)
    # ORPO: p_c = e^−1, p_r = e^−2; log odds ratio = log(p_c/(1−p_c)) − log(p_r/(1−p_r))
    pc, pr = math.exp(-1), math.exp(-2)
    log_or = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
    assert orpo_odds_ratio_loss(t(-1.0), t(-2.0), 0.1).item() == pytest.approx(-0.1 * logsig(log_or), abs=1e-12)


def test_reference_losses_need_reference():
    with pytest.raises(ValueError, match="reference"):
        pair_terms("sigmoid", 0.1, t(-1.0), t(-2.0), t(1), t(1))


@pytest.fixture(scope="module")
def trl_losses():
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    pytest.importorskip("trl")
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    return CPOTrainer.cpo_loss, ORPOTrainer.odds_ratio_loss


def trl_self(**kw):
    return SimpleNamespace(**{"alpha": 0.0, "accelerator": SimpleNamespace(device="cpu"), "label_smoothing": 0.0,
                              "simpo_gamma": 0.5, **kw})


@pytest.mark.parametrize("loss_type,beta,smoothing", [("sigmoid", 0.1, 0.0), ("sigmoid", 0.3, 0.2),
                                                       ("hinge", 0.1, 0.0), ("ipo", 0.1, 0.0), ("ipo", 0.7, 0.0),
                                                       ("simpo", 2.0, 0.0), ("simpo", 2.5, 0.1), ("orpo", 0.1, 0.0)])
def test_equal_trl_on_random_inputs(trl_losses, loss_type, beta, smoothing):
    """TRL's DPOTrainer computes its loss inline (no callable), but CPOTrainer.cpo_loss has the same sigmoid /
    hinge / ipo formulas on a log-prob difference (fed our log-ratios, per token for IPO as DPOTrainer 1.16
    does), plus SimPO; ORPOTrainer.odds_ratio_loss has ORPO's term."""
    cpo_loss, odds_ratio_loss = trl_losses
    g = torch.Generator().manual_seed(0)
    b = 64
    pc, pr = -torch.rand(b, generator=g, dtype=torch.float64) * 40, -torch.rand(b, generator=g, dtype=torch.float64) * 40
    rc, rr = pc + torch.randn(b, generator=g, dtype=torch.float64), pr + torch.randn(b, generator=g, dtype=torch.float64)
    nc, nr = torch.randint(1, 30, (b,), generator=g), torch.randint(1, 30, (b,), generator=g)
    ours = pair_terms(loss_type, beta, pc, pr, nc, nr, rc, rr, label_smoothing=smoothing, simpo_gamma=0.5)
    if loss_type == "orpo":
        losses = odds_ratio_loss(trl_self(beta=beta), pc / nc, pr / nr)[0]
        # TRL casts to float32 first
        torch.testing.assert_close(ours.losses, -losses.double(), rtol=1e-6, atol=1e-7)
        return
    me = trl_self(beta=beta, loss_type=loss_type, label_smoothing=smoothing)
    if loss_type == "simpo":
        chosen, rejected = pc / nc, pr / nr
    elif loss_type == "ipo":
        chosen, rejected = (pc - rc) / nc, (pr - rr) / nr
    else:
        chosen, rejected = pc - rc, pr - rr
    losses, _, _ = cpo_loss(me, chosen, rejected)
    torch.testing.assert_close(ours.losses, losses, rtol=1e-10, atol=1e-12)
