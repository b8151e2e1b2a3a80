"""The head node's address, from SLURM itself: never localhost on a multi-node job.

``SLURM_JOB_NODELIST`` is compressed (``gpu[01-04]``): ``scontrol show hostnames`` expands it; the first
name is the head node. Node names need not resolve (two slurmd on one host, or clusters whose DNS only
knows the interconnect names), so the address comes from ``scontrol show node``'s NodeAddr.
The parsers are pure; ``resolve_head_node`` takes the scontrol call as an argument so tests can fake it.
"""
from __future__ import annotations

import os
import re
import subprocess
from typing import Callable, Optional

from launcher.errors import LauncherError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class HeadNodeError(LauncherError):
    """The head node's address could not be resolved from SLURM."""


def parse_hostnames(text: str) -> list:
    """Output of ``scontrol show hostnames LIST`` -> node names, in order."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_node_addr(text: str) -> Optional[str]:
    """``NodeAddr=...`` from ``scontrol show node NAME`` output (None when absent)."""
    match = re.search(r"\bNodeAddr=(\S+)", text)
    return match.group(1) if match else None


def run_scontrol(args: list) -> str:
    """The real scontrol; raises HeadNodeError with scontrol's own message when it fails."""
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HeadNodeError(f"scontrol {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise HeadNodeError(f"scontrol {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def resolve_head_node(
    nodelist: str, num_nodes: int, scontrol: Callable[[list], str] = run_scontrol
) -> tuple:
    """(head node name, address to reach it) for a job's SLURM_JOB_NODELIST.

    On a multi-node job a loopback name is refused: each node would form its own world and hang.
    (A loopback *address* that SLURM itself reports as NodeAddr is what SLURM uses to reach that node,
    as on a single-host test cluster, and is accepted.)
    """
    if not nodelist:
        raise HeadNodeError("SLURM_JOB_NODELIST is empty: not inside a SLURM allocation?")
    names = parse_hostnames(scontrol(["show", "hostnames", nodelist]))
    if not names:
        raise HeadNodeError(f"scontrol show hostnames {nodelist} returned no node names")
    head = names[0]
    addr = parse_node_addr(scontrol(["show", "node", head])) or head
    if num_nodes > 1 and addr.lower() in LOOPBACK_NAMES:
        raise HeadNodeError(
            f"head node {head} resolves to '{addr}' on a {num_nodes}-node job; set NodeAddr for {head}"
            " in slurm.conf to an address the other nodes can reach"
        )
    return head, addr


def resolve_head_node_from_env(environ: Optional[dict] = None) -> tuple:
    env = os.environ if environ is None else environ
    return resolve_head_node(env.get("SLURM_JOB_NODELIST", ""), int(env.get("SLURM_JOB_NUM_NODES", "1")))
