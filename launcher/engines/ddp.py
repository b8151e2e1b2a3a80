"""DDP (and a single process): the simplest strategy.

Parameters, gradients and optimizer state: whole on every rank, fp32. Compute: the precision policy's dtype
under autocast (the loop enters ``precision.autocast()``). Gradients: all-reduced (averaged) by DDP on the last
micro-batch of a step (``no_sync`` before). Checkpoint: rank 0 writes the trainable weights and the optimizer in
one file; final save: rank 0's model as it is.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from launcher.config.schema import Config
from launcher.engines.base import Engine, LossFactory
from launcher.engines.checkpoint_layout import STATE_FILE
from launcher.engines.distributed import DistInfo
from launcher.engines.library_optimizers import after_load
from launcher.engines.optim import build_optimizer, build_scheduler
from launcher.engines.precision import Precision, make_grad_scaler


class DDPEngine(Engine):
    name = "ddp"

    def __init__(self, cfg: Config, model: nn.Module, dist_info: DistInfo, total_steps: int,
                 loss_module: LossFactory, precision: Precision):
        self.cfg = cfg
        self.dist = dist_info
        self.precision = precision
        # A QLoRA base is placed on its GPU as it loads (bitsandbytes); moving quantized weights is refused.
        self.model = model if getattr(model, "is_quantized", False) else model.to(dist_info.device)
        loss_module = loss_module(self.model, cfg)
        if dist_info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
            self.module = DistributedDataParallel(loss_module, device_ids=device_ids)
        else:
            self.module = loss_module
        # What this run trains, named before the optimizer is built: BAdam turns requires_grad off for all but one
        # block while training, and a checkpoint must still hold every block it trained.
        self.trained_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg.method)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, total_steps)
        self.scaler = make_grad_scaler(precision, sharded=False)

    @property
    def loss_module(self) -> nn.Module:
        """The objective's module without the DDP wrapper (for forwards that must not sync gradients)."""
        return self.module.module if hasattr(self.module, "no_sync") else self.module

    def accumulation_context(self, is_last_micro_batch: bool):
        if self.dist.world_size > 1 and not is_last_micro_batch:
            return self.module.no_sync()
        return contextlib.nullcontext()

    def report(self) -> dict[str, Any]:
        return {"engine": "ddp" if self.dist.world_size > 1 else "single", "world_size": self.dist.world_size,
                "loss_scaling": self.scaler is not None}

    # ------------------------------------------------------------------ checkpoints

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        trained = set(self.trained_names)
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if n in trained}

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        """Rank 0 writes one file; every rank's RNG state is saved by the caller."""
        if self.dist.is_main:
            state = {"model": self.trainable_state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), **extra}
            if self.scaler is not None:
                state["grad_scaler"] = self.scaler.state_dict()
            torch.save(state, Path(directory) / STATE_FILE)

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
        result = self.model.load_state_dict(state["model"], strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"checkpoint has parameters this model lacks: {result.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        after_load(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        return state
