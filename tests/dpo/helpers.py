"""Running the DPO recipe in-process on a small model, and reading what it wrote."""
from __future__ import annotations

import json
from pathlib import Path

from launcher.config.compose import compose_config
from launcher.rundir import make_run_dir, write_run_config
from launcher.engines.distributed import init_distributed
from recipes.dpo import DPORecipe

# A smaller tiny model than the default (2 cores shared with others): 2 layers, hidden 64.
SMALL_MODEL = ["model.config.hidden_size=64", "model.config.intermediate_size=192", "model.config.num_hidden_layers=2"]
FAST = ["data=prefs", "data.max_samples=16", "method.dpo.probe_pairs=16", "train.micro_batch_size=8",
        "train.grad_accum=1", "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0",
        "train.lr_scheduler=constant", *SMALL_MODEL]


def run_dpo(output_root: Path, overrides: list[str], name: str = "t"):
    cfg = compose_config([f"run.output_root={output_root}", *FAST, *overrides])
    run_dir = make_run_dir(output_root, name)
    write_run_config(run_dir, cfg)
    recipe = DPORecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    try:
        summary = recipe.train()
    finally:
        recipe.cleanup()
    return recipe, run_dir, summary


def records(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]
