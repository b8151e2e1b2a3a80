"""Fixtures for the SLURM tests (the cluster itself, ``slurm_cluster``, is in tests/conftest.py)."""
from __future__ import annotations

import subprocess

import pytest


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
