"""The node task finds the ranks to forward a stop signal to, also when a container prefix stands between it
and torchrun (apptainer shares the host's process ids). Real processes: a wrapper, an 'agent', its 'rank'."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from launcher.slurm.node import torchrun_workers

AGENT = "import subprocess, sys; subprocess.Popen(['sleep', '30']).wait()"


def _wait_for_rank(proc: subprocess.Popen) -> list:
    deadline = time.time() + 20
    while time.time() < deadline:
        workers = torchrun_workers(psutil.Process(proc.pid))
        if workers:
            return workers
        time.sleep(0.05)
    return []


def test_ranks_found_directly_and_behind_a_prefix():
    # argv[1] of the 'agent' names torch.distributed.run, as the real agent's command line does.
    direct = subprocess.Popen([sys.executable, "-c", AGENT, "torch.distributed.run"])
    # A wrapper that stays the parent (as apptainer's starter does), not one that execs.
    wrapped = subprocess.Popen(["bash", "-c", f'{sys.executable} -c "{AGENT}" torch.distributed.run; exit $?'])
    try:
        for proc in (direct, wrapped):
            workers = _wait_for_rank(proc)
            assert [w.name() for w in workers] == ["sleep"], proc.args
            assert workers[0].ppid() != proc.pid or proc is direct
    finally:
        for proc in (direct, wrapped):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
