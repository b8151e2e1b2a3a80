"""What runs in each SLURM task (one per node): find the head node and port, run one torchrun.

submitit pickles a ``NodeLauncher`` at submit time and calls it on every node. It reads only SLURM's
variables and the run dir; the ranks it starts read RUN_DIR/config.yaml, never Hydra.

Preemption (``--signal=USR2@cluster.signal_delay_s``, or ``scancel -s USR2 JOB``): SLURM signals every
process of the step. torchrun's agent has no USR2 handler and would die of it, and forwards only
INT/TERM/HUP/QUIT anyway, so torchrun starts with USR2 ignored and this process takes over submitit's
handler: it notes the request in the run dir and forwards USR2 to the ranks, which checkpoint together at
a step boundary and exit 0 (launcher/training/preemption.py). Node 0 then requeues the job, at most
cluster.max_requeues times; the requeued job runs this same launcher with the same run dir and resumes from
its latest complete checkpoint. A crashed rank is handled by torchrun: --max-restarts=cluster.max_restarts,
and the restarted ranks resume from the last checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.config.schema import load_run_config
from launcher.paths import REPO_ROOT
from launcher.training.preemption import PREEMPT_SIGNAL, clear_stop_state, request_stop, stopped_early
from launcher.slurm.head_node import resolve_head_node_from_env
from launcher.slurm.requeue import record_requeue, requeue_job
from launcher.slurm.render import RANK_LOG_DIR, format_command, port_for_job, render_torchrun_command



@dataclass
class NodeLauncher:
    run_dir: str
    worker_module: Optional[str] = None
    """None: the recipe of the run's method."""

    def __call__(self) -> int:
        env = os.environ
        # SLURM_JOB_ID is numeric even for array tasks; it is the same on every node of the job.
        job_id = env["SLURM_JOB_ID"]
        node_rank = int(env.get("SLURM_NODEID", "0"))
        if node_rank == 0:
            clear_stop_state(Path(self.run_dir))
        self._signalled: Optional[int] = None
        self._forwarded: set = set()
        # Replaces submitit's USR2 handler (which would requeue at once, killing torchrun mid-step).
        signal.signal(PREEMPT_SIGNAL, self._on_signal)
        cfg = load_run_config(self.run_dir)
        head, addr = resolve_head_node_from_env()
        port = port_for_job(job_id)
        argv = render_torchrun_command(
            cfg, self.run_dir, addr, port, job_id, node_rank, python=sys.executable, worker_module=self.worker_module
        )
        log_dir = Path(self.run_dir) / RANK_LOG_DIR / f"node{node_rank}"
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "command.txt").write_text(format_command(argv) + "\n")
        print(
            f"[launcher] node {node_rank}/{cfg.cluster.nodes} ({env.get('SLURMD_NODENAME', '?')}): head {head}"
            f" at {addr}:{port}, job {job_id}; rank logs under {log_dir}",
            flush=True,
        )
        child_env = dict(env)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        # torchrun's c10d rendezvous shares one TCP store across restart rounds without a per-attempt prefix:
        # ranks restarted after a crash (--max-restarts) read the dead ranks' gloo addresses and fail to
        # connect ("Connection refused"). A store per round avoids that.
        child_env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
        returncode = self._run_torchrun(argv, child_env)
        if returncode != 0:
            raise RuntimeError(
                f"torchrun on node {node_rank} exited with code {returncode}; rank logs under {log_dir}"
            )
        stopped = stopped_early(Path(self.run_dir))
        if stopped is not None:
            self._requeue(cfg, job_id, node_rank, stopped)
        return 0

    # ------------------------------------------------------------------------------ preemption

    def _run_torchrun(self, argv: list, child_env: dict) -> int:
        import psutil  # noqa: F401  (imported now, not when the signal comes: forwarding must be quick)

        proc = subprocess.Popen(argv, cwd=str(REPO_ROOT), env=child_env,
                                preexec_fn=_ignore_preempt_signal)
        while proc.poll() is None:
            if self._signalled is not None:
                self._forward(proc.pid)
            time.sleep(0.05)
        return proc.returncode

    def _on_signal(self, signum, frame) -> None:
        if self._signalled is None:
            print(f"[launcher] caught {signal.Signals(signum).name}: asking the ranks to checkpoint and stop",
                  flush=True)
            # Written before forwarding: a rank still starting up (signal ignored) reads it when it is ready.
            request_stop(Path(self.run_dir), signum)
        self._signalled = signum

    def _forward(self, agent_pid: int) -> None:
        """USR2 to each worker of the torchrun agent, once per worker process."""
        import psutil

        try:
            workers = psutil.Process(agent_pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return
        for worker in workers:
            if worker.pid not in self._forwarded:
                self._forwarded.add(worker.pid)
                try:
                    worker.send_signal(PREEMPT_SIGNAL)
                except psutil.NoSuchProcess:
                    pass

    def _requeue(self, cfg, job_id: str, node_rank: int, stopped: dict) -> None:
        """The ranks checkpointed and stopped early: node 0 requeues (bounded); no submitit result is written."""
        if node_rank != 0:
            print(f"[launcher] ranks stopped at step {stopped['step']}; node 0 requeues the job", flush=True)
            sys.exit(1)
        count = record_requeue(Path(self.run_dir), job_id, stopped["step"], cfg.cluster.max_requeues)
        if count is None:
            raise RuntimeError(
                f"stopped at step {stopped['step']} on a preemption signal, and cluster.max_requeues="
                f"{cfg.cluster.max_requeues} requeues are used up; the checkpoint is {stopped['checkpoint']}:"
                f" continue with a new run and run.resume={stopped['checkpoint']}"
            )
        print(f"[launcher] ranks saved step {stopped['step']} ({stopped['checkpoint']}); requeueing job {job_id}"
              f" ({count}/{cfg.cluster.max_requeues})", flush=True)
        requeue_job(job_id)
        # Like submitit's own requeue: leave without a result, SLURM runs the job again.
        sys.exit(1)



def _ignore_preempt_signal() -> None:
    # Runs in the child before exec: an ignored signal stays ignored across exec, so the torchrun agent
    # survives USR2 and its ranks are immune until they install their own handler.
    signal.signal(PREEMPT_SIGNAL, signal.SIG_IGN)
