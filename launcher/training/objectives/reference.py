"""The reference model of preference-style methods (DPO, KTO): which one a run uses, how it scores a batch, and
log-probs scored once up front. Shared by recipes/dpo.py and recipes/kto.py.

The reference is one of: a frozen copy of the starting weights (full fine-tuning), the policy itself with its
LoRA adapters switched off for the forward (LoRA: no second copy), or, for DPO, the policy's log-probs of every
row scored once before training (``precompute_reference_logps``), when no copy should be kept.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn

from launcher.config.parallelism import shards_parameters
from launcher.engines.distributed import all_reduce_sum
from launcher.training.batching import eval_batches
from launcher.training.objectives.base import forwards_for, to_device
from launcher.training.objectives.preference import SequenceLogProbs


def sharded_parameters(cfg) -> bool:
    """ZeRO-3 and FSDP keep a shard of each parameter per rank (their forwards are collective)."""
    return shards_parameters(cfg.parallelism)


def frozen_copy(model: nn.Module, device, cfg=None, tokenizer=None, attn_implementation: str = "sdpa",
                dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A frozen copy of the starting weights; take it before the engine wraps (or shards) the policy.

    A policy built sharded (FSDP on the meta device, ZeRO-3 partitioned as it loads: ``sharded_loading``) holds
    no full weights to copy, so the reference is then built again the plain way (the same file, or the same
    seeded random init), with the global RNG left as it was."""
    from launcher.engines.model_build import sharded_loading

    if cfg is not None and sharded_loading(cfg) is not None:
        from launcher.models.build import build_base_model

        from transformers.integrations import deepspeed as hf_deepspeed

        # While the policy's HfDeepSpeedConfig is registered, transformers would build this one partitioned too.
        registered = hf_deepspeed._hf_deepspeed_config_weak_ref
        rng = torch.get_rng_state()
        hf_deepspeed._hf_deepspeed_config_weak_ref = None
        try:
            ref = build_base_model(cfg, tokenizer, attn_implementation, dtype or torch.float32)
        finally:
            hf_deepspeed._hf_deepspeed_config_weak_ref = registered
            torch.set_rng_state(rng)
        return ref.to(device).eval().requires_grad_(False)
    return copy.deepcopy(model).to(device).eval().requires_grad_(False)


def reference_logps(scorer: nn.Module, ref_scorer: Optional[nn.Module],
                    adapters_off: bool) -> Callable[[dict], torch.Tensor]:
    """batch -> the reference's log-probs (whatever ``scorer``'s first output is: per row for DPO/KTO, per
    completion token for GRPO/PPO), without gradients: a frozen copy's ``ref_scorer`` when there is one, else the
    policy's own ``scorer`` with its LoRA adapters switched off for that forward (``adapters_off``: the base model
    is the reference) or, for full fine-tuning without a copy, as it is (only while precomputing, before the
    policy has moved)."""
    if ref_scorer is not None:
        return torch.no_grad()(lambda batch: ref_scorer(**batch)[0])

    @torch.no_grad()
    def policy_as_reference(batch):
        if adapters_off:
            with scorer.model.disable_adapter():
                return scorer(**batch)[0]
        return scorer(**batch)[0]

    return policy_as_reference


def reference_scorer(cfg, scorer: nn.Module, ref_model: Optional[nn.Module]) -> Callable[[dict], torch.Tensor]:
    """batch -> the reference's summed log-probs per row. ``scorer``: the policy's unwrapped SequenceLogProbs."""
    ref_scorer = SequenceLogProbs(ref_model, cfg.train.loss_chunk_size) if ref_model is not None else None
    return reference_logps(scorer, ref_scorer, adapters_off=cfg.method.finetuning == "lora")


def describe_reference(cfg, ref_model: Optional[nn.Module], precomputed: bool, uses_reference: bool = True) -> str:
    """What the log says the reference is."""
    if not uses_reference:
        return "none (reference-free)"
    if precomputed:
        return "log-probs precomputed once"
    if ref_model is None and cfg.method.finetuning == "lora":
        return "base with adapters disabled"
    return "frozen copy"


@torch.no_grad()
def precompute_reference_logps(rows: list, collate: Callable[[list], dict], reference: Callable[[dict], torch.Tensor],
                               scorer: nn.Module, dist, micro_batch_size: int, collective: bool, width: int) -> None:
    """Score ``rows`` with the reference once; each row keeps ``ref_logps``, the ``width`` values its collated
    batch gives it (a pair: chosen, rejected), in the batch's order (all rows' first values, then the second).
    Every rank scores its share (sharded engines: as many forwards on every rank, fillers not counted) and the
    values are summed over ranks. ``rows`` must be a list: rows of the memory-mapped store are made afresh on
    each access, so values written into them would not stay."""
    from launcher.training.probes import ScoringProgress

    scorer.eval()
    values = torch.zeros(len(rows), width, dtype=torch.float64, device=dist.device)
    batches = eval_batches(len(rows), dist.rank, dist.world_size, micro_batch_size)
    plan = forwards_for(batches, collective, dist.device)
    progress = ScoringProgress(f"reference log-probs: {len(rows)} rows", len(plan), 1, dist.is_main)
    for idx, counted in plan:
        batch = to_device(collate([rows[i] for i in idx]), dist.device)
        ref = reference(batch).double()
        if counted:
            for k in range(width):
                values[idx, k] = ref[k * len(idx): (k + 1) * len(idx)]
        progress.update()
    progress.close()
    all_reduce_sum(values)  # each rank filled its share
    for row, v in zip(rows, values.tolist()):
        row["ref_logps"] = tuple(v)
    scorer.train()
