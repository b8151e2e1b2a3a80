"""A recipe run in-process on a composed config, and what it wrote: the one way the tests train without
torchrun (SFT, DPO, KTO, VL)."""
from __future__ import annotations

import json
from pathlib import Path

from launcher.config.compose import compose_config
from launcher.engines.distributed import init_distributed
from launcher.launch.rundir import make_run_dir, write_run_config


def run_recipe(recipe_class, output_root: Path, overrides: list[str], name: str = "t"):
    """(recipe, run dir, summary) of ``recipe_class`` trained on ``overrides``; cleaned up even when it fails."""
    cfg = compose_config([f"run.output_root={output_root}", *overrides])
    run_dir = make_run_dir(output_root, name)
    write_run_config(run_dir, cfg)
    recipe = recipe_class(cfg, run_dir, init_distributed())
    recipe.setup()
    try:
        summary = recipe.train()
    finally:
        recipe.cleanup()
    return recipe, run_dir, summary


def records(run_dir: Path, kind: str) -> list[dict]:
    """The run's metrics.jsonl records of one kind (train, eval, ...)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]
