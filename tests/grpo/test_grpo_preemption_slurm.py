"""A 2-node SLURM GRPO job preempted with USR2 resumes with the rewards and losses of an uninterrupted one.

Both jobs go through the real launch path (``launcher train cluster=slurm_local cluster.nodes=2
cluster.nproc_per_node=1 ...``: compose, preflight, run dir, code snapshot, sbatch) onto the local test cluster
(slurm/start-cluster.sh), side by side. The interrupted one gets ``scancel -s USR2`` (every process of its steps,
as SLURM's ``--signal=USR2@N`` before the time limit) just after the first step of a generation batch
(num_iterations=6: steps 1-6 train the completions sampled at step 1), so it stops, checkpoints and requeues in
the middle of that batch; its second attempt resumes from that checkpoint, the batch's completions included.

Per step, every logged reward (each function and the weighted sum), the loss, KL, entropy, completion length,
clip ratio and advantage std must equal the uninterrupted run's bit for bit, and so must the final weights: the
same two ranks of one thread each (CPU, fp32, gloo's 2-rank sum is exact), so nothing may differ at all; a
tolerance would hide a resume that re-sampled the batch from the same seed but another policy.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.engines import checkpoint as ckpt
from launcher.slurm.requeue import requeue_history
from launcher.training.metrics import read_metrics
from tests.resume.helpers import assert_same_weights, final_weights, raw_train_steps
from tests.resume.test_preemption_slurm import last_step, node_logs, resumed_from, wait_done, wait_until
from tests.rm.helpers import SMALL_MODEL

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 12
PER_BATCH = 6  # optimizer steps per generation batch (method.grpo.num_iterations): two batches
# USR2 once step 2 is logged (and checkpointed: train.save_every=2): the ranks stop at the next step boundary they
# agree on, 3, 4 or 5 (steps 2-6 reuse the completions of step 1 and take a fraction of a second each), so the
# stop falls in the middle of the first generation batch with three steps to spare on a loaded host.
SIGNAL_AFTER = 2
ARGS = [
    "cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1", "cluster.max_requeues=1",
    "method=grpo", *SMALL_MODEL, "data.max_samples=24", "data.eval_datasets=[]", "train.micro_batch_size=2",
    "train.log_every=1", "train.warmup_ratio=0", "train.exact_match_samples=0", f"train.max_steps={STEPS}",
    "train.save_every=2", "method.lr=3e-3", "method.grpo.num_generations=3", "method.grpo.max_completion_length=4",
    f"method.grpo.num_iterations={PER_BATCH}", "method.grpo.eval_prompts=0", "method.grpo.beta=0.1",
    "method.grpo.temperature=1.5", "method.grpo.length_target=2", "logger=none",
    "method.grpo.rewards=[tests.grpo.rewards_for_tests:first_char_is_digit,length,exact_match]",
    "method.grpo.reward_weights=[1.0,0.5,1.0]",
]
COMPARED = ("loss", "reward", "reward_std", "kl", "entropy", "completion_length", "clip_ratio", "advantage_std")


def submit(root: Path) -> tuple:
    """``launcher train ... cluster=slurm_local`` as a user types it; (run dir, job id) from what it prints."""
    # The test's module:function reward is imported by the ranks from the checkout (the job inherits PYTHONPATH).
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "train", f"run.output_root={root}", *ARGS],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"Submitted SLURM job (\d+)", done.stdout).group(1)
    run_dir = Path(re.search(r"run dir: (\S+)", done.stdout).group(1))
    return run_dir, job_id


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, slurm_cluster):
    root = tmp_path_factory.mktemp("grpo-slurm")
    return {"reference": submit(root / "reference"), "signal": submit(root / "signal")}


def test_grpo_preempted_with_usr2_mid_generation_batch_resumes_exactly(jobs):
    started = time.time()
    run_dir, job_id = jobs["signal"]
    wait_until(f"step {SIGNAL_AFTER}", lambda: last_step(run_dir) >= SIGNAL_AFTER, run_dir,
               timeout_s=400)
    subprocess.run(["scancel", "-s", "USR2", job_id], check=True, timeout=30)
    (stop,) = [r["step"] for r in wait_until("the requeue", lambda: requeue_history(run_dir), run_dir)]
    assert wait_done(run_dir, job_id, timeout_s=400) == "COMPLETED", node_logs(run_dir)[-4000:]
    logs = node_logs(run_dir)
    assert "caught SIGUSR2" in logs
    assert SIGNAL_AFTER <= stop < PER_BATCH, f"stopped at step {stop}, not in the middle of the first generation batch"
    # The second attempt of the same job resumed from the checkpoint of the step where the first one stopped,
    # which holds the generation batch's completions; the second batch is sampled after the resume.
    assert resumed_from(run_dir) == [(str(ckpt.checkpoint_root(run_dir) / ckpt.step_dir_name(stop)), stop)]
    for rank in (0, 1):  # each node's rank kept its own completions of the first generation batch
        kept = ckpt.load_objective_state(ckpt.checkpoint_root(run_dir) / ckpt.step_dir_name(stop), rank)
        assert kept["index"] == 0 and kept["rows"], (rank, kept and kept["index"])
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1)), "metrics.jsonl repeats or skips steps"

    reference, reference_id = jobs["reference"]
    assert wait_done(reference, reference_id, timeout_s=400) == "COMPLETED", node_logs(reference)[-4000:]
    want, got = read_metrics(reference, "train"), read_metrics(run_dir, "train")
    assert [r["step"] for r in want] == [r["step"] for r in got] == list(range(1, STEPS + 1))
    rewards = sorted(k for k in want[0] if k.startswith("rewards/"))
    assert len(rewards) == 6  # each function's mean and std
    assert len({r["loss"] for r in want}) > 1 and any(r["kl"] > 0 for r in want)  # the policy moves
    for a, b in zip(want, got):
        for key in (*COMPARED, *rewards):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    assert_same_weights(final_weights(run_dir), final_weights(reference))
    print(f"\n2 nodes x 1 rank GRPO, USR2 after step {SIGNAL_AFTER}: stopped at step {stop} of a {PER_BATCH}-step"
          f" generation batch, requeued once,"
          f" resumed from step {stop}; {STEPS} steps x {len(COMPARED) + len(rewards)} metrics ({', '.join(rewards)})"
          f" and final weights bit-identical to the uninterrupted run ({time.time() - started:.0f} s waiting)")

