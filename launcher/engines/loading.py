"""Loading a model that no rank holds whole: build on the meta device, shard (FSDP2), then fill each rank's shard.

Why our own and not ``from_pretrained``: transformers loads FSDP models through accelerate's
``cpu_ram_efficient_loading`` (FSDP1: rank 0 holds the whole model, then ``sync_module_states`` broadcasts it),
and has no path for FSDP2 DTensors. We do what torchtitan / torchtune do (shared/docs/anchors.md):

- ``build_meta_model``: the HF model (and LoRA on it) on the meta device: no memory, no random numbers drawn.
- the FSDP engine applies ``fully_shard`` to the meta model, then calls ``materialize``:
  ``to_empty`` allocates this rank's shards only; a pretrained base is read by every rank **from the
  safetensors, only the bytes of the rows of its own shard** (``SafetensorsReader``: plain reads, no
  collective, no rank ever reads a tensor it does not own; the node's page cache holds the file once).
  Chosen over "rank 0 reads and broadcasts": no rank holds more than its shard, and the read is spread over the
  ranks instead of being serialized through rank 0.
- random init, and whatever the checkpoint lacks, run the model's own ``_init_weights`` in transformers' order
  (``smart_apply``: children before parents) on a full-size temporary of one module's parameters at a time, and
  keep this rank's slice: the same random numbers in the same order as the plain single-process build, so every
  world size starts from the bits DDP starts from (tests/parallel compares their losses).
- LoRA: adapters are created empty (peft's ``low_cpu_mem_usage``) and initialized here in module order after
  the base, on every path (``init_lora``), so sharded and plain runs draw the same numbers.

Peak memory per rank while loading: its fp32 shard, plus one full fp32 temporary of the largest tensor (while
initializing; the embedding), plus the bf16 rows being copied in.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFERRED_ATTR = "_launcher_deferred_weights"
"""Attribute of a meta-device model: the ``DeferredWeights`` that say where its weights come from."""


@dataclass
class DeferredWeights:
    folder: Optional[Path]
    """Local HF folder with safetensors to read the base from; None: random init."""
    rng_state: torch.Tensor
    """torch's CPU RNG state at the point the plain build would have initialized the weights."""
    lora: bool
    save_base_to: Optional[Path] = None
    """LoRA on a random-init base: where rank 0 writes the base once it exists (streamed, shard by shard)."""
    tokenizer: object = None


def deferred_weights(model: nn.Module) -> Optional[DeferredWeights]:
    return getattr(model, DEFERRED_ATTR, None)


# ---------------------------------------------------------------------------------------------- files


def safetensors_folder(name_or_path: str) -> Optional[Path]:
    """The local folder holding ``name_or_path``'s safetensors (a hub id: its snapshot in the HF cache, fetched
    if needed), or None when there are none (a .bin checkpoint: the plain loader handles it)."""
    path = Path(name_or_path)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            patterns = ["*.json", "*.safetensors"]
            try:  # the cached snapshot, without asking the network (the preflight checked it is cached)
                path = Path(snapshot_download(name_or_path, allow_patterns=patterns, local_files_only=True))
            except Exception:
                path = Path(snapshot_download(name_or_path, allow_patterns=patterns))
        except Exception as exc:  # offline, gated, ...: the plain loader reports it its own way
            log.info("sharded loading: no local safetensors for %s (%s); loading the plain way", name_or_path, exc)
            return None
    if (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file():
        return path
    return None


def checkpoint_index(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: folder / v for k, v in weight_map.items()}
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        return {k: folder / "model.safetensors" for k in f.keys()}


SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


class SafetensorsReader:
    """Reads one tensor, or a range of its rows, from a safetensors file with plain reads (no memory map).

    Why not ``safe_open(...).get_slice``: it maps the file, and every page it touches then counts in this
    process's RSS while the file is open (each rank of a node would count the file again, although the
    kernel holds it once). A plain read goes through the page cache and leaves only the tensor asked for.
    The format is 8 bytes of header length, a JSON header of dtype/shape/data_offsets, then the data."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            self.header = json.loads(f.read(length))
        self.header.pop("__metadata__", None)
        self.data_start = 8 + length

    def keys(self):
        return self.header.keys()

    def shape(self, key: str) -> list[int]:
        return list(self.header[key]["shape"])

    def read(self, key: str, rows: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """The tensor ``key``, or its rows [start, stop) along dim 0."""
        entry = self.header[key]
        dtype, shape = SAFETENSORS_DTYPES[entry["dtype"]], list(entry["shape"])
        begin, end = entry["data_offsets"]
        if rows is not None and shape:
            row_bytes = (end - begin) // max(shape[0], 1)
            begin, end = begin + rows[0] * row_bytes, begin + rows[1] * row_bytes
            shape = [rows[1] - rows[0], *shape[1:]]
        buffer = bytearray(end - begin)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            f.readinto(buffer)
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)


def checkpoint_key(name: str) -> str:
    """The HF checkpoint key of a parameter of the (possibly PEFT-wrapped) base model."""
    for wrapper in (".base_layer", ".original_module"):
        name = name.replace(wrapper, "")
    if ".modules_to_save." in name:
        head, tail = name.split(".modules_to_save.", 1)
        name = head + "." + tail.split(".", 1)[1]
    return name


# ---------------------------------------------------------------------------------------------- building


def build_meta_model(cfg, tokenizer, attn_implementation: str, dtype: torch.dtype) -> tuple[nn.Module, Optional[Path]]:
    """The HF model of ``cfg.model`` on the meta device, tied as ``from_pretrained`` ties it, plus the folder to
    read its weights from (None: random init). Nothing is allocated and no random number is drawn."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers import initialization

    from launcher.models.build import head_config_kwargs, random_init_config
    from launcher.models.reward import class_for_method

    m = cfg.model
    folder = None
    if m.name_or_path:
        folder = safetensors_folder(m.name_or_path)
        if folder is None:
            return None, None
        config = AutoConfig.from_pretrained(folder, trust_remote_code=m.trust_remote_code,
                                            **head_config_kwargs(cfg, tokenizer))
    else:
        config = random_init_config(cfg, tokenizer)
    with torch.device("meta"), initialization.no_init_weights():
        model = class_for_method(cfg, AutoModelForCausalLM).from_config(
            config, attn_implementation=attn_implementation, dtype=dtype,
            trust_remote_code=m.trust_remote_code)
    model.tie_weights()
    if not model.can_generate():  # a reward model (launcher.models.reward)
        pass
    elif folder is not None and (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    elif folder is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, folder


# ---------------------------------------------------------------------------------------------- materializing


def local_rows(param) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(local shape, global offset) of this rank's shard of a DTensor parameter."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    return compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)


def _local(param) -> torch.Tensor:
    return param.to_local() if hasattr(param, "to_local") else param.data


def copy_into_shard(param, full: torch.Tensor) -> None:
    """This rank's slice of ``full`` (the whole tensor) into its shard of ``param``."""
    shape, offset = local_rows(param)
    if 0 in shape:
        return
    index = tuple(slice(o, o + s) for o, s in zip(offset, shape))
    with torch.no_grad():
        _local(param).copy_(full[index])


KEEP, WRITE, IF_WRITTEN = "keep", "write", "if_written"
"""What ``full_size`` does with a temporary on exit: nothing (the parameter holds its value already: loaded,
tied, or not this pass's to set; the temporary is marked initialized so transformers' init skips it), write its
slice into the shard, or write it only if the init function wrote it (a child's parameter that the parent's
``_init_weights`` may set: its temporary starts as NaN)."""


@contextlib.contextmanager
def full_size(owners: list[tuple[nn.Module, str, str]]) -> Iterator[None]:
    """Swap each (module, attr, mode) parameter for a full-size CPU temporary while inside; on exit put the
    parameter back and, by ``mode`` (KEEP / WRITE / IF_WRITTEN), write this rank's slice of the temporary."""
    swapped = []
    for module, attr, mode in owners:
        param = module._parameters[attr]
        temp = nn.Parameter(torch.empty(param.shape, dtype=param.dtype), requires_grad=param.requires_grad)
        if mode == KEEP:
            temp._is_hf_initialized = True
        elif mode == IF_WRITTEN:
            temp.data.fill_(float("nan"))
        module._parameters[attr] = temp
        swapped.append((module, attr, param, temp, mode))
    try:
        yield
    finally:
        for module, attr, param, temp, mode in swapped:
            module._parameters[attr] = param
            if mode == WRITE or (mode == IF_WRITTEN and not bool(temp.detach().isnan().all())):
                copy_into_shard(param, temp.detach())


def _direct_params(module: nn.Module, prefix: str) -> list[tuple[nn.Module, str, str, bool]]:
    """The parameters ``_init_weights(module)`` may touch: its own (True) and its direct children's (False)."""
    out = [(module, n, prefix + n, True) for n, p in module._parameters.items() if p is not None]
    for cname, child in module.named_children():
        out += [(child, n, f"{prefix}{cname}.{n}", False) for n, p in child._parameters.items() if p is not None]
    return out


@torch.no_grad()
def initialize_sharded(model: nn.Module, done: set[str]) -> None:
    """transformers' ``initialize_weights`` on a sharded model: every parameter not in ``done`` (qualified
    names) and every buffer, module by module in ``smart_apply`` order, each on a full-size temporary."""
    from transformers import PreTrainedModel
    from transformers.initialization import guard_torch_init_functions

    custom = model.is_custom_code() if hasattr(model, "is_custom_code") else False
    # The plain build marks the tied copies initialized: they are never drawn on their own.
    tied = tied_names(model)

    def visit(module: nn.Module, fn, prefix: str) -> None:
        for cname, child in module.named_children():
            visit(child, child._initialize_weights if isinstance(child, PreTrainedModel) else fn, f"{prefix}{cname}.")
        owners = []
        for m, a, q, own in _direct_params(module, prefix):
            if q in done or q in tied:
                owners.append((m, a, KEEP))
            else:
                owners.append((m, a, WRITE if own else IF_WRITTEN))
        with full_size(owners):
            if takes_custom_flag(fn):
                fn(module, custom)
            else:  # transformers releases before the is_custom_code argument
                fn(module)

    with guard_torch_init_functions():
        visit(model, model._initialize_weights, "")


def takes_custom_flag(fn) -> bool:
    import inspect

    return len(inspect.signature(fn).parameters) >= 2


def tied_names(model: nn.Module) -> set[str]:
    """Qualified names of parameters that are tied to (the same tensor as) another one."""
    return set(getattr(model, "all_tied_weights_keys", None) or {})


def lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def lora_init_mode(model: nn.Module, adapter: str):
    return model.peft_config[adapter].init_lora_weights


@torch.no_grad()
def init_lora(model: nn.Module, sharded: bool = False) -> None:
    """Initialize the adapters that peft created empty (``low_cpu_mem_usage``), layer by layer in module order:
    in place on the base layer's device (plain), or on full-size temporaries whose slices fill the shards."""
    for _, layer in lora_layers(model):
        for adapter in list(layer.lora_A.keys()) + list(layer.lora_embedding_A.keys()):
            params = [(m, a, WRITE) for m in layer.modules()
                      for a, p in m._parameters.items() if p is not None and not _is_base(layer, m)]
            if not sharded:
                base = layer.get_base_layer().weight
                for module, attr, _ in params:
                    p = module._parameters[attr]
                    if p.is_meta:
                        module._parameters[attr] = nn.Parameter(
                            torch.empty(p.shape, dtype=base.dtype if base.dtype.is_floating_point else p.dtype,
                                        device=base.device), requires_grad=p.requires_grad)
                layer.reset_lora_parameters(adapter, lora_init_mode(model, adapter))
                continue
            with full_size(params):
                layer.reset_lora_parameters(adapter, lora_init_mode(model, adapter))


def _is_base(layer, module) -> bool:
    base = layer.get_base_layer()
    return any(module is m for m in base.modules())


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (LoRA layers in place), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def load_shards(model: nn.Module, folder: Path) -> set[str]:
    """Every rank reads the rows of its own shard of each parameter from the safetensors (plain reads of just
    those bytes). Returns the qualified names loaded; raises when the checkpoint's names do not match."""
    index = checkpoint_index(folder)
    tied = tied_names(model)
    wanted = [(name, p) for name, p in model.named_parameters() if "lora_" not in name]
    loaded, missing = set(), []
    readers: dict[Path, SafetensorsReader] = {}

    def reader(key: str) -> SafetensorsReader:
        if index[key] not in readers:
            readers[index[key]] = SafetensorsReader(index[key])
        return readers[index[key]]

    for name, param in wanted:
        key = checkpoint_key(name)
        if key not in index:
            if name not in tied:
                missing.append(key)
            continue
        if reader(key).shape(key) != list(param.shape):
            raise RuntimeError(f"{folder}: {key} has shape {reader(key).shape(key)}, the model expects"
                               f" {list(param.shape)}")
        shape, offset = local_rows(param) if hasattr(param, "device_mesh") else (tuple(param.shape), (0,) * param.ndim)
        if 0 not in shape:
            rows = (offset[0], offset[0] + shape[0]) if param.ndim else None
            piece = reader(key).read(key, rows)
            index_ = tuple(slice(o, o + s) for o, s in zip(offset[1:], shape[1:]))
            _local(param).copy_(piece[(slice(None), *index_)] if index_ else piece)
        loaded.add(name)
    for name, buf in model.named_buffers():
        key = checkpoint_key(name)
        if key in index:
            buf.copy_(reader(key).read(key))
    if missing and len(missing) * 2 > len(wanted):
        raise RuntimeError(f"{folder}: {len(missing)} of {len(wanted)} parameters have no tensor of that name in"
                           f" the checkpoint (e.g. {missing[:3]}); its keys need transformers' conversion:"
                           " use parallelism=ddp or zero3 for this model")
    if missing:
        log.warning("sharded loading: %d parameters not in %s, initialized like from_pretrained does: %s",
                    len(missing), folder, missing[:5])
    return loaded


def materialize(model: nn.Module, device: torch.device) -> None:
    """Collective when saving a random-init base. Fill a sharded meta model: allocate this rank's shards on
    ``device``, read them from the checkpoint or initialize them, then the LoRA adapters."""
    deferred: DeferredWeights = deferred_weights(model)
    model.to_empty(device=device)
    base = hf_model(model)
    done: set[str] = set()
    if deferred.folder is not None:
        done = load_shards(base, deferred.folder)
    # The plain build draws its random numbers here: same state, same order, same numbers.
    torch.set_rng_state(deferred.rng_state)
    lora_names = {n for n, _ in base.named_parameters() if "lora_" in n}
    initialize_sharded(base, done | lora_names)
    if deferred.save_base_to is not None:
        from launcher.engines.streaming import save_sharded_hf

        save_sharded_hf(base, deferred.save_base_to, skip=lora_names, tokenizer=deferred.tokenizer)
    if deferred.lora:
        init_lora(model, sharded=True)
    delattr(model, DEFERRED_ATTR)
