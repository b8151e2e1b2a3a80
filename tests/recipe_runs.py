"""A recipe run in-process on a composed config, and what it wrote: the one way the tests train without
torchrun (SFT, DPO, KTO, VL); and a recipe run on 2 CPU ranks by torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from launcher.config.compose import compose_config
from launcher.engines.distributed import init_distributed
from launcher.inference.trained import load_trained_model
from launcher.launch.rundir import make_run_dir, write_run_config

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def torchrun_recipe(recipe_module: str, output_root: Path, overrides: list[str], name: str) -> Path:
    """The run dir of ``recipe_module`` (recipes.dpo, ...) trained on ``overrides`` by torchrun on 2 CPU ranks
    (gloo), its stderr kept in stderr.log; fails when torchrun exits non-zero or runs past 400 s."""
    cfg = compose_config([f"run.output_root={output_root}", *overrides])
    run_dir = make_run_dir(output_root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", recipe_module, "--run-dir", str(run_dir)]
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"{name}: still running after 400 s (ranks stuck in a collective?)\n"
                             f"{(err.stderr or b'')[-3000:]}")
    assert proc.returncode == 0, f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}"
    (run_dir / "stderr.log").write_text(proc.stderr)
    return run_dir


def assert_reload_gives_same_logits(recipe, run_dir: Path, batch: dict):
    """The run's saved model, loaded as launcher's own tools load it, gives the trained model's logits on
    ``batch`` (input ids and attention mask) to 1e-5; returns (reloaded model, tokenizer)."""
    recipe.model.eval()
    with torch.no_grad():
        expected = recipe.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    reloaded, tokenizer = load_trained_model(run_dir)
    with torch.no_grad():
        got = reloaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    return reloaded, tokenizer


def records(run_dir: Path, kind: str) -> list[dict]:
    """The run's metrics.jsonl records of one kind (train, eval, ...)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]
