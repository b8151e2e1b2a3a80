"""How much memory the model states of one rank take under each parallelism: a pure function for the preflight.

Model states only (weights, gradients, optimizer state, fp32 master copy): activations, the all-gathered
working set of one layer under ZeRO-3/FSDP, the CUDA context and allocator slack come on top.
Counting follows the ZeRO paper: AdamW keeps two fp32 moments per trainable parameter; training in a
16-bit dtype adds an fp32 master copy of the trainable weights.
"""
from __future__ import annotations

GB = 1024 ** 3

# Which model states each strategy divides over ranks (ZeRO-1: optimizer; -2: + gradients; -3/FSDP: + weights).
_SHARDED = {
    ("ddp", 0): set(),
    ("deepspeed", 1): {"optimizer", "master"},
    ("deepspeed", 2): {"optimizer", "master", "grads"},
    ("deepspeed", 3): {"optimizer", "master", "grads", "weights"},
    ("fsdp", 0): {"optimizer", "master", "grads", "weights"},
}
# What CPU offload moves off the accelerator.
_OFFLOADED = {
    ("deepspeed", 1): {"optimizer", "master"},
    ("deepspeed", 2): {"optimizer", "master"},
    ("deepspeed", 3): {"optimizer", "master", "weights"},
    ("fsdp", 0): {"optimizer", "master", "grads", "weights"},
}


def estimate_memory_gb(n_params: int, trainable_params: int, strategy: str, zero_stage: int, offload: bool,
                       world_size: int, dtype_bytes: int) -> dict:
    """Per-rank model-state memory in GiB: {"device_gb", "cpu_gb", "per_state_gb": {...}, "sharded": [...]}.

    ``dtype_bytes``: 2 for bf16/fp16 training, 4 for fp32. ``strategy``: ddp, deepspeed, fsdp.
    """
    key = (strategy, zero_stage if strategy == "deepspeed" else 0)
    if key not in _SHARDED:
        raise ValueError(f"unknown parallelism: strategy={strategy} zero_stage={zero_stage}")
    if offload and key not in _OFFLOADED:
        raise ValueError(f"offload is not available with strategy={strategy}")
    if world_size < 1 or n_params < 0 or not 0 <= trainable_params <= n_params or dtype_bytes not in (2, 4):
        raise ValueError("estimate_memory_gb: need world_size >= 1, 0 <= trainable <= n_params, dtype_bytes 2 or 4")
    states = {
        "weights": n_params * dtype_bytes,
        "grads": trainable_params * dtype_bytes,
        "master": trainable_params * 4 if dtype_bytes < 4 else 0,
        "optimizer": trainable_params * 8,
    }
    sharded = _SHARDED[key]
    offloaded = _OFFLOADED.get(key, set()) if offload else set()
    device = cpu = 0.0
    per_state = {}
    for name, size in states.items():
        per_rank = size / world_size if name in sharded else float(size)
        per_state[name] = round(per_rank / GB, 4)
        if name in offloaded:
            cpu += per_rank
        else:
            device += per_rank
    return {"device_gb": round(device / GB, 4), "cpu_gb": round(cpu / GB, 4), "per_state_gb": per_state,
            "sharded": sorted(sharded), "offloaded": sorted(offloaded)}
