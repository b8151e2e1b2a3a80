"""Shared by the online-RL preemption tests (tests/grpo, tests/ppo): submit through ``launcher train
cluster=slurm_local`` and check that a job sent USR2 in the middle of a generation batch requeues, resumes from
the checkpoint of its stop and ends with the uninterrupted job's metrics and weights, bit for bit."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from launcher.engines import checkpoint as ckpt
from launcher.slurm.requeue import requeue_history
from launcher.training.metrics import read_metrics
from tests.resume.helpers import assert_same_weights, final_weights, raw_train_steps
from tests.resume.test_preemption_slurm import last_step, node_logs, resumed_from, wait_done, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TWO_NODES = ["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1", "cluster.max_requeues=1",
             "train.keep_checkpoints=20", "logger=none"]
"""2 nodes x 1 rank; every checkpoint kept, so that the stop's is still there to look into at the end."""


def submit(root: Path, args: list) -> tuple:
    """``launcher train ARGS`` as a user types it; (run dir, job id) from what it prints."""
    # module:function rewards of tests/ are imported by the ranks from the checkout (the job inherits PYTHONPATH).
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "train", f"run.output_root={root}", *TWO_NODES,
                           *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"Submitted SLURM job (\d+)", done.stdout).group(1)
    return Path(re.search(r"run dir: (\S+)", done.stdout).group(1)), job_id


def is_timing(key: str) -> bool:
    return key.startswith("time/") or key.endswith("per_s")


def assert_usr2_mid_batch_resume_is_exact(signal: tuple, reference: tuple, steps: int, per_batch: int,
                                          signal_after: int) -> str:
    """USR2 to ``signal``'s job once step ``signal_after`` is logged; it must stop inside the first generation
    batch (steps 1..per_batch), requeue once, resume from the stop's checkpoint and end with ``reference``'s
    per-step metrics (every one but timings) and final weights. Returns a line saying what it compared."""
    started = time.time()
    run_dir, job_id = signal
    wait_until(f"step {signal_after}", lambda: last_step(run_dir) >= signal_after, run_dir, timeout_s=400)
    subprocess.run(["scancel", "-s", "USR2", job_id], check=True, timeout=30)
    (stop,) = [r["step"] for r in wait_until("the requeue", lambda: requeue_history(run_dir), run_dir)]
    assert wait_done(run_dir, job_id, timeout_s=400) == "COMPLETED", node_logs(run_dir)[-4000:]
    assert "caught SIGUSR2" in node_logs(run_dir)
    assert signal_after <= stop < per_batch, f"stopped at step {stop}, not in the middle of the first generation batch"
    # The second attempt of the same job resumed from the checkpoint of the step where the first one stopped,
    # which holds each rank's completions of that generation batch; the next batch is sampled after the resume.
    stop_dir = ckpt.checkpoint_root(run_dir) / ckpt.step_dir_name(stop)
    assert resumed_from(run_dir) == [(str(stop_dir), stop)]
    for rank in (0, 1):
        kept = ckpt.load_objective_state(stop_dir, rank)
        assert kept is not None and kept["index"] == 0 and kept["rows"], (rank, kept and kept["index"])
    assert raw_train_steps(run_dir) == list(range(1, steps + 1)), "metrics.jsonl repeats or skips steps"

    reference_dir, reference_id = reference
    assert wait_done(reference_dir, reference_id, timeout_s=400) == "COMPLETED", node_logs(reference_dir)[-4000:]
    want, got = read_metrics(reference_dir, "train"), read_metrics(run_dir, "train")
    assert [r["step"] for r in want] == [r["step"] for r in got] == list(range(1, steps + 1))
    assert len({r["loss"] for r in want}) > 1 and any(r["kl"] != 0 for r in want)  # the policy moves
    keys = sorted(k for k in want[0] if not is_timing(k) and k not in ("kind", "step", "epoch"))
    assert set(keys) == {k for k in got[0] if not is_timing(k) and k not in ("kind", "step", "epoch")}
    for a, b in zip(want, got):
        for key in keys:
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    assert_same_weights(final_weights(run_dir), final_weights(reference_dir))
    return (f"USR2 after step {signal_after}: stopped at step {stop} of a {per_batch}-step generation batch, requeued"
            f" once, resumed from step {stop}; {steps} steps x {len(keys)} metrics ({', '.join(keys)}) and the final"
            f" weights bit-identical to the uninterrupted job ({time.time() - started:.0f} s waiting)")
