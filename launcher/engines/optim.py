"""Optimizer and learning-rate schedule, built from the method and train configs.

adamw and sgd are torch's, built here; every other method.optimizer comes from its authors' library
(launcher.engines.library_optimizers), over the same decay / no-decay groups."""
from __future__ import annotations

import math

import torch

from launcher.config.schema import MethodConfig, TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-D tensors), as is usual for transformers."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # A ZeRO-3 parameter partitioned at build time holds an empty tensor; its real shape is ds_shape.
        (no_decay if len(getattr(p, "ds_shape", p.shape)) < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, method: MethodConfig) -> torch.optim.Optimizer:
    if method.finetuning == "lora" and method.lora.plus_lr_ratio:
        return loraplus_optimizer(model, method)
    groups = param_groups(model, method.weight_decay)
    if method.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=method.lr, momentum=0.9)
    if method.optimizer != "adamw":
        from launcher.engines.library_optimizers import build_library_optimizer

        return build_library_optimizer(model, method, groups,
                                       adamw_implementation([p for g in groups for p in g["params"]]))
    return torch.optim.AdamW(groups, lr=method.lr, betas=(method.adam_beta1, method.adam_beta2),
                             eps=method.adam_eps, **adamw_implementation([p for g in groups for p in g["params"]]))


def loraplus_optimizer(model: torch.nn.Module, method: MethodConfig) -> torch.optim.Optimizer:
    """LoRA+: peft's grouping (B matrices and 1-D tensors at ratio x lr, A matrices at lr); LoRA on embeddings
    keeps method.lr (peft's default there is 1e-6)."""
    from peft.optimizers import create_loraplus_optimizer

    common = dict(lr=method.lr, loraplus_lr_ratio=method.lora.plus_lr_ratio, loraplus_weight_decay=method.weight_decay,
                  loraplus_lr_embedding=method.lr)
    if method.optimizer == "sgd":
        return create_loraplus_optimizer(model, torch.optim.SGD, momentum=0.9, **common)
    params = [p for p in model.parameters() if p.requires_grad]
    return create_loraplus_optimizer(model, torch.optim.AdamW, betas=(method.adam_beta1, method.adam_beta2),
                                     eps=method.adam_eps, **adamw_implementation(params), **common)


def adamw_implementation(params: list[torch.Tensor]) -> dict:
    """Which AdamW kernel: on CUDA the fused one (one launch for all tensors; the per-tensor loop launches
    ~10 kernels per tensor, tens of ms per step for a 1.5B model, a sizable share of a step at high MFU), or
    the multi-tensor one for FSDP2's DTensors. On CPU the per-tensor loop: it has no launch cost to save, and
    keeps the update order (and so the bits) identical across runs and resumes. All are deterministic."""
    if not params or not all(p.is_cuda for p in params):
        return {"foreach": False}
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in params):
        return {"foreach": True}
    return {"fused": True}


def warmup_steps(train: TrainConfig, total_steps: int) -> int:
    return train.warmup_steps or int(math.ceil(train.warmup_ratio * total_steps))


def lr_multiplier(step: int, total_steps: int, warmup: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): linear warmup, then decay."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if kind == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    warm = warmup_steps(train, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, warm, train.lr_scheduler, train.min_lr_ratio)
    )
