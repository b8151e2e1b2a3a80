"""A hung rank on the real 2-node test cluster: rank 1 (on node 2) is frozen mid-run with SIGSTOP.

The watchdog must notice within train.stall_timeout_s + 30 s, write every rank's stack to
RUN_DIR/logs/stall-<time>/ naming rank 1, say so in the log and in ``launcher status``, and end the ranks so that
torchrun restarts them (cluster.max_restarts=1); they resume from the last complete checkpoint and finish with
the per-step losses and weights of the session's uninterrupted reference (1 node x 2 ranks: the same two ranks of
one thread each, so the same numbers; the checkpoint interval and stall timeout change no loss).
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from launcher.slurm.jobs import status_main
from launcher.training import progress as prog
from tests.resume.test_preemption_slurm import (assert_matches_reference, last_step, launch, node_logs,
                                                resumed_from, wait_done, wait_until)

STALL_S = 30  # seconds: a loaded CI host takes over 15 s to import matplotlib for the loss plot
TWO_NODES = ["cluster.nodes=2", "cluster.nproc_per_node=1", "train.save_every=5", f"train.stall_timeout_s={STALL_S}"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, slurm_cluster):
    return tmp_path_factory.mktemp("stall-runs")


def test_a_frozen_rank_is_named_dumped_and_the_job_restarts_and_finishes_exactly(root, slurm_reference_job, capsys):
    run_dir, job_id = launch(root, [*TWO_NODES, "cluster.max_restarts=1"])
    reference_dir, reference_id = slurm_reference_job

    wait_until("step 7", lambda: last_step(run_dir) >= 7, run_dir, timeout_s=240)
    frozen = json.loads(prog.rank_file(run_dir, 1).read_text())
    os.kill(frozen["pid"], signal.SIGSTOP)
    # The step trained when frozen (metrics.jsonl; the progress file's step lags it by up to its write interval).
    frozen_step = last_step(run_dir) + 1
    frozen_at = time.time()
    try:
        stall_json = wait_until("the stall report", lambda: next(iter((run_dir / "logs").glob("stall-*/stall.json")),
                                                                   None), run_dir, timeout_s=STALL_S + 60)
        detected_s = time.time() - frozen_at
    finally:
        try:  # the watchdog kills it; should it not have, do not leave a stopped process behind
            os.kill(frozen["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert detected_s < STALL_S + 30, detected_s
    stall = json.loads(stall_json.read_text())
    assert stall["stalled_ranks"] == [1] and "frozen" in stall["description"]
    folder = stall_json.parent
    rank0, rank1 = (folder / "rank0.txt").read_text(), (folder / "rank1.txt").read_text()
    assert rank1.startswith("rank 1 of 2 (STALLED)") and f"pid {frozen['pid']}" in rank1
    assert "Process state: stopped" in rank1
    # Rank 0 wrote its own stack, every thread, the main one waiting in a collective of the training step.
    assert rank0.startswith("rank 0 of 2 (waiting)") and "most recent call first" in rank0
    assert " in fit" in rank0 and " in _loop" in rank0

    assert wait_done(run_dir, job_id, timeout_s=300) == "COMPLETED", node_logs(run_dir)[-4000:]
    logs = node_logs(run_dir)
    assert "stall: rank 1 (" in logs and "unresponsive (frozen)" in logs
    (resumed,) = resumed_from(run_dir)
    assert resumed[1] % 5 == 0 and resumed[1] <= frozen_step
    assert wait_done(reference_dir, reference_id, timeout_s=300) == "COMPLETED", node_logs(reference_dir)[-4000:]
    assert_matches_reference(run_dir, reference_dir)

    capsys.readouterr()
    assert status_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"stall at {stall['time']}: rank(s) 1 in phase" in out and "restarts: 1" in out
    assert "rank 0: done" in out and "rank 1: done" in out
    print(f"\nrank 1 frozen at step {frozen['step']}: stall named after {detected_s:.0f} s (timeout {STALL_S} s),"
          f" restarted from step {resumed[1]}, losses bit-identical to the uninterrupted run")
