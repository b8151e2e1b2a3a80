"""Trained run dirs shared by the after-training tests: a tiny LoRA run and a tiny full run, a few steps each."""
from __future__ import annotations

import os

import pytest

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config

FAST = ["train.micro_batch_size=4", "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0",
        "data.max_samples=200", "train.eval_max_batches=1", "logger=none", "train.exact_match_samples=0"]


def train_run(root, name, overrides):
    from launcher.engines.distributed import init_distributed
    from recipes.sft import SFTRecipe

    cfg = compose_config([f"run.output_root={root}", *FAST, *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    recipe = SFTRecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    return run_dir


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("after-lora")
    # lr high enough that the adapter moves the logits visibly within a few steps.
    return train_run(root, "lora", ["method=lora", "method.lr=2e-2", "train.max_steps=4", "train.save_every=2"])


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("after-full")
    return train_run(root, "full", ["method=sft_full", "method.lr=2e-3", "train.max_steps=2", "train.save_every=1"])


@pytest.fixture(scope="session")
def repo_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env
