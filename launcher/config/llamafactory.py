"""A ``llamafactory-cli train`` YAML file -> the Hydra overrides of the equivalent ``launcher train``.

``launcher train --from-llamafactory FILE.yaml [more overrides]`` reads the file, prints the equivalent
command, and runs it through the normal train path (preflight, run dir, local or SLURM; ``-m`` sweeps and
``--dry-run`` too). Every key of the file is accounted for, one of four ways:

- translated to one of our keys (``KEY_TABLE`` below; the README's table is generated from the same rules);
- accepted as a no-op because the behaviour is built in here (``BUILT_IN``: e.g. ``plot_loss``, we always
  plot), listed in one printed note;
- refused with "not supported yet: ..." for features we do not have (videos, reward modelling, PPO, ...),
  naming the key and what to do;
- refused as unknown.

Keys the file leaves out take LLaMA-Factory's (Hugging Face TrainingArguments') defaults, which differ from
ours (learning rate 5e-5, linear schedule, batch 8, cutoff 2048, gradient checkpointing on): the
``experiment=llamafactory`` preset and the ``data=llamafactory`` group hold them, so the printed command
names only what the file said.

Paths (``dataset_dir``, ``output_dir``, ``deepspeed``) are resolved the way ``llamafactory-cli`` resolves
them: against the directory the command is run from.

The translation is pure (``translate``) apart from reading the DeepSpeed JSON a file names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from launcher.config.compose import hydra_value
from launcher.errors import ConfigError

# LLaMA-Factory template names whose format one of our named templates reproduces; any other name uses the
# tokenizer's own chat template (data.template=auto), which is what LLaMA-Factory's templates for chat models
# (qwen3, qwen2_vl, llama4, ...) render too, and the run log says so.
TEMPLATES = {"qwen": "qwen", "qwen2_5": "qwen", "chatml": "chatml", "llama3": "llama3", "mistral": "mistral",
             "empty": "plain", "qwen2_vl": "qwen2_vl", "qwen3_vl": "qwen3_vl",
             "qwen3_vl_nothink": "qwen3_vl_nothink", "qwen2_audio": "qwen2_audio"}

# LLaMA-Factory's stock DeepSpeed files (examples/deepspeed/): when a file of that name is not found where
# the YAML says, its well-known content (stage, offload) is used, with a note.
STOCK_DEEPSPEED = {"ds_z0_config.json": (0, False), "ds_z2_config.json": (2, False),
                   "ds_z2_offload_config.json": (2, True), "ds_z3_config.json": (3, False),
                   "ds_z3_offload_config.json": (3, True)}

# Keys whose behaviour is built in here, or that only tune LLaMA-Factory's own process; reported in one note.
BUILT_IN = {
    "do_train": "training is what `launcher train` does",
    "plot_loss": "loss.png is always drawn",
    "overwrite_output_dir": "a new dated run dir every time, never overwritten",
    "overwrite_cache": "tokenized data is cached by content hash, so a changed input is never stale",
    "ddp_timeout": "the engine sets the process-group timeout",
    "save_only_model": "checkpoints hold what exact resume needs; the final model is saved as HF",
    "per_device_eval_batch_size": "evaluation uses train.micro_batch_size",
    "include_num_input_tokens_seen": "metrics.jsonl always logs trained tokens",
    "ddp_find_unused_parameters": "set by the engine",
    "tokenized_path": "tokenized data is cached by content hash (data.cache_dir)",
    "preprocessing_num_workers": "tokenized once, then cached by content hash",
    "dataloader_num_workers": "batches are built in the training process from the cached tokens",
}

# Keys refused with what to do; 'not supported yet' means the feature is planned, not that the key is wrong.
UNSUPPORTED = {
    "loraplus_lr_embedding": "not supported: LoRA+ trains LoRA on embeddings at learning_rate here; remove the key",
    "use_unsloth": "not supported: unsloth kernels; remove the key",
    "enable_liger_kernel": "not supported yet: Liger kernels (our loss is already chunked: no full logits); remove the key",
    "rope_scaling": "not supported yet: RoPE scaling; remove the key",
    "streaming": "not supported yet: streamed datasets; remove the key (data is tokenized once and cached)",
    "pref_ftx": "not supported yet: an SFT term added to the DPO loss; remove the key or set it to 0",
    "eval_dataset_dir": "not supported: evaluation datasets are read from dataset_dir; move them there",
    "do_predict": "not supported in training: run `launcher predict RUN_DIR` after training",
    "predict_with_generate": "not supported in training: run `launcher predict RUN_DIR` after training",
    "neftune_noise_alpha": "not supported yet: NEFTune; remove the key",
    "upcast_layernorm": "not supported: remove the key",
    "audio_sampling_rate": "not supported: audio is resampled to the model's feature extractor's rate (16 kHz for"
                           " Qwen2-Audio, LF's default; another rate fails in its feature extractor); remove the key",
    "mixture_of_depths": "not supported: mixture-of-depths (LLaMA-Factory converts the model with the MoD package,"
                         " whose model classes are not transformers'); remove the key",
    "adapter_name_or_path": "not supported yet: starting from an existing adapter; merge it first (llamafactory-cli export) and train from the merged model",
}

# Vision-language keys (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): LF key -> ours.
VISION_KEYS = {"image_max_pixels": "data.image_max_pixels", "image_min_pixels": "data.image_min_pixels",
               "freeze_vision_tower": "model.freeze_vision_tower",
               "freeze_multi_modal_projector": "model.freeze_projector",
               "freeze_language_model": "model.freeze_language_model",
               "video_max_pixels": "data.video_max_pixels", "video_min_pixels": "data.video_min_pixels",
               "video_fps": "data.video_fps", "video_maxlen": "data.video_maxlen",
               "use_audio_in_video": "data.use_audio_in_video"}

STAGES = {"sft": "sft", "dpo": "dpo", "kto": "kto", "pt": "pt", "rm": "rm", "ppo": "ppo"}
# (stage, finetuning_type) -> our method option; a finetuning kind the option does not name is set on top.
METHOD_OPTIONS = {("sft", "full"): "sft_full", ("sft", "lora"): "lora", ("sft", "freeze"): "freeze",
                  ("dpo", "full"): "dpo", ("dpo", "lora"): "dpo_lora", ("kto", "full"): "kto",
                  ("kto", "lora"): "kto_lora", ("pt", "full"): "pretrain", ("pt", "lora"): "pretrain",
                  ("pt", "freeze"): "pretrain", ("rm", "full"): "rm", ("rm", "lora"): "rm_lora",
                  ("rm", "freeze"): "rm", ("sft", "oft"): "oft", ("ppo", "full"): "ppo", ("ppo", "lora"): "ppo_lora"}
STAGE_HINTS: dict = {}
"""stage -> the one line that refuses it and says what to do instead (none at present)."""
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant", "constant_with_warmup": "constant"}
PREF_LOSSES = {"sigmoid": "sigmoid", "ipo": "ipo", "hinge": "hinge", "simpo": "simpo", "orpo": "orpo"}
OPTIMIZERS = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw", "sgd": "sgd",
              "adafactor": "adafactor", "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit",
              "paged_adamw_8bit": "paged_adamw_8bit"}
# GaLore's optimizer by optim, as LLaMA-Factory's _create_galore_optimizer picks it (APOLLO: adamw_torch only).
GALORE_OPTIMIZERS = {"adamw_torch": "galore_adamw", "adamw_bnb_8bit": "galore_adamw_8bit",
                     "adamw_8bit": "galore_adamw_8bit", "paged_adamw_8bit": "galore_adamw_8bit",
                     "adafactor": "galore_adafactor"}
GALORE_KEYS = {"galore_rank": "rank", "galore_update_interval": "update_interval", "galore_scale": "scale",
               "galore_proj_type": "proj_type"}
APOLLO_KEYS = {"apollo_rank": "rank", "apollo_update_interval": "update_interval", "apollo_scale": "scale",
               "apollo_proj": "proj", "apollo_proj_type": "proj_type", "apollo_scale_type": "scale_type",
               "apollo_scale_front": "scale_front"}
BADAM_KEYS = {"badam_start_block": "start_block", "badam_switch_mode": "switch_mode",
              "badam_switch_interval": "switch_interval"}
ATTENTION = {"auto": "auto", "sdpa": "sdpa", "fa2": "flash_attention_2", "disabled": "eager", "eager": "eager"}
LOGGERS = ("wandb", "tensorboard", "mlflow")


@dataclass
class Translation:
    overrides: list = field(default_factory=list)
    """Hydra overrides, in order; the equivalent command is ``launcher train`` + these."""
    notes: list = field(default_factory=list)
    """One line each: what was taken as built in, or resolved in a way worth saying."""


# ------------------------------------------------------------------------------------------- values


def command_line(overrides: list, extra: tuple = ()) -> str:
    """The shell command a user can paste: ``launcher train`` + the overrides, quoted for the shell."""
    from launcher.shell import shell_command

    return shell_command(["launcher", "train", *extra, *overrides])


# ----------------------------------------------------------------------------------------- reading


def read_yaml(path: Path) -> tuple[dict, dict]:
    """(mapping, {key: line number}) of a LLaMA-Factory YAML file; errors name the file and line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--from-llamafactory: {path}: no such file")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a llamafactory-cli train file is a mapping of keys, got {type(data).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if node is not None else {}
    return data, lines


def deepspeed_choice(ds: dict, where: str) -> tuple[int, bool]:
    """(zero stage, offload) of a DeepSpeed JSON config."""
    zero = ds.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: zero_optimization.stage must be 0-3, got {stage!r}")
    devices = {(zero.get(k) or {}).get("device", "none") for k in ("offload_optimizer", "offload_param")}
    if "nvme" in devices:
        raise ConfigError(f"{where}: NVMe offload is not supported yet; use \"device\": \"cpu\"")
    return stage, "cpu" in devices


def parallelism_overrides(stage: int, offload: bool, where: str) -> list:
    """Our parallelism options for a ZeRO stage and offload."""
    if stage == 0:
        if offload:
            raise ConfigError(f"{where}: CPU offload needs ZeRO stage 2 or 3")
        return ["parallelism=ddp"]
    if stage == 3:
        return ["parallelism=zero3_offload" if offload else "parallelism=zero3"]
    out = ["parallelism=zero2"]
    if stage == 1:
        out += ["parallelism.name=zero1", "parallelism.zero_stage=1"]
    if offload:
        out += [f"parallelism.name=zero{stage}_offload", "parallelism.offload=true"]
    return out


# What a DeepSpeed JSON sets that the translation does not carry over (our engine generates its own config):
# everything but the stage, the offload devices and the values LLaMA-Factory leaves to the trainer ("auto").
_DS_TAKEN = {"zero_optimization.stage", "zero_optimization.offload_optimizer.device",
             "zero_optimization.offload_param.device"}


def deepspeed_leftovers(ds: dict, where: str) -> Optional[str]:
    """A note naming the DeepSpeed settings left to our engine's defaults, or None."""
    left = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif value != "auto" and prefix not in _DS_TAKEN:
            left.append(prefix)

    walk("", ds)
    if not left:
        return None
    return (f"deepspeed: {where}: only the ZeRO stage and CPU offload are taken over; the engine's own values"
            f" stand for {', '.join(left)} (set parallelism.deepspeed.<key> to force one)")


def load_deepspeed(value: str, cwd: Path, yaml_dir: Path, where: str) -> tuple[int, bool, Optional[str]]:
    """(stage, offload, note) for the ``deepspeed:`` file a YAML names."""
    path = Path(value)
    candidates = [path] if path.is_absolute() else [cwd / path, yaml_dir / path]
    for candidate in candidates:
        if candidate.is_file():
            try:
                ds = json.loads(candidate.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{candidate}:{exc.lineno}: not valid JSON ({exc.msg})") from None
            stage, offload = deepspeed_choice(ds, str(candidate))
            return stage, offload, deepspeed_leftovers(ds, value)
    if path.name in STOCK_DEEPSPEED:
        stage, offload = STOCK_DEEPSPEED[path.name]
        return stage, offload, (f"deepspeed: {value} not found; taken as LLaMA-Factory's stock {path.name}"
                                f" (ZeRO-{stage}{' + CPU offload' if offload else ''})")
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{where}: deepspeed: file not found (tried {tried}); give the path of your DeepSpeed JSON")


# -------------------------------------------------------------------------------------- translation


def _names(value: Any) -> list:
    """A comma list (``a,b``) or a YAML list -> list of stripped names."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _path(value: Any, cwd: Path) -> str:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (cwd / path))


def model_short_name(name_or_path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(name_or_path).rstrip("/")).name).strip("-") or "hf"


@dataclass
class _Reading:
    """One file being translated: the keys read so far and the overrides, notes and errors collected.

    Every section reads its keys with ``take``, so that the keys nobody took are the ones left to refuse."""
    lf: dict
    source: str
    lines: dict
    out: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    seen: set = field(default_factory=set)

    def where(self, key: str) -> str:
        return f"{self.source}:{self.lines[key]}" if key in self.lines else self.source

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{self.where(key)}: {key}: {message}")

    def put(self, key: str, value: Any) -> None:
        self.out.append(f"{key}={hydra_value(value)}")

    def take(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self.lf.get(key, default)


def model_and_method(r: _Reading) -> tuple[str, str]:
    """model_name_or_path, trust_remote_code, stage x finetuning_type -> the presets and the method option.

    Returns (stage, finetuning_type), which decide how the later sections read their keys."""
    lf = r.lf
    model = r.take("model_name_or_path")
    if not model:
        r.fail("model_name_or_path", "required: the hub id or local folder of the model to train")
    stage = str(r.take("stage", "sft"))
    finetuning = str(r.take("finetuning_type", "lora"))  # LLaMA-Factory's default is lora
    if stage in STAGE_HINTS:
        r.fail("stage", STAGE_HINTS[stage])
    elif stage not in STAGES:
        r.fail("stage", f"'{stage}' is not one of sft, dpo, kto, pt, rm, ppo")
    if finetuning not in ("lora", "full", "freeze", "oft"):
        r.fail("finetuning_type", f"'{finetuning}' is not lora, oft, full or freeze")
    elif stage in STAGES and (stage, finetuning) not in METHOD_OPTIONS:
        r.fail("finetuning_type", f"{finetuning} with stage {stage} is not supported; use lora or full")
    method = METHOD_OPTIONS.get((stage, finetuning))
    r.out += ["experiment=llamafactory", "model=hf"]
    if model:
        r.put("model.name_or_path", model)
        r.put("model.name", model_short_name(model))
    if "trust_remote_code" in lf:
        r.put("model.trust_remote_code", bool(r.take("trust_remote_code")))
    if method:
        r.out.append(f"method={method}")
        if method == "pretrain" and finetuning != "full" or method == "rm" and finetuning == "freeze":
            r.out.append(f"method.finetuning={finetuning}")
    r.out.append("data=llamafactory")
    return stage, finetuning


def lora(r: _Reading, finetuning: str) -> None:
    """lora_* and the LoRA variants (DoRA, rsLoRA, LoRA+, PiSSA, QLoRA); a note when finetuning is not lora."""
    lf, take, put = r.lf, r.take, r.put
    lora_keys = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_dora", "use_rslora",
                 "additional_target", "loraplus_lr_ratio", "pissa_init", "pissa_iter", "pissa_convert",
                 "quantization_bit", "quantization_method", "quantization_type", "double_quantization")
    if finetuning != "lora":
        taken_by_oft = {"additional_target", "quantization_bit"} if finetuning == "oft" else set()
        unused = [k for k in lora_keys if k not in taken_by_oft and (k in lf and take(k) is not None
                                                                       or k in r.seen and k in lf)]
        if unused:
            r.notes.append(f"{', '.join(unused)}: unused with finetuning_type {finetuning} (as in LLaMA-Factory)")
        return
    rank = take("lora_rank", 8)
    put("method.lora.r", rank)
    # LLaMA-Factory's lora_alpha defaults to twice the rank.
    put("method.lora.alpha", take("lora_alpha") if lf.get("lora_alpha") is not None else 2 * rank)
    if "lora_dropout" in lf:
        put("method.lora.dropout", take("lora_dropout"))
    if "lora_target" in lf:
        targets = _names(take("lora_target"))
        put("method.lora.target_modules", "all-linear" if targets == ["all"] else targets)
    for key in ("use_dora", "use_rslora"):
        if key in lf:
            put(f"method.lora.{key}", bool(take(key)))
    if lf.get("additional_target"):
        put("method.lora.modules_to_save", _names(take("additional_target")))
    take("additional_target")
    if lf.get("loraplus_lr_ratio") is not None:
        put("method.lora.plus_lr_ratio", float(take("loraplus_lr_ratio")))
    take("loraplus_lr_ratio")
    lora_init_and_quantization(r)


def lora_init_and_quantization(r: _Reading) -> None:
    """PiSSA (pissa_init, pissa_iter, pissa_convert) and QLoRA (quantization_bit and its settings)."""
    lf, take, put, fail = r.lf, r.take, r.put, r.fail
    if lf.get("pissa_init"):
        take("pissa_init")
        iters = take("pissa_iter", 16)  # LLaMA-Factory's default: fast SVD with 16 iterations; -1: full SVD
        put("method.lora.init", "pissa" if int(iters) < 0 else f"pissa_niter_{int(iters)}")
        if lf.get("pissa_convert") is False:
            r.notes.append("pissa_convert: false, but the saved adapter is always converted to plain LoRA here"
                           " (it then loads onto the unchanged base model)")
        take("pissa_convert")
    else:
        for key in ("pissa_init", "pissa_iter", "pissa_convert"):
            take(key)
    bits = take("quantization_bit")
    method = take("quantization_method", "bnb")
    qtype, double = take("quantization_type", "nf4"), take("double_quantization", True)
    if bits is None:
        return
    if str(method) not in ("bnb", "bitsandbytes"):
        fail("quantization_method", f"'{method}' is not supported; QLoRA here uses bitsandbytes (bnb)")
    if int(bits) not in (4, 8):
        fail("quantization_bit", f"{bits} is not supported; use 4 or 8 (bitsandbytes)")
        return
    if int(bits) == 4 and qtype != "nf4":
        fail("quantization_type", "QLoRA here is nf4 (LLaMA-Factory's default); remove the key")
    put("method.lora.quantize", f"{int(bits)}bit")
    if double is False:
        if int(bits) == 4:
            put("method.lora.double_quantization", False)
        else:
            r.notes.append("double_quantization: unused with quantization_bit 8 (as in LLaMA-Factory)")


def freeze(r: _Reading, finetuning: str) -> None:
    """freeze_* (LLaMA-Factory's defaults, 2 last layers and all their modules, are ours too)."""
    for key, ours in (("freeze_trainable_layers", "trainable_layers"), ("freeze_trainable_modules", "trainable_modules"),
                      ("freeze_extra_modules", "extra_modules")):
        if key not in r.lf:
            continue
        value = r.take(key)
        if finetuning != "freeze":
            r.notes.append(f"{key}: unused with finetuning_type {finetuning} (as in LLaMA-Factory)")
        elif key == "freeze_trainable_layers":
            r.put(f"method.freeze.{ours}", int(value))
        elif key == "freeze_trainable_modules" and _names(value) == ["all"]:
            r.put(f"method.freeze.{ours}", "all")
        else:
            r.put(f"method.freeze.{ours}", _names(value) if value is not None else [])


OFT_KEYS = {"oft_rank": "r", "oft_block_size": "block_size", "module_dropout": "module_dropout"}


def oft(r: _Reading, finetuning: str) -> None:
    """finetuning_type: oft -> method=oft: oft_rank, oft_block_size, oft_target, module_dropout, additional_target.
    Quantized OFT (QOFT: quantization_bit with oft) is refused; a note when finetuning is not oft."""
    lf, take, put = r.lf, r.take, r.put
    present = [k for k in (*OFT_KEYS, "oft_target") if k in lf]
    if finetuning != "oft":
        for key in present:
            take(key)
        if present:
            r.notes.append(f"{', '.join(present)}: unused with finetuning_type {finetuning} (as in LLaMA-Factory)")
        return
    for key, ours in OFT_KEYS.items():
        if key in lf and lf[key] is not None:
            put(f"method.oft.{ours}", take(key))
        take(key)
    if "oft_target" in lf:
        targets = _names(take("oft_target"))
        put("method.oft.target_modules", "all-linear" if targets == ["all"] else targets)
    if lf.get("additional_target"):
        put("method.oft.modules_to_save", _names(take("additional_target")))
    take("additional_target")
    if lf.get("quantization_bit") is not None:
        take("quantization_bit")
        r.fail("quantization_bit", "quantized OFT (QOFT) is not supported; remove the key to train OFT on the"
                                   " full-precision base, or use finetuning_type: lora for QLoRA")


def llama_pro(r: _Reading, stage: str, finetuning: str) -> None:
    """use_llama_pro: train the blocks LLaMA-Factory's scripts/llama_pro.py inserted (the model named is already
    expanded): method.freeze.llama_pro with freeze_trainable_layers as their count."""
    if not r.take("use_llama_pro"):
        return
    if finetuning != "freeze":
        r.fail("use_llama_pro", f"with finetuning_type {finetuning} is not supported here; use finetuning_type:"
                                " freeze (LLaMA-Factory's example), which trains the expanded blocks in full")
        return
    r.put("method.freeze.llama_pro", True)
    if "freeze_trainable_layers" not in r.lf:
        r.put("method.freeze.trainable_layers", 2)  # LLaMA-Factory's default count


TOKEN_LOSS_KEYS = ("use_dft_loss", "use_eaft_loss", "use_asft_loss")
"""In LLaMA-Factory's order of precedence (its SFT trainer takes the first one set)."""


def token_loss(r: _Reading, stage: str) -> None:
    """use_dft_loss / use_eaft_loss (eaft_alpha) / use_asft_loss (asft_alpha) -> method.token_loss.*; SFT only."""
    lf, take, put = r.lf, r.take, r.put
    chosen = [k for k in TOKEN_LOSS_KEYS if take(k)]
    alphas = {k: take(k) for k in ("asft_alpha", "eaft_alpha") if k in lf}
    if not chosen:
        if alphas:
            r.notes.append(f"{', '.join(alphas)}: unused without use_asft_loss / use_eaft_loss (as in LLaMA-Factory)")
        return
    if stage != "sft":
        r.notes.append(f"{', '.join(chosen)}: unused with stage {stage} (LLaMA-Factory applies them to SFT only)")
        return
    name = chosen[0][len("use_"):-len("_loss")]
    put("method.token_loss.name", name)
    if len(chosen) > 1:
        r.notes.append(f"{', '.join(chosen)}: several token losses set; LLaMA-Factory uses the first of dft, eaft,"
                       f" asft, so {name}")
    for key, value in alphas.items():
        if key.startswith(name):
            put(f"method.token_loss.{key}", value)
        else:
            r.notes.append(f"{key}: unused with the {name} loss (as in LLaMA-Factory)")


def kto(r: _Reading, stage: str) -> None:
    """KTO: pref_beta is KTO's beta under stage kto; the desirable/undesirable weights."""
    lf = r.lf
    if stage == "kto":
        if "pref_beta" in lf:
            r.put("method.kto.beta", r.take("pref_beta"))
        for key, ours in (("kto_chosen_weight", "desirable_weight"), ("kto_rejected_weight", "undesirable_weight")):
            if key in lf:
                r.put(f"method.kto.{ours}", r.take(key))
        if "pref_loss" in lf:
            r.take("pref_loss")
            r.notes.append("pref_loss: unused with stage kto (as in LLaMA-Factory: KTO has one loss)")
    else:
        for key in ("kto_chosen_weight", "kto_rejected_weight"):
            if key in lf:
                r.take(key)
                r.notes.append(f"{key}: unused with stage {stage} (as in LLaMA-Factory)")


def preference(r: _Reading, stage: str) -> None:
    """pref_* for DPO (and its losses); runs after ``kto``, which takes pref_beta and pref_loss under stage kto."""
    lf = r.lf
    pref_keys = {"pref_beta": "beta", "pref_loss": "loss_type", "simpo_gamma": "simpo_gamma",
                 "dpo_label_smoothing": "label_smoothing"}
    for key, ours in pref_keys.items():
        if key not in lf:
            continue
        if key in r.seen:
            continue  # taken by KTO
        value = r.take(key)
        if stage != "dpo":
            r.notes.append(f"{key}: unused with stage {stage} (as in LLaMA-Factory)")
        elif key == "pref_loss":
            if value not in PREF_LOSSES:
                r.fail(key, f"'{value}' is not supported (ours: {', '.join(PREF_LOSSES)})")
            else:
                r.put("method.dpo.loss_type", PREF_LOSSES[value])
        else:
            r.put(f"method.dpo.{ours}", value)
    if "pref_ftx" in lf and not lf["pref_ftx"]:
        r.take("pref_ftx")  # 0 is the default: nothing to translate


PPO_KEYS = ("reward_model", "reward_model_type", "reward_model_adapters", "reward_model_quantization_bit",
            "ppo_buffer_size", "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards")
# LLaMA-Factory's generating_args defaults, which its PPO samples with when the file does not set them.
PPO_GENERATION = {"max_new_tokens": ("method.ppo.max_completion_length", 1024),
                  "temperature": ("method.ppo.temperature", 0.95), "top_p": ("method.ppo.top_p", 0.7)}


def ppo(r: _Reading, stage: str, finetuning: str, cwd: Path) -> None:
    """stage ppo: reward_model (the output_dir of a stage: rm run trained here, or its run dir) and its type,
    ppo_*, and the generation keys the rollouts sample with (LLaMA-Factory's defaults where absent)."""
    from launcher.config.llamafactory_after import run_dir_of

    lf, take, put = r.lf, r.take, r.put
    if stage != "ppo":
        unused = [k for k in PPO_KEYS if k in lf and take(k) is not None]
        if unused:
            r.notes.append(f"{', '.join(unused)}: unused with stage {stage} (as in LLaMA-Factory)")
        return
    model = take("reward_model")
    if not model:
        r.fail("reward_model", "required with stage: ppo: the output_dir of a stage: rm run (trained with `launcher"
                               " train --from-llamafactory`), or its run dir")
    else:
        path = Path(_path(model, cwd))
        run_dir = run_dir_of(path)
        if run_dir is None:
            r.fail("reward_model", f"{path} is neither the output_dir of a stage: rm run trained with `launcher train"
                                   " --from-llamafactory` nor a run dir; train the reward model with launcher first"
                                   " (stage: rm), then give its output_dir")
        else:
            put("method.ppo.reward_model", str(run_dir))
    kind = str(take("reward_model_type", "lora"))  # LLaMA-Factory's default
    if kind == "api":
        r.fail("reward_model_type", "not supported: a reward served over HTTP (api); train a reward model with stage:"
                                    " rm and give its output_dir with reward_model_type: full")
    elif kind not in ("full", "lora"):
        r.fail("reward_model_type", f"'{kind}' is not one of full, lora (api is not supported)")
    elif kind == "lora":
        if finetuning != "lora":  # LLaMA-Factory refuses it too
            r.fail("reward_model_type", "lora needs finetuning_type: lora (as in LLaMA-Factory); use"
                                        " reward_model_type: full")
        else:
            r.notes.append("reward_model_type: lora: the stage: rm run's adapter is loaded on its own base as a"
                           " separate scorer (LLaMA-Factory swaps it onto the policy's base); the scores are the same")
    for key in ("reward_model_adapters", "reward_model_quantization_bit"):
        if lf.get(key) is not None:
            take(key)
            r.fail(key, "not supported yet: the reward model is the stage: rm run's saved model as it is; remove"
                        " the key")
    if "ppo_epochs" in lf:
        put("method.ppo.ppo_epochs", take("ppo_epochs"))
    if "ppo_whiten_rewards" in lf:
        put("method.ppo.whiten_rewards", bool(take("ppo_whiten_rewards")))
    if take("ppo_buffer_size", 1) != 1:
        r.fail("ppo_buffer_size", "not supported yet: each generation batch is one global batch here; set it to 1"
                                  " or remove it (raise gradient_accumulation_steps for a larger batch)")
    if take("ppo_score_norm", False):
        r.fail("ppo_score_norm", "not supported yet: running score normalisation; remove the key")
    if "ppo_target" in lf:
        take("ppo_target")
        r.notes.append("ppo_target: the adaptive KL controller is not built; the KL coefficient is fixed"
                       " (method.ppo.kl_coef)")
    for key, (ours, default) in PPO_GENERATION.items():
        put(ours, take(key, default))
    absent = [k for k in PPO_GENERATION if k not in lf]
    if absent:
        r.notes.append(f"{', '.join(absent)}: LLaMA-Factory's defaults for PPO's sampling ("
                       + ", ".join(f"{k} {PPO_GENERATION[k][1]}" for k in absent) + ")")
    if lf.get("top_k") not in (None, 0):
        take("top_k")
        r.notes.append("top_k: not applied; the rollouts sample with temperature and top_p")
    if "do_sample" in lf:
        if not take("do_sample"):
            r.fail("do_sample", "false is not supported with stage: ppo: the rollouts sample; remove the key")


def dataset(r: _Reading, stage: str, cwd: Path) -> None:
    """dataset, dataset_dir, template, cutoff_len, packing and the rest of LLaMA-Factory's dataset section."""
    lf, take, put = r.lf, r.take, r.put
    if "dataset" in lf:
        put("data.datasets", _names(take("dataset")))
    else:
        r.fail("dataset", "required: the dataset names from dataset_info.json (a comma list)")
    if "eval_dataset" in lf:
        put("data.eval_datasets", _names(take("eval_dataset")))
    put("data.dataset_dir", _path(take("dataset_dir", "data"), cwd))
    if "template" in lf:
        template = str(take("template"))
        if template in TEMPLATES:
            put("data.template", TEMPLATES[template])
        else:
            put("data.template", "auto")
            r.notes.append(f"template: '{template}' -> the tokenizer's own chat template (data.template=auto);"
                           f" set data.template to one of chatml, qwen, llama3, mistral, plain to force one")
    for key, ours in (("cutoff_len", "data.cutoff_len"), ("max_samples", "data.max_samples"),
                      ("val_size", "data.val_size"), ("train_on_prompt", "data.train_on_prompt"),
                      ("mask_history", "data.mask_history")):
        if key in lf:
            put(ours, take(key))
    packing, neat = take("packing"), take("neat_packing")
    if stage == "pt" and packing is None and neat is None:
        packing = True  # LLaMA-Factory packs pretraining text unless told otherwise
        r.notes.append("packing: on for stage pt (LLaMA-Factory's default); documents never attend to each other")
    if packing or neat:
        put("data.packing", True)
        if packing and not neat and stage != "pt":
            r.notes.append("packing: samples packed here never attend to each other (what LLaMA-Factory's"
                           " neat_packing does)")
    elif packing is False or neat is False:
        put("data.packing", False)
    if "mix_strategy" in lf:
        strategy = take("mix_strategy")
        if strategy != "concat":
            r.fail("mix_strategy", f"'{strategy}' is not supported yet (interleave_under/over differ from our"
                                   " weighted interleave); use concat or set data.mix_strategy=interleave by hand")


def train(r: _Reading) -> None:
    """The training schedule, optimizer, gradient checkpointing, precision and attention kernel."""
    lf, take, put, fail = r.lf, r.take, r.put, r.fail
    for key, ours in (("learning_rate", "method.lr"), ("weight_decay", "method.weight_decay"),
                      ("adam_beta1", "method.adam_beta1"), ("adam_beta2", "method.adam_beta2"),
                      ("adam_epsilon", "method.adam_eps"), ("num_train_epochs", "train.epochs"),
                      ("max_steps", "train.max_steps"), ("per_device_train_batch_size", "train.micro_batch_size"),
                      ("gradient_accumulation_steps", "train.grad_accum"), ("warmup_ratio", "train.warmup_ratio"),
                      ("warmup_steps", "train.warmup_steps"), ("max_grad_norm", "train.max_grad_norm"),
                      ("seed", "train.seed"), ("logging_steps", "train.log_every"),
                      ("save_total_limit", "train.keep_checkpoints")):
        if key in lf and lf[key] is not None:
            value = take(key)
            if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
                try:
                    value = float(value) if key not in ("max_steps", "seed") else int(value)
                except ValueError:
                    fail(key, f"expected a number, got '{value}'")
                    continue
            put(ours, value)
        take(key)
    if "lr_scheduler_type" in lf:
        kind = take("lr_scheduler_type")
        if kind in SCHEDULERS:
            put("train.lr_scheduler", SCHEDULERS[kind])
        else:
            fail("lr_scheduler_type", f"'{kind}' is not supported (ours: {', '.join(SCHEDULERS)})")
    if "lr_scheduler_kwargs" in lf and take("lr_scheduler_kwargs"):
        fail("lr_scheduler_kwargs", "not supported yet; use train.min_lr_ratio for a cosine floor")
    optimizer(r)
    if "disable_gradient_checkpointing" in lf:
        put("train.gradient_checkpointing", not take("disable_gradient_checkpointing"))
    gradient_checkpointing_options(r)
    bf16, fp16 = take("bf16"), take("fp16")
    if take("pure_bf16"):
        if fp16:
            fail("pure_bf16", "pure_bf16 trains in bf16, but fp16 is true; keep one")
        put("method.pure_bf16", True)
        bf16, fp16 = True, False
    if bf16 and fp16:
        fail("fp16", "bf16 and fp16 are both true; keep one")
    elif bf16:
        put("model.dtype", "bfloat16")
    elif fp16:
        put("model.dtype", "float16")
    if "flash_attn" in lf:
        attn = take("flash_attn")
        if attn in ATTENTION:
            put("model.attn_implementation", ATTENTION[attn])
        else:
            fail("flash_attn", f"'{attn}' is not one of {', '.join(ATTENTION)}")


def gradient_checkpointing_options(r: _Reading) -> None:
    """gradient_checkpointing (Hugging Face's switch: also on when LLaMA-Factory's disable_gradient_checkpointing is
    true), use_reentrant_gc (the reentrant flag LLaMA-Factory passes to torch.utils.checkpoint) and
    gradient_checkpointing_kwargs (Hugging Face's, applied after LLaMA-Factory's: its entries win)."""
    lf, take, put = r.lf, r.take, r.put
    on = not lf.get("disable_gradient_checkpointing", False)  # the llamafactory preset turns it on
    if take("gradient_checkpointing") and not on:
        put("train.gradient_checkpointing", True)
        on = True
    kwargs = {}
    if "use_reentrant_gc" in lf:
        kwargs["use_reentrant"] = bool(take("use_reentrant_gc"))
    extra = take("gradient_checkpointing_kwargs")
    if extra:
        if not isinstance(extra, dict):
            r.fail("gradient_checkpointing_kwargs", f"expected a mapping (use_reentrant: false), got {extra!r}")
            return
        kwargs.update(extra)
    if not kwargs:
        return
    if not on:
        r.notes.append(f"{', '.join(k for k in ('use_reentrant_gc', 'gradient_checkpointing_kwargs') if k in lf)}:"
                       " unused with disable_gradient_checkpointing: true (as in LLaMA-Factory)")
        return
    put("train.gradient_checkpointing_kwargs", kwargs)
def _module_list(value: Any) -> Any:
    """LLaMA-Factory's comma-separated module names (galore_target, apollo_target) -> all, or a list."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    return "all" if names == ["all"] else names


def optimizer(r: _Reading) -> None:
    """optim and the custom optimizers (use_galore, use_apollo, use_badam, use_adam_mini, use_muon with their
    keys) -> method.optimizer and method.galore/apollo/badam, as LLaMA-Factory's create_custom_optimizer picks:
    GaLore, then APOLLO, then BAdam, then Adam-mini, then Muon; two of them at once are refused here."""
    lf, take, put, fail = r.lf, r.take, r.put, r.fail
    optim = str(take("optim", "adamw_torch"))
    chosen = [k for k in ("use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon") if take(k)]
    if len(chosen) > 1:
        fail(chosen[1], f"{' and '.join(chosen)} are all true; LLaMA-Factory would use only {chosen[0]}: keep one")
        return
    custom = chosen[0] if chosen else None
    if custom is None:
        if optim in OPTIMIZERS:
            if "optim" in lf:
                put("method.optimizer", OPTIMIZERS[optim])
        else:
            fail("optim", f"'{optim}' is not supported (ours: {', '.join(OPTIMIZERS)})")
    elif custom == "use_galore":
        if optim not in GALORE_OPTIMIZERS:
            fail("optim", f"'{optim}' has no GaLore variant (LLaMA-Factory's: {', '.join(GALORE_OPTIMIZERS)})")
        else:
            put("method.optimizer", GALORE_OPTIMIZERS[optim])
        if take("galore_layerwise"):
            put("method.galore.layerwise", True)
    elif custom == "use_apollo":
        if optim != "adamw_torch":
            fail("optim", f"'{optim}': APOLLO runs with adamw_torch only (as in LLaMA-Factory)")
        put("method.optimizer", "apollo_adamw")
        if take("apollo_layerwise"):
            put("method.apollo.layerwise", True)
    elif custom == "use_badam":
        if optim != "adamw_torch":
            fail("optim", f"'{optim}': BAdam's block optimizer runs over torch's AdamW here; use adamw_torch")
        mode = take("badam_mode", "layer")
        if mode != "layer":
            fail("badam_mode", f"'{mode}' is not supported yet (ratio-wise BAdam's sparse masks); use layer")
        put("method.optimizer", "badam")
        if lf.get("badam_switch_interval") == -1:  # LLaMA-Factory's "disable the block update"
            take("badam_switch_interval")
            put("method.badam.switch_mode", "fixed")
            r.notes.append("badam_switch_interval: -1 (never switch) -> method.badam.switch_mode=fixed")
        for key in ("badam_update_ratio", "badam_mask_mode"):
            if key in lf:
                take(key)
                r.notes.append(f"{key}: read by ratio-wise BAdam only; layer-wise BAdam (badam_mode: layer) ignores"
                               " it, as LLaMA-Factory does")
    elif custom == "use_adam_mini":
        put("method.optimizer", "adam_mini")
    else:
        put("method.optimizer", "muon")
    if custom in ("use_adam_mini", "use_muon") and optim != "adamw_torch":
        fail("optim", f"'{optim}': {custom} replaces the optimizer (LLaMA-Factory ignores optim then); remove optim")
    if take("badam_verbose"):
        r.notes.append("badam_verbose: BAdam says which block trains at each switch here")
    for keys, section, user in ((GALORE_KEYS, "galore", "use_galore"), (APOLLO_KEYS, "apollo", "use_apollo"),
                                (BADAM_KEYS, "badam", "use_badam")):
        target_key = f"{section}_target"
        for key in [target_key, *keys]:
            if key not in lf:
                continue
            value = take(key)
            if key in ("badam_switch_interval", "badam_switch_mode") and lf.get("badam_switch_interval") == -1 \
                    and custom == user:
                continue  # switch_mode=fixed, above
            if custom != user:
                r.notes.append(f"{key}: ignored because {user} is not true (as in LLaMA-Factory)")
            elif key == target_key:
                put(f"method.{section}.target", _module_list(value))
            else:
                put(f"method.{section}.{keys[key]}", value)
    for key in ("galore_layerwise", "apollo_layerwise", "badam_mode"):
        take(key)


def saving(r: _Reading) -> None:
    """save_strategy and save_steps (Hugging Face strategies: steps, epoch, no)."""
    save_strategy = r.take("save_strategy", "steps")
    if save_strategy == "no":
        r.put("train.save_every", 0)
    elif save_strategy == "steps":
        if "save_steps" in r.lf:
            r.put("train.save_every", r.take("save_steps"))
    else:
        r.fail("save_strategy", f"'{save_strategy}' is not supported yet; use steps with save_steps")


def evaluation(r: _Reading) -> None:
    """eval_strategy (or its old name evaluation_strategy), eval_steps and do_eval."""
    lf = r.lf
    eval_strategy = lf.get("eval_strategy", lf.get("evaluation_strategy", "no"))
    r.take("eval_strategy"), r.take("evaluation_strategy")
    if eval_strategy == "steps":
        r.put("train.eval_every", r.take("eval_steps", lf.get("logging_steps", 500)))
    elif eval_strategy == "no":
        if "eval_steps" in lf:
            r.take("eval_steps")
            r.notes.append("eval_steps: ignored because eval_strategy is no (as in LLaMA-Factory)")
    else:
        r.fail("eval_strategy", f"'{eval_strategy}' is not supported yet; use steps with eval_steps")
    if r.take("do_eval"):
        r.fail("do_eval", "not supported: evaluation happens during training (val_size / eval_dataset with"
                          " eval_strategy: steps); run `launcher predict RUN_DIR` for generation metrics")


def parallelism(r: _Reading, cwd: Path, yaml_dir: Path, load_ds: Callable) -> None:
    """deepspeed: the JSON's ZeRO stage and offload -> our parallelism option."""
    if r.lf.get("deepspeed"):
        value = str(r.take("deepspeed"))
        try:
            stage_n, offload, note = load_ds(value, cwd, yaml_dir, r.where("deepspeed"))
            r.out += parallelism_overrides(stage_n, offload, r.where("deepspeed"))
            if note:
                r.notes.append(note)
        except ConfigError as exc:
            r.errors.append(str(exc))
    r.take("deepspeed")


def output(r: _Reading, cwd: Path) -> None:
    """output_dir, run_name, report_to and resume_from_checkpoint."""
    lf, take, put = r.lf, r.take, r.put
    if lf.get("output_dir"):
        target = Path(_path(take("output_dir"), cwd))
        put("run.output_root", str(target.parent))
        put("run.name", target.name)
        # LF saves the model in output_dir itself, where its follow-up YAMLs (adapter_name_or_path) look for it;
        # our run dir is output_dir/<date>/<time>, so the final model is linked back into output_dir.
        put("run.link_model_to", str(target))
    take("output_dir")
    if lf.get("run_name"):
        put("run.name", take("run_name"))
    report_to = _names(take("report_to", "none") or "none")
    loggers = [name for name in report_to if name != "none"]
    for name in loggers:
        if name not in LOGGERS:
            r.fail("report_to", f"'{name}' is not supported (ours: {', '.join(LOGGERS)}, none)")
    loggers = [name for name in loggers if name in LOGGERS]
    if len(loggers) == 1:
        r.out.append(f"logger={loggers[0]}")
    elif loggers:
        put("logger.backends", loggers)
    if lf.get("resume_from_checkpoint"):
        r.fail("resume_from_checkpoint", "a Hugging Face Trainer checkpoint cannot be resumed here; relaunch in"
                                        " the same run dir (our checkpoints resume exactly), or train from the"
                                        " saved model with model_name_or_path")
    take("resume_from_checkpoint")


def vision(r: _Reading) -> None:
    """The vision-language keys (image and video sizes, video frame sampling, what to freeze)."""
    for key, ours in VISION_KEYS.items():
        if key in r.lf:
            value = r.take(key)
            r.put(ours, bool(value) if key.startswith("freeze_") else value)


def untaken(r: _Reading) -> None:
    """Every key no section took: built in (one note), unsupported, or unknown."""
    built_in = []
    for key in r.lf:
        if key in r.seen:
            continue
        if key in BUILT_IN:
            built_in.append(key)
        elif key in UNSUPPORTED:
            r.fail(key, UNSUPPORTED[key])
        else:
            r.fail(key, "unknown LLaMA-Factory key, not translated; remove it, or set the equivalent launcher key"
                        " as an override after the file (see `launcher train --help`)")
    if built_in:
        r.notes.append("built in here, nothing to translate: "
                       + "; ".join(f"{k} ({BUILT_IN[k]})" for k in built_in))


def translate(lf: dict, *, source: str = "llamafactory.yaml", lines: Optional[dict] = None,
              cwd: Optional[Path] = None, yaml_dir: Optional[Path] = None,
              deepspeed_loader: Optional[Callable] = None) -> Translation:
    """LLaMA-Factory train keys -> our overrides. Raises ConfigError listing every key it cannot take."""
    cwd = Path(cwd or Path.cwd())
    yaml_dir = Path(yaml_dir or cwd)
    r = _Reading(lf, source, lines or {})
    # The order is the order of the printed overrides, and some sections see what an earlier one took
    # (preference skips the pref_* keys KTO read).
    stage, finetuning = model_and_method(r)
    oft(r, finetuning)
    lora(r, finetuning)
    freeze(r, finetuning)
    llama_pro(r, stage, finetuning)
    token_loss(r, stage)
    kto(r, stage)
    preference(r, stage)
    ppo(r, stage, finetuning, cwd)
    dataset(r, stage, cwd)
    train(r)
    saving(r)
    evaluation(r)
    parallelism(r, cwd, yaml_dir, deepspeed_loader or load_deepspeed)
    output(r, cwd)
    vision(r)
    untaken(r)
    if r.errors:
        raise ConfigError("\n".join(r.errors))
    return Translation(overrides=r.out, notes=r.notes)


def drop_replaced_groups(overrides: list, later: list, groups: set) -> tuple[list, list]:
    """The translation's ``overrides`` less what it set for a config group that a ``later`` override chooses
    (``model=tiny_qwen2`` after the file replaces the file's ``model.name_or_path``, as any group option given
    later replaces the group), and one note per group saying what was dropped."""
    chosen = []
    for arg in later:
        key = arg.split("=", 1)[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else ""
        if key in groups and key not in chosen:
            chosen.append(key)
    kept, notes = list(overrides), []
    for group in chosen:
        dropped = [o for o in kept if o.split("=", 1)[0].lstrip("+~").split(".", 1)[0] == group]
        if dropped:
            kept = [o for o in kept if o not in dropped]
            notes.append(f"{group}= given after the file replaces what the file set for it: dropped "
                         + " ".join(dropped))
    return kept, notes


def translate_file(path: Path, cwd: Optional[Path] = None) -> Translation:
    data, lines = read_yaml(Path(path))
    return translate(data, source=str(path), lines=lines, cwd=cwd, yaml_dir=Path(path).resolve().parent)
