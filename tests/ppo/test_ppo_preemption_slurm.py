"""A 2-node SLURM PPO job preempted with USR2 mid generation batch resumes with the uninterrupted job's scores,
losses and weights. PPO shares GRPO's path for this (launcher.training.objectives.generation_batches: a generation
batch trained by several optimizer steps, its rows in the checkpoint; the rollout's generator seeded by seed,
batch and rank; the Trainer's checkpoint and resume), so this runs the GRPO test's check
(tests/resume/rl_slurm.py) on method=ppo with a reward model of method=rm (tests/ppo/conftest.py) and a value
head in the model and optimizer state.
"""
from __future__ import annotations

import os

import pytest

from tests.ppo.conftest import ppo_data
from tests.resume.rl_slurm import assert_usr2_mid_batch_resume_is_exact, submit

# Opt-in (LAUNCHER_SLOW_TESTS=1): ~7 min of SLURM waits on 2 cores for what CI covers already, the SLURM USR2
# path by tests/grpo/test_grpo_preemption_slurm.py (the same shared check) and PPO's exact resume mid generation
# batch by tests/ppo/test_ppo_train.py::test_ppo_resumes_mid_generation_batch_exactly.
pytestmark = pytest.mark.skipif(not os.environ.get("LAUNCHER_SLOW_TESTS"),
                                reason="opt-in: LAUNCHER_SLOW_TESTS=1 (the GRPO SLURM test covers this path in CI)")

STEPS = 12
PER_BATCH = 6  # method.ppo.ppo_epochs: two generation batches; USR2 after step 2 stops at 2, 3, 4 or 5
SIGNAL_AFTER = 2


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, slurm_cluster, digits_task):
    folder, rm_dir, _ = digits_task
    args = ["method=ppo", *[a for a in ppo_data(folder) if not a.startswith("data.eval_datasets=")],
            "data.eval_datasets=[]", f"method.ppo.reward_model={rm_dir}", "data.max_samples=24",
            "train.micro_batch_size=2", "train.log_every=1", "train.warmup_ratio=0", f"train.max_steps={STEPS}",
            "train.save_every=2", "method.lr=3e-3", "method.ppo.max_completion_length=4",
            f"method.ppo.ppo_epochs={PER_BATCH}", "method.ppo.eval_prompts=0", "method.ppo.kl_coef=0.1",
            "method.ppo.temperature=1.5"]
    root = tmp_path_factory.mktemp("ppo-slurm")
    return {"reference": submit(root / "reference", args), "signal": submit(root / "signal", args)}


def test_ppo_preempted_with_usr2_mid_generation_batch_resumes_exactly(jobs):
    said = assert_usr2_mid_batch_resume_is_exact(jobs["signal"], jobs["reference"], STEPS, PER_BATCH, SIGNAL_AFTER)
    assert "value_loss" in said and "rlhf_reward" in said
    print(f"\n2 nodes x 1 rank PPO: {said}")
