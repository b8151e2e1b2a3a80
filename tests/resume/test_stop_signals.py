"""What a rank treats as "checkpoint and stop", and when timed checkpoints are on (no cluster needed).

The whole path (SLURM's TERM through the node process and torchrun to the ranks, the checkpoint, the requeue,
the resume) is tested on the cluster in test_preemption_term_slurm.py.
"""
from __future__ import annotations

import os
import signal

import pytest

from launcher.config.compose import compose_config
from launcher.config.schema import save_every_minutes
from launcher.errors import ConfigError
from launcher.training.preemption import STOP_SIGNALS_ENV, StopFlag, boundary_decision, stop_signals


def test_local_runs_stop_on_usr2_only_and_slurm_ranks_on_term_too():
    assert stop_signals({}) == (signal.SIGUSR2,)
    assert set(stop_signals({STOP_SIGNALS_ENV: "SIGUSR2,SIGTERM"})) == {signal.SIGUSR2, signal.SIGTERM}


def test_term_sets_the_flag_instead_of_ending_the_process(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        flag = StopFlag(tmp_path, signals=stop_signals({STOP_SIGNALS_ENV: "SIGUSR2,SIGTERM"}))
        assert boundary_decision(flag, False, "cpu") == (False, False)
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the handler
        assert flag.received == signal.SIGTERM
        assert boundary_decision(flag, True, "cpu") == (True, True)
        flag.close()
        os.kill(os.getpid(), signal.SIGTERM)  # ignored after close: a late signal cannot turn success into a crash
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_timed_checkpoints_default_on_for_slurm_only():
    assert save_every_minutes(compose_config([])) == 0
    assert save_every_minutes(compose_config(["cluster=slurm_local"])) == 30
    assert save_every_minutes(compose_config(["cluster=slurm_local", "train.save_every_minutes=0"])) == 0
    assert save_every_minutes(compose_config(["train.save_every_minutes=2.5"])) == 2.5
    with pytest.raises(ConfigError, match="train.save_every_minutes: must be >= 0"):
        compose_config(["train.save_every_minutes=-1"])
