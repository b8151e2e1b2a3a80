"""How glibc's heap treats freed host memory in a CPU training process (``mallopt``): kept for reuse in a
single process, handed back to the kernel on the ranks of a sharded strategy.

Why our own: glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
hands it back to the kernel on free. A CPU step of a small model with a large vocabulary makes several such
tensors each step ([vocab, hidden] fp32 gradients of the tied embedding and head, the fused head's logits
buffers, AdamW's ``sqrt``/``div`` temporaries): the kernel faults each page in and zeroes it again every step,
~1.2 GB of minor page faults per step of ``experiment=bench_reference`` (tests/benchmarks/bench_step_profile.py
prints them), several percent of the step. ``M_MMAP_MAX=0`` serves them from the heap and
``M_TRIM_THRESHOLD`` keeps what is freed there, so the next step reuses the same pages. Nothing computed
changes (allocation never touches values). PyTorch's own CPU allocator has no caching to turn on, and an
LD_PRELOAD'ed jemalloc/tcmalloc would be a system dependency.

The cost is that RSS does not fall after a peak: the process keeps its high-water memory. That is why the
recipe entry asks for it only in a single CPU process (``launcher bench``, one-process runs), not under
torch.distributed, where the per-rank peak of sharded strategies is what they are for.

The ranks of a sharded strategy on CPUs (FSDP, ZeRO) need the opposite: ``return_freed_memory``. glibc's
default raises its mmap threshold to the size of each large block freed (up to 32 MB), so after the first
gathered layer (0.5-15 MB tensors for a 0.35B model) every later gather, activation and logits buffer of that
size comes from the heap, and the heap's holes are not given back: on 2 gloo ranks a LoRA run of the 0.35B
model of tests/benchmarks/bench_load.py (FSDP, evaluations on) kept 0.8-1.6 GB above its shards this way, as
much as one unsharded process holds. A fixed threshold (which also stops the dynamic one) maps each such
tensor alone and unmaps it when freed; the price is the page faults ``keep_freed_memory`` avoids.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
RETURN_THRESHOLD = 128 << 10
"""glibc's own starting mmap threshold (128 KiB), kept fixed instead of rising to 32 MB."""


def _mallopt():
    """glibc's mallopt, or None where there is none (not Linux, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it; True where glibc took both settings."""
    mallopt = _mallopt()
    if mallopt is None:  # not glibc (musl has no mallopt): nothing to tune
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(M_MMAP_MAX, 0))


def return_freed_memory() -> bool:
    """Map every allocation of ``RETURN_THRESHOLD`` bytes or more alone, unmapped when freed (the threshold stays
    fixed); True where glibc took the setting."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, RETURN_THRESHOLD))


def sharded_cpu_rank(strategy: str, device_type: str, world_size: int) -> bool:
    """A rank whose per-rank peak is the point: a sharded strategy's, on CPUs, with more than one rank."""
    return device_type == "cpu" and world_size > 1 and strategy != "ddp"
