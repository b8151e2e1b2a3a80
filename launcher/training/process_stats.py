"""What this process cost: when it started, where its start-up went, its peak memory (for the bench report)."""
from __future__ import annotations

import os
import time


def process_start_time() -> float:
    """Wall-clock time at which this process started (the command, for ``launcher bench``).

    Not ``psutil.Process().create_time()``: on Linux that adds the start tick to /proc/stat's boot time, which is
    whole seconds, so it reads up to a second early (0.9 s on our CI machines). The process's age measured on the
    boot clock has no such offset (10 ms ticks).
    """
    try:
        with open("/proc/self/stat") as fh:
            fields_after_name = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields_after_name[19])  # field 22, starttime, in clock ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


class PhaseClock:
    """Seconds spent in consecutive named phases, from a start time."""

    def __init__(self, started_at: float):
        self.started_at = started_at
        self.phases: dict[str, float] = {}
        self._since = started_at

    def done(self, name: str) -> None:
        now = time.time()
        self.phases[name] = now - self._since
        self._since = now
