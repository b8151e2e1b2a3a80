"""Requeue a job whose ranks stopped on the preemption signal, at most cluster.max_requeues times per run.

The count lives in the run dir (``requeues.json``), not in the job: SLURM keeps the job id across requeues,
and the run dir is what a requeued job comes back to (it is fixed in the pickled node launcher).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Optional

REQUEUE_FILE = "requeues.json"


def requeue_history(run_dir: Path) -> list:
    try:
        return json.loads((Path(run_dir) / REQUEUE_FILE).read_text())["requeues"]
    except (OSError, ValueError, KeyError):
        return []


def record_requeue(run_dir: Path, job_id: str, step: int, max_requeues: int) -> Optional[int]:
    """Count one more requeue of the run; None (and nothing written) when max_requeues are used up."""
    history = requeue_history(run_dir)
    if len(history) >= max_requeues:
        return None
    history.append({"job_id": str(job_id), "step": step, "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
                    "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    path = Path(run_dir) / REQUEUE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"requeues": history}, indent=1) + "\n")
    os.replace(tmp, path)
    return len(history)


def requeue_job(job_id: str) -> None:
    """``scontrol requeue``: SLURM ends this attempt (TERM, then KILL) and queues the same job id again."""
    done = subprocess.run(["scontrol", "requeue", str(job_id)], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scontrol requeue {job_id} failed: {(done.stderr or done.stdout).strip()}")
