"""A 2-node SLURM GRPO job preempted with USR2 resumes with the rewards and losses of an uninterrupted one.

Both jobs go through the real launch path (``launcher train cluster=slurm_local cluster.nodes=2
cluster.nproc_per_node=1 ...``: compose, preflight, run dir, code snapshot, sbatch) onto the local test cluster
(slurm/start-cluster.sh), side by side. The interrupted one gets ``scancel -s USR2`` (every process of its steps,
as SLURM's ``--signal=USR2@N`` before the time limit) in the first generation batch (num_iterations=6: steps 1-6
train the completions sampled at step 1), so it stops, checkpoints and requeues in the middle of that batch; its
second attempt resumes from that checkpoint, the batch's completions included, and samples the second batch.

Per step, every logged metric but timings (each reward function's mean and std, the weighted reward, loss, KL,
entropy, completion length, clip ratio, advantage std, grad norm, lr, tokens seen) must equal the uninterrupted
run's bit for bit, and so must the final weights: the same two ranks of one thread each (CPU, fp32, gloo's 2-rank
sum is exact), so nothing may differ at all; a tolerance would only hide a real difference.
"""
from __future__ import annotations

import pytest

from tests.resume.rl_slurm import assert_usr2_mid_batch_resume_is_exact, submit
from tests.rm.helpers import SMALL_MODEL

STEPS = 12
PER_BATCH = 6  # optimizer steps per generation batch (method.grpo.num_iterations): two batches
# USR2 once step 2 is logged: the ranks stop at the first step boundary where they agree on it, 2 (the boundary
# comes after a step's metrics are written), 3, 4 or 5 (steps 2-6 reuse the completions of step 1 and take a
# fraction of a second each), so the stop falls in the middle of the first generation batch with steps to spare
# on a loaded host.
SIGNAL_AFTER = 2
ARGS = [
    "method=grpo", *SMALL_MODEL, "data.max_samples=24", "data.eval_datasets=[]", "train.micro_batch_size=2",
    "train.log_every=1", "train.warmup_ratio=0", "train.exact_match_samples=0", f"train.max_steps={STEPS}",
    "train.save_every=2", "method.lr=3e-3", "method.grpo.num_generations=3", "method.grpo.max_completion_length=4",
    f"method.grpo.num_iterations={PER_BATCH}", "method.grpo.eval_prompts=0", "method.grpo.beta=0.1",
    "method.grpo.temperature=1.5", "method.grpo.length_target=2",
    "method.grpo.rewards=[tests.grpo.rewards_for_tests:first_char_is_digit,length,exact_match]",
    "method.grpo.reward_weights=[1.0,0.5,1.0]",
]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, slurm_cluster):
    root = tmp_path_factory.mktemp("grpo-slurm")
    return {"reference": submit(root / "reference", ARGS), "signal": submit(root / "signal", ARGS)}


def test_grpo_preempted_with_usr2_mid_generation_batch_resumes_exactly(jobs):
    said = assert_usr2_mid_batch_resume_is_exact(jobs["signal"], jobs["reference"], STEPS, PER_BATCH, SIGNAL_AFTER)
    assert "rewards/tests.grpo.rewards_for_tests:first_char_is_digit" in said and "rewards/exact_match" in said
    print(f"\n2 nodes x 1 rank GRPO: {said}")
