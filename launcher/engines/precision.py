"""The precision policy, decided once for every engine: what parameters are stored in, what matmuls run in.

- Parameters (the master weights) and the optimizer state stay fp32 on every engine: a full fine-tune whose
  weights are bf16 loses small updates (bf16 keeps 8 bits of mantissa).
- The matmuls run in the requested low precision on a GPU, under autocast (DDP), as FSDP2's parameter dtype
  (gathered in bf16, gradients reduced in fp32), or as DeepSpeed's bf16 mode. On a CPU they run in fp32:
  CPU autocast to bf16 is slower than fp32 on the machines we train on, so bf16 is not simulated there.
- Except with method.pure_bf16 (LLaMA-Factory's pure_bf16): parameters, gradients and optimizer state are bf16,
  with no fp32 master copy and no autocast (the weights are bf16 already), on a GPU or a CPU alike.
- float16 (V100, T4: GPUs without bf16) computes in fp16 with dynamic loss scaling, so small gradients do not
  flush to zero: a GradScaler for DDP (torch.amp) and FSDP (ShardedGradScaler: ranks agree on skipping a step
  whose gradients overflowed), DeepSpeed's own fp16 section for ZeRO (``make_grad_scaler``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Precision:
    requested: str
    """model.dtype as configured: auto, float32, bfloat16, float16."""
    param_dtype: torch.dtype
    """What parameters (master weights) are stored in."""
    compute_dtype: torch.dtype
    """What the matmuls run in."""
    device_type: str

    @property
    def low_precision(self) -> bool:
        return self.compute_dtype != torch.float32

    @property
    def bf16(self) -> bool:
        return self.compute_dtype == torch.bfloat16

    @property
    def fp16(self) -> bool:
        return self.compute_dtype == torch.float16

    @property
    def loss_scaling(self) -> bool:
        """fp16 compute needs its loss scaled (its 5 exponent bits underflow small gradients)."""
        return self.fp16

    @property
    def pure(self) -> bool:
        """Weights stored in the compute dtype (pure bf16): no master copy, nothing to autocast."""
        return self.low_precision and self.param_dtype == self.compute_dtype

    def autocast(self):
        """The context the loop's forward runs in: autocast to the compute dtype, or nothing for fp32 and pure bf16."""
        if self.low_precision and not self.pure:
            return torch.autocast(self.device_type, dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def describe(self) -> str:
        name = str(self.compute_dtype).replace("torch.", "")
        if self.pure:
            return f"pure {name}: {name} weights and optimizer state, no fp32 master copy"
        text = name if self.param_dtype == self.compute_dtype else f"{name} compute, fp32 master weights"
        return text + (", dynamic loss scaling" if self.loss_scaling else "")


def requested_dtype(requested: str, device: torch.device) -> torch.dtype:
    """model.dtype as a torch dtype; auto is bf16 on a GPU that has it, fp32 elsewhere."""
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return DTYPES[requested]


def resolve_precision(requested: str, device: torch.device, pure_bf16: bool = False) -> Precision:
    """pure_bf16 (method.pure_bf16): bf16 parameters and compute on any device (the dry run refuses it with
    model.dtype float32/float16)."""
    if pure_bf16:
        return Precision(requested=requested, param_dtype=torch.bfloat16, compute_dtype=torch.bfloat16,
                         device_type=device.type)
    dtype = requested_dtype(requested, device)
    compute = dtype if device.type == "cuda" else torch.float32
    return Precision(requested=requested, param_dtype=torch.float32, compute_dtype=compute, device_type=device.type)


def make_grad_scaler(precision: Precision, sharded: bool):
    """The loss scaler a torch-optimizer engine uses (None when the compute dtype needs none): torch.amp's
    GradScaler for DDP, FSDP's ShardedGradScaler (it all-reduces the overflow flag, so every rank skips the same
    steps) for sharded parameters. DeepSpeed scales in its own fp16 mode instead."""
    if not precision.loss_scaling:
        return None
    if sharded:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(precision.device_type)
    return torch.amp.GradScaler(precision.device_type)
