"""Training engines: how a model is wrapped for a parallelism, stepped, checkpointed and saved.

The loop talks to an engine only: ``module(**batch)`` gives a summed loss, ``backward``, ``step`` and the
checkpoint/save methods. DDP lives here; DeepSpeed ZeRO (launcher/engines/deepspeed.py) and FSDP2
(launcher/engines/fsdp.py) follow the same interface, plus ``forward_is_collective`` (every rank must run the
same number of forwards), ``inference_context()`` (forward through ``model`` on every rank) and ``report()``
(what really happened, written into summary.json).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from launcher.config.schema import Config
from launcher.engines.distributed import DistInfo
from launcher.training.loss import CausalLMLoss
from launcher.training.optim import build_optimizer, build_scheduler


LossFactory = Callable[[nn.Module, Config], nn.Module]
"""(model, cfg) -> the module an engine wraps (DDP/FSDP/DeepSpeed) and calls as ``module(**batch)``."""


def default_loss_module(model: nn.Module, cfg: Config) -> nn.Module:
    """SFT: the summed token cross-entropy at trained positions."""
    # ZeRO-3 gathers a weight only inside its module's forward: there the head must be called, not read.
    zero3 = cfg.parallelism.strategy == "deepspeed" and cfg.parallelism.zero_stage == 3
    return CausalLMLoss(model, cfg.train.loss_chunk_size, fused=not zero3)


class Engine:
    """What every engine shares: a scheduler for ``lr``, a wrapped ``module`` to switch between train and
    eval, and (for engines that own a torch optimizer) clip -> step -> schedule -> zero_grad."""

    forward_is_collective = False

    def _global_grad_norm(self, norm: torch.Tensor) -> float:
        """Hook: the norm as one number for the whole model (sharded engines gather theirs)."""
        return float(norm)

    def step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.cfg.train.max_grad_norm if self.cfg.train.max_grad_norm > 0 else float("inf")
        grad_norm = self._global_grad_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def inference_context(self):
        return contextlib.nullcontext()


class DDPEngine(Engine):
    """Every rank holds the whole model; DDP all-reduces (averages) gradients on the last micro-batch."""

    name = "ddp"

    def __init__(self, cfg: Config, model: nn.Module, dist_info: DistInfo, total_steps: int,
                 loss_module: Optional[LossFactory] = None):
        self.cfg = cfg
        self.dist = dist_info
        self.model = model.to(dist_info.device)
        loss_module = (loss_module or default_loss_module)(self.model, cfg)
        if dist_info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
            self.module = DistributedDataParallel(loss_module, device_ids=device_ids)
        else:
            self.module = loss_module
        self.optimizer = build_optimizer(self.model, cfg.method)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, total_steps)

    def accumulation_context(self, is_last_micro_batch: bool):
        if self.dist.world_size > 1 and not is_last_micro_batch:
            return self.module.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def report(self) -> dict[str, Any]:
        return {"engine": "ddp" if self.dist.world_size > 1 else "single", "world_size": self.dist.world_size}

    # ------------------------------------------------------------------ checkpoints

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        missing = self.model.load_state_dict(state["model"], strict=False)
        unexpected = [k for k in missing.unexpected_keys]
        if unexpected:
            raise RuntimeError(f"checkpoint has parameters this model lacks: {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        """Rank 0 writes one file; every rank's RNG state is saved by the caller."""
        if self.dist.is_main:
            torch.save({**self.checkpoint_state(), **extra}, Path(directory) / "state.pt")

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        state = torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=False)
        self.load_checkpoint_state(state)
        return state

    def save_final(self, directory: Path, tokenizer) -> None:
        if self.dist.is_main:
            self.model.save_pretrained(directory, safe_serialization=True)
            tokenizer.save_pretrained(directory)


def build_engine(cfg: Config, model: nn.Module, dist_info: DistInfo, total_steps: int,
                 loss_module: Optional[LossFactory] = None):
    """loss_module: what ``engine.module`` wraps, built from the (device-placed) model; default CausalLMLoss.
    DPO passes one that returns per-sequence log-probs instead of a summed loss."""
    strategy = cfg.parallelism.strategy
    if strategy == "ddp":
        return DDPEngine(cfg, model, dist_info, total_steps, loss_module)
    if strategy == "deepspeed":
        from launcher.engines.deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(cfg, model, dist_info, total_steps, loss_module)
    if strategy == "fsdp":
        from launcher.engines.fsdp import FSDPEngine

        return FSDPEngine(cfg, model, dist_info, total_steps, loss_module)
    raise NotImplementedError(f"parallelism.strategy={strategy} is not available; use ddp, deepspeed or fsdp")
