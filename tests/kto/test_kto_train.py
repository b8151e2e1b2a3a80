"""KTO on feedback rows (the shipped preference pairs split into thumbs-up and thumbs-down answers), tiny
model: the loss falls, desirable rewards rise above undesirable ones, the reference is what it should be
(frozen copy, adapters off), and the saved model reloads with the same logits."""
from __future__ import annotations

import math

import pytest

from tests.kto.helpers import fast, run_kto, write_feedback_data
from tests.recipe_runs import assert_reload_gives_same_logits, records

KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "logps/chosen", "logps/rejected", "kl")


@pytest.mark.parametrize("method,lr", [("kto_lora", "1e-1"), ("kto", "3e-3")])
def test_kto_learns_and_reloads(tmp_path, output_root, method, lr):
    data = write_feedback_data(tmp_path / "data")
    recipe, run_dir, summary = run_kto(output_root, [*fast(data), f"method={method}", f"method.lr={lr}",
                                                     "train.max_steps=16"])
    if method == "kto_lora":
        assert recipe.ref_model is None  # adapters off: no second copy
    else:
        assert recipe.ref_model is not None and not any(p.requires_grad for p in recipe.ref_model.parameters())
    train = records(run_dir, "train")
    assert len(train) == 16 and all(k in r for r in train for k in KEYS)
    # step 1 starts at policy == reference: every log-ratio and the KL are 0, so each row's loss is 1 - sigmoid(0)
    assert train[0]["loss"] == pytest.approx(0.5, abs=1e-5) and train[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert sum(r["loss"] for r in train[-4:]) / 4 < 0.5 - 0.01
    before, after = summary["rewards_before"], summary["rewards_after"]
    print(f"\n[{method}] loss {train[0]['loss']:.4f} -> {train[-1]['loss']:.4f}; train rows: margin "
          f"{before['train_rows/rewards/margin']:.4f} -> {after['train_rows/rewards/margin']:.4f}")
    assert before["train_rows/rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    assert after["train_rows/rewards/margin"] > 0.05
    last_eval = records(run_dir, "eval")[-1]
    assert math.isfinite(last_eval["eval/kl"]) and last_eval["eval/kl"] >= 0
    assert_reload_gives_same_logits(recipe, run_dir, recipe.data.collate(recipe.data.eval[:4]))
