"""Which optimizer a run may use (``method.optimizer``), and where it cannot work: the rules the dry run applies.

Torch-free, like the rest of launcher.config: the schema calls ``optimizer_combination_problem`` from its
combination checks, the preflight adds the hardware rule (``needs_cuda``: bitsandbytes' 8-bit and paged
optimizers run on CUDA GPUs only). The optimizers themselves are built in launcher.engines.optim.

Every optimizer but adamw and sgd needs parallelism=ddp (one process, or whole replicas on several):
- GaLore and APOLLO project each weight matrix's gradient; ZeRO and FSDP hand the optimizer flat or sharded
  pieces, so the projection would be of a slice (LLaMA-Factory refuses them with DeepSpeed too).
- torch's Muon orthogonalizes whole 2-D matrices (Newton-Schulz), which a shard is not.
- BAdam switches which block has ``requires_grad`` while training: DDP's reducer is built once for a fixed set,
  so it is one process here (LLaMA-Factory runs it distributed under ZeRO-3 only, which is not wired here yet).
- Adam-mini partitions each matrix by heads/neurons from its name and shape; under FSDP/ZeRO it needs its own
  sharded bookkeeping, not wired here yet. adafactor factors each matrix's second moment (a flat ZeRO slice
  would not be factored), and bitsandbytes' 8-bit states are per tensor: not wired for sharded engines yet.
"""
from __future__ import annotations

from typing import Any, Optional

OPTIMIZERS = ("adamw", "sgd", "adafactor", "adamw_8bit", "paged_adamw_8bit", "galore_adamw", "galore_adamw_8bit",
              "galore_adafactor", "apollo_adamw", "badam", "adam_mini", "muon")
"""Every value of method.optimizer."""

GALORE = ("galore_adamw", "galore_adamw_8bit", "galore_adafactor")
BNB_8BIT = ("adamw_8bit", "paged_adamw_8bit", "galore_adamw_8bit")
"""Optimizers whose state bitsandbytes keeps in 8 bits: CUDA kernels only."""

# optimizer -> (the package it imports, the pip requirement that installs it)
PACKAGES = {
    "adamw_8bit": ("bitsandbytes", "bitsandbytes"), "paged_adamw_8bit": ("bitsandbytes", "bitsandbytes"),
    "galore_adamw": ("galore_torch", "galore-torch"), "galore_adafactor": ("galore_torch", "galore-torch"),
    "galore_adamw_8bit": ("galore_torch", "galore-torch"), "apollo_adamw": ("apollo_torch", "apollo-torch"),
    "badam": ("badam", "badam"), "adam_mini": ("adam_mini", "adam-mini"),
}

_WHY_DDP = {
    "galore": "GaLore projects each whole weight matrix's gradient, and ZeRO/FSDP give the optimizer flat or sharded"
              " slices of them",
    "apollo_adamw": "APOLLO projects each whole weight matrix's gradient, and ZeRO/FSDP give the optimizer flat or"
                    " sharded slices of them",
    "muon": "Muon orthogonalizes each whole 2-D matrix, and ZeRO/FSDP give the optimizer flat or sharded slices",
    "badam": "BAdam changes which parameters train while training, which a sharded engine's buckets do not follow",
    "adam_mini": "Adam-mini's per-head partition of sharded matrices is not wired here yet",
    "adafactor": "Adafactor factors each whole matrix's second moment, and ZeRO/FSDP give it flat or sharded slices",
    "bnb": "bitsandbytes' 8-bit states are not wired for sharded engines here yet",
}

CHOICES = {
    "method.galore.proj_type": ("std", "reverse_std", "right", "left", "full"),
    "method.apollo.proj": ("random", "svd"),
    "method.apollo.proj_type": ("std", "right", "left"),
    "method.apollo.scale_type": ("channel", "tensor"),
    "method.badam.switch_mode": ("ascending", "descending", "random", "fixed"),
}


def uses_projection(optimizer: str) -> bool:
    """GaLore or APOLLO: some matrices' gradients are projected to low rank."""
    return optimizer in GALORE or optimizer == "apollo_adamw"


def needs_cuda(optimizer: str) -> bool:
    return optimizer in BNB_8BIT


def _why_ddp(optimizer: str) -> str:
    if optimizer in GALORE:
        return _WHY_DDP["galore"]
    if optimizer in BNB_8BIT:
        return _WHY_DDP["bnb"]
    return _WHY_DDP[optimizer]


def _target_problem(target: Any, key: str) -> Optional[str]:
    if target == "all" or (isinstance(target, list) and target and all(isinstance(t, str) and t for t in target)):
        return None
    return f"{key}: use all or a list of module names (q_proj, v_proj, ...), got {target!r}"


def optimizer_combination_problem(cfg) -> Optional[str]:
    """The first reason ``method.optimizer`` (and method.pure_bf16) cannot run with the rest of ``cfg``, or None.
    ``cfg`` is a launcher.config.schema.Config (not imported: the schema imports this module); the ranges of the
    numbers (ranks, intervals, scales) are launcher.config.ranges'.""" 
    m, p = cfg.method, cfg.parallelism
    opt = m.optimizer
    for key, allowed in CHOICES.items():
        section, name = key.split(".")[1:]
        value = getattr(getattr(m, section), name)
        if value not in allowed:
            return f"{key}: '{value}' is not one of {', '.join(allowed)}"
    for key, target in (("method.galore.target", m.galore.target), ("method.apollo.target", m.apollo.target)):
        problem = _target_problem(target, key)
        if problem:
            return problem
    if (uses_projection(opt) or opt == "badam") and m.finetuning == "lora":
        return (f"method.optimizer: {opt} trains full weights (as in LLaMA-Factory, not with LoRA); use method=sft_full"
                f" or method.finetuning=freeze, or method.optimizer=adamw with LoRA")
    if opt == "badam" and m.finetuning == "freeze":
        return ("method.optimizer: badam picks which layer trains itself (one block at a time), which overrides"
                " method.finetuning=freeze's choice; use method=sft_full with badam")
    if m.finetuning == "lora" and m.lora.plus_lr_ratio and opt not in ("adamw", "sgd"):
        return (f"method.lora.plus_lr_ratio: LoRA+ builds its own parameter groups for adamw or sgd, not for"
                f" method.optimizer={opt}; drop one of them")
    if opt not in ("adamw", "sgd") and p.strategy != "ddp":
        return (f"method.optimizer: {opt} does not run under parallelism={p.name}: {_why_ddp(opt)}; use"
                f" parallelism=ddp, or method.optimizer=adamw")
    if opt == "badam" and cfg.cluster.nodes * cfg.cluster.nproc_per_node > 1:
        return ("method.optimizer: badam runs in one process here (it changes which parameters train while training,"
                " which DDP's gradient buckets do not follow; LLaMA-Factory's distributed BAdam needs ZeRO-3, not wired"
                " here yet); set cluster.nproc_per_node=1 and cluster.nodes=1")
    layerwise = (opt in GALORE and m.galore.layerwise) or (opt == "apollo_adamw" and m.apollo.layerwise)
    if layerwise:
        key = "method.galore.layerwise" if opt in GALORE else "method.apollo.layerwise"
        if cfg.cluster.nodes * cfg.cluster.nproc_per_node > 1:
            return (f"{key}: layer-wise {opt} steps each parameter in the backward pass, before DDP has averaged its"
                    " gradient (LLaMA-Factory refuses it distributed too); set cluster.nproc_per_node=1 and"
                    f" cluster.nodes=1, or {key}=false")
        from launcher.config.schema import resolve_grad_accum  # the schema imports this module
        from launcher.errors import ConfigError

        try:
            accum = resolve_grad_accum(cfg)
        except ConfigError:  # reported by the schema's own check
            accum = 1
        if accum != 1:
            return (f"{key}: layer-wise {opt} steps at every backward pass, so it cannot accumulate gradients; set"
                    f" train.grad_accum=1 (this config accumulates {accum}) or {key}=false")
        if cfg.model.dtype == "float16":
            return (f"{key}: layer-wise steps cannot wait for fp16's loss-scale check; use model.dtype=bfloat16 (or"
                    f" method.pure_bf16=true), or {key}=false")
    if m.pure_bf16:
        if p.strategy != "ddp":
            return (f"method.pure_bf16: bf16 weights without an fp32 master copy are wired for parallelism=ddp only"
                    f" (ZeRO and FSDP keep their own fp32 copies), not {p.name}; use parallelism=ddp or drop pure_bf16")
        if cfg.model.dtype in ("float32", "float16"):
            return (f"method.pure_bf16: trains in bfloat16, which contradicts model.dtype={cfg.model.dtype}; set"
                    " model.dtype=bfloat16 (or auto)")
    return None
