"""The hang watchdog's decisions (which rank is named, per-phase timeouts), what status shows, and the
rendezvous bound against a real port nothing listens on. The whole path (a frozen rank on the 2-node cluster) is
test_stall_slurm.py."""
from __future__ import annotations

import socket
import time

import pytest

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.slurm.rendezvous import RendezvousUnreachable, wait_for_head
from launcher.training import progress as prog
from launcher.training.watchdog import (DEFAULT_STALL_TIMEOUTS, find_stalled, is_watcher, poll_interval,
                                        stall_timeouts)

NOW = 1_000_000.0


def rank(r, phase, step, progress_ago, alive_ago=0.5):
    return prog.RankProgress(rank=r, world_size=4, pid=100 + r, host="h", attempt="a", phase=phase, step=step,
                             progress_at=NOW - progress_ago, alive_at=NOW - alive_ago)


def test_who_is_named():
    t = stall_timeouts(20)
    fb, coll = prog.FORWARD_BACKWARD, prog.COLLECTIVE
    # Nobody past the timeout: no stall, even with a rank whose thread is slow to write.
    assert find_stalled([rank(0, coll, 5, 19), rank(1, fb, 5, 3, alive_ago=15)], NOW, t) == []
    # A frozen rank (its thread stopped writing too) is named, not the ranks waiting for it.
    named = find_stalled([rank(0, coll, 5, 25), rank(1, fb, 5, 30, alive_ago=29), rank(2, coll, 5, 25)], NOW, t)
    assert [r.rank for r in named] == [1]
    # All alive: the least advanced, and among those the one not waiting in a collective (rank 0 in a final save
    # while the others wait at the barrier after it).
    named = find_stalled([rank(0, prog.FINAL_SAVE, 9, 25), rank(1, coll, 9, 25), rank(2, coll, 10, 25)], NOW, t)
    assert [r.rank for r in named] == [0]
    # Everybody in the same collective (an NCCL-style hang): all named.
    assert [r.rank for r in find_stalled([rank(0, coll, 3, 25), rank(1, coll, 3, 25)], NOW, t)] == [0, 1]
    # A finished rank is neither frozen nor stalled.
    assert find_stalled([rank(0, prog.DONE, 9, 500, alive_ago=500), rank(1, fb, 9, 5)], NOW, t) == []


def test_who_watches_and_how_often():
    # One node of 8: local rank 0 and rank 1 read the files; 4 nodes of 8: each node's first rank and rank 1.
    assert [r for r in range(8) if is_watcher(r, r)] == [0, 1]
    assert [r for r in range(32) if is_watcher(r, r % 8)] == [0, 1, 8, 16, 24]
    assert poll_interval(16) == 1 and poll_interval(1024) == 4


def test_timeouts_per_phase_and_config():
    assert stall_timeouts(None) == DEFAULT_STALL_TIMEOUTS
    assert DEFAULT_STALL_TIMEOUTS[prog.DATA] == 0  # tokenizing takes as long as it takes
    assert stall_timeouts(7)[prog.CHECKPOINT] == 7 and stall_timeouts(7)[prog.DATA] == 0
    # Start-up phases keep their own bound: a model may load for minutes in a run whose steps take a second.
    assert stall_timeouts(7)[prog.MODEL_LOAD] == DEFAULT_STALL_TIMEOUTS[prog.MODEL_LOAD]
    assert stall_timeouts(7, 60)[prog.RENDEZVOUS] == 60 and stall_timeouts(None, 60)[prog.COLLECTIVE] == 1800
    assert not any(stall_timeouts(0).values()) and not any(stall_timeouts(0, 60).values())
    # The data phase is never a stall, however long.
    assert find_stalled([rank(0, prog.DATA, 0, 10_000)], NOW, stall_timeouts(None)) == []
    assert compose_config(["train.stall_timeout_s=15"]).train.stall_timeout_s == 15
    with pytest.raises(ConfigError, match="train.stall_timeout_s"):
        compose_config(["train.stall_timeout_s=-1"])


def test_run_health_reads_progress_stalls_and_restarts(tmp_path):
    for r in (rank(0, prog.COLLECTIVE, 7, 3), rank(1, prog.FORWARD_BACKWARD, 6, 40, alive_ago=40)):
        prog.write_json(prog.rank_file(tmp_path, r.rank), r.__dict__)
    for attempt in ("a", "a"):
        prog.append_jsonl(prog.progress_dir(tmp_path) / prog.ATTEMPTS_FILE, {"attempt": attempt, "at": NOW})
    prog.append_jsonl(prog.progress_dir(tmp_path) / prog.STALLS_FILE,
                      {"time": "T", "attempt": "a", "stalled_ranks": [1], "phase": "forward/backward", "step": 6,
                       "folder": "F", "description": "d"})
    health = prog.run_health(tmp_path, now=NOW)
    assert health["phase"] == prog.FORWARD_BACKWARD and health["step"] == 6 and health["restarts"] == 1
    assert [r["since_progress_s"] for r in health["ranks"]] == [3, 40]
    lines = "\n".join(prog.health_lines(health))
    assert "rank 1: forward/backward, step 6, last progress 40 s ago" in lines
    assert "stall at T: rank(s) 1 in phase 'forward/backward' at step 6; stacks in F" in lines
    assert "restarts: 1" in lines
    assert prog.run_health(tmp_path / "nothing") == {"phase": None, "step": None, "ranks": [], "stalls": [],
                                                     "attempts": [], "restarts": 0}


def test_rendezvous_nobody_listens_on_fails_within_the_bound_with_what_to_set():
    with socket.socket() as sock:  # a port that was free a moment ago, and now nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RendezvousUnreachable) as err:
        wait_for_head("node1", "127.0.0.1", port, timeout_s=2, poll_s=0.5)
    assert time.monotonic() - started < 5
    message = str(err.value)
    for part in (f"head node node1 at 127.0.0.1:{port}", "interface lo", "ConnectionRefusedError",
                 "cluster.nccl_socket_ifname", "NodeAddr", "cluster.rendezvous_timeout_s"):
        assert part in message, (part, message)
    with socket.socket() as listener:  # and one that listens is reached at once
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert wait_for_head("node1", "127.0.0.1", listener.getsockname()[1], timeout_s=2) < 1
