"""DPO on the shipped preference set, tiny model: reward accuracy and margin rise on the training pairs (LoRA
and full), the reference is what it should be, the saved model reloads, every loss variant trains."""
from __future__ import annotations

import math

import pytest

from tests.dpo.helpers import run_dpo
from tests.recipe_runs import assert_reload_gives_same_logits, records

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen",
               "logps/rejected")


def report(run_dir, summary, label):  # noqa: ARG001
    before, after = summary["rewards_before"], summary["rewards_after"]
    print(f"\n[{label}] train pairs: reward accuracy {before['train_pairs/rewards/accuracy']:.3f} -> "
          f"{after['train_pairs/rewards/accuracy']:.3f}, margin {before['train_pairs/rewards/margin']:.4f} -> "
          f"{after['train_pairs/rewards/margin']:.4f}; held-out accuracy {before['eval/rewards/accuracy']:.3f} -> "
          f"{after['eval/rewards/accuracy']:.3f}, margin {before['eval/rewards/margin']:.4f} -> "
          f"{after['eval/rewards/margin']:.4f}; peak RSS {summary['peak_rss_mb']} MB")


def assert_rewards_rise(summary):
    before, after = summary["rewards_before"], summary["rewards_after"]
    # policy == reference at the start: every reward is 0, so no pair is ranked right yet
    assert before["train_pairs/rewards/accuracy"] == 0.0 and before["train_pairs/rewards/margin"] == 0.0
    assert after["train_pairs/rewards/accuracy"] >= 0.8
    assert after["train_pairs/rewards/margin"] > 0.05


def assert_same_logits(recipe, run_dir):
    assert_reload_gives_same_logits(recipe, run_dir, recipe.data.collate(recipe.data.eval[:4]))


@pytest.mark.parametrize("method,lr", [("dpo_lora", "4e-2"), ("dpo", "3e-3")])
def test_rewards_rise_and_model_reloads(output_root, method, lr):
    recipe, run_dir, summary = run_dpo(output_root, [f"method={method}", f"method.lr={lr}", "train.max_steps=16"])
    report(run_dir, summary, method)
    if method == "dpo_lora":
        assert recipe.ref_model is None  # the reference is the base with adapters disabled: no second copy
        assert (run_dir / "model" / "adapter_config.json").exists() and (run_dir / "base_model").is_dir()
    else:
        assert recipe.ref_model is not None and not any(p.requires_grad for p in recipe.ref_model.parameters())
    train = records(run_dir, "train")
    assert len(train) == 16 and all(k in r for r in train for k in REWARD_KEYS)
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1 starts at policy == reference
    assert_rewards_rise(summary)
    assert_same_logits(recipe, run_dir)


def test_precomputed_reference_matches_frozen_copy(output_root):
    """The same run with reference log-probs scored once up front, and with a frozen copy, takes the same steps."""
    common = ["method=dpo", "method.lr=3e-3", "train.max_steps=4", "method.dpo.probe_pairs=8"]
    copy_recipe, copy_dir, _ = run_dpo(output_root, common, name="copy")
    pre_recipe, pre_dir, _ = run_dpo(output_root, [*common, "method.dpo.precompute_ref_log_probs=true"], name="pre")
    assert pre_recipe.ref_model is None and "ref_logps" in pre_recipe.data.train[0]
    a, b = records(copy_dir, "train"), records(pre_dir, "train")
    for x, y in zip(a, b):
        for key in ("loss", "rewards/margin", "rewards/accuracy"):
            assert x[key] == pytest.approx(y[key], abs=2e-5), key


@pytest.mark.parametrize("loss_type,extra", [("ipo", []), ("hinge", []), ("sigmoid", ["method.dpo.label_smoothing=0.1"]),
                                             ("simpo", ["method.dpo.beta=2.0"]), ("orpo", [])])
def test_loss_variants_train(output_root, loss_type, extra):
    recipe, run_dir, summary = run_dpo(output_root, ["method=dpo_lora", "method.lr=2e-2", "train.max_steps=3",
                                                     "method.dpo.probe_pairs=8", "data.max_samples=16",
                                                     f"method.dpo.loss_type={loss_type}", *extra])
    train = records(run_dir, "train")
    assert len(train) == 3 and all(math.isfinite(r["loss"]) and k in r for r in train for k in REWARD_KEYS)
    if loss_type == "orpo":
        assert all("nll" in r and r["loss"] > r["nll"] for r in train)
    if loss_type in ("simpo", "orpo"):  # reference-free: the rewards are β × mean log-prob, never 0
        assert summary["rewards_before"]["train_pairs/rewards/chosen"] < 0
