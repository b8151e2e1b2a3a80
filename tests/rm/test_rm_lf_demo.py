"""LLaMA-Factory's dpo_en_demo (sharegpt, ranking) read unchanged as a reward model's data, with the real Qwen
tokenizer and its chat template: pair accuracy and margin rise on the training pairs, and the saved model
reloaded with AutoModelForSequenceClassification scores them as in training. Skipped where the demo files or
the Qwen tokenizer package are absent."""
from __future__ import annotations

import torch

from tests.dpo.helpers import NEEDS_DPO_EN_DEMO, dpo_en_demo
from tests.recipe_runs import records
from tests.rm.helpers import reloaded_scores, run_rm

pytestmark = NEEDS_DPO_EN_DEMO

# 4 pairs cut to 64 tokens, one step an epoch (a reward model has no LM head, so the 151k-token vocabulary
# costs only the embedding).
DEMO = [*dpo_en_demo(cutoff_len=64, pairs=4), "method.rm.probe_pairs=4", "train.micro_batch_size=4",
        "train.max_steps=6"]


def test_dpo_en_demo_reward_model(output_root):
    recipe, run_dir, summary = run_rm(output_root, [*DEMO, "method=rm", "method.lr=3e-3"])
    before, after = summary["rewards_before"], summary["rewards_after"]
    print(f"\n[rm dpo_en_demo] train pairs: accuracy {before['train_pairs/rewards/accuracy']:.3f} -> "
          f"{after['train_pairs/rewards/accuracy']:.3f}, margin {before['train_pairs/rewards/margin']:.4f} -> "
          f"{after['train_pairs/rewards/margin']:.4f}")
    assert "<|im_start|>" in recipe.tokenizer.decode(recipe.data.train[0]["chosen_input_ids"])
    assert len(records(run_dir, "train")) == 6
    assert after["train_pairs/rewards/accuracy"] == 1.0 > before["train_pairs/rewards/accuracy"]
    assert after["train_pairs/rewards/margin"] > before["train_pairs/rewards/margin"] + 0.5
    rows = list(recipe.data.train)
    trained = recipe.trainer.objective.scores(rows, torch.device("cpu"))
    torch.testing.assert_close(reloaded_scores(run_dir, rows, recipe.trainer.objective.collate), trained,
                               rtol=0, atol=1e-5)
