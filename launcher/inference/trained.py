"""A run's model as the after-training tools need it: final or at a checkpoint, adapter or merged, or its base.

``load_trained_model`` reloads ``RUN_DIR/model`` (a full HF model, or base + PEFT adapter); ``load_run_model`` adds
the other two sources:
- a checkpoint ``RUN_DIR/checkpoints/step-N`` of any engine, rebuilt on the run's base model from the resolved
  ``config.yaml``: DDP's ``state.pt`` holds the trainable parameters; FSDP's DCP shards are read straight into
  the rebuilt model's tensors (no second copy); DeepSpeed's ZeRO shards are consolidated tensor by tensor
  (``zero_to_fp32`` in lazy mode). LoRA under either: the adapter's tensors only, on the rebuilt base;
- the base model alone (``--base`` in chat), for comparing answers before and after training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from launcher.config.schema import Config, load_run_config
from launcher.engines import checkpoint_layout as layout
from launcher.engines.model_build import apply_lora
from launcher.errors import ConfigError, LauncherError
from launcher.models.build import build_base_model
from launcher.models.tokenizers import load_saved_tokenizer, load_tokenizer
from launcher.paths import BASE_MODEL_DIR, CONFIG_FILE, MODEL_DIR


def load_trained_model(run_dir: Path, device: Optional[torch.device] = None, merge: bool = False):
    """Reload the final model of a run dir: a full HF model, or base + PEFT adapter."""
    from launcher.models.vision import auto_class_for

    run_dir = Path(run_dir)
    model_dir = run_dir / MODEL_DIR
    tokenizer = load_saved_tokenizer(model_dir)
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        base = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        if not Path(base).exists() and (run_dir / BASE_MODEL_DIR).exists():
            base = str(run_dir / BASE_MODEL_DIR)  # the run dir was moved after training
        model = auto_class_for(base).from_pretrained(base)
        model = PeftModel.from_pretrained(model, model_dir)
        if merge:
            model = model.merge_and_unload()
    else:
        model = auto_class_for(model_dir).from_pretrained(model_dir)
    if device is not None:
        model.to(device)
    return model, tokenizer


def check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise LauncherError(f"{run_dir}: not a run dir (no config.yaml); pass the folder `launcher train` printed")
    return run_dir


def resolve_checkpoint(run_dir: Path, name: str) -> Path:
    """``step-N``, ``N``, ``step-0000020`` or a path -> a complete checkpoint dir of the run."""
    path = Path(name)
    if not path.is_dir():
        digits = name[len("step-"):] if name.startswith("step-") else name
        if not digits.isdigit():
            raise ConfigError(f"--checkpoint: '{name}' is not step-N, a step number, or a checkpoint folder")
        path = layout.checkpoint_root(run_dir) / layout.step_dir_name(int(digits))
    if not (path / layout.COMPLETE).is_file() or not (path / layout.STATE_FILE).is_file():
        found = ", ".join(p.name for p in layout.complete_checkpoints(run_dir)) or "none"
        raise ConfigError(f"--checkpoint: {path} is not a complete checkpoint (complete ones in this run: {found})")
    return path


def run_tokenizer(run_dir: Path, cfg: Config):
    """The tokenizer the run saved beside its model, else the one its config names."""
    if (run_dir / MODEL_DIR / "tokenizer_config.json").is_file():
        tokenizer = load_saved_tokenizer(run_dir / MODEL_DIR)
    elif (run_dir / BASE_MODEL_DIR / "tokenizer_config.json").is_file():
        tokenizer = load_saved_tokenizer(run_dir / BASE_MODEL_DIR)
    else:
        tokenizer = load_tokenizer(cfg.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(run_dir: Path, cfg: Config, tokenizer):
    """The model training started from: the hub/local base, the saved random-init base, or a rebuild.

    A full fine-tune of a random-init model saved no base; ``build_base_model`` seeds with
    ``train.seed`` before init, so rebuilding it from the config gives the same weights.
    """
    from launcher.models.vision import auto_class_for

    if (run_dir / BASE_MODEL_DIR / "config.json").is_file():
        return auto_class_for(run_dir / BASE_MODEL_DIR).from_pretrained(run_dir / BASE_MODEL_DIR)
    return build_base_model(cfg, tokenizer, "sdpa", torch.float32)


def load_checkpoint_model(run_dir: Path, cfg: Config, checkpoint: Path, tokenizer, merge: bool):
    model = load_base(run_dir, cfg, tokenizer)
    if cfg.method.llama_pro.expand and not (run_dir / BASE_MODEL_DIR / "config.json").is_file():
        from launcher.models.llama_pro import expand_blocks

        expand_blocks(model, cfg.method.llama_pro.expand)  # the checkpoint holds the expanded model
    if cfg.method.finetuning == "lora":
        model = apply_lora(model, cfg.method.lora)
    elif cfg.method.finetuning == "oft":
        from launcher.engines.model_build import apply_oft

        model = apply_oft(model, cfg.method.oft)
    state = torch.load(checkpoint / layout.STATE_FILE, map_location="cpu", weights_only=False)
    if "model" in state:
        state = state["model"]
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise LauncherError(f"{checkpoint}: parameters this run's model lacks: {result.unexpected_keys[:5]}")
        loaded = set(state)
    elif state.get("engine") == "fsdp":
        loaded = load_dcp_weights(model, checkpoint)
    elif state.get("engine") == "deepspeed":
        loaded = load_zero_weights(model, checkpoint, lora=cfg.method.finetuning in ("lora", "oft"))
    else:
        raise LauncherError(f"{checkpoint}: state.pt holds no weights and names no engine whose shards we read"
                            f" (engine: {state.get('engine')!r}); use the run's final model (drop --checkpoint)")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - loaded)
    if missing:
        raise LauncherError(f"{checkpoint}: trainable parameters missing from the checkpoint: {missing[:5]}")
    if cfg.method.finetuning in ("lora", "oft") and merge:
        model = model.merge_and_unload()
    return model


def load_dcp_weights(model, checkpoint: Path) -> set:
    """FSDP's DCP shards -> the model's own tensors, in place, in one process (no process group).

    The shards hold the loss wrapper's state under "model." ("model.model." + the HF keys); the optimizer
    state beside them is never read. Returns the HF keys loaded."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(checkpoint / layout.FSDP_SHARDS_DIR))
    stored = {k for k, m in reader.read_metadata().state_dict_metadata.items() if isinstance(m, TensorStorageMetadata)}
    prefix = "model.model."  # the checkpoint's "model" entry, then the loss wrapper's attribute
    own = model.state_dict()
    unknown = sorted(k[len(prefix):] for k in stored if k.startswith(prefix) and k[len(prefix):] not in own)
    if unknown:
        raise LauncherError(f"{checkpoint}: parameters this run's model lacks: {unknown[:5]}")
    target = {prefix + k: t for k, t in own.items() if prefix + k in stored}
    dcp.load(target, storage_reader=reader, no_dist=True)  # writes into the model's tensors
    return {k[len(prefix):] for k in target}


def load_zero_weights(model, checkpoint: Path, lora: bool) -> set:
    """DeepSpeed's ZeRO-2/3 shards -> the model, one consolidated fp32 tensor at a time (lazy mode).

    LoRA checkpoints hold the trainable adapter only (exclude_frozen_parameters). Returns the HF keys loaded."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from launcher.engines.base import WRAPPER_PREFIX

    lazy = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=layout.DEEPSPEED_TAG,
                                                    exclude_frozen_parameters=lora, lazy_mode=True)
    own = model.state_dict()
    names = {k: k[len(WRAPPER_PREFIX):] for k in lazy if k.startswith(WRAPPER_PREFIX)}
    unknown = sorted(n for n in names.values() if n not in own)
    if unknown:
        raise LauncherError(f"{checkpoint}: parameters this run's model lacks: {unknown[:5]}")
    with torch.no_grad():
        for key, name in names.items():
            own[name].copy_(lazy[key].contiguous())
    return set(names.values())


def split_checkpoint_path(path: Path) -> tuple[Path, Optional[str]]:
    """``RUN_DIR/checkpoints/step-N`` -> (RUN_DIR, that folder); a run dir -> (it, None)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / layout.COMPLETE).is_file() \
            and (path.parent.parent / CONFIG_FILE).is_file():
        return path.parent.parent, str(path)
    return path, None


def load_run_model(run_dir: Path, *, checkpoint: Optional[str] = None, merge: bool = False, base: bool = False,
                   device: Optional[torch.device] = None):
    """(model, tokenizer, cfg, source): source names what was loaded, for logs and export metadata.
    ``run_dir`` may be a checkpoint folder ``RUN_DIR/checkpoints/step-N`` itself."""
    run_dir, from_path = split_checkpoint_path(run_dir)
    if from_path and checkpoint and resolve_checkpoint(run_dir, checkpoint).resolve() != Path(from_path).resolve():
        raise ConfigError(f"--checkpoint {checkpoint} and the checkpoint folder {from_path}: give one of them")
    checkpoint = checkpoint or from_path
    run_dir = check_run_dir(run_dir)
    cfg = load_run_config(run_dir)
    if base:
        tokenizer = run_tokenizer(run_dir, cfg)
        model, source = load_base(run_dir, cfg, tokenizer), "base model"
    elif checkpoint:
        path = resolve_checkpoint(run_dir, checkpoint)
        tokenizer = run_tokenizer(run_dir, cfg)
        model, source = load_checkpoint_model(run_dir, cfg, path, tokenizer, merge), f"checkpoint {path.name}"
    else:
        if not (run_dir / MODEL_DIR / "config.json").is_file() and not (run_dir / MODEL_DIR / "adapter_config.json").is_file():
            found = ", ".join(p.name for p in layout.complete_checkpoints(run_dir))
            hint = f"; pick a checkpoint with --checkpoint ({found})" if found else ""
            raise LauncherError(f"{run_dir}: the run has no final model (no {MODEL_DIR}/){hint}")
        model, tokenizer = load_trained_model(run_dir, merge=merge)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        source = "final model"
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer, cfg, source


def adapter_info(run_dir: Path) -> Optional[dict]:
    path = Path(run_dir) / MODEL_DIR / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else None
