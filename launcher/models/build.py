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


def random_init_config(cfg: Config, tokenizer):
    """The transformers config of a random-init model: ``model.arch`` + ``model.config``, sized to the tokenizer."""
    from transformers import AutoConfig

    m = cfg.model
    try:
        config = AutoConfig.for_model(m.arch, **m.config)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.arch / model.config: {exc}") from None
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    config.bos_token_id = bos
    return config


def build_base_model(cfg: Config, tokenizer, attn_implementation: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    m = cfg.model
    if m.name_or_path:
        return AutoModelForCausalLM.from_pretrained(
            m.name_or_path, dtype=dtype, attn_implementation=attn_implementation,
            trust_remote_code=m.trust_remote_code,
        )
    config = random_init_config(cfg, tokenizer)
    # Same seed, same init on every rank, so DDP starts from identical weights without a broadcast.
    torch.manual_seed(cfg.train.seed)
    model = random_init_model(config, attn_implementation, dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def random_init_model(config, attn_implementation: str, dtype: torch.dtype):
    """``AutoModelForCausalLM.from_config``, each weight drawn once.

    ``from_config`` lets torch's layer constructors initialize every weight and then overwrites them all with
    the model's own ``_init_weights``; with tied embeddings it also draws the output matrix that tying then
    discards. For a 150k vocabulary that is three passes of ~40M random numbers where one is kept (0.8 s ->
    0.3 s of the start-up, tiny reference model). Construct with init off (transformers' own switch, which it
    uses under ZeRO-3), then run the model's initialization once, skipping what is about to be tied.
    """
    from transformers import AutoModelForCausalLM
    from transformers import initialization

    with initialization.no_init_weights():
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
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


def apply_lora(model, lora: LoraConfig, initialize: bool = True):
    """LoRA on ``model``. The adapters are created empty and initialized layer by layer after injection
    (``launcher.engines.loading.init_lora``), so a sharded model, whose adapters are initialized only once its
    shards exist, draws the same random numbers as a plain one. ``initialize=False``: leave them on the meta
    device for the sharded loader. DoRA's magnitude needs the base weights at creation: peft's own path."""
    from peft import get_peft_model

    if lora.use_dora:
        return get_peft_model(model, lora_peft_config(lora))
    model = get_peft_model(model, lora_peft_config(lora), low_cpu_mem_usage=True)
    if initialize:
        from launcher.engines.loading import init_lora

        init_lora(model)
    return model


def point_adapter_at_base(adapter_dir: Path, base_dir: Path) -> None:
    """Make a saved adapter name the base saved beside it (a random-init base exists nowhere else), so that
    standard PEFT loading finds it."""
    import json

    path = Path(adapter_dir) / "adapter_config.json"
    adapter_cfg = json.loads(path.read_text())
    adapter_cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    path.write_text(json.dumps(adapter_cfg, indent=2))


def count_parameters(model) -> tuple[int, int]:
    # A ZeRO-3 parameter partitioned at build time holds an empty tensor; ds_numel is its real size.
    def numel(p) -> int:
        return getattr(p, "ds_numel", None) or p.numel()

    total = sum(numel(p) for p in model.parameters())
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return total, trainable


def load_trained_model(run_dir: Path, device: Optional[torch.device] = None, merge: bool = False):
    """Reload the final model of a run dir: a full HF model, or base + PEFT adapter."""
    from transformers import AutoModelForCausalLM

    from launcher.models.tokenizers import load_saved_tokenizer

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    tokenizer = load_saved_tokenizer(model_dir)
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        import json

        base = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        if not Path(base).exists() and (run_dir / "base_model").exists():
            base = str(run_dir / "base_model")  # the run dir was moved after training
        model = AutoModelForCausalLM.from_pretrained(base)
        model = PeftModel.from_pretrained(model, model_dir)
        if merge:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    if device is not None:
        model.to(device)
    return model, tokenizer
