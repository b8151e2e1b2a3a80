"""Preflight: refuse, before anything is queued, a run that would fail after waiting for nodes.

``run_preflight(cfg)`` runs every check, collects every problem (so one round trip fixes them all) and
raises ``PreflightError`` listing them, one line each, naming the key and what to do. Things that might
still work (a hub model that is not cached here) come back as warnings.

Checks: every config value in range and every combination possible; cluster settings coherent (launch
pattern, signal vs time limit, secrets only in the environment); what the run asks for exists (CPUs or GPUs
here, the SLURM partition's nodes, CPUs, memory and GPUs; the engine's package); datasets exist and their
first rows parse; each dataset is the kind the method trains on and has no column the run would not use
(launcher.preflight_data); the model's config and weights are readable and whole, a hub model is reachable,
LoRA targets exist in it, its dtype is what will run (launcher.preflight_model); the tokenizer has a chat
template or data.template names one; batch sizes divide the world size; run.resume is a complete checkpoint;
output root writable; memory per GPU fits cluster.gpu_memory_gb.

Cheap: a text SFT dry run of a random-init model imports neither torch nor transformers; the LoRA target
check (a list of targets) and the memory check (GPUs) import them when they run.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

from launcher.config.schema import Config, resolve_grad_accum, validation_problems, world_size
from launcher.errors import ConfigError, LauncherError, PreflightError
from launcher.paths import REPO_ROOT
from launcher.data.templates import NAMED_TEMPLATES as KNOWN_TEMPLATES
from launcher.preflight_data import check_data_choices
from launcher.preflight_model import (check_dtype, check_freeze_modules, check_hub_model, check_lora_targets,
                                      check_weights,
                                      hub_cached_file as _hub_cached_file, hub_offline_reason,
                                      looks_like_path as _looks_like_path)
from launcher.preflight_resources import (check_local_resources, check_packages, check_qlora, check_resume,
                                          check_slurm_resources)

BUILTIN_TOKENIZERS = ("builtin:chars", "builtin:qwen")  # both carry a chat template
# Vocab sizes of the builtin tokenizers, for the memory estimate of random-init models.
BUILTIN_VOCAB = {"builtin:chars": 512, "builtin:qwen": 151_669}


class Problems:
    def __init__(self) -> None:
        self.errors: list = []
        self.warnings: list = []
        self.config_valid = True

    def check(self, fn: Callable, *args) -> None:
        """Run one check; a LauncherError it raises becomes one error line (later checks still run)."""
        try:
            fn(self, *args)
        except LauncherError as exc:
            self.errors.append(str(exc))
        except Exception:
            # A value already reported as out of range can break a later check (a zero divisor, a negative
            # size); the user has the line that matters. With a valid config, such an error is a bug: raise.
            if self.config_valid:
                raise


# ------------------------------------------------------------------------------------------- config


def check_config(problems: Problems, cfg: Config) -> None:
    found = validation_problems(cfg)
    problems.errors.extend(found)
    problems.config_valid = not found


def check_batch(problems: Problems, cfg: Config) -> None:
    if problems.config_valid:  # else validation_problems reported it already
        resolve_grad_accum(cfg)


def check_cluster(problems: Problems, cfg: Config) -> None:
    c, p = cfg.cluster, cfg.parallelism
    from launcher.slurm.render import check_container, check_no_secrets, check_sbatch_extra

    check_no_secrets(cfg, dict(os.environ))
    check_container(cfg)
    if c.gpus_per_node > 0 and c.nproc_per_node != c.gpus_per_node:
        problems.errors.append(
            f"cluster.nproc_per_node: {c.nproc_per_node} processes on nodes with {c.gpus_per_node} GPUs; one torchrun"
            f" per node starts one rank per GPU: set cluster.nproc_per_node={c.gpus_per_node}"
        )
    if p.backend == "nccl" and c.gpus_per_node == 0:
        problems.errors.append(
            "parallelism.backend: nccl needs GPUs but cluster.gpus_per_node=0; use parallelism.backend=gloo (or auto)"
        )
    if c.gpus_per_node > 0 and c.gpu_memory_gb is None:
        problems.warnings.append("cluster.gpu_memory_gb is not set: the memory fit check is skipped")
    if c.kind != "slurm":
        return
    check_sbatch_extra(cfg)
    # (value ranges: launcher.config.ranges; the partition's limits: launcher.preflight_resources)
    if c.time_min >= 1 and c.signal_delay_s >= c.time_min * 60:
        problems.errors.append(
            f"cluster.signal_delay_s: {c.signal_delay_s} s is not shorter than the time limit"
            f" (cluster.time_min={c.time_min} min); lower it or raise cluster.time_min"
        )


# --------------------------------------------------------------------------------------------- data


def dataset_dir_of(cfg: Config) -> Path:
    path = Path(cfg.data.dataset_dir)
    return path if path.is_absolute() else REPO_ROOT / path


def check_datasets(problems: Problems, cfg: Config) -> None:
    from launcher.data.readers import hub_reachable
    from launcher.data.registry import load_registry, unknown_dataset
    from launcher.data.validate import check_dataset

    dataset_dir = dataset_dir_of(cfg)
    specs = load_registry(dataset_dir)
    media = media_checker(cfg)
    for key, entries in (("data.datasets", cfg.data.datasets), ("data.eval_datasets", cfg.data.eval_datasets)):
        for entry in entries:
            name = entry.name if hasattr(entry, "name") else str(entry)
            if name not in specs:
                problems.errors.append(f"{key}: {unknown_dataset(name, dataset_dir, specs)}")
                continue
            spec = specs[name]
            if not spec.file_name:
                if spec.hf_hub_url and not hub_reachable():
                    problems.errors.append(
                        f"{key}: dataset '{name}' comes from the hub ({spec.hf_hub_url}), which is not reachable"
                        " from here; download it and set file_name in dataset_info.json"
                    )
                elif spec.hf_hub_url:
                    problems.warnings.append(f"{key}: dataset '{name}' comes from the hub; its rows are not checked")
                    continue
                else:
                    problems.errors.append(
                        f"{key}: dataset '{name}' has no file_name in dataset_info.json; only local files and"
                        " hf_hub_url are supported"
                    )
                continue
            path = spec.source()
            if not path.exists():
                problems.errors.append(
                    f"{key}: dataset '{name}': file {path} not found; fix file_name in {dataset_dir}/dataset_info.json"
                )
                continue
            check = check_dataset(spec, media=media)
            if not check.bad:
                continue
            if cfg.data.lenient and check.rows > check.bad:
                problems.warnings.append(f"{key}: data.lenient=true skips {check.bad} of {check.rows} rows;"
                                         f" {check.summary(name)}")
            else:
                problems.errors.append(f"{key}: {check.summary(name)}")


def media_checker(cfg: Config) -> Callable:
    """check(sample, where) for a row's images: the model takes them and the template has an image slot (every
    row); the files are images none of which resizes to more tokens than data.cutoff_len (the image files of
    the first ``IMAGE_FILE_ROWS`` rows with images: a header read each, so a million-image set stays seconds)."""
    from launcher.data.templates import IMAGE_TEMPLATES
    from launcher.data.vision import VisionData, check_media, sample_grids
    from launcher.models.vision import build_image_processor, vision_info

    info = vision_info(cfg.model)
    # as training asks for it (launcher.data.template_request): unset/auto is the VL family's own template
    template = None if cfg.data.template in (None, "auto") else cfg.data.template
    if template is None and info is not None:
        template = info.template
    image_slot = template is None or template in IMAGE_TEMPLATES
    vision, opened = None, [0]

    def check(sample: dict, where: str) -> None:
        nonlocal vision
        check_media(sample, template, image_slot, info is not None, cfg.model.name_or_path or cfg.model.name, where,
                    info.template if info is not None else None)
        if sample.get("images") and opened[0] < IMAGE_FILE_ROWS:
            opened[0] += 1
            if vision is None:
                vision = VisionData(build_image_processor(info), cfg.data.image_max_pixels, cfg.data.image_min_pixels)
            sample_grids(sample, vision, cfg.data.cutoff_len, where)

    return check


IMAGE_FILE_ROWS = 1000
"""Rows whose image files the dry run opens (the rest are opened while the data is built)."""


# ------------------------------------------------------------------------------------ model, tokenizer


def check_random_init_arch(arch: str) -> None:
    """model.arch names a transformers model_type, checked by its folder in the installed transformers (importing
    transformers' configs pulls in torch: seconds a text dry run need not spend)."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    known = spec is not None and spec.origin and (Path(spec.origin).parent / "models" / arch.replace("-", "_")).is_dir()
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
    if _looks_like_path(m.name_or_path):
        config_file = Path(source) / "config.json"
        if not Path(source).is_dir():
            raise ConfigError(f"model.name_or_path: folder {source} does not exist; point it at a HF model folder")
        if not config_file.is_file():
            raise ConfigError(f"model.name_or_path: {source} has no config.json; is it a HF model folder?")
        try:
            return json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"model.name_or_path: {config_file} is unreadable ({exc}); fix or re-download it")
    cached = _hub_cached_file(m.name_or_path, "config.json")
    if cached:
        return json.loads(Path(cached).read_text())
    return None  # check_hub_model says why (offline: an error; else a warning)


def check_model(problems: Problems, cfg: Config) -> None:
    if cfg.model.name_or_path is None:
        check_random_init_arch(cfg.model.arch)  # its defaults are read only by the memory check
        return
    read_model_config(cfg, problems)


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
        check_template_resolution(problems, cfg)
        return
    folder: Optional[Path] = None
    if _looks_like_path(source):
        folder = Path(os.path.expanduser(source))
        if not folder.is_dir():
            raise ConfigError(f"model.tokenizer: folder {folder} does not exist")
        if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
                or (folder / "vocab.json").is_file() or (folder / "tokenizer.model").is_file()):
            raise ConfigError(f"model.tokenizer: {folder} has no tokenizer files (tokenizer.json, tokenizer_config.json)")
        has_template = _has_chat_template(folder)
    else:
        cached = _hub_cached_file(source, "tokenizer_config.json")
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
    tokenizer = load_tokenizer(cfg.model)
    renderer, note = choose_renderer(tokenizer, template_request(cfg.data, kind, vision_info(cfg.model), tokenizer))
    if note:
        problems.warnings.append(f"data.template: {note} (training does the same; set data.template to choose)")


# ------------------------------------------------------------------------------------ output, memory


def check_output_root(problems: Problems, cfg: Config) -> None:
    root = Path(cfg.run.output_root)
    root = root if root.is_absolute() else Path.cwd() / root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".preflight-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"run.output_root: {root} is not writable ({exc.strerror}); point run.output_root at a writable folder"
        ) from None


def model_shape_of(cfg: Config, problems: Optional[Problems] = None):
    """The model's shape for the memory estimates, or None (unknown config; a warning says so)."""
    from launcher.memory_estimate import ModelShape

    hf = read_model_config(cfg)
    if hf is None:
        return None
    try:
        return ModelShape.from_hf_config(hf)
    except (TypeError, ValueError):
        if problems is not None:
            problems.warnings.append("memory check skipped: the model config has no hidden_size/num_hidden_layers")
        return None


def check_memory(problems: Problems, cfg: Config) -> None:
    """Training state per GPU (cluster.gpu_memory_gb) and the loading peak: host RAM per node (cluster.mem_gb)
    and GPU memory at load; refused with the overrides under which both fit."""
    from launcher.memory_estimate import estimate_load_memory, estimate_memory_per_gpu, suggest_fits

    c = cfg.cluster
    gpu_limit = c.gpu_memory_gb if c.gpus_per_node > 0 else None
    if gpu_limit is None and c.mem_gb is None:
        return
    shape = model_shape_of(cfg, problems)
    if shape is None:
        return
    load = estimate_load_memory(cfg, shape)
    refusals = []
    if gpu_limit is not None:
        estimate = estimate_memory_per_gpu(cfg, shape)
        if estimate.total_gb > gpu_limit:
            refusals.append(
                f"cluster.gpu_memory_gb: the run needs about {estimate.total_gb:.0f} GB per GPU but the GPUs have"
                f" {gpu_limit:.0f} GB ({estimate.params / 1e9:.2f}B params, method={cfg.method.name},"
                f" parallelism={cfg.parallelism.name}, world size {world_size(cfg)}: {estimate.breakdown()})")
        elif estimate.total_gb > 0.9 * gpu_limit:
            problems.warnings.append(
                f"memory: about {estimate.total_gb:.0f} of {gpu_limit:.0f} GB per GPU: close to the limit")
        if load.gpu_gb > gpu_limit:
            refusals.append(f"cluster.gpu_memory_gb: {load.describe()}, more than the {gpu_limit:.0f} GB a GPU has")
    if c.mem_gb is not None and load.host_gb_per_node > c.mem_gb:
        refusals.append(f"cluster.mem_gb: {load.describe()}, more than the {c.mem_gb:.0f} GB a node has")
    if not refusals:
        return
    fits = suggest_fits(cfg, shape, gpu_limit if gpu_limit is not None else float("inf"))
    hint = f"try {' or '.join(fits)}" if fits else (
        "no single change fits: add nodes (cluster.nodes), lower train.micro_batch_size or data.cutoff_len")
    raise PreflightError(f"{'; '.join(refusals)}; {hint}")


def memory_summary(cfg: Config) -> Optional[str]:
    """The dry run's memory lines: training state per GPU and the loading peak; None when the shape is unknown
    or the cluster states no memory to check against (a local CPU run: reading the model's config would import
    transformers, which a dry run of that kind never does)."""
    from launcher.memory_estimate import estimate_load_memory, estimate_memory_per_gpu

    c = cfg.cluster
    if not ((c.gpus_per_node > 0 and c.gpu_memory_gb is not None) or c.mem_gb is not None):
        return None
    shape = model_shape_of(cfg)
    if shape is None:
        return None
    train = estimate_memory_per_gpu(cfg, shape)
    return (f"# memory estimate ({shape.num_params() / 1e9:.1f}B params, world size {world_size(cfg)}):\n"
            f"#   training: {train.breakdown()} per GPU\n#   {estimate_load_memory(cfg, shape).describe()}")


CHECKS = (check_config, check_cluster, check_local_resources, check_slurm_resources, check_packages, check_qlora,
          check_batch,
          check_datasets, check_data_choices, check_model, check_hub_model, check_weights, check_tokenizer,
          check_lora_targets, check_freeze_modules, check_dtype, check_resume, check_output_root, check_memory)


def run_preflight(cfg: Config) -> list:
    """Run every check; return warnings, or raise PreflightError listing every problem found."""
    problems = Problems()
    for check in CHECKS:
        problems.check(check, cfg)
    if len(problems.errors) == 1:
        raise PreflightError(f"preflight refused the run: {problems.errors[0]}")
    if problems.errors:
        lines = "\n".join(f"  - {e}" for e in problems.errors)
        raise PreflightError(f"preflight refused the run ({len(problems.errors)} problems):\n{lines}")
    return problems.warnings
