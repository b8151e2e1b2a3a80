"""LLaMA-Factory's dpo_en_demo (sharegpt, ranking) read unchanged, with the real Qwen tokenizer and its chat
template: reward accuracy and margin rise on the training pairs, LoRA and full. Skipped where the demo files
or the Qwen tokenizer package are absent."""
from __future__ import annotations

import pytest

from tests.dpo.helpers import NEEDS_DPO_EN_DEMO, dpo_en_demo, run_dpo
from tests.recipe_runs import records
from tests.dpo.test_dpo_train import assert_rewards_rise, assert_same_logits

pytestmark = NEEDS_DPO_EN_DEMO

# 2 pairs cut to 40 tokens (the 151k-row LM head dominates the time), one step an epoch.
DEMO = [*dpo_en_demo(cutoff_len=40, pairs=2), "method.dpo.probe_pairs=2", "train.micro_batch_size=2",
        "train.max_steps=6"]


@pytest.mark.parametrize("method,lr", [("dpo_lora", "4e-2"), ("dpo", "3e-3")])
def test_dpo_en_demo_rewards_rise(output_root, method, lr):
    recipe, run_dir, summary = run_dpo(output_root, [*DEMO, f"method={method}", f"method.lr={lr}"])
    before, after = summary["rewards_before"], summary["rewards_after"]
    print(f"\n[{method} dpo_en_demo] train pairs: reward accuracy {before['train_pairs/rewards/accuracy']:.3f} -> "
          f"{after['train_pairs/rewards/accuracy']:.3f}, margin {before['train_pairs/rewards/margin']:.4f} -> "
          f"{after['train_pairs/rewards/margin']:.4f}; peak RSS {summary['peak_rss_mb']} MB")
    assert recipe.data.stats["samples"] == 2 and "<|im_start|>" in recipe.tokenizer.decode(recipe.data.train[0]["chosen_input_ids"])
    assert len(records(run_dir, "train")) == 6 and records(run_dir, "probe")
    assert_rewards_rise(summary)
    recipe.data.eval = recipe.data.train  # no held-out split here: probe the reload on training pairs
    assert_same_logits(recipe, run_dir)
