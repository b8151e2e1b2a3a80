"""Writing an HF model folder tensor by tensor from a sharded model, never the whole model in one process.

Why our own: ``save_pretrained(state_dict=...)`` wants the whole state dict in memory on rank 0 (FSDP's full
state dict: the fp32 model, plus a bf16 copy when saving in bf16). Here each parameter is gathered alone
(``DTensor.full_tensor()``, a collective every rank joins in the same order), cast, and appended to the
current safetensors shard; a shard is written when it reaches ``max_shard_bytes``. Rank 0's peak: one shard
being filled plus one full parameter. The layout is the one ``save_pretrained`` writes (``model.safetensors``
or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``), so ``from_pretrained`` reads it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from launcher.files import apply_umask

DEFAULT_SHARD_BYTES = 2 << 30
"""Per-file size of the written safetensors (transformers' default for save_pretrained is 5 GB; smaller
files keep rank 0's buffer small)."""


class ShardedSafetensorsWriter:
    """Accumulates (name, tensor) pairs into safetensors files of at most ``max_shard_bytes`` each."""

    def __init__(self, directory: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.current: dict[str, torch.Tensor] = {}
        self.current_bytes = 0
        self.files: list[tuple[str, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.current and self.current_bytes + size > self.max_shard_bytes:
            self._flush()
        self.current[name] = tensor.contiguous()
        self.current_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        name = f"part-{len(self.files):05d}.safetensors"
        save_file(self.current, str(self.directory / name), metadata={"format": "pt"})
        self.files.append((name, list(self.current)))
        self.current, self.current_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, name the files as save_pretrained does, write the index; the file names."""
        if self.current or not self.files:
            self._flush()
        n = len(self.files)
        if n == 1:
            final = ["model.safetensors"]
        else:
            final = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        weight_map = {}
        for (tmp, keys), name in zip(self.files, final):
            (self.directory / tmp).rename(self.directory / name)
            weight_map.update({k: name for k in keys})
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return final


def save_sharded_hf(model: nn.Module, directory: Path, is_main: Optional[bool] = None, skip: Iterable[str] = (),
                    dtype: Optional[torch.dtype] = None, tokenizer=None,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Collective. Rank 0 writes the transformers ``model`` (parameters may be FSDP2 DTensors) as an HF folder:
    weights one gathered parameter at a time (cast to ``dtype`` when given), config, generation config,
    tokenizer. ``skip``: parameter names not to write (LoRA adapters when saving their base)."""
    import torch.distributed as dist

    from launcher.engines.loading import checkpoint_key
    from launcher.models.tokenizers import save_tokenizer

    if is_main is None:
        is_main = not dist.is_initialized() or dist.get_rank() == 0
    skip = set(skip)
    writer = ShardedSafetensorsWriter(directory, max_shard_bytes) if is_main else None
    for name, param in model.named_parameters():  # tied parameters once, under the name that owns them
        if name in skip:
            continue
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        if writer is not None:
            t = full.detach()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            writer.add(checkpoint_key(name), t.cpu())
        del full
    if writer is None:
        return
    for name, buf in model.named_buffers():
        # Persistent buffers only (what state_dict saves); rotary tables are recomputed on load.
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if attr not in module._non_persistent_buffers_set and buf is not None:
            writer.add(checkpoint_key(name), buf.detach().cpu())
    writer.close()
    config = model.config
    if dtype is not None:
        config.dtype = dtype
    config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(directory)
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)
    apply_umask(directory)
