"""All process-group setup in one place. The training loop never reads the environment itself.

Ranks are started by torchrun (locally, or one torchrun per SLURM node), which sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. A single process without torchrun is a world of one.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


GPU_WITH_CPU_GROUP = "cuda:nccl,cpu:gloo"
"""One process group, two backends: NCCL for CUDA tensors, gloo for CPU ones (torchtitan does the same for
CPU offload)."""


def process_group_backend(requested: str, device_type: str, cpu_offload: bool = False) -> str:
    """The backend string for ``init_process_group``. ``auto``: nccl on a GPU, gloo on the CPU. On a GPU with
    FSDP's CPU offload (``fsdp_offload``) the shards, gradients and optimizer state are CPU tensors, and the
    collectives on them (gradient-norm clipping, DCP checkpoints, broadcasts at load) need gloo beside NCCL:
    ``cuda:nccl,cpu:gloo``, also when nccl was asked for by name."""
    if requested not in ("auto", "nccl", "gloo"):
        raise ValueError(f"parallelism.backend: {requested!r} is not auto, nccl or gloo")
    if device_type != "cuda" or requested == "gloo":
        return "gloo"
    return GPU_WITH_CPU_GROUP if cpu_offload else "nccl"


def uses_cpu_offload_group(parallelism) -> bool:
    """Whether the run's collectives touch CPU tensors on a GPU run: FSDP2 with CPU offload. (DeepSpeed's
    offload moves tensors itself and communicates on the GPU.)"""
    return parallelism.strategy == "fsdp" and bool(parallelism.offload)


def init_distributed(backend: str = "auto", timeout_s: int = 1800, cpu_offload: bool = False) -> DistInfo:
    """``cpu_offload``: FSDP's CPU offload (``uses_cpu_offload_group``): a gloo group beside NCCL on a GPU."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(backend, device.type, cpu_offload),
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank, device)


def choose_device() -> torch.device:
    """This process's device: its local rank's GPU, or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (pickled); the object itself without a process group."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def destroy_distributed() -> None:
    # Tearing the group down explicitly avoids the occasional abort at interpreter exit seen with gloo.
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def ensure_process_group(device: torch.device, cpu_offload: bool = False) -> None:
    """Sharded engines (FSDP, DeepSpeed) need a process group even for a world of one (a single process
    started without torchrun); make a one-rank group on a free local port then (with gloo beside NCCL for
    FSDP's CPU offload, as ``process_group_backend`` says)."""
    if is_distributed():
        return
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise RuntimeError("a multi-process run reached the engine without a process group; start it with torchrun")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)), ("RANK", "0"),
                       ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    dist.init_process_group(process_group_backend("auto", device.type, cpu_offload), rank=0, world_size=1)
