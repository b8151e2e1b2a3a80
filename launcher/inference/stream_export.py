"""Export a sharded checkpoint (FSDP's DCP shards, DeepSpeed's ZeRO shards; full or LoRA) tensor by tensor.

Why not load the model and ``save_pretrained`` it: that holds the whole fp32 model in the process, then a cast
copy, then the state dict transformers builds to shard. Here the model exists only on the meta device (its
names, shapes, config); each tensor is read alone from the checkpoint (DCP: one key per ``dcp.load``;
DeepSpeed: zero_to_fp32's lazy mode, which consolidates one tensor on access), LoRA is merged into its base
tensor (read from the base's memory-mapped safetensors) as it passes, cast, and appended to the current
safetensors file (launcher.engines.streaming). Peak: one fp32 tensor, its cast, and one output file's buffer.

DDP checkpoints hold the trainable weights in one ``torch.save`` file (loaded whole anyway) and DoRA needs the
base layer's norm: those take the plain path (``stream_export`` returns None).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch

from launcher.config.schema import Config
from launcher.errors import LauncherError


def _lora_scale(cfg: Config) -> float:
    lora = cfg.method.lora
    return lora.alpha / (math.sqrt(lora.r) if lora.use_rslora else lora.r)


def checkpoint_reader(checkpoint: Path, engine: str, lora: bool) -> tuple[set, Callable[[str, tuple], torch.Tensor]]:
    """(the HF-side keys the checkpoint holds, key -> its fp32 tensor) for an FSDP or DeepSpeed checkpoint.
    Keys are the PEFT/HF model's own (the loss wrapper's ``model.`` prefix removed)."""
    from launcher.engines.base import WRAPPER_PREFIX

    if engine == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        from launcher.engines.fsdp import SHARDED_DIR

        reader = dcp.FileSystemReader(str(checkpoint / SHARDED_DIR))
        meta = reader.read_metadata().state_dict_metadata
        prefix = "model." + WRAPPER_PREFIX  # the checkpoint's "model" entry, then the loss wrapper's attribute
        keys = {k[len(prefix):] for k, m in meta.items() if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)}

        def read(key: str, shape: tuple) -> torch.Tensor:
            md = meta[prefix + key]
            t = torch.empty(tuple(md.size), dtype=md.properties.dtype)
            dcp.load({prefix + key: t}, storage_reader=dcp.FileSystemReader(str(checkpoint / SHARDED_DIR)),
                     no_dist=True)
            return t

        return keys, read
    if engine == "deepspeed":
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        from launcher.engines.deepspeed import DS_TAG

        lazy = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=DS_TAG, exclude_frozen_parameters=lora,
                                                        lazy_mode=True)
        keys = {k[len(WRAPPER_PREFIX):] for k in lazy if k.startswith(WRAPPER_PREFIX)}
        return keys, lambda key, shape: lazy[WRAPPER_PREFIX + key].contiguous()
    raise LauncherError(f"{checkpoint}: engine {engine!r} has no sharded checkpoint to stream")


def stream_export(run_dir: Path, cfg: Config, checkpoint: Path, tokenizer, out: Path, dtype: Optional[torch.dtype],
                  max_shard_bytes: int) -> Optional[dict]:
    """Write the HF model of ``checkpoint`` into ``out`` tensor by tensor; returns {"parameters", "dtype"}, or
    None when this checkpoint kind takes the plain path."""
    from launcher.engines.loading import build_meta_model, checkpoint_index
    from launcher.engines.streaming import ShardedSafetensorsWriter
    from launcher.paths import BASE_MODEL_DIR, CHECKPOINT_STATE_FILE

    state = torch.load(checkpoint / CHECKPOINT_STATE_FILE, map_location="cpu", weights_only=False)
    engine = state.get("engine")
    lora = cfg.method.finetuning == "lora"
    if "model" in state or engine not in ("fsdp", "deepspeed") or (lora and cfg.method.lora.use_dora):
        return None
    del state
    base_dir = run_dir / BASE_MODEL_DIR
    meta_cfg = cfg
    if (base_dir / "config.json").is_file():  # the random-init base saved beside a LoRA run
        from dataclasses import replace

        meta_cfg = replace(cfg, model=replace(cfg.model, name_or_path=str(base_dir)))
    model, folder = build_meta_model(meta_cfg, tokenizer, "sdpa", torch.float32)
    if model is None:
        return None
    keys, read = checkpoint_reader(checkpoint, engine, lora)
    base_index = checkpoint_index(folder) if (lora and folder is not None) else {}
    if lora and not base_index:
        return None  # no base safetensors to merge into: the plain path rebuilds the base
    adapters = {}
    if lora:
        # Adapter matrices, keyed by the HF module they adapt ("model.layers.0.self_attn.q_proj").
        prefix = "base_model.model."
        for key in keys:
            if ".lora_" in key or ".modules_to_save." in key:
                adapters[key[len(prefix):] if key.startswith(prefix) else key] = read(key, ())
    scale = _lora_scale(cfg) if lora else 0.0
    writer = ShardedSafetensorsWriter(out, max_shard_bytes)
    handles: dict = {}
    count = 0
    try:
        for name, param in model.named_parameters():  # tied parameters once, as save_pretrained writes them
            if lora:
                module = name.rsplit(".", 1)[0]
                saved = adapters.get(f"{module}.modules_to_save.default.{name.rsplit('.', 1)[1]}")
                if saved is not None:
                    tensor = saved
                else:
                    if name not in base_index:
                        raise LauncherError(f"{checkpoint}: {name} is in neither the checkpoint nor the base model")
                    if base_index[name] not in handles:
                        from safetensors import safe_open

                        handles[base_index[name]] = safe_open(base_index[name], "pt")
                    tensor = handles[base_index[name]].get_tensor(name).float()
                    a = adapters.get(f"{module}.lora_A.default.weight")
                    b = adapters.get(f"{module}.lora_B.default.weight")
                    if a is not None and b is not None and name.endswith(".weight"):
                        tensor += scale * (b.float() @ a.float())
            else:
                if name not in keys:
                    raise LauncherError(f"{checkpoint}: the checkpoint lacks {name}; it was written by another model")
                tensor = read(name, tuple(param.shape))
            if tuple(tensor.shape) != tuple(param.shape):
                raise LauncherError(f"{checkpoint}: {name} has shape {tuple(tensor.shape)}, the model {tuple(param.shape)}")
            writer.add(name, tensor.to(dtype) if dtype is not None else tensor)
            count += tensor.numel()
            del tensor
        writer.close()
    finally:
        handles.clear()
    written_dtype = dtype or torch.float32
    model.config.dtype = written_dtype
    model.config.use_cache = True
    gen = model.generation_config
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    model.config.save_pretrained(out)
    gen.save_pretrained(out)
    return {"parameters": count, "dtype": str(written_dtype).replace("torch.", "")}
