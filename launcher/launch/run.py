"""Start what ``plan_run`` planned: the run dir, the code snapshot, then local torchrun, SLURM, or a sweep.

``launch_run(plan)`` is the one way a run starts (``launcher train``, ``launcher bench``, the UI's Submit):

- one run: a fresh run dir (resolved config, overrides, code version, code snapshot), then here in the
  foreground (``launcher.launch.local``), here detached so that it outlives the caller
  (``launcher.launch.detached``, the UI), or queued on SLURM (``launcher.launch.slurm_submit``);
- a sweep: the sweep dir and a run dir per point, then one job array per resource shape, or the points here
  (``launcher.launch.sweep_launch``).

A launch that fails before training started (sbatch refused the job, SLURM did not answer, a rank found bad
data) leaves no run dir behind: a half-made one would be listed as a run that never says what it is. The
error is a LauncherError with the reason in one line (sbatch's own ``sbatch: error: ...``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from launcher.launch.plan import RunPlan


@dataclass
class Launched:
    run_dir: Path
    """The run dir, or the sweep dir."""
    rc: int = 0
    """Exit code of what ran here in the foreground; 0 once queued or started detached."""
    job_id: str = ""
    """The SLURM job id; a sweep's job array ids, comma-separated."""
    pid: Optional[int] = None
    """The detached local process (``detach=True``)."""
    arrays: list = field(default_factory=list)
    """A SLURM sweep's job arrays, as ``sweep.json`` records them."""
    summary: dict = field(default_factory=dict)
    """``bench=True``: the trainer's summary (speed, memory, start-up phases)."""


def launch_run(plan: RunPlan, *, detach: bool = False, quiet: bool = False, bench: bool = False,
               worker_module: Optional[str] = None, timings: Optional[dict] = None) -> Launched:
    """Start the planned run or sweep; raise the plan's refusal instead when it has one.

    detach=True (cluster=local): start it in its own session and return at once (the UI). bench=True: one
    local process trains here without evaluations; its run dir holds only config.yaml, as nothing but the
    training is to be timed (``launcher bench``). quiet=True: print nothing. ``worker_module`` replaces the
    recipe the SLURM ranks run (tests).
    """
    plan.raise_if_refused()
    if plan.sweep is not None:
        from launcher.launch.sweep_launch import start_sweep

        return start_sweep(plan, detach=detach, quiet=quiet, worker_module=worker_module, timings=timings)
    from launcher.launch.rundir import discard_unstarted_run, make_run_dir

    cfg = plan.cfg
    run_dir = make_run_dir(cfg.run.output_root, plan.name)
    launched = None
    try:
        launched = _start(plan, run_dir, detach=detach, quiet=quiet, bench=bench, worker_module=worker_module)
    finally:
        # A launch that failed before training started leaves nothing behind; a started run keeps its dir and
        # logs, a queued one its dir.
        if (launched is None or launched.rc != 0) and discard_unstarted_run(run_dir) and not quiet:
            print(f"run dir removed: the launch failed before training started ({run_dir})", file=sys.stderr,
                  flush=True)
    return launched


def _start(plan: RunPlan, run_dir: Path, *, detach: bool, quiet: bool, bench: bool,
           worker_module: Optional[str]) -> Launched:
    from launcher.launch.rundir import write_run_config

    cfg = plan.cfg
    write_run_config(run_dir, cfg)
    if bench:
        from launcher.training.entry import run_in_process

        return Launched(run_dir, summary=run_in_process(run_dir, evaluations=False))
    from launcher.launch.rundir import snapshot_code, write_code_version, write_overrides
    from launcher.paths import REPO_ROOT

    write_overrides(run_dir, plan.overrides)
    write_code_version(run_dir, REPO_ROOT)
    snapshot_code(run_dir)  # the ranks run this copy, whatever the checkout holds when the job starts
    if not quiet:
        print(f"run dir: {run_dir}", flush=True)
    if cfg.cluster.kind == "slurm":
        from launcher.launch.slurm_submit import submit_run

        info = submit_run(cfg, run_dir, worker_module=worker_module, quiet=quiet)
        return Launched(run_dir, job_id=str(info["job_id"]))
    if detach:
        from launcher.launch.detached import start_detached

        return Launched(run_dir, pid=start_detached(["--run-dir", str(run_dir)], run_dir))
    from launcher.launch.local import run_local

    return Launched(run_dir, rc=run_local(cfg, run_dir))
