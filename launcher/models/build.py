"""Models: a hub id or local folder, or a random-init model of a real architecture, built whole; LoRA's peft
config and freeze tuning's choice of parameters (applied for a parallelism by launcher.engines.model_build).

Also where the attention implementation is chosen (precision: launcher.engines.precision; device:
launcher.engines.distributed).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

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
    """AutoModelForImageTextToText for Qwen2-VL/2.5-VL/3-VL, AutoModelForSequenceClassification for a reward
    model (launcher.models.reward), AutoModelForCausalLM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from launcher.models.audio import audio_info
    from launcher.models.reward import is_reward_model, reward_model_class
    from launcher.models.vision import vision_info

    if is_reward_model(cfg):
        return reward_model_class()
    if audio_info(cfg.model):  # Qwen2-Audio: transformers files it under multimodal LMs
        from transformers import AutoModelForMultimodalLM

        return AutoModelForMultimodalLM
    return AutoModelForImageTextToText if vision_info(cfg.model) else AutoModelForCausalLM


def random_init_config(cfg: Config, tokenizer):
    """The transformers config of a random-init model: ``model.arch`` + ``model.config``, sized to the tokenizer
    (a VL config: its text_config too)."""
    from transformers import AutoConfig

    from launcher.models.vision import check_vision_config

    m = cfg.model
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
    config.update(head_config_kwargs(cfg, tokenizer))
    return config


def head_config_kwargs(cfg: Config, tokenizer) -> dict:
    """Config values the model class of ``cfg`` needs on top of the base's (a reward model: one score, the pad id
    its pooling looks for); {} for a causal LM."""
    from launcher.models.reward import is_reward_model, reward_config_kwargs

    return reward_config_kwargs(tokenizer) if is_reward_model(cfg) else {}


def build_base_model(cfg: Config, tokenizer, attn_implementation: str, dtype: torch.dtype):
    m = cfg.model
    auto_class = auto_model_class(cfg)
    if m.name_or_path:
        return auto_class.from_pretrained(
            m.name_or_path, dtype=dtype, attn_implementation=attn_implementation,
            trust_remote_code=m.trust_remote_code, **head_config_kwargs(cfg, tokenizer),
        )
    config = random_init_config(cfg, tokenizer)
    # Same seed, same init on every rank, so DDP starts from identical weights without a broadcast.
    torch.manual_seed(cfg.train.seed)
    model = random_init_model(config, attn_implementation, dtype, auto_class)
    if model.can_generate():  # a reward model (launcher.models.reward) has no generation config
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


def lora_peft_config(lora: LoraConfig, task_type: str = "CAUSAL_LM"):
    """task_type SEQ_CLS (a reward model): peft also trains and saves the score head (modules_to_save)."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        modules_to_save=lora.modules_to_save,
        init_lora_weights=True if lora.init == "default" else lora.init,
    )


def point_adapter_at_base(adapter_dir: Path, base_dir: Path) -> None:
    """Make a saved adapter name the base saved beside it (a random-init base exists nowhere else), so that
    standard PEFT loading finds it."""
    import json

    path = Path(adapter_dir) / "adapter_config.json"
    adapter_cfg = json.loads(path.read_text())
    adapter_cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    path.write_text(json.dumps(adapter_cfg, indent=2))


def trainable_layer_ids(trainable_layers: int, num_layers: int) -> range:
    """LLaMA-Factory's freeze_trainable_layers: N > 0 the last N layers, N < 0 the first |N|."""
    if trainable_layers > 0:
        return range(max(0, num_layers - trainable_layers), num_layers)
    return range(min(-trainable_layers, num_layers))


def plan_freeze(names: list[str], num_layers: int, freeze) -> list[str]:
    """Freeze tuning's choice, a pure function of parameter (or module) names: those in the chosen decoder layers
    (their ``trainable_modules``, or all of them) and the ``extra_modules`` outside the layers. Raises
    ConfigError naming a module name that matches nothing (a typo would silently train nothing)."""
    if getattr(freeze, "llama_pro", False):  # LLaMA-Pro: the expanded blocks (launcher.models.llama_pro)
        from launcher.models.llama_pro import expanded_layer_ids

        ids = set(expanded_layer_ids(num_layers, freeze.trainable_layers))
    else:
        ids = set(trainable_layer_ids(freeze.trainable_layers, num_layers))
    modules = None if freeze.trainable_modules == "all" else {str(m) for m in freeze.trainable_modules}
    extra = {str(m) for m in freeze.extra_modules}
    seen_modules, seen_extra, trainable = set(), set(), []
    for name in names:
        parts = name.split(".")
        at = next((i for i in range(len(parts) - 1) if parts[i] == "layers" and parts[i + 1].isdigit()), None)
        if at is not None:
            module = parts[at + 2] if len(parts) > at + 2 else ""
            if module:
                seen_modules.add(module)
            train = int(parts[at + 1]) in ids and (modules is None or module in modules)
        else:
            hits = extra.intersection(parts)
            seen_extra |= hits
            train = bool(hits)
        if train:
            trainable.append(name)
    for key, wanted, seen in (("trainable_modules", modules or set(), seen_modules), ("extra_modules", extra, seen_extra)):
        missing = sorted(wanted - seen)
        if missing:
            outside = sorted({n.split(".")[1] if n.startswith("model.") and "." in n else n.split(".")[0]
                              for n in names if "layers" not in n.split(".")})
            known = ", ".join(sorted(seen_modules)) if key == "trainable_modules" else ", ".join(outside)
            raise ConfigError(f"method.freeze.{key}: {', '.join(missing)} matches no module of the model"
                              f" ({'modules in a layer' if key == 'trainable_modules' else 'modules outside the layers'}:"
                              f" {known})")
    return trainable


def freeze_layers(model, freeze) -> list[str]:
    """Freeze tuning: only ``plan_freeze``'s parameters keep requires_grad; returns their names."""
    names = [n for n, _ in model.named_parameters()]
    trainable = set(plan_freeze(names, model.config.num_hidden_layers, freeze))
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return sorted(trainable)


def count_parameters(model) -> tuple[int, int]:
    # A ZeRO-3 parameter partitioned at build time holds an empty tensor; ds_numel is its real size.
    def numel(p) -> int:
        return getattr(p, "ds_numel", None) or p.numel()

    total = sum(numel(p) for p in model.parameters())
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return total, trainable
