"""FSDP2 (``torch.distributed.fsdp.fully_shard``) behind the engine interface of launcher/engines/base.py.

How the model is sharded: one FSDP unit per decoder layer (the classes the model names in
``_no_split_modules``), and the loss wrapper as root, which holds embeddings, final norm and LM head (tied
embeddings must share one unit). ``fsdp_offload`` keeps shards, gradients and optimizer state on the CPU
(CPUOffloadPolicy); on a GPU parameters are gathered in bf16 and gradients reduced in fp32.

FSDP is applied directly, not through accelerate or the HF Trainer, which on CPU silently fall back to
DDP (the team notes in shared/docs/cpu-cluster-facts.md). After wrapping, every parameter is checked to be a DTensor sharded over
the world; ``report()`` records the count, and the run fails rather than claim FSDP that did not happen.

Gradients: FSDP's reduce-scatter averages over ranks like DDP, so the loop's token normalization holds.
Checkpoints: torch.distributed.checkpoint, one file per rank in the checkpoint dir (each rank its shard).
The final model (full fine-tuning): HF safetensors shards written one gathered parameter at a time.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from launcher.config.schema import Config
from launcher.engines.distributed import DistInfo, ensure_process_group
from launcher.engines.base import Engine, LossFactory, require_checkpoint_kind, strip_wrapper_prefix
from launcher.engines.checkpoint_layout import DEEPSPEED_TAG, FSDP_SHARDS_DIR, STATE_FILE
from launcher.engines.loading import deferred_weights, materialize
from launcher.engines.optim import build_optimizer, build_scheduler
from launcher.engines.precision import Precision, make_grad_scaler

log = logging.getLogger(__name__)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks to shard one by one: modules whose class the model lists as never to split."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise RuntimeError(f"FSDP: found no decoder layers in {type(model).__name__} (_no_split_modules={names})")
    return layers


def count_sharded(module: nn.Module, world_size: int) -> tuple[int, int]:
    """(parameters that are DTensors sharded over ``world_size`` ranks, all parameters)."""
    from torch.distributed.tensor import DTensor, Shard

    total = sharded = 0
    for p in module.parameters():
        total += 1
        if isinstance(p, DTensor) and p.device_mesh.size() == world_size and any(
                isinstance(pl, Shard) for pl in p.placements):
            sharded += 1
    return sharded, total


class FSDPEngine(Engine):
    """FSDP2 per decoder layer + root; ``model`` is the HF/PEFT model whose parameters are now DTensors.

    Parameters, gradients and optimizer state sharded over ranks, fp32 master shards; when the precision policy
    computes in bf16 (a GPU) parameters are gathered in bf16 and gradients reduced in fp32 (MixedPrecisionPolicy);
    with offload the shards, gradients and optimizer state live in CPU memory. Checkpoint: DCP, every rank its shard.
    """

    name = "fsdp"
    forward_is_collective = True

    def __init__(self, cfg: Config, model: nn.Module, dist_info: DistInfo, total_steps: int,
                 loss_module: LossFactory, precision: Precision):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        self.cfg = cfg
        self.dist = dist_info
        self.lora = cfg.method.finetuning == "lora"
        self.offload = cfg.parallelism.offload
        device = dist_info.device
        ensure_process_group(device, cpu_offload=self.offload)
        self.mesh = init_device_mesh(device.type, (dist_info.world_size,))
        self.precision = precision
        self.bf16 = precision.bf16
        kwargs: dict[str, Any] = {"mesh": self.mesh}
        if precision.low_precision:  # bf16, or fp16 with the loss scaled (self.scaler)
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=precision.compute_dtype, reduce_dtype=torch.float32)
        deferred = deferred_weights(model) is not None
        if self.offload:
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
        elif not deferred:
            model = model.to(device)
        self.model = model
        self.loss_module = loss_module(model, cfg)
        layers = decoder_layers(model)
        for layer in layers:
            fully_shard(layer, **kwargs)
        fully_shard(self.loss_module, **kwargs)
        self.loaded_sharded = deferred
        if deferred:
            # Built on the meta device (launcher.engines.model_build.build_model): now each rank allocates and fills
            # only its own shards.
            materialize(model, torch.device("cpu") if self.offload else device)
        self.module = self.loss_module
        self.sharded_params, self.total_params = count_sharded(model, dist_info.world_size)
        if self.sharded_params != self.total_params:
            raise RuntimeError(f"FSDP: only {self.sharded_params} of {self.total_params} parameters are sharded")
        self.n_units = len(layers) + 1
        self.optimizer = build_optimizer(model, cfg.method)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, total_steps)
        self.scaler = make_grad_scaler(precision, sharded=True)
        if dist_info.is_main:
            log.info("fsdp: %d units (%d decoder layers + root), %d/%d parameters are DTensors sharded over %d"
                     " ranks%s%s", self.n_units, len(layers), self.sharded_params, self.total_params,
                     dist_info.world_size, ", CPU offload" if self.offload else "",
                     f", {precision.describe()}, fp32 reduce" if precision.low_precision else ", fp32")

    # ------------------------------------------------------------------ the step

    def accumulation_context(self, is_last_micro_batch: bool):
        # Like DDP's no_sync: accumulate unsharded gradients locally, reduce-scatter once on the last one.
        self.loss_module.set_requires_gradient_sync(is_last_micro_batch)
        return contextlib.nullcontext()

    def _global_grad_norm(self, norm) -> float:
        from torch.distributed.tensor import DTensor

        # The norm of DTensor gradients is itself a DTensor: make it the whole model's number on every rank.
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    @contextlib.contextmanager
    def inference_context(self):
        """Gather the root's weights so ``self.model(...)`` (logits, generate) works; collective."""
        from torch.distributed.fsdp import fully_shard

        # A forward through the inner model before any through the root would fix the wrong module as FSDP's
        # root (lazy init); make the loss wrapper the root first (idempotent).
        fully_shard.state(self.loss_module)._lazy_init()
        self.loss_module.unshard()
        try:
            yield
        finally:
            # A forward through the inner model (not the root) leaves each layer it gathered unsharded: the
            # whole model would stay gathered on every rank until the next training forward. Reshard them all.
            from torch.distributed.fsdp import FSDPModule

            for module in self.loss_module.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()

    def report(self) -> dict[str, Any]:
        return {"engine": "fsdp2", "world_size": self.dist.world_size, "fsdp_units": self.n_units,
                "sharded_params": self.sharded_params, "total_params": self.total_params,
                "offload": self.offload, "param_dtype": str(self.precision.compute_dtype).replace("torch.", ""),
                "loss_scaling": self.scaler is not None,
                "loaded_sharded": self.loaded_sharded}

    # ------------------------------------------------------------------ checkpoints

    def _options(self, **kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # LoRA: the frozen base is rebuilt identically (same seed, or the same hub weights); skip it.
        return StateDictOptions(ignore_frozen_params=self.lora, **kw)

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        """Collective. Each rank writes its shard of parameters and optimizer state (DCP), rank 0 the rest."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        directory = Path(directory)
        msd, osd = get_state_dict(self.loss_module, self.optimizer, options=self._options())
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(directory / FSDP_SHARDS_DIR))
        if self.dist.is_main:
            torch.save({"scheduler": self.scheduler.state_dict(), "engine": "fsdp", **extra,
                        **({"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {})},
                       directory / STATE_FILE)

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        directory = Path(directory)
        if (directory / DEEPSPEED_TAG).is_dir() and not (directory / FSDP_SHARDS_DIR).is_dir():
            self._load_zero3(directory / DEEPSPEED_TAG)  # resharded from ZeRO-3 (launcher.engines.reshard)
        else:
            require_checkpoint_kind(directory, FSDP_SHARDS_DIR, "FSDP")
            msd, osd = get_state_dict(self.loss_module, self.optimizer, options=self._options())
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=str(directory / FSDP_SHARDS_DIR))
            set_state_dict(self.loss_module, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optim"], options=self._options(strict=not self.lora))
        extra = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        if self.scaler is not None and "grad_scaler" in extra:
            self.scaler.load_state_dict(extra["grad_scaler"])
        return extra

    def _load_zero3(self, folder: Path) -> None:
        """Collective. A DeepSpeed ZeRO-3 checkpoint's fp32 weights and AdamW state, read whole on every rank
        (launcher.engines.zero_convert) and sharded over this world as a full state dict."""
        from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict, set_model_state_dict,
                                                             set_optimizer_state_dict)

        from launcher.engines.zero_convert import read_zero3_checkpoint

        tensors, steps, groups = read_zero3_checkpoint(folder)
        trainable = [n for n, p in self.loss_module.named_parameters() if p.requires_grad]
        missing = [n for n in trainable if n not in tensors]
        if missing:
            raise RuntimeError(f"the ZeRO-3 checkpoint in {folder} lacks {len(missing)} trained parameter(s) of this"
                               f" model ({', '.join(missing[:3])}); resume with the model that wrote it")
        full = self._options(full_state_dict=True, strict=False)
        set_model_state_dict(self.loss_module, {n: t["fp32"] for n, t in tensors.items()}, options=full)
        osd = get_optimizer_state_dict(self.loss_module, self.optimizer, options=self._options(full_state_dict=True))
        osd["state"] = {n: {"step": torch.tensor(float(steps[n])), "exp_avg": tensors[n]["exp_avg"],
                            "exp_avg_sq": tensors[n]["exp_avg_sq"]} for n in trainable}
        if [sorted(g["params"]) for g in osd["param_groups"]] != [sorted(g["names"]) for g in groups]:
            raise RuntimeError(f"the ZeRO-3 checkpoint in {folder} groups its parameters differently from this run's"
                               " optimizer (method.weight_decay, frozen modules); resume with the config that wrote it")
        for mine, theirs in zip(osd["param_groups"], groups):  # lr as scheduled at the checkpoint, and the rest
            mine.update({k: v for k, v in theirs.items() if k != "names" and k in mine})
        set_optimizer_state_dict(self.loss_module, self.optimizer, osd, options=self._options(full_state_dict=True))
        if self.dist.is_main:
            log.info("fsdp: loaded %d parameters and their AdamW state from the ZeRO-3 checkpoint %s", len(trainable),
                     folder.parent.name)

    # ------------------------------------------------------------------ final model

    def save_final(self, directory: Path, tokenizer) -> None:
        """Collective. A full fine-tune is written as HF safetensors shards one gathered parameter at a time
        (launcher.engines.streaming): rank 0 never holds the whole model, nor a bf16 copy of it. LoRA: the
        adapter, gathered whole (it is small)."""
        if self.lora:
            return super().save_final(directory, tokenizer)
        from launcher.engines.streaming import save_sharded_hf

        # Saved in the dtype it computed in, as DeepSpeed's bf16 mode saves.
        save_sharded_hf(self.model, directory, is_main=self.dist.is_main,
                        dtype=torch.bfloat16 if self.bf16 else None, tokenizer=tokenizer,
                        skip=getattr(self.model, "_keys_to_ignore_on_save", None) or ())  # as save_pretrained (PPO's value head)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective. Rank 0 gets full CPU tensors of the model (LoRA: the trainable adapter); others {}."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.loss_module, options=self._options(full_state_dict=True, cpu_offload=True))
        if not self.dist.is_main:
            return {}
        state = strip_wrapper_prefix(state)
        if self.bf16:  # saved in the dtype it computed in, as DeepSpeed's bf16 mode saves
            state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
        return state

