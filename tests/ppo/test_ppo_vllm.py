"""method=ppo with generation.engine=vllm: the rollouts on vLLM, the policy's weights (without its value head,
which stays in the training process) pushed after each update; after training vLLM's greedy completions equal
the trained policy's own (transformers engine). Skips, saying why, without the vLLM venv (``make vllm-env``)."""
from __future__ import annotations

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.engines.distributed import init_distributed
from launcher.inference.vllm_engine import INSTALL_COMMAND, vllm_python
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.metrics import read_metrics
from tests.ppo.conftest import ppo_data
from tests.rm.helpers import SMALL_MODEL

pytestmark = pytest.mark.skipif(vllm_python() is None, reason=f"the vLLM venv is absent: `{INSTALL_COMMAND}` makes it")


def test_ppo_on_vllm_trains_and_vllm_keeps_the_policys_weights(digits_task, tmp_path):
    from launcher.inference.rollout import TransformersEngine
    from recipes.ppo import PPORecipe

    folder, rm_dir, _ = digits_task
    # the policy is the default tiny model: vLLM's CPU attention has no kernel for SMALL_MODEL's head_dim 16
    data = [a for a in ppo_data(folder) if a not in SMALL_MODEL]
    cfg = compose_config([f"run.output_root={tmp_path}", "method=ppo", *data, f"method.ppo.reward_model={rm_dir}",
                          "data.max_samples=8", "train.micro_batch_size=2", "train.log_every=1",
                          "train.warmup_ratio=0", "train.max_steps=3", "method.lr=5e-3",
                          "method.ppo.max_completion_length=4", "method.ppo.ppo_epochs=1",
                          "method.ppo.eval_prompts=0", "method.ppo.kl_coef=0.1", "generation.engine=vllm"])
    run_dir = make_run_dir(tmp_path, "ppo-vllm")
    write_run_config(run_dir, cfg)
    recipe = PPORecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    try:
        vllm = recipe.trainer.objective.generation
        assert vllm.name == "vllm"
        recipe.train()
        steps = read_metrics(run_dir, "train")
        assert [r["step"] for r in steps] == [1, 2, 3]
        assert all(r["time/generation"] > 0 and 1 <= r["completion_length"] <= 4 for r in steps)
        assert vllm.syncs == 2  # pushed before the rollouts of steps 2 and 3
        ours = TransformersEngine(vllm.model, vllm.pad, vllm.eos, torch.device("cpu"))
        prompts = [r["prompt_ids"] for r in recipe.data.train[:4]]
        assert (vllm.generate(prompts, 1, 6, greedy=True).completions
                == ours.generate(prompts, 1, 6, greedy=True).completions)
    finally:
        recipe.cleanup()
        recipe.trainer.objective.generation.close()
