"""model.dtype=float16 (V100, T4: GPUs without bf16) trains with dynamic loss scaling, and says so.

On CPU: the DeepSpeed config a ZeRO run renders has its fp16 section on (bf16 off); DDP gets torch.amp's
GradScaler and FSDP the ShardedGradScaler (ranks agree on skipping an overflowed step); fp32 and bf16 get none;
the dry run names what really runs. The scaler's mechanics on DTensor gradients run here too (a CPU scaler
on a one-rank FSDP2 model). On a GPU: DDP, FSDP and ZeRO-3 train in fp16 and their losses move.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.engines.deepspeed import build_deepspeed_config
from launcher.engines.precision import make_grad_scaler, resolve_precision

CUDA = torch.device("cuda", 0)


def test_zero3_fp16_config_has_loss_scaling():
    cfg = compose_config(["parallelism=zero3", "model.dtype=float16"])
    precision = resolve_precision("float16", CUDA)  # no CUDA call: the dtype is explicit
    ds = build_deepspeed_config(cfg, 8, 1, on_gpu=True, bf16=precision.bf16, fp16=precision.fp16)
    assert ds["fp16"]["enabled"] is True and ds["fp16"]["loss_scale"] == 0  # 0: dynamic
    assert ds["bf16"]["enabled"] is False


def test_grad_scaler_is_chosen_for_fp16_only():
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    fp16 = resolve_precision("float16", CUDA)
    assert fp16.loss_scaling and "dynamic loss scaling" in fp16.describe()
    assert type(make_grad_scaler(fp16, sharded=False)) is torch.amp.GradScaler
    assert isinstance(make_grad_scaler(fp16, sharded=True), ShardedGradScaler)
    for dtype in ("float32", "bfloat16"):
        assert make_grad_scaler(resolve_precision(dtype, CUDA), sharded=False) is None
    # On a CPU the policy computes in fp32: nothing to scale.
    assert make_grad_scaler(resolve_precision("float16", torch.device("cpu")), sharded=False) is None


def test_dry_run_names_the_precision_that_runs():
    from launcher.checks.model import describe_precision

    gpu = ["cluster=slurm_a100", "cluster.partition=null", "model.dtype=float16"]
    assert "loss scaling (DeepSpeed's fp16 mode)" in describe_precision(compose_config([*gpu, "parallelism=zero3"]))
    assert "ShardedGradScaler" in describe_precision(compose_config([*gpu, "parallelism=fsdp"]))
    assert "GradScaler" in describe_precision(compose_config([*gpu, "parallelism=ddp"]))
    cpu = describe_precision(compose_config(["cluster=slurm_local", "cluster.partition=null", "model.dtype=float16"]))
    assert cpu.startswith("float32 weights and compute (no GPU")


SCALER_ON_DTENSORS = r"""
import os, torch, torch.distributed as dist
dist.init_process_group("gloo", rank=0, world_size=1)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
fully_shard(m, mesh=init_device_mesh("cpu", (1,)))
opt = torch.optim.SGD(m.parameters(), lr=0.1)
scaler = ShardedGradScaler("cpu", init_scale=2.0 ** 10)
before = [p.full_tensor().clone() for p in m.parameters()]
scaler.scale(m(torch.randn(4, 8)).sum()).backward()
scaler.unscale_(opt)
grads = [p.grad.full_tensor().clone() for p in m.parameters()]
scaler.step(opt); scaler.update()
moved = [(b - p.full_tensor()).abs().max().item() for b, p in zip(before, m.parameters())]
# The update is lr x the unscaled gradient: the scale was taken out before the step.
ok = all(abs(d - 0.1 * g.abs().max().item()) < 1e-6 for d, g in zip(moved, grads))
print(f"SCALE {scaler.get_scale()} OK {ok}")
"""


def test_sharded_grad_scaler_unscales_dtensor_gradients(tmp_path):
    script = tmp_path / "scaler.py"
    script.write_text(SCALER_ON_DTENSORS)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29700 + (hash(str(tmp_path)) % 200)), "PATH": "/usr/bin"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert "OK True" in proc.stdout, proc.stdout + proc.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("parallelism", ["ddp", "fsdp", "zero3"])
def test_fp16_trains_with_loss_scaling_on_gpu(tmp_path, parallelism, monkeypatch):
    from tests.parallel import test_parallel_train as t

    monkeypatch.setattr(t, "NPROC", 1)
    run_dir = t.launch(tmp_path, f"fp16-{parallelism}", [f"parallelism={parallelism}", "model.dtype=float16"])
    losses = t.train_losses(run_dir)
    assert all(v == v for v in losses.values()) and losses[4] < losses[1]
    assert json.loads((run_dir / "summary.json").read_text())["parallelism"]["loss_scaling"] is True
