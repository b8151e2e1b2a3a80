"""Hard preemption on the real test cluster: SIGTERM, as SLURM sends it for preemption, the time limit,
``scancel -s TERM`` and ``scontrol requeue`` (SIGKILL follows after KillWait, 5 s on the test cluster).

Each run (1 node x 2 ranks, 30 steps) is compared with an uninterrupted run of the same config: per-step
losses and final weights must be bit-identical (CPU, fp32). The requeued run checkpoints by time only
(train.save_every_minutes), so it also shows timed saves agreed by both ranks.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from launcher.slurm.jobs import job_state
from launcher.slurm.requeue import requeue_history
from launcher.engines import checkpoint as ckpt
from tests.resume.test_preemption_slurm import (STEPS, assert_matches_reference, last_step, launch, node_logs,
                                                resumed_from, wait_done, wait_until)

TIMED = ["train.save_every=0", "train.save_every_minutes=0.01"]  # a checkpoint every ~0.6 s of training


@pytest.fixture(scope="module")
def root(tmp_path_factory, slurm_cluster):
    return tmp_path_factory.mktemp("term-runs")


@pytest.fixture(scope="module")
def jobs(root, slurm_reference_job):
    """The run to signal and the session's uninterrupted reference (already done when the other module ran)."""
    return {"term": launch(root, ["cluster.max_requeues=1"]), "reference": slurm_reference_job}


def reference_run(jobs):
    run_dir, job_id = jobs["reference"]
    assert wait_done(run_dir, job_id) == "COMPLETED", node_logs(run_dir)[-4000:]
    return run_dir


def job_processes(run_dir) -> list:
    """The live processes of a job of ``run_dir`` (the node launcher, torchrun and the ranks name it)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            names_it = any(str(run_dir) in part for part in proc.info["cmdline"] or ())
            if names_it and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_sigterm_checkpoints_requeues_and_resumes_exactly(jobs):
    run_dir, job_id = jobs["term"]
    wait_until("step 4", lambda: last_step(run_dir) >= 4, run_dir)
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True, timeout=30)
    history = wait_until("the requeue", lambda: requeue_history(run_dir), run_dir)
    stop = history[-1]["step"]
    assert wait_done(run_dir, job_id) == "COMPLETED", node_logs(run_dir)[-4000:]

    logs = node_logs(run_dir)
    assert "caught SIGTERM" in logs
    assert 4 <= stop < STEPS and stop % 10 != 0  # saved at the stop, not a step-interval checkpoint
    assert resumed_from(run_dir) == [(str(ckpt.checkpoint_root(run_dir) / ckpt.step_dir_name(stop)), stop)]
    assert_matches_reference(run_dir, reference_run(jobs))
    print(f"\nSIGTERM at step {stop}: checkpointed there, requeued once, {STEPS} losses and final weights"
          " bit-identical to the uninterrupted run")


def test_scontrol_requeue_resumes_from_the_last_checkpoint(root, jobs):
    run_dir, job_id = launch(root, ["cluster.max_requeues=1", *TIMED])  # now: the run must not end first
    wait_until("step 6", lambda: last_step(run_dir) >= 6, run_dir)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    assert wait_done(run_dir, job_id) == "COMPLETED", node_logs(run_dir)[-4000:]

    logs = node_logs(run_dir)
    resumed = resumed_from(run_dir)
    assert len(resumed) == 1 and resumed[0][1] >= 1, logs[-4000:]
    assert "save_every_minutes=0.01 passed" in logs
    assert_matches_reference(run_dir, reference_run(jobs))
    print(f"\nscontrol requeue: the job came back and resumed from step {resumed[0][1]}"
          f" ({'its stop checkpoint' if 'caught SIGTERM' in logs else 'a timed checkpoint'}), {STEPS} losses"
          " and final weights bit-identical to the uninterrupted run")


def test_scancel_is_not_undone_by_a_requeue(root, jobs):
    """scancel also sends TERM: the ranks checkpoint, but the job stays cancelled."""
    run_dir, job_id = launch(root, ["cluster.max_requeues=1"])
    wait_until("step 3", lambda: last_step(run_dir) >= 3, run_dir)
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    assert wait_done(run_dir, job_id) == "CANCELLED"
    # The node launcher decides on a requeue (and runs `scontrol requeue`) before it exits: once no process of the
    # job is left, a requeued job would already show PENDING or REQUEUED instead of CANCELLED.
    wait_until("the job's processes to end", lambda: not job_processes(run_dir), run_dir, timeout_s=60)
    time.sleep(1)
    assert job_state(job_id)["state"] == "CANCELLED", node_logs(run_dir)[-3000:]
    assert not requeue_history(run_dir)
    logs = node_logs(run_dir)
    if "ranks saved step" in logs:  # SIGKILL after KillWait (5 s) may come first on a loaded machine
        assert "was cancelled, so it is not requeued" in logs
    print(f"\nscancel: stayed cancelled, not requeued; "
          f"{'checkpointed at the stop' if 'ranks saved step' in logs else 'killed before its stop checkpoint'}")
