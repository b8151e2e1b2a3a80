"""Preemption and crashes on the real test cluster (slurm/start-cluster.sh), 1 node x 2 ranks, 40 steps.

``scancel -s USR2 JOB`` (no --batch) signals every process of the job's steps, exactly as SLURM's own
``--signal=USR2@N`` does before the time limit. Each run is compared with an uninterrupted run of the same
config on the cluster: per-step losses and final weights must be bit-identical (CPU, fp32).
"""
from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from launcher.config.compose import compose_config, default_run_name
from launcher.launch.rundir import make_run_dir, write_code_version, write_run_config
from launcher.slurm.jobs import TERMINAL_STATES, job_state
from launcher.slurm.node import REPO_ROOT
from launcher.slurm.requeue import REQUEUE_FILE, requeue_history
from launcher.launch.slurm_submit import submit_run
from launcher.engines import checkpoint as ckpt
from tests.resume.helpers import TINY, assert_same_weights, final_weights, raw_train_steps, train_losses

STALL_HOOK = Path(__file__).resolve().parent / "stall_hook"  # sitecustomize: stalls a checkpoint write
STEPS = 30  # 25 steps per epoch here: the resumed runs cross an epoch boundary too
BASE = ["cluster=slurm_local", "cluster.nodes=1", "cluster.nproc_per_node=2", f"train.max_steps={STEPS}",
        "train.save_every=10", *TINY]


def launch(root: Path, overrides: list) -> tuple:
    cfg = compose_config([*BASE, f"run.output_root={root}", *overrides])
    run_dir = make_run_dir(root, default_run_name(cfg))
    write_run_config(run_dir, cfg)
    write_code_version(run_dir, REPO_ROOT)
    return run_dir, submit_run(cfg, run_dir, quiet=True)["job_id"]


def node_logs(run_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((run_dir / "slurm").glob("*_log.*")))


def wait_until(what: str, predicate, run_dir: Path, timeout_s: float = 150):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{node_logs(run_dir)[-4000:]}")


def last_step(run_dir: Path) -> int:
    try:
        steps = raw_train_steps(run_dir)
    except (FileNotFoundError, ValueError):
        return 0
    return steps[-1] if steps else 0


def wait_done(run_dir: Path, job_id: str, timeout_s: float = 200) -> str:
    def state():
        s = job_state(job_id)["state"]
        return s if s in TERMINAL_STATES else None

    return wait_until(f"job {job_id} to end", state, run_dir, timeout_s)


def signal_job(job_id: str) -> None:
    subprocess.run(["scancel", "-s", "USR2", job_id], check=True, timeout=30)


def resumed_from(run_dir: Path) -> list:
    """(checkpoint dir, step) of every 'resumed from' line of the rank-0 logs, in order."""
    out = []
    for line in node_logs(run_dir).splitlines():
        if "resumed from " in line:
            path, step = line.split("resumed from ", 1)[1].rsplit(" (step ", 1)
            out.append((path, int(step.rstrip(")"))))
    return out


def assert_matches_reference(run_dir: Path, reference: Path) -> None:
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1)), "metrics.jsonl repeats or skips steps"
    got, ref = train_losses(run_dir), train_losses(reference)
    assert got == ref, [(s, got[s], ref.get(s)) for s in got if got[s] != ref.get(s)][:5]
    assert_same_weights(final_weights(run_dir), final_weights(reference))


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory, slurm_cluster):
    return tmp_path_factory.mktemp("preempt-runs")


@pytest.fixture(scope="module")
def jobs(shared_root, slurm_reference_job):
    """Every job of this module, submitted at once so that they run side by side: the session's uninterrupted
    reference, one to signal, one to kill inside a checkpoint write (it stalls there until killed)."""
    # A decoy of the same name beside them, with a complete checkpoint further on: a requeued job that looked
    # for "the latest run" instead of its own run dir would jump to step 35.
    decoy = make_run_dir(shared_root, default_run_name(compose_config([*BASE, f"run.output_root={shared_root}"])))
    fake = ckpt.checkpoint_root(decoy) / "step-0000035"
    fake.mkdir(parents=True)
    (fake / "meta.json").write_text(json.dumps({"step": 35, "world_size": 2, "trained_tokens": 0}))
    (fake / ckpt.COMPLETE).write_text("")
    return {
        "signal": launch(shared_root, ["cluster.max_requeues=2"]),
        "kill": launch(shared_root, ["cluster.max_restarts=1",
                                     "+cluster.env.LAUNCHER_TEST_STALL_CHECKPOINT_STEP=20:300",
                                     f"+cluster.env.PYTHONPATH={STALL_HOOK}"]),
        "reference": slurm_reference_job,
        "decoy": (decoy, None),
    }


def reference_run(jobs) -> Path:
    run_dir, job_id = jobs["reference"]
    assert wait_done(run_dir, job_id) == "COMPLETED", node_logs(run_dir)[-4000:]
    return run_dir


def test_signals_at_random_steps_requeue_and_resume_exactly_from_own_run_dir(jobs):
    run_dir, job_id = jobs["signal"]
    assert run_dir.parent == jobs["decoy"][0].parent
    rng = random.Random()
    stops = []
    for n in range(2):
        # Past a random step of this attempt (metrics of the previous attempt end at its stop step).
        target = (stops[-1] if stops else 0) + rng.randint(2, 8)
        wait_until(f"step {target}", lambda: last_step(run_dir) >= target, run_dir)
        signal_job(job_id)
        history = wait_until(f"requeue {n + 1}",
                             lambda: len(requeue_history(run_dir)) > n and requeue_history(run_dir), run_dir)
        stops.append(history[-1]["step"])
    assert wait_done(run_dir, job_id) == "COMPLETED", node_logs(run_dir)[-4000:]

    history = requeue_history(run_dir)
    assert [r["step"] for r in history] == stops and stops[0] < stops[1] < STEPS
    assert {r["job_id"] for r in history} == {job_id}
    # Each attempt resumed from its own run dir, at the step where the previous one stopped.
    assert resumed_from(run_dir) == [(str(ckpt.checkpoint_root(run_dir) / ckpt.step_dir_name(s)), s) for s in stops]
    assert "caught SIGUSR2" in node_logs(run_dir)
    assert_matches_reference(run_dir, reference_run(jobs))
    print(f"\nUSR2 at steps {stops}: requeued {len(stops)} times, resumed from its own checkpoints, "
          f"{STEPS} losses and final weights bit-identical to the uninterrupted run")


def test_kill_during_checkpoint_write_resumes_the_previous_checkpoint(jobs):
    """Rank 0 is killed (-9) inside the write of step 20: torchrun restarts the ranks (max_restarts=1),
    which resume from step 10, never from the partial step 20."""
    run_dir, job_id = jobs["kill"]
    marker = ckpt.checkpoint_root(run_dir) / "stall-20.pid"
    wait_until("the stalled write of step 20", marker.exists, run_dir)
    time.sleep(0.2)
    pid = int(marker.read_text())
    assert (ckpt.checkpoint_root(run_dir) / ".tmp-step-0000020" / "state.pt").exists()
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000010"
    subprocess.run(["kill", "-9", str(pid)], check=True)
    assert wait_done(run_dir, job_id) == "COMPLETED", node_logs(run_dir)[-4000:]

    assert resumed_from(run_dir) == [(str(ckpt.checkpoint_root(run_dir) / "step-0000010"), 10)]
    assert not (run_dir / REQUEUE_FILE).exists()  # a crash is torchrun's restart, not a requeue
    assert_matches_reference(run_dir, reference_run(jobs))
    print("\nkill -9 inside the write of step 20: restarted from step-10, bit-identical to the uninterrupted run")
