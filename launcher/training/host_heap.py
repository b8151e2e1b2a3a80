"""Keep freed host memory in the process's heap for reuse (glibc's ``mallopt``), for a CPU training process.

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
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it; True where glibc took both settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(M_MMAP_MAX, 0))
