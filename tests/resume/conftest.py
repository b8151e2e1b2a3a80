"""Fixtures shared by the SLURM resume tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def slurm_reference_job(tmp_path_factory, slurm_cluster):
    """(run dir, job id) of one uninterrupted 1 node x 2 ranks run of the preemption tests' base config, submitted
    once per session: every interrupted run compares with it (their overrides, requeue and restart limits and
    checkpoint timing, change no loss), so the cluster trains the reference once instead of once per module."""
    from tests.resume.test_preemption_slurm import launch

    return launch(tmp_path_factory.mktemp("reference-run"), [])
