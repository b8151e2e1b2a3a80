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
    """AutoModelForImageTextToText for Qwen2-VL/2.5-VL/3-VL, AutoModelForSequenceClassification for a reward
    model (launcher.models.reward), AutoModelForCausalLM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from launcher.models.reward import is_reward_model, reward_model_class
    from launcher.models.vision import vision_info

    if is_reward_model(cfg):
        return reward_model_class()
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


def quantization_config(quantize: str):
    """QLoRA's base: nf4 with double quantization and bf16 compute (the QLoRA paper's and LLaMA-Factory's
    defaults), or LLM.int8 for 8bit."""
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def build_quantized_base(cfg: Config, attn_implementation: str, device: torch.device):
    """QLoRA: the pretrained base loaded quantized by bitsandbytes onto this rank's GPU, prepared for training
    adapters on it (peft's prepare_model_for_kbit_training: norms and head in fp32, input gradients for
    checkpointing). Raises ConfigError in one line where bitsandbytes cannot run (no CUDA, not installed)."""
    from launcher.preflight_resources import qlora_problem

    gpus = 1 if device.type == "cuda" else 0
    problem = qlora_problem(cfg, gpus, f"this rank runs on {device.type}")
    if problem:
        raise ConfigError(problem)
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    m = cfg.model
    model = AutoModelForCausalLM.from_pretrained(
        m.name_or_path, quantization_config=quantization_config(cfg.method.lora.quantize), dtype=torch.bfloat16,
        device_map={"": device}, attn_implementation=attn_implementation, trust_remote_code=m.trust_remote_code,
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


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


def apply_lora(model, lora: LoraConfig, initialize: bool = True):
    """LoRA on ``model``. The adapters are created empty and initialized layer by layer after injection
    (``launcher.engines.loading.init_lora``), so a sharded model, whose adapters are initialized only once its
    shards exist, draws the same random numbers as a plain one. ``initialize=False``: leave them on the meta
    device for the sharded loader. DoRA's magnitude, PiSSA and OLoRA need the base weights at creation, and
    gaussian init is peft's: peft's own path."""
    from peft import get_peft_model

    from launcher.models.vision import is_vision_model, lora_target_modules

    from launcher.models.reward import is_sequence_scorer

    config = lora_peft_config(lora, "SEQ_CLS" if is_sequence_scorer(model) else "CAUSAL_LM")
    if is_vision_model(model):  # the language model's linear layers unless the vision tower is asked for
        config.target_modules = lora_target_modules(model, lora.target_modules, lora.include_vision)
    if lora.use_dora or lora.init != "default" or lora.quantize:  # from the base weights, or peft's own init
        return get_peft_model(model, config)
    model = get_peft_model(model, config, low_cpu_mem_usage=True)
    if initialize:
        from launcher.engines.loading import init_lora

        init_lora(model)
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
