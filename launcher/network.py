"""Addresses the servers we start (``launcher serve``, ``launcher ui``) bind to."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: binding there needs no key or login."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
