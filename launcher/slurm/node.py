"""What runs in each SLURM task (one per node): find the head node and port, run one torchrun.

submitit pickles a ``NodeLauncher`` at submit time and calls it on every node. It reads only SLURM's
variables and the run dir; the ranks it starts read RUN_DIR/config.yaml, never Hydra.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from launcher.config.schema import load_run_config
from launcher.slurm.head_node import resolve_head_node_from_env
from launcher.slurm.render import RANK_LOG_DIR, WORKER_MODULE, format_command, port_for_job, render_torchrun_command

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class NodeLauncher:
    run_dir: str
    worker_module: str = WORKER_MODULE

    def __call__(self) -> int:
        env = os.environ
        # SLURM_JOB_ID is numeric even for array tasks; it is the same on every node of the job.
        job_id = env["SLURM_JOB_ID"]
        node_rank = int(env.get("SLURM_NODEID", "0"))
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
        done = subprocess.run(argv, cwd=str(REPO_ROOT), env=child_env, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"torchrun on node {node_rank} exited with code {done.returncode}; rank logs under {log_dir}"
            )
        return 0
