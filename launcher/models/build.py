"""Models: a hub id or local folder, or a random-init model of a real architecture; LoRA on top.

Also where the attention implementation is chosen (precision: launcher.engines.precision; device:
launcher.engines.distributed).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional

import torch

from launcher.config.schema import Config, LoraConfig
from launcher.errors import ConfigError

log = logging.getLogger(__name__)


def flash_attn_usable(device: torch.device) -> bool:
    if device.type != "cuda" or importlib.util.find_spec("flash_attn") is None:
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def choose_attn_implementation(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "flash_attention_2" if flash_attn_usable(device) else "sdpa"
    if requested == "flash_attention_2" and not flash_attn_usable(device):
        raise ConfigError(
            "model.attn_implementation: flash_attention_2 needs a CUDA GPU (Ampere or newer) and the flash-attn"
            " package (pip install 'launcher[gpu]'); use sdpa"
        )
    return requested


def auto_model_class(cfg: Config):
    """AutoModelForImageTextToText for Qwen2-VL/2.5-VL/3-VL, AutoModelForCausalLM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from launcher.models.vision import vision_info

    return AutoModelForImageTextToText if vision_info(cfg.model) else AutoModelForCausalLM


def build_base_model(cfg: Config, tokenizer, attn_implementation: str, dtype: torch.dtype):
    from transformers import AutoConfig

    from launcher.models.vision import check_vision_config

    m = cfg.model
    auto_class = auto_model_class(cfg)
    if m.name_or_path:
        return auto_class.from_pretrained(
            m.name_or_path, dtype=dtype, attn_implementation=attn_implementation,
            trust_remote_code=m.trust_remote_code,
        )
    check_vision_config(m)
    try:
        config = AutoConfig.for_model(m.arch, **m.config)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.arch / model.config: {exc}") from None
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    # A VL config keeps the text settings in text_config (the top level forwards only some of them).
    for target in {id(c): c for c in (config, getattr(config, "text_config", config))}.values():
        target.vocab_size = len(tokenizer)
        target.pad_token_id = tokenizer.pad_token_id
        target.eos_token_id = tokenizer.eos_token_id
        target.bos_token_id = bos
    # Same seed, same init on every rank, so DDP starts from identical weights without a broadcast.
    torch.manual_seed(cfg.train.seed)
    model = random_init_model(config, attn_implementation, dtype, auto_class)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def random_init_model(config, attn_implementation: str, dtype: torch.dtype, auto_class=None):
    """``AutoModelForCausalLM.from_config``, each weight drawn once.

    ``from_config`` lets torch's layer constructors initialize every weight and then overwrites them all with
    the model's own ``_init_weights``; with tied embeddings it also draws the output matrix that tying then
    discards. For a 150k vocabulary that is three passes of ~40M random numbers where one is kept (0.8 s ->
    0.3 s of the start-up, tiny reference model). Construct with init off (transformers' own switch, which it
    uses under ZeRO-3), then run the model's initialization once, skipping what is about to be tied.
    """
    from transformers import AutoModelForCausalLM
    from transformers import initialization

    auto_class = auto_class or AutoModelForCausalLM
    with initialization.no_init_weights():
        model = auto_class.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    for name in getattr(model, "all_tied_weights_keys", None) or {}:
        model.get_parameter(name)._is_hf_initialized = True  # overwritten by tie_weights() below
    model.init_weights()  # initialize_weights() + tie_weights()
    return model


def lora_peft_config(lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    return PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        modules_to_save=lora.modules_to_save,
    )


def apply_lora(model, lora: LoraConfig):
    from peft import get_peft_model

    from launcher.models.vision import is_vision_model, lora_target_modules

    config = lora_peft_config(lora)
    if is_vision_model(model):  # the language model's linear layers unless the vision tower is asked for
        config.target_modules = lora_target_modules(model, lora.target_modules, lora.include_vision)
    return get_peft_model(model, config)


def point_adapter_at_base(adapter_dir: Path, base_dir: Path) -> None:
    """Make a saved adapter name the base saved beside it (a random-init base exists nowhere else), so that
    standard PEFT loading finds it."""
    import json

    path = Path(adapter_dir) / "adapter_config.json"
    adapter_cfg = json.loads(path.read_text())
    adapter_cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    path.write_text(json.dumps(adapter_cfg, indent=2))


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def load_trained_model(run_dir: Path, device: Optional[torch.device] = None, merge: bool = False):
    """Reload the final model of a run dir: a full HF model, or base + PEFT adapter."""
    from launcher.models.tokenizers import load_saved_tokenizer
    from launcher.models.vision import auto_class_for

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    tokenizer = load_saved_tokenizer(model_dir)
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        import json

        base = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        if not Path(base).exists() and (run_dir / "base_model").exists():
            base = str(run_dir / "base_model")  # the run dir was moved after training
        model = auto_class_for(base).from_pretrained(base)
        model = PeftModel.from_pretrained(model, model_dir)
        if merge:
            model = model.merge_and_unload()
    else:
        model = auto_class_for(model_dir).from_pretrained(model_dir)
    if device is not None:
        model.to(device)
    return model, tokenizer
