"""Checks of the model and its tokenizer: where the model's files are, whether its config is readable and its
weights whole, whether a hub model is reachable, whether the LoRA targets and frozen modules exist in it, what
dtype the run will really compute in, and whether the tokenizer has a chat template (or data.template names one).

Cheap first: a random-init model is checked without importing torch or transformers; the LoRA target check
builds the model on the meta device (no memory, no weights read), and only when the targets are a list.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Optional

from launcher.checks.problems import Problems
from launcher.config.schema import Config
from launcher.data.templates import NAMED_TEMPLATES as KNOWN_TEMPLATES
from launcher.errors import ConfigError, LauncherError

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
# Module types peft's LoRA can wrap (peft.tuners.lora.layer: Linear, Embedding, Conv1d/2d/3d, transformers' Conv1D).
LORA_MODULE_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention")


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or os.path.exists(os.path.expanduser(text))


def hub_cached_file(repo_id: str, filename: str) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
        return found if isinstance(found, str) else None
    except Exception:  # an invalid repo id or no huggingface_hub: treat as not cached
        return None


def model_folder(cfg: Config) -> Optional[Path]:
    """The folder holding the model's files: the local folder, or the cached hub snapshot; None otherwise."""
    source = cfg.model.name_or_path
    if source is None:
        return None
    if looks_like_path(source):
        folder = Path(os.path.expanduser(source))
        return folder if folder.is_dir() else None
    cached = hub_cached_file(source, "config.json")
    return Path(cached).parent if cached else None


def hub_offline_reason() -> Optional[str]:
    """Why the hub cannot be reached from here, at once (env) or after a 2 s probe; None when it can."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "0") not in ("0", "", "false", "False"):
            return f"{var}={os.environ[var]}"
    import socket

    from launcher.data.readers import HUB_HOST

    try:
        with socket.create_connection(HUB_HOST, timeout=2.0):
            return None
    except OSError:
        return f"{HUB_HOST[0]} does not answer"


def check_hub_model(problems, cfg: Config) -> None:
    """A hub id that is not in the local cache: refused at once when the hub cannot be reached (transformers
    would retry for most of a minute on every rank), a warning otherwise."""
    source = cfg.model.name_or_path
    if source is None or looks_like_path(source) or hub_cached_file(source, "config.json"):
        return
    reason = hub_offline_reason()
    if reason:
        raise ConfigError(
            f"model.name_or_path: '{source}' is not in the local HF cache and the hub cannot be reached ({reason});"
            f" download it where there is network (huggingface-cli download {source}) or point model.name_or_path"
            " at a local folder"
        )
    problems.warnings.append(
        f"model.name_or_path: '{source}' is not in the local HF cache; every node will download it"
        f" (pre-fetch with `huggingface-cli download {source}`); memory check skipped"
    )


BUILTIN_TOKENIZERS = ("builtin:chars", "builtin:qwen", "builtin:qwen2_audio",  # all carry a chat template
                      "builtin:qwen2_5_omni")
# Vocab sizes of the builtin tokenizers, for the memory estimate of random-init models.
BUILTIN_VOCAB = {"builtin:chars": 512, "builtin:qwen": 151_669, "builtin:qwen2_audio": 151_669,
                 "builtin:qwen2_5_omni": 151_669}
SUBMODEL_FOLDERS = {"qwen2_5_omni_thinker": "qwen2_5_omni"}
"""model_types that live in another model's folder of transformers (the Omni thinker in qwen2_5_omni/)."""


# ------------------------------------------------------------------------------------- config


def check_random_init_arch(arch: str) -> None:
    """model.arch names a transformers model_type, checked by its folder in the installed transformers (importing
    transformers' configs pulls in torch: seconds a text dry run need not spend)."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    folder = SUBMODEL_FOLDERS.get(arch, arch.replace("-", "_"))
    known = spec is not None and spec.origin and (Path(spec.origin).parent / "models" / folder).is_dir()
    if not known:
        raise ConfigError(f"model.arch: '{arch}' is not a transformers model_type (e.g. qwen2, llama, mistral)")


def read_model_config(cfg: Config, problems: Optional[Problems] = None) -> Optional[dict]:
    """The HF config dict of the model (random init: arch defaults + overrides); None when unknown."""
    m = cfg.model
    if m.name_or_path is None:
        check_random_init_arch(m.arch)
        from transformers import CONFIG_MAPPING

        if m.arch not in CONFIG_MAPPING:
            raise ConfigError(f"model.arch: '{m.arch}' is not a transformers model_type (e.g. qwen2, llama, mistral)")
        data = CONFIG_MAPPING[m.arch]().to_dict()
        data.update(m.config)
        if "vocab_size" not in m.config and m.tokenizer in BUILTIN_VOCAB:
            data["vocab_size"] = BUILTIN_VOCAB[m.tokenizer]
        return data
    source = os.path.expanduser(m.name_or_path)
    if looks_like_path(m.name_or_path):
        config_file = Path(source) / "config.json"
        if not Path(source).is_dir():
            raise ConfigError(f"model.name_or_path: folder {source} does not exist; point it at a HF model folder")
        if not config_file.is_file():
            raise ConfigError(f"model.name_or_path: {source} has no config.json; is it a HF model folder?")
        try:
            return json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"model.name_or_path: {config_file} is unreadable ({exc}); fix or re-download it")
    cached = hub_cached_file(m.name_or_path, "config.json")
    if cached:
        return json.loads(Path(cached).read_text())
    return None  # check_hub_model says why (offline: an error; else a warning)


def check_model(problems: Problems, cfg: Config) -> None:
    if cfg.model.name_or_path is None:
        check_random_init_arch(cfg.model.arch)  # its defaults are read only by the memory check
        return
    read_model_config(cfg, problems)


# ------------------------------------------------------------------------------------- tokenizer


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text()).get("chat_template"))
        except (OSError, json.JSONDecodeError):
            return False
    return False


def check_tokenizer(problems: Problems, cfg: Config) -> None:
    m, d = cfg.model, cfg.data
    template = None if d.template in (None, "auto") else d.template
    if template is not None and template not in KNOWN_TEMPLATES:
        raise ConfigError(f"data.template: '{d.template}' is not a known template; use one of {', '.join(KNOWN_TEMPLATES)}")
    source = m.tokenizer or m.name_or_path
    if source is None:
        raise ConfigError("model.tokenizer: a random-init model needs a tokenizer (builtin:chars, builtin:qwen, or a path)")
    if source in BUILTIN_TOKENIZERS:
        # builtin:chars carries a template made to split into turns, so there is nothing to resolve, and
        # loading it would bring transformers into the default dry run (which stays torch- and transformers-free).
        if source != "builtin:chars":
            check_template_resolution(problems, cfg)
        return
    folder: Optional[Path] = None
    if looks_like_path(source):
        folder = Path(os.path.expanduser(source))
        if not folder.is_dir():
            raise ConfigError(f"model.tokenizer: folder {folder} does not exist")
        if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
                or (folder / "vocab.json").is_file() or (folder / "tokenizer.model").is_file()):
            raise ConfigError(f"model.tokenizer: {folder} has no tokenizer files (tokenizer.json, tokenizer_config.json)")
        has_template = _has_chat_template(folder)
    else:
        cached = hub_cached_file(source, "tokenizer_config.json")
        if cached is None:
            reason = hub_offline_reason() if source != m.name_or_path else None  # the model's: check_hub_model
            if reason:
                raise ConfigError(f"model.tokenizer: '{source}' is not in the local HF cache and the hub cannot be"
                                  f" reached ({reason}); download it, or point model.tokenizer at a local folder")
            return
        has_template = _has_chat_template(Path(cached).parent)
    if not has_template and template is None:
        raise ConfigError(
            f"data.template: tokenizer {source} has no chat template; name one with data.template="
            f" ({', '.join(KNOWN_TEMPLATES)})"
        )
    check_template_resolution(problems, cfg)


def check_template_resolution(problems: Problems, cfg: Config) -> None:
    """Resolve the template exactly as training will (launcher.data.template_request, choose_renderer), with the
    tokenizer itself (local or cached: no download here): a template training would refuse is an error, and
    the fallback from a tokenizer template that cannot be split into turns is said now, not in the job's log."""
    from launcher.data import data_kind, resolve_specs, template_request
    from launcher.data.templates import choose_renderer
    from launcher.models.tokenizers import load_tokenizer
    from launcher.models.vision import vision_info

    try:
        kind = data_kind([s for specs in resolve_specs(cfg.data) for s in specs])
    except LauncherError:
        return  # the data checks report it
    try:
        tokenizer = load_tokenizer(cfg.model)
    except Exception:  # noqa: BLE001 - a best-effort look: the tokenizer's files are checked above, and
        return  # training loads it (and says what is wrong with it) before any step
    from launcher.models.audio import audio_info

    family = vision_info(cfg.model) or audio_info(cfg.model)
    renderer, note = choose_renderer(tokenizer, template_request(cfg.data, kind, family, tokenizer))
    if note:
        problems.warnings.append(f"data.template: {note} (training does the same; set data.template to choose)")


# ------------------------------------------------------------------------------------- weights


def safetensors_problem(path: Path) -> Optional[str]:
    """What is wrong with a safetensors file, from its header alone: 8 bytes of little-endian length, a JSON
    header of that length, then the tensors, whose data offsets must fit in the file. None when whole."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        length = int.from_bytes(head, "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            return f"its header claims {length} bytes but the file has {size}: cut short, or not a safetensors file"
        raw = fh.read(length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"its header is not valid JSON ({exc.__class__.__name__}): the file is damaged"
    if not isinstance(header, dict):
        return "its header is not a JSON object: the file is damaged"
    data_bytes, end = size - 8 - length, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"tensor '{name}' has no valid data_offsets in the header: the file is damaged"
        end = max(end, offsets[1])
    if end > data_bytes:
        return f"its tensors need {end} bytes of data but the file holds {data_bytes}: the file is cut short"
    return None


def check_weights(problems, cfg: Config) -> None:
    """Every safetensors shard of a local (or cached) model is whole, and every shard its index names exists."""
    folder = model_folder(cfg)
    if folder is None:
        return
    index = folder / "model.safetensors.index.json"
    shards = sorted(folder.glob("*.safetensors"))
    if index.is_file():
        try:
            named = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise ConfigError(f"model.name_or_path: {index} is unreadable ({exc.__class__.__name__}); re-download"
                              " the model") from None
        missing = sorted(n for n in named if not (folder / n).is_file())
        # A hub snapshot may lack shards that were never fetched: transformers downloads them (the offline
        # case is refused by check_hub_model). A local folder has nowhere to get them from.
        if missing and looks_like_path(cfg.model.name_or_path or ""):
            raise ConfigError(f"model.name_or_path: {folder} lacks {len(missing)} shard(s) that"
                              f" {index.name} names ({', '.join(missing[:3])}); re-download the model")
    for shard in shards:
        problem = safetensors_problem(shard)
        if problem:
            problems.errors.append(f"model.name_or_path: {shard}: {problem}; re-download or re-export the model")


# ------------------------------------------------------------------------------------- LoRA targets


def meta_model_modules(cfg: Config) -> Optional[dict[str, str]]:
    """{module name: class name} of the model, built on the meta device (no memory, no weights read);
    None when its config cannot be read from here."""
    m = cfg.model
    folder = model_folder(cfg) if m.name_or_path else None
    if m.name_or_path and folder is None:
        return None
    return _meta_modules(str(folder) if folder else None, m.arch, json.dumps(m.config, sort_keys=True),
                         m.trust_remote_code)


@functools.lru_cache(maxsize=8)  # a sweep's points share their model: build it once
def _meta_modules(folder: Optional[str], arch: str, config_json: str, trust_remote_code: bool) -> dict[str, str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if folder:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    else:
        try:
            config = AutoConfig.for_model(arch, **json.loads(config_json))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model.arch / model.config: {exc}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the module's full name is the target, or ends with '.target'."""
    return name == target or name.endswith("." + target)


def lora_target_problems(targets: list, modules: dict[str, str], key: str, wrappable: bool) -> list[str]:
    kinds = LORA_MODULE_TYPES if wrappable else None
    candidates = {n: t for n, t in modules.items() if kinds is None or t in kinds}
    missing = [t for t in targets if not any(matches(n, str(t)) for n in candidates)]
    if not missing:
        return []
    names = sorted({n.rsplit(".", 1)[-1] for n in candidates})
    what = "LoRA-able (Linear/Embedding/Conv) modules" if wrappable else "modules"
    return [f"{key}: {', '.join(map(str, missing))} match no {what} of this model; its {what}: {', '.join(names)}"]


def check_lora_targets(problems, cfg: Config) -> None:
    lora = cfg.method.lora
    if cfg.method.finetuning != "lora":
        return
    lists = [(lora.target_modules, "method.lora.target_modules", True), (lora.modules_to_save, "method.lora.modules_to_save", False)]
    lists = [(v, k, w) for v, k, w in lists if isinstance(v, list) and v]
    if not lists:
        return
    modules = meta_model_modules(cfg)
    if modules is None:
        problems.warnings.append("method.lora.target_modules: the model's config is not readable from here; the"
                                 " target names are not checked")
        return
    for targets, key, wrappable in lists:
        problems.errors.extend(lora_target_problems(targets, modules, key, wrappable))


def check_freeze_modules(problems, cfg: Config) -> None:
    """method.finetuning=freeze: the named modules exist in the model (the meta build, as for LoRA targets)."""
    f = cfg.method.freeze
    if cfg.method.finetuning != "freeze" or (f.trainable_modules == "all" and not f.extra_modules and not f.llama_pro):
        return
    modules = meta_model_modules(cfg)
    if modules is None:
        problems.warnings.append("method.freeze: the model's config is not readable from here; the module names are"
                                 " not checked")
        return
    from launcher.models.build import plan_freeze

    layers = {n.split(".")[i + 1] for n in modules for i, part in enumerate(n.split(".")[:-1])
              if part == "layers" and n.split(".")[i + 1].isdigit()}
    expand = cfg.method.llama_pro.expand
    if expand and len(layers) % expand:  # LLaMA-Pro inserts one block after every num_layers/expand-th layer
        problems.errors.append(f"method.llama_pro.expand: the model's {len(layers)} layers do not divide by {expand};"
                               " pick a divisor")
        return
    try:
        plan_freeze(list(modules), len(layers) + expand, f)
    except ConfigError as exc:
        problems.errors.append(str(exc))


# ------------------------------------------------------------------------------------- dtype


def check_dtype(problems, cfg: Config) -> None:
    """model.dtype that a CPU run will not use: there the matmuls run in float32 (launcher.engines.precision:
    CPU autocast to bf16 is slower than fp32), so a low-precision request is said out loud, not ignored."""
    dtype, c = cfg.model.dtype, cfg.cluster
    if dtype not in ("float16", "bfloat16") or cfg.method.pure_bf16:  # pure bf16 is bf16 on a CPU too
        return
    if c.kind == "local":
        from launcher.checks.resources import local_gpu_count

        on_gpu, where = local_gpu_count() > 0, "this machine has no GPU"
    else:
        on_gpu, where = c.gpus_per_node > 0, "cluster.gpus_per_node=0"
    if not on_gpu:
        problems.warnings.append(
            f"model.dtype={dtype}: this run has no GPU ({where}); on a CPU it trains in float32 (weights and"
            " compute), not in " + dtype + ". Set model.dtype=float32 (or auto) to say what it does"
        )


def describe_precision(cfg: Config) -> str:
    """What the run will really compute in, for the dry run (launcher.engines.precision decides on the ranks)."""
    dtype, c = cfg.model.dtype, cfg.cluster
    if c.kind == "local":
        from launcher.checks.resources import local_gpu_count

        on_gpu = local_gpu_count() > 0
    else:
        on_gpu = c.gpus_per_node > 0
    if cfg.method.pure_bf16:
        where = "" if on_gpu else " (on a CPU too)"
        return (f"pure bfloat16{where}: bf16 weights, gradients and optimizer state, no fp32 master copy (about half"
                " the memory of mixed precision's; small updates can round away)")
    if not on_gpu:
        return f"float32 weights and compute (no GPU; model.dtype={dtype})"
    if dtype == "float32":
        return "float32 weights and compute"
    if dtype == "float16":
        scaler = ("DeepSpeed's fp16 mode" if cfg.parallelism.strategy == "deepspeed" else
                  "FSDP's ShardedGradScaler" if cfg.parallelism.strategy == "fsdp" else "torch.amp GradScaler")
        return f"float16 compute, fp32 master weights, dynamic loss scaling ({scaler})"
    name = "bfloat16" if dtype == "bfloat16" else "bfloat16 where the GPU has it (else float32)"
    return f"{name} compute, fp32 master weights"


def check_reward_model(problems: Problems, cfg: Config) -> None:
    """method=rm scores text with AutoModelForSequenceClassification (launcher.models.reward), which has no class
    for a vision-language model."""
    if cfg.method.name != "rm":
        return
    from launcher.models.vision import vision_info

    if vision_info(cfg.model):
        raise ConfigError(f"model: method=rm scores text with AutoModelForSequenceClassification, which has no"
                          f" class for the vision-language model {cfg.model.name_or_path or cfg.model.arch};"
                          " use a text-only model")


def rollout_model_problems(cfg: Config) -> list[str]:
    """method=grpo and ppo sample from text prompts: their rollouts (launcher.inference.rollout) and prompt rows
    (launcher.data.prompt_rows) carry no images, so a vision-language model would answer image questions blind."""
    from launcher.models.vision import vision_info

    if cfg.method.name not in ("grpo", "ppo") or not vision_info(cfg.model):
        return []
    return [f"model: method={cfg.method.name} samples completions from text prompts only (its rollouts pass no images"
            f" or videos) and {cfg.model.name_or_path or cfg.model.arch} is a vision-language model; use a text-only model"
            " (or method=sft / dpo for VL data)"]
def check_sequence_parallel_heads(problems, cfg: Config) -> None:
    """parallelism.sequence_parallel=N: Ulysses hands each rank heads/N of every attention layer, so N must divide
    the model's attention heads and key/value heads (launcher.engines.sequence_parallel)."""
    n = cfg.parallelism.sequence_parallel
    if n <= 1:
        return
    from launcher.checks.memory import model_shape_of

    shape = model_shape_of(cfg, problems)
    if shape is None:
        problems.warnings.append("parallelism.sequence_parallel: the model's config is not readable from here; its"
                                 " heads are not checked against the sequence ranks")
        return
    for heads, what in ((shape.heads, "attention heads"), (shape.kv_heads, "key/value heads")):
        if heads % n:
            divisors = [d for d in range(1, heads + 1) if heads % d == 0 and shape.heads % d == 0
                        and shape.kv_heads % d == 0]
            problems.errors.append(
                f"parallelism.sequence_parallel: {n} ranks per row must divide the model's {heads} {what} (each rank"
                f" attends with 1/{n} of them); use one of {divisors}")
            return
