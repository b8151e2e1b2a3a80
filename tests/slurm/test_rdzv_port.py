"""The rendezvous port: derived from the whole job id (array task id included), the first free one on the
head node, published by node 0 for the other nodes. Real sockets and files, no cluster needed."""
from __future__ import annotations

import socket
import threading

import pytest

from launcher.slurm.node import agree_port, pick_free_port, port_file, port_is_free
from launcher.slurm.render import PORT_CANDIDATES, port_candidates, port_for_job


def test_candidates_from_the_whole_job_id():
    assert port_for_job(1) == 20001 and port_for_job("123456") == 23456
    assert port_candidates("123456")[:3] == [23456, 23457, 23458]
    assert len(set(port_candidates(5))) == PORT_CANDIDATES
    assert port_candidates(29999 - 20000 + 10000 * 7)[:2] == [29999, 20000]  # wraps inside the range
    # Array tasks: consecutive tasks of one array get consecutive ports, and differ from the array job's own.
    assert [port_for_job(f"700_{t}") for t in range(3)] == [20700, 20701, 20702]
    assert all(20000 <= p < 30000 for j in (0, 9999, 10000, 987654321, "42_7") for p in port_candidates(j))
    for bad in ("12_x", "abc", "", "_3"):
        with pytest.raises(ValueError, match="SLURM job id"):
            port_for_job(bad)


def test_a_port_held_by_another_job_is_skipped():
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        assert not port_is_free(taken)
        free = pick_free_port([taken, taken + 1, taken + 2])
        assert free != taken and port_is_free(free)
    finally:
        holder.close()
    assert port_is_free(taken)  # closed: free again
    with pytest.raises(RuntimeError, match="no free rendezvous port"):
        pick_free_port([20001, 20002], is_free=lambda port: False)


def test_node_zero_publishes_the_port_the_others_use(tmp_path):
    seen = {}

    def other_node():
        seen["node1"] = agree_port(tmp_path, "123456", 1, "0", timeout_s=30, poll_s=0.05)

    waiter = threading.Thread(target=other_node)
    waiter.start()  # node 1 starts first and waits for node 0
    head = agree_port(tmp_path, "123456", 0, "0")
    waiter.join(timeout=30)
    assert seen["node1"] == head and head in port_candidates("123456")
    assert port_file(tmp_path, "123456", "0").read_text().strip() == str(head)
    # A requeued job (restart 1) does not read the old attempt's port.
    with pytest.raises(RuntimeError, match="did not publish the rendezvous port"):
        agree_port(tmp_path, "123456", 1, "1", timeout_s=0.3, poll_s=0.05)
