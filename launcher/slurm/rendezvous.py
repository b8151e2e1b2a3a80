"""A node that cannot reach the head node's rendezvous fails within cluster.rendezvous_timeout_s, saying why.

torchrun's c10d rendezvous on a node that cannot reach the head's store (a firewall, the wrong interface, a
head name that resolves to another address) retries quietly until its join timeout (600 s), then fails with a
connection error that names neither the interface nor what to change; an NCCL bootstrap over the wrong
interface hangs until NCCL's own timeout. So each non-head node first connects to the head's rendezvous port
itself, retrying while the head's torchrun starts, and gives up at the deadline with a message naming the head
address and port, the interface and address this node's route to it uses, and what to set.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Optional

from launcher.errors import LauncherError


class RendezvousUnreachable(LauncherError):
    """The head node's rendezvous port did not answer within the bound."""


def route_to(addr: str, port: int) -> tuple:
    """(local address, interface name) this host would use to reach ``addr``; ('?', '?') when unknown.
    A UDP connect picks the route without sending anything."""
    try:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((addr, port))
            local = sock.getsockname()[0]
    except OSError:
        return "?", "?"
    return local, interface_of(local)


def interface_of(local_addr: str) -> str:
    try:
        import psutil

        for name, addrs in psutil.net_if_addrs().items():
            if any(a.address.split("%")[0] == local_addr for a in addrs):
                return name
    except Exception:  # noqa: BLE001 - psutil missing or refusing: the address alone still helps
        pass
    return "?"


def unreachable_message(head: str, addr: str, port: int, waited_s: float, last_error: str,
                        environ: Optional[dict] = None) -> str:
    env = os.environ if environ is None else environ
    local, ifname = route_to(addr, port)
    nccl = env.get("NCCL_SOCKET_IFNAME")
    gloo = env.get("GLOO_SOCKET_IFNAME")
    chosen = ", ".join(f"{k}={v}" for k, v in (("NCCL_SOCKET_IFNAME", nccl), ("GLOO_SOCKET_IFNAME", gloo)) if v)
    return (
        f"rendezvous: this node ({socket.gethostname()}) could not reach the head node {head} at {addr}:{port}"
        f" within {waited_s:.0f} s (last error: {last_error}); the route to it leaves through interface {ifname}"
        f" (local address {local}){'; ' + chosen if chosen else ''}. Check that {addr} is the head's address on a"
        " network every node shares and that no firewall blocks the port; set cluster.nccl_socket_ifname to that"
        " network's interface (ib0, eth0, ...), fix the head's NodeAddr in slurm.conf if the address is wrong,"
        " or raise cluster.rendezvous_timeout_s if the head node is only slow to start"
    )


def wait_for_head(head: str, addr: str, port: int, timeout_s: float, poll_s: float = 0.2,
                  connect_timeout_s: float = 3.0) -> float:
    """Connect to ``addr:port`` until it accepts (returns the seconds waited) or ``timeout_s`` passes
    (RendezvousUnreachable with the message above). Connection refused is retried: the head's torchrun may not
    be listening yet. A refused connect costs nothing, so the poll is short: the other nodes' ranks start as soon
    as the head's store listens instead of up to a second later."""
    start = time.monotonic()
    deadline = start + timeout_s
    last_error = "no attempt"
    while True:
        try:
            with socket.create_connection((addr, port), timeout=min(connect_timeout_s, max(0.1, timeout_s))):
                return time.monotonic() - start
        except OSError as exc:
            last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if time.monotonic() + poll_s > deadline:
            raise RendezvousUnreachable(unreachable_message(head, addr, port, time.monotonic() - start, last_error))
        time.sleep(poll_s)
