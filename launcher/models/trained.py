"""A run's model as the after-training tools need it: final or at a checkpoint, adapter or merged, or its base.

``launcher.models.build.load_trained_model`` reloads ``RUN_DIR/model``. This adds the other two sources:
- a checkpoint ``RUN_DIR/checkpoints/step-N`` (its ``state.pt`` holds the trainable parameters only), rebuilt
  on the run's base model from the resolved ``config.yaml``;
- the base model alone (``--base`` in chat), for comparing answers before and after training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from launcher.config.schema import Config, load_run_config
from launcher.errors import ConfigError, LauncherError
from launcher.paths import BASE_MODEL_DIR, MODEL_DIR
from launcher.training import checkpoint as ckpt
from launcher.models.build import apply_lora, build_base_model, load_trained_model
from launcher.models.tokenizers import load_tokenizer



def check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise LauncherError(f"{run_dir}: not a run dir (no config.yaml); pass the folder `launcher train` printed")
    return run_dir


def resolve_checkpoint(run_dir: Path, name: str) -> Path:
    """``step-N``, ``N``, ``step-0000020`` or a path -> a complete checkpoint dir of the run."""
    path = Path(name)
    if not path.is_dir():
        digits = name[len("step-"):] if name.startswith("step-") else name
        if not digits.isdigit():
            raise ConfigError(f"--checkpoint: '{name}' is not step-N, a step number, or a checkpoint folder")
        path = ckpt.checkpoint_root(run_dir) / ckpt.step_dir_name(int(digits))
    if not (path / ckpt.COMPLETE).is_file() or not (path / "state.pt").is_file():
        found = ", ".join(p.name for p in ckpt.complete_checkpoints(run_dir)) or "none"
        raise ConfigError(f"--checkpoint: {path} is not a complete checkpoint (complete ones in this run: {found})")
    return path


def run_tokenizer(run_dir: Path, cfg: Config):
    """The tokenizer the run saved beside its model, else the one its config names."""
    from transformers import AutoTokenizer

    if (run_dir / MODEL_DIR / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(run_dir / MODEL_DIR)
    elif (run_dir / BASE_MODEL_DIR / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(run_dir / BASE_MODEL_DIR)
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
    if cfg.method.finetuning == "lora":
        model = apply_lora(model, cfg.method.lora)
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
    if "model" not in state:
        # FSDP (torch.distributed.checkpoint) and DeepSpeed keep the weights sharded beside state.pt.
        engine = state.get("engine", "a sharded engine")
        raise LauncherError(
            f"{checkpoint}: written by {engine}, whose weights are sharded; loading them here is not supported yet."
            " Use the run's final model (drop --checkpoint)"
        )
    state = state["model"]
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise LauncherError(f"{checkpoint}: parameters this run's model lacks: {result.unexpected_keys[:5]}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(state))
    if missing:
        raise LauncherError(f"{checkpoint}: trainable parameters missing from the checkpoint: {missing[:5]}")
    if cfg.method.finetuning == "lora" and merge:
        model = model.merge_and_unload()
    return model


def load_run_model(run_dir: Path, *, checkpoint: Optional[str] = None, merge: bool = False, base: bool = False,
                   device: Optional[torch.device] = None):
    """(model, tokenizer, cfg, source): source names what was loaded, for logs and export metadata."""
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
            found = ", ".join(p.name for p in ckpt.complete_checkpoints(run_dir))
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
