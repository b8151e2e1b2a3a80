"""Offload on a GPU, the choices made on the CPU side: the process-group backend (gloo beside NCCL for
fsdp_offload's CPU tensors) and ZeRO offload's optimizer (DeepSpeed's CPU Adam where it builds, torch's AdamW
otherwise, with the reason). The GPU runs themselves are in tests/parallel/test_parallel_gpu.py."""
from __future__ import annotations

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.engines.deepspeed import (CPU_ADAM, TORCH_OPTIMIZER, build_zero_optimizer, cpu_adam_status,
                                        offload_optimizer_choice)
from launcher.engines.distributed import GPU_WITH_CPU_GROUP, process_group_backend, uses_cpu_offload_group


def test_backend_string():
    assert process_group_backend("auto", "cuda") == "nccl"
    assert process_group_backend("auto", "cuda", cpu_offload=True) == GPU_WITH_CPU_GROUP == "cuda:nccl,cpu:gloo"
    assert process_group_backend("nccl", "cuda", cpu_offload=True) == "cuda:nccl,cpu:gloo"
    assert process_group_backend("gloo", "cuda", cpu_offload=True) == "gloo"
    assert process_group_backend("auto", "cpu", cpu_offload=True) == "gloo"
    with pytest.raises(ValueError, match="parallelism.backend"):
        process_group_backend("mpi", "cuda")


@pytest.mark.parametrize("preset, mixed", [("fsdp_offload", True), ("fsdp", False), ("zero3_offload", False),
                                           ("ddp", False)])
def test_which_presets_get_the_gloo_group(preset, mixed):
    assert uses_cpu_offload_group(compose_config([f"parallelism={preset}"]).parallelism) is mixed


def test_optimizer_choice():
    method = compose_config(["parallelism=zero3_offload"]).method
    available = (True, "prebuilt in this DeepSpeed install")
    assert offload_optimizer_choice(True, True, method, available) == (
        CPU_ADAM, "DeepSpeed's CPU Adam for the offloaded optimizer state (prebuilt in this DeepSpeed install)")
    # A CPU-only run, or no offload: torch's AdamW, nothing to say.
    assert offload_optimizer_choice(False, True, method, available) == (TORCH_OPTIMIZER, "")
    assert offload_optimizer_choice(True, False, method, available) == (TORCH_OPTIMIZER, "")
    choice, why = offload_optimizer_choice(True, True, method, (False, "its JIT build needs ninja"))
    assert choice == TORCH_OPTIMIZER and "its JIT build needs ninja" in why and "torch's AdamW" in why
    sgd = compose_config(["parallelism=zero3_offload", "method.optimizer=sgd"]).method
    assert offload_optimizer_choice(True, True, sgd, available)[0] == TORCH_OPTIMIZER
    plus = compose_config(["parallelism=zero3_offload", "method=lora", "method.lora.plus_lr_ratio=16"]).method
    assert "LoRA+" in offload_optimizer_choice(True, True, plus, available)[1]


def test_cpu_adam_status_answers_without_building():
    ok, how = cpu_adam_status()  # the real DeepSpeed here; whatever the answer, it names the reason
    assert isinstance(ok, bool) and how
    print(f"DeepSpeed CPU Adam here: {ok} ({how})")


def test_cpu_run_keeps_torch_adamw():
    model = torch.nn.Linear(4, 4)
    method = compose_config(["parallelism=zero3_offload"]).method
    assert type(build_zero_optimizer(model, method, on_gpu=False, offload=True)) is torch.optim.AdamW


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_offload_gets_cpu_adam_where_it_builds():
    """On a GPU box DeepSpeed's CPU Adam is built (or taken from the cache) and makes torch AdamW's update."""
    ok, how = cpu_adam_status()
    if not ok:
        pytest.skip(f"DeepSpeed's CPU Adam is not available here: {how}")
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    torch.manual_seed(0)
    ours, ref = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    ref.load_state_dict(ours.state_dict())
    method = compose_config(["parallelism=zero3_offload", "method.lr=1e-2", "method.weight_decay=0.1"]).method
    optimizer = build_zero_optimizer(ours, method, on_gpu=True, offload=True)
    assert isinstance(optimizer, DeepSpeedCPUAdam)
    reference = build_zero_optimizer(ref, method, on_gpu=False, offload=True)  # torch's AdamW, same groups
    x = torch.randn(4, 8)
    for model, opt in ((ours, optimizer), (ref, reference)):
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


GPU_AND_CPU_COLLECTIVES = """
import os, torch, torch.distributed as dist
from launcher.engines.distributed import ensure_process_group
ensure_process_group(torch.device("cuda", 0), cpu_offload=True)
on_gpu, on_cpu = torch.ones(2, device="cuda"), torch.ones(2)
dist.all_reduce(on_gpu); dist.all_reduce(on_cpu)  # the CPU one needs the gloo half of the group
print("backend", dist.get_backend(), on_gpu.sum().item(), on_cpu.sum().item())
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fsdp_offload_group_takes_cpu_and_gpu_tensors():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-c", GPU_AND_CPU_COLLECTIVES], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2.0 2.0" in done.stdout and "gloo" in done.stdout and "nccl" in done.stdout, done.stdout
