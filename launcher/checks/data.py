"""Checks of the data: the datasets exist and their rows parse (images included), each is the kind the method
trains on, and none carries columns the run would silently not use (or use as something else).

The row check reads every row (``launcher.data.validate``) and the first ``IMAGE_FILE_ROWS`` rows' image
headers; the choice checks read only ``dataset_info.json`` and, for media, the model's config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from launcher.checks.problems import Problems
from launcher.config.schema import Config
from launcher.errors import LauncherError

MEDIA_COLUMNS = ("images", "videos", "audios")
# Keys of a model config that mean it has encoders for media (Qwen2-VL, LLaVA, Qwen2-Audio, ...).
MEDIA_CONFIG_KEYS = ("vision_config", "audio_config", "vision_tower", "mm_vision_tower", "visual")


# ------------------------------------------------------------------------------------- the rows


def check_datasets(problems: Problems, cfg: Config) -> None:
    from launcher.data.readers import hub_reachable
    from launcher.data.registry import load_registry, unknown_dataset
    from launcher.data.validate import check_dataset

    from launcher.data import resolve_dataset_dir

    dataset_dir = resolve_dataset_dir(cfg.data)
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
    """check(sample, where) for a row's images and videos: the model takes them and the template has an image
    slot (every row); the files are images or videos none of which takes more tokens than data.cutoff_len (the
    files of the first ``IMAGE_FILE_ROWS`` rows with media: a header read each, so a million-image set stays
    seconds)."""
    from launcher.data.templates import IMAGE_TEMPLATES
    from launcher.data import video_settings
    from launcher.data.vision import VisionData, check_media, sample_grids, sample_videos
    from launcher.models.vision import build_image_processor, vision_info

    from launcher.models.audio import audio_info

    from launcher.models.omni import omni_vision_info

    omni = omni_vision_info(cfg.model)  # the Qwen2.5-Omni thinker: images, videos and audio in one row
    info = vision_info(cfg.model) or omni
    audio_model = audio_info(cfg.model)
    # as training asks for it (launcher.data.template_request): unset/auto is the VL family's own template
    template = None if cfg.data.template in (None, "auto") else cfg.data.template
    if template is None and info is not None:
        template = info.template
    image_slot = template is None or template in IMAGE_TEMPLATES
    vision, audio, opened = None, None, [0]

    def check(sample: dict, where: str) -> None:
        nonlocal vision, audio
        if omni is None:
            check_media(sample, template, image_slot, info is not None, cfg.model.name_or_path or cfg.model.name,
                        where, info.template if info is not None else None, audio_model=audio_model is not None)
        elif cfg.data.use_audio_in_video and sample.get("videos"):
            from launcher.data.omni import check_pairs

            check_pairs(sample["messages"], len(sample["videos"]), len(sample.get("audios") or []), where)
        if sample.get("audios") and opened[0] < IMAGE_FILE_ROWS:
            # each audio decoded (its exact length): missing, unreadable, empty, longer than the model hears or
            # than data.cutoff_len alone
            from launcher.data.audio import AudioData, sample_audios
            from launcher.models.audio import build_feature_extractor

            opened[0] += 1
            if audio is None:
                extractor = build_feature_extractor(audio_model)
                audio = AudioData(extractor, extractor.sampling_rate)
            sample_audios(sample, audio, cfg.data.cutoff_len, where)
        if (sample.get("images") or sample.get("videos")) and opened[0] < IMAGE_FILE_ROWS:
            opened[0] += 1
            if vision is None:
                vision = VisionData(build_image_processor(info), cfg.data.image_max_pixels, cfg.data.image_min_pixels,
                                    video=video_settings(cfg, info))
            sample_grids(sample, vision, cfg.data.cutoff_len, where)
            # each video's header (its frames, duration and size): missing, unreadable, frameless or longer
            # than data.cutoff_len alone
            sample_videos(sample, vision, cfg.data.cutoff_len, where)

    return check


IMAGE_FILE_ROWS = 1000
"""Rows whose image files the dry run opens (the rest are opened while the data is built)."""


# ------------------------------------------------------------------------------------- the choices


def used_specs(cfg: Config, dataset_dir: Path):
    """(key, spec) for every dataset the run reads; entries that are unknown or broken are the dataset
    check's to report, so they are skipped here."""
    from launcher.data.registry import load_registry

    try:
        specs = load_registry(dataset_dir)
    except LauncherError:
        return
    for key, entries in (("data.datasets", cfg.data.datasets), ("data.eval_datasets", cfg.data.eval_datasets)):
        for entry in entries:
            try:
                if entry.name in specs:
                    yield key, specs[entry.name]
            except LauncherError:
                continue


def model_has_media_encoders(cfg: Config) -> Optional[bool]:
    """Whether the model takes images/videos/audio; None when its config is not readable from here."""
    from launcher.checks.model import model_folder

    m = cfg.model
    if m.name_or_path is None:
        if any(k in m.config for k in MEDIA_CONFIG_KEYS):
            return True
        from transformers import AutoConfig

        try:
            config = AutoConfig.for_model(m.arch).to_dict()
        except (ValueError, TypeError):
            return None
    else:
        folder = model_folder(cfg)
        if folder is None:
            return None
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
    return any(k in config for k in MEDIA_CONFIG_KEYS)


METHOD_DATA_KINDS = {"dpo": ("preference",), "rm": ("preference",), "kto": ("kto",), "pretrain": ("pt",),
                     "grpo": ("sft",), "ppo": ("sft",)}
"""method.name -> the dataset kinds it trains on (``dataset_kind``); the others: sft and pt."""
KIND_WORDS = {"sft": "instruction", "preference": "preference", "kto": "KTO feedback", "pt": "plain text"}


def dataset_kind(spec) -> str:
    """preference (ranking: true), kto (a kto_tag column), pt (only a text column) or sft."""
    if spec.ranking:
        return "preference"
    if spec.is_feedback():
        return "kto"
    return "pt" if spec.is_text() else "sft"


def check_data_choices(problems, cfg: Config) -> None:
    from launcher.data import resolve_dataset_dir

    dataset_dir = resolve_dataset_dir(cfg.data)
    info = f"{dataset_dir}/dataset_info.json"
    method = cfg.method.name
    media_model: Optional[bool] = None
    checked_media = False
    wrong_kind: dict[str, list] = {}  # key -> datasets of the wrong kind for the method (one line for all)
    for key, spec in used_specs(cfg, dataset_dir):
        name = spec.name
        columns = spec.resolved_columns()
        kind = dataset_kind(spec)
        if kind == "kto" and method != "kto":
            problems.errors.append(
                f"{key}: dataset '{name}' maps a kto_tag column ('{columns['kto_tag']}': KTO's desirable/undesirable"
                f" label): method={method} would train on the undesirable answers too. Use method=kto (or"
                f" method=kto_lora), or keep only the desirable rows and drop kto_tag from its columns in {info}"
            )
        elif kind not in METHOD_DATA_KINDS.get(method, ("sft", "pt")):
            wrong_kind.setdefault(key, []).append((name, kind))
        media = [c for c in MEDIA_COLUMNS if columns.get(c)]
        if media:
            if not checked_media:
                media_model, checked_media = model_has_media_encoders(cfg), True
            if media_model is False:
                problems.errors.append(
                    f"{key}: dataset '{name}' has {'/'.join(media)} (columns in {info}), but the model"
                    f" ({cfg.model.name_or_path or cfg.model.arch}) is text-only: the <image>/<video>/<audio>"
                    " placeholders would be trained as plain text. Use a vision-language model, or a text dataset"
                )
    if wrong_kind:
        keys = ", ".join(wrong_kind)
        listed = [f"'{n}'" for found in wrong_kind.values() for n, _ in found]
        kinds = {k for found in wrong_kind.values() for _, k in found}
        names, are = ", ".join(listed), "is" if len(listed) == 1 else "are"
        if method in ("dpo", "rm"):
            problems.errors.append(
                f"{keys}: method={method} needs preference data, but {names} (in {info}) {are} not marked ranking: true;"
                " use preference data (data=prefs, or a dataset with ranking: true such as dpo_en_demo)"
            )
        elif method == "kto":
            problems.errors.append(
                f"{keys}: method=kto needs feedback data, but {names} (in {info}) {are} not: no kto_tag column"
                " marks its answers desirable or undesirable; use a dataset whose entry maps kto_tag (such as"
                " kto_en_demo), or method=dpo for preference pairs"
            )
        elif method == "grpo":
            exact = "exact_match" in cfg.method.grpo.rewards
            problems.errors.append(
                f"{keys}: method=grpo samples answers to prompts, but {names} (in {info}) {are}"
                f" {'/'.join(sorted(KIND_WORDS[k] for k in kinds))} data"
                f"{' with no answer column for the exact_match reward' if exact else ''}; use instruction data"
                " (alpaca/sharegpt with an answer: data=tasks)"
            )
        elif method == "ppo":
            problems.errors.append(
                f"{keys}: method=ppo samples answers to prompts (the reward model scores them), but {names} (in"
                f" {info}) {are} {'/'.join(sorted(KIND_WORDS[k] for k in kinds))} data; use instruction data"
                " (alpaca/sharegpt: data=tasks)"
            )
        elif method == "pretrain":
            problems.errors.append(
                f"{keys}: method=pretrain trains on plain text, but {names} (in {info}) {are}"
                f" {'/'.join(sorted(KIND_WORDS[k] for k in kinds))} data; use datasets whose entry maps only a text"
                " column (columns: {prompt: text}, e.g. c4_demo, wiki_demo), or method=sft_full"
            )
        else:
            problems.errors.append(
                f"{keys}: method={method} trains on one answer per prompt, but {names} (in {info}) {are} preference"
                " data (ranking: true); use method=dpo or method=dpo_lora, or other datasets"
            )
