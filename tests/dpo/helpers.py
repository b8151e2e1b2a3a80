"""Running the DPO recipe in-process on a small model, and reading what it wrote."""
from __future__ import annotations

from pathlib import Path

from recipes.dpo import DPORecipe
from tests.recipe_runs import run_recipe

# A smaller tiny model than the default (2 cores shared with others): 2 layers, hidden 64.
SMALL_MODEL = ["model.config.hidden_size=64", "model.config.intermediate_size=192", "model.config.num_hidden_layers=2"]
FAST = ["data=prefs", "data.max_samples=16", "method.dpo.probe_pairs=16", "train.micro_batch_size=8",
        "train.grad_accum=1", "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0",
        "train.lr_scheduler=constant", *SMALL_MODEL]


def run_dpo(output_root: Path, overrides: list[str], name: str = "t"):
    return run_recipe(DPORecipe, output_root, [*FAST, *overrides], name)
