"""Preflight checks of the data *choices*: is each dataset the kind the method trains on, and does it carry
columns the run would silently not use (or use as something else)?

Rows themselves are checked by the dataset check (launcher.preflight.check_datasets); these read only
``dataset_info.json`` and, for media, the model's config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from launcher.config.schema import Config
from launcher.errors import LauncherError

MEDIA_COLUMNS = ("images", "videos", "audios")
# Keys of a model config that mean it has encoders for media (Qwen2-VL, LLaVA, Qwen2-Audio, ...).
MEDIA_CONFIG_KEYS = ("vision_config", "audio_config", "vision_tower", "mm_vision_tower", "visual")


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
    from launcher.preflight_model import model_folder

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


METHOD_DATA_KINDS = {"dpo": ("preference",), "rm": ("preference",), "kto": ("kto",), "pretrain": ("pt",)}
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
    from launcher.preflight import dataset_dir_of

    dataset_dir = dataset_dir_of(cfg)
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
