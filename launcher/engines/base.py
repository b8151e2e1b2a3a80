"""What every engine shares (the model they wrap is built in launcher.engines.model_build).

The loop talks to an engine only: ``module(**batch)`` runs the objective's loss module (wrapped for the
parallelism), then ``backward``, ``step``, the checkpoint methods and ``save_final``. Each engine states its
strategy in its class docstring: where parameters, gradients and optimizer state live, and in what dtype.
The precision policy is ``launcher.engines.precision`` (fp32 master weights everywhere; the matmuls in the
requested low precision on a GPU), decided once and handed to every engine.

Also here: ``forward_is_collective`` (sharded engines: every rank must run the same number of forwards),
``inference_context()`` (forward through ``model`` on every rank, for logits or generation) and ``report()``
(what really happened, written into summary.json).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from launcher.config.schema import Config, lora_init_converted
from launcher.engines.distributed import DistInfo
from launcher.engines.precision import Precision, resolve_precision
from launcher.errors import ConfigError
from launcher.files import apply_umask
from launcher.models.tokenizers import save_tokenizer
from launcher.paths import LORA_INIT_DIR


LossFactory = Callable[[nn.Module, Config], nn.Module]
"""(model, cfg) -> the module an engine wraps (DDP/FSDP/DeepSpeed) and calls as ``module(**batch)``."""

WRAPPER_PREFIX = "model."
"""Keys of a state dict taken from the loss wrapper: ``model.`` + the HF model's own keys."""


def strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The HF model's own keys from a state dict of the loss wrapper (which holds the model as ``model``)."""
    return {k[len(WRAPPER_PREFIX):]: v for k, v in state.items() if k.startswith(WRAPPER_PREFIX)}


def require_checkpoint_kind(directory: Path, subdir: str, engine: str) -> None:
    """A sharded engine resumes only from what it wrote itself (its shards live in ``subdir``)."""
    if not (Path(directory) / subdir).is_dir():
        raise ConfigError(f"run.resume: {directory} holds no {engine} checkpoint; it was written by another"
                          " parallelism. Resume with the parallelism that wrote it, or run.resume=never")


class Engine:
    """What every engine shares: a scheduler for ``lr``, a wrapped ``module`` to switch between train and
    eval, clip -> step -> schedule -> zero_grad for engines that own a torch optimizer, and the final save."""

    name = "engine"
    forward_is_collective = False
    cfg: Config
    dist: DistInfo
    model: nn.Module
    module: nn.Module
    precision: Precision

    def _global_grad_norm(self, norm: torch.Tensor) -> float:
        """Hook: the norm as one number for the whole model (sharded engines gather theirs)."""
        return float(norm)

    scaler = None
    """torch.amp GradScaler (fp16 compute: launcher.engines.precision.make_grad_scaler), or None."""

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.cfg.train.max_grad_norm if self.cfg.train.max_grad_norm > 0 else float("inf")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        grad_norm = self._global_grad_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        else:
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

    # ------------------------------------------------------------------ final model

    def full_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """Collective. Rank 0 gets the full weights to save (LoRA: the trainable adapter), others {};
        None: the unwrapped model on rank 0 holds them whole already."""
        return None

    def save_final(self, directory: Path, tokenizer) -> None:
        """Collective. Rank 0 writes the HF model (or the PEFT adapter) and the tokenizer into ``directory``."""
        state = self.full_state_dict()
        if not self.dist.is_main:
            return
        kwargs = {}
        if self.cfg.method.finetuning == "lora" and lora_init_converted(self.cfg.method.lora):
            # PiSSA/OLoRA: saved as a plain LoRA adapter (rank 2r) of the unchanged base, as peft documents
            kwargs["path_initial_model_for_weight_conversion"] = str(Path(directory).parent / LORA_INIT_DIR)
        if state is None:
            self.model.save_pretrained(directory, safe_serialization=True, **kwargs)
        else:
            if not state:
                raise RuntimeError("gathering the final weights gave an empty state dict; nothing to save")
            self.model.save_pretrained(directory, state_dict=state, safe_serialization=True, **kwargs)
        save_tokenizer(tokenizer, directory)  # reloaded and compared: predict/chat/export tokenize as training did
        apply_umask(directory)  # safetensors writes 0600


def build_engine(cfg: Config, model: nn.Module, dist_info: DistInfo, total_steps: int,
                 loss_module: LossFactory, precision: Optional[Precision] = None) -> Engine:
    """loss_module: what ``engine.module`` wraps, built from the (device-placed) model: the objective's loss
    (launcher.training.objectives). precision: the run's policy (default: from ``cfg.model.dtype`` and the device)."""
    precision = precision or resolve_precision(cfg.model.dtype, dist_info.device, cfg.method.pure_bf16)
    strategy = cfg.parallelism.strategy
    if strategy == "ddp":
        from launcher.engines.ddp import DDPEngine

        return DDPEngine(cfg, model, dist_info, total_steps, loss_module, precision)
    if strategy == "deepspeed":
        from launcher.engines.deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(cfg, model, dist_info, total_steps, loss_module, precision)
    if strategy == "fsdp":
        from launcher.engines.fsdp import FSDPEngine

        return FSDPEngine(cfg, model, dist_info, total_steps, loss_module, precision)
    raise NotImplementedError(f"parallelism.strategy={strategy} is not available; use ddp, deepspeed or fsdp")

