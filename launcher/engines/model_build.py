"""Building the model for a parallelism: the one path from the config to the model an engine wraps.

``sharded_loading`` decides how (no rank builds the whole model when the strategy shards its parameters);
``build_model`` takes that path: the plain build (launcher.models.build), QLoRA's quantized base
(launcher.models.quantize), the FSDP model on the meta device whose shards the engine fills after sharding
(launcher.engines.loading), or ZeRO-3's partitioned build (launcher.engines.deepspeed); then the VL freezing,
LoRA on top with its adapters initialized after the base the same way on every path, freeze tuning and
gradient checkpointing.

torch (and what imports it) is imported inside the functions: the preflight's load estimate asks
``sharded_loading`` without it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from launcher.config.parallelism import parallelism_of
from launcher.config.schema import ADAPTER_KINDS, Config, LoraConfig, OftConfig, lora_init_converted
from launcher.errors import ConfigError
from launcher.files import apply_umask
from launcher.models.quantize import build_quantized_base
from launcher.models.tokenizers import save_tokenizer
from launcher.models.audio import audio_info, audio_lora_targets, freeze_audio_parts, is_audio_model
from launcher.models.vision import freeze_vision_parts, is_vision_model, lora_target_modules, vision_info
from launcher.paths import LORA_INIT_DIR

if TYPE_CHECKING:
    from torch import nn

    from launcher.engines.distributed import DistInfo
    from launcher.engines.precision import Precision

log = logging.getLogger(__name__)


def sharded_loading(cfg: Config) -> Optional[str]:
    """How the model is built without a full copy per rank: "meta" (FSDP: built on the meta device, each rank
    fills only its shards after sharding), "zero3" (DeepSpeed ZeRO-3: partitioned as it is constructed or
    loaded), or None (every rank builds the whole model: DDP, ZeRO-1/2; DoRA, PiSSA and OLoRA, whose adapters
    need the base weights when created; QLoRA; VL models). Read by the model build (below) and the preflight's load estimate."""
    p = cfg.parallelism
    lora = cfg.method.lora if cfg.method.finetuning == "lora" else None
    # DoRA, PiSSA and OLoRA need the base weights when the adapters are created (gaussian is peft's init); QLoRA loads its own quantized
    # base; VL models keep the plain build (their vision tower and processor files are not in the meta path yet).
    if lora is not None and (lora.use_dora or lora.quantize or lora.init != "default"):
        return None
    if cfg.method.llama_pro.expand:  # block expansion copies whole built layers (launcher.models.llama_pro)
        return None
    if vision_info(cfg.model) is not None or audio_info(cfg.model) is not None:
        return None
    row = parallelism_of(p)
    if row.strategy == "fsdp":
        return "meta"
    return "zero3" if row.zero3 else None


def build_model(cfg: Config, tokenizer, dist_info: DistInfo, attn_implementation: str, precision: Precision,
                save_base_to: Optional[Path] = None) -> nn.Module:
    """The one path from the config to the model an engine wraps: the base (hub id, folder, or random init) with
    parameters in ``precision.param_dtype``, LoRA applied for ``finetuning=lora``, all but the chosen layers
    frozen for ``finetuning=freeze``, gradient checkpointing on.

    No rank builds the whole model when the strategy shards it (``sharded_loading``): under FSDP the model comes
    back on the meta device with the note of where its weights come from (the engine fills its shards after
    ``fully_shard``, launcher.engines.loading); under ZeRO-3 it is partitioned while constructed or loaded
    (launcher.engines.deepspeed.build_zero3_model).

    ``save_base_to``: LoRA on a random-init base keeps the base there (rank 0), since it exists nowhere else and a
    saved adapter must be reloadable.
    """
    from launcher.models.build import build_base_model, freeze_layers

    lora = cfg.method.finetuning == "lora"
    adapter = cfg.method.finetuning in ADAPTER_KINDS
    save_random_base = save_base_to is not None and cfg.model.name_or_path is None and adapter
    mode = sharded_loading(cfg)
    model = None
    if mode == "meta":
        model = build_meta(cfg, tokenizer, attn_implementation, precision, save_base_to if save_random_base else None)
        if model is not None and dist_info.is_main:
            log.info("model: built on the meta device; each rank fills only its FSDP shards after sharding (%s)",
                     "read from the safetensors" if cfg.model.name_or_path else "random init, seeded")
    if model is None:
        if lora and cfg.method.lora.quantize:
            model = build_quantized_base(cfg, attn_implementation, dist_info.device)  # QLoRA: a frozen 4/8-bit base
        elif mode == "zero3":
            from launcher.engines.deepspeed import build_zero3_model

            model = build_zero3_model(cfg, tokenizer, dist_info, attn_implementation, precision)
        else:
            model = build_base_model(cfg, tokenizer, attn_implementation, precision.param_dtype)
        freeze_for_config(model, cfg, dist_info)
        if cfg.method.llama_pro.expand:
            from launcher.models.llama_pro import expand_blocks

            added = expand_blocks(model, cfg.method.llama_pro.expand)
            if dist_info.is_main:
                log.info("LLaMA-Pro: %d identity blocks inserted (layers %s); %d layers now", len(added),
                         ", ".join(map(str, added)), len(model.get_decoder().layers))
        if save_random_base:
            if mode == "zero3":
                from launcher.engines.deepspeed import save_zero3_base

                save_zero3_base(model, save_base_to, tokenizer, dist_info.is_main)
            elif dist_info.is_main:
                model.save_pretrained(save_base_to, safe_serialization=True)
                save_tokenizer(tokenizer, save_base_to)
                apply_umask(save_base_to)
        if lora:
            model = apply_lora(model, cfg.method.lora)
            if lora_init_converted(cfg.method.lora) and save_base_to is not None and dist_info.is_main:
                save_initial_adapter(model, Path(save_base_to).parent / LORA_INIT_DIR)
        elif cfg.method.finetuning == "oft":
            model = apply_oft(model, cfg.method.oft)
    if cfg.method.finetuning == "freeze":
        freeze_layers(model, cfg.method.freeze)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs(cfg))
        if adapter or cfg.method.finetuning == "freeze":
            # Reentrant checkpointing passes gradients only through inputs that require them; with a frozen
            # embedding, the first checkpointed layer's input must be made to.
            model.enable_input_require_grads()
    return model


def freeze_for_config(model: nn.Module, cfg: Config, dist_info: DistInfo) -> None:
    """VL models: freeze the vision tower / projector / language model as model.freeze_* say (LLaMA-Factory's
    defaults: tower and projector frozen). LoRA freezes the whole base anyway; this matters for full tuning."""
    if not is_vision_model(model) and not is_audio_model(model):
        return
    m = cfg.model
    freeze = freeze_audio_parts if is_audio_model(model) else freeze_vision_parts  # the audio tower: vision_tower's keys
    frozen = freeze(model, m.freeze_vision_tower, m.freeze_projector, m.freeze_language_model)
    if not any(p.requires_grad for p in model.parameters()) and cfg.method.finetuning == "full":
        raise ConfigError("model.freeze_*: every part of the model is frozen; set model.freeze_language_model=false"
                          " (or unfreeze the vision tower / projector)")
    if dist_info.is_main and frozen:
        log.info("frozen: %s", ", ".join(frozen))


def build_meta(cfg: Config, tokenizer, attn_implementation: str, precision: Precision,
               save_base_to: Optional[Path]) -> Optional[nn.Module]:
    """The FSDP model on the meta device with its ``DeferredWeights``; None when its weights are not in
    safetensors (the plain build then loads them)."""
    import torch

    from launcher.engines.loading import DEFERRED_ATTR, DeferredWeights, build_meta_model

    model, folder = build_meta_model(cfg, tokenizer, attn_implementation, precision.param_dtype)
    if model is None:
        return None
    if folder is None:
        torch.manual_seed(cfg.train.seed)  # as the plain random init seeds right before drawing
    deferred = DeferredWeights(folder=folder, rng_state=torch.get_rng_state(), lora=cfg.method.finetuning == "lora",
                               save_base_to=save_base_to, tokenizer=tokenizer)
    if deferred.lora:
        model = apply_lora(model, cfg.method.lora, initialize=False)
    setattr(model, DEFERRED_ATTR, deferred)
    return model


def apply_lora(model, lora: LoraConfig, initialize: bool = True):
    """LoRA on ``model``. The adapters are created empty and initialized layer by layer after injection
    (``launcher.engines.loading.init_lora``), so a sharded model, whose adapters are initialized only once its
    shards exist, draws the same random numbers as a plain one. ``initialize=False``: leave them on the meta
    device for the sharded loader. DoRA's magnitude, PiSSA and OLoRA need the base weights at creation, and
    gaussian init is peft's: peft's own path."""
    from peft import get_peft_model

    from launcher.engines.loading import init_lora
    from launcher.models.build import lora_peft_config

    from launcher.models.reward import is_sequence_scorer

    config = lora_peft_config(lora, "SEQ_CLS" if is_sequence_scorer(model) else "CAUSAL_LM")
    if is_vision_model(model):  # the language model's linear layers unless the vision tower is asked for
        config.target_modules = lora_target_modules(model, lora.target_modules, lora.include_vision)
    elif is_audio_model(model):  # likewise: the audio tower only when asked for
        config.target_modules = audio_lora_targets(model, lora.target_modules, lora.include_vision)
    if lora.use_dora or lora.init != "default" or lora.quantize:  # from the base weights, or peft's own init
        return get_peft_model(model, config)
    model = get_peft_model(model, config, low_cpu_mem_usage=True)
    if initialize:
        init_lora(model)
    return model


def checkpointing_kwargs(cfg: Config) -> dict:
    """torch.utils.checkpoint's options for gradient checkpointing: non-reentrant unless the config says otherwise
    (train.gradient_checkpointing_kwargs; LLaMA-Factory's use_reentrant_gc)."""
    return {"use_reentrant": False, **cfg.train.gradient_checkpointing_kwargs}


def apply_oft(model, oft: OftConfig):
    """OFT adapters on ``model`` (peft's OFTConfig, LLaMA-Factory's finetuning_type: oft): all linear layers of the
    language model (or ``oft.target_modules``), each weight rotated by learned orthogonal blocks."""
    from peft import OFTConfig, get_peft_model

    from launcher.models.reward import is_sequence_scorer

    target = oft.target_modules
    if is_vision_model(model):
        target = lora_target_modules(model, target, False)
    config = OFTConfig(task_type="SEQ_CLS" if is_sequence_scorer(model) else "CAUSAL_LM", r=oft.r,
                       oft_block_size=oft.block_size, target_modules=target, module_dropout=oft.module_dropout,
                       modules_to_save=oft.modules_to_save)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            raise ConfigError(f"method.oft: {exc}".splitlines()[0]) from None
    # peft moves a block size that does not divide a layer's input size to the nearest one that does, per layer.
    adjusted = sorted({str(w.message) for w in caught if "Adjusted" in str(w.message)})
    if adjusted:
        log.warning("method.oft: peft adjusted the blocks of some layers (their input size is not a multiple): %s",
                    "; ".join(adjusted))
    return model


def save_initial_adapter(model, directory: Path) -> None:
    """PiSSA/OLoRA: the adapter as initialized, which the final save subtracts to convert the trained adapter into
    a plain LoRA adapter for the unchanged base (peft's path_initial_model_for_weight_conversion). Saved with
    init_lora_weights=True, as peft asks, so that loading it does not decompose the residual base again."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        model.save_pretrained(directory, safe_serialization=True)
    finally:
        config.init_lora_weights = init
