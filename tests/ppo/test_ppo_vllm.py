"""method=ppo with generation.engine=vllm: the rollouts on vLLM, the policy's weights (without its value head,
which stays in the training process) pushed after each update; after training vLLM's greedy completions equal
the trained policy's own (transformers engine). Skips, saying why, without the vLLM venv (``make vllm-env``)."""
from __future__ import annotations

import pytest

from launcher.config.compose import compose_config
from launcher.inference.vllm_engine import INSTALL_COMMAND, vllm_python
from launcher.launch.rundir import make_run_dir
from tests.grpo.test_vllm_engine import assert_trains_on_vllm
from tests.ppo.conftest import ppo_data
from tests.rm.helpers import SMALL_MODEL

pytestmark = pytest.mark.skipif(vllm_python() is None, reason=f"the vLLM venv is absent: `{INSTALL_COMMAND}` makes it")


def test_ppo_on_vllm_trains_and_vllm_keeps_the_policys_weights(digits_task, tmp_path):
    from recipes.ppo import PPORecipe

    folder, rm_dir, _ = digits_task
    # the policy is the default tiny model: vLLM's CPU attention has no kernel for SMALL_MODEL's head_dim 16
    data = [a for a in ppo_data(folder) if a not in SMALL_MODEL]
    cfg = compose_config([f"run.output_root={tmp_path}", "method=ppo", *data, f"method.ppo.reward_model={rm_dir}",
                          "data.max_samples=8", "train.micro_batch_size=2", "train.log_every=1",
                          "train.warmup_ratio=0", "train.max_steps=3", "method.lr=5e-3",
                          "method.ppo.max_completion_length=4", "method.ppo.ppo_epochs=1",
                          "method.ppo.eval_prompts=0", "method.ppo.kl_coef=0.1", "generation.engine=vllm"])
    assert_trains_on_vllm(PPORecipe, cfg, make_run_dir(tmp_path, "ppo-vllm"), max_completion=4)
