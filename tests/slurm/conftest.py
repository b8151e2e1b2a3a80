"""Fixtures for the SLURM tests: one real cluster per test session, started idempotently.

``slurm_cluster`` runs ``slurm/start-cluster.sh --nodes 2`` once (a second call while it runs is a no-op
that takes about a second) and exports SLURM_CONF. Where slurm is not installed, cluster tests are
skipped with the reason; pure tests (rendering, preflight) still run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SLURM_HOME = Path(os.environ.get("LAUNCHER_SLURM_HOME", "/var/tmp/launcher-slurm"))


def _slurm_installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in ("slurmctld", "slurmd", "sbatch", "munged"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running two-node test cluster; yields the SLURM_CONF path."""
    if not _slurm_installed():
        pytest.skip("slurm is not installed here: run slurm/start-cluster.sh once (it installs slurmctld, slurmd,"
                    " slurmdbd, munge and mariadb with apt-get), then rerun")
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "slurm" / "start-cluster.sh"), "--nodes", "2"],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"slurm/start-cluster.sh failed:\n{done.stdout}\n{done.stderr}")
    conf = str(SLURM_HOME / "etc" / "slurm.conf")
    os.environ["SLURM_CONF"] = conf
    os.environ["PATH"] = "/usr/sbin:" + os.environ.get("PATH", "")
    yield conf


@pytest.fixture
def runs_root(tmp_path_factory) -> Path:
    """A fresh output root per test: job ids restart at 1 after a purge, so never reuse a submitit folder."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture
def known_job_ids():
    """A function giving the ids of every job squeue or sacct knows now: a dry run must add none.

    (Counts alone would be fooled by a job of an earlier test leaving squeue in the meantime.)
    """
    return _known_job_ids


def _known_job_ids() -> set:
    squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    sacct = subprocess.run(["sacct", "-n", "-X", "-a", "-S", "2000-01-01", "-o", "JobID"], capture_output=True,
                           text=True, check=True).stdout
    return set(squeue.split()) | set(sacct.split())
