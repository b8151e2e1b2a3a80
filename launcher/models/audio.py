"""Audio-language models (Qwen2-Audio): which family a model is, its feature extractor, its audio tokens, and
the module groups that ``model.freeze_*`` and LoRA act on.

The feature extractor is transformers' own (``WhisperFeatureExtractor``, what Qwen2AudioProcessor holds). A
random-init model gets one built in code with the values of Qwen2-Audio-7B-Instruct's
``preprocessor_config.json``; a model folder's own ``preprocessor_config.json`` wins where there is one.

The Qwen2.5-Omni thinker (``qwen2_5_omni_thinker``) is an audio model here too (its audio tower, feature
extractor and audio tokens are handled the same way); launcher.models.omni has what it adds (images, video).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

AUDIO_ARCHS = ("qwen2_audio", "qwen2_5_omni_thinker")
"""config.model_type of the supported audio families."""

AUDIO_TEMPLATE = {"qwen2_audio": "qwen2_audio", "qwen2_5_omni_thinker": "qwen2_omni"}
"""LLaMA-Factory's template name for each family."""

RELEASED_FEATURE_EXTRACTOR = {
    # Qwen2-Audio-7B(-Instruct) preprocessor_config.json: Whisper-large-v3's log-mel front end, 30 s chunks
    "qwen2_audio": dict(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                        padding_value=0.0, return_attention_mask=True),
}
from launcher.models.omni import RELEASED_FEATURE_EXTRACTOR as _OMNI_FEATURE_EXTRACTOR  # noqa: E402

RELEASED_FEATURE_EXTRACTOR["qwen2_5_omni_thinker"] = _OMNI_FEATURE_EXTRACTOR

AUDIO_TOKENS = {"audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>", "audio_pad": "<|AUDIO|>"}
"""Qwen2-Audio's tokens: ids 151647, 151648, 151646 in its tokenizer (config.audio_token_id 151646)."""

QWEN_TOKENS_RENAMED = {"<|object_ref_start|>": "<|AUDIO|>", "<|object_ref_end|>": "<|audio_bos|>",
                       "<|box_start|>": "<|audio_eos|>"}
"""``builtin:qwen2_audio``: Qwen's BPE (builtin:qwen) with the added tokens at 151646-151648 given Qwen2-Audio's
names, which is what Qwen2-Audio's tokenizer has there."""

FREEZE_GROUPS = {
    # (audio tower, projector, language model) module-name prefixes under the model's `model` (LF's visual.py:
    # qwen2_audio's tower is audio_tower, its projector multi_modal_projector)
    "vision_tower": ("audio_tower",),
    "projector": ("multi_modal_projector",),
    "language_model": ("language_model",),
}


@dataclass(frozen=True)
class AudioModelInfo:
    family: str
    """qwen2_audio."""
    template: str
    """LLaMA-Factory's template for it."""
    source: Optional[str] = None
    """The model folder, for its own preprocessor_config.json; None for random init."""


def audio_info(model_cfg) -> Optional[AudioModelInfo]:
    """The audio family of a model config, or None for a model without an audio tower."""
    from launcher.models.vision import read_model_type

    model_type = read_model_type(model_cfg)
    if model_type is None and model_cfg.name_or_path:
        name = model_cfg.name_or_path.lower().replace("-", "").replace("_", "")
        model_type = ("qwen2_audio" if "qwen2audio" in name else
                      "qwen2_5_omni_thinker" if "qwen25omni" in name.replace(".", "") else None)
    if model_type not in AUDIO_ARCHS:
        return None
    folder = model_cfg.name_or_path if model_cfg.name_or_path and Path(model_cfg.name_or_path).is_dir() else None
    return AudioModelInfo(model_type, AUDIO_TEMPLATE[model_type], folder)


def build_feature_extractor(info: AudioModelInfo):
    """The family's WhisperFeatureExtractor: the folder's preprocessor_config.json values, else the released ones."""
    from transformers import WhisperFeatureExtractor

    values = dict(RELEASED_FEATURE_EXTRACTOR[info.family])
    if info.source and (Path(info.source) / "preprocessor_config.json").is_file():
        saved = json.loads((Path(info.source) / "preprocessor_config.json").read_text())
        values.update({k: saved[k] for k in ("feature_size", "sampling_rate", "hop_length", "chunk_length",
                                             "n_fft", "padding_value") if k in saved})
    return WhisperFeatureExtractor(**values)


def is_audio_model(model) -> bool:
    from launcher.models.vision import unwrap

    return getattr(getattr(unwrap(model), "config", None), "model_type", None) in AUDIO_ARCHS


def unwrap_type(model) -> Optional[str]:
    from launcher.models.vision import unwrap

    return getattr(getattr(unwrap(model), "config", None), "model_type", None)


def freeze_audio_parts(model, freeze_tower: bool, freeze_projector: bool, freeze_language_model: bool) -> list[str]:
    """``model.freeze_vision_tower`` / ``freeze_projector`` / ``freeze_language_model`` on an audio model (the
    tower is the audio tower, as in LLaMA-Factory); returns the frozen group names."""
    from launcher.models.vision import multimodal_backbone

    chosen = [g for g, on in (("vision_tower", freeze_tower), ("projector", freeze_projector),
                              ("language_model", freeze_language_model)) if on]
    from launcher.models.omni import FREEZE_GROUPS as OMNI_GROUPS, OMNI_ARCH

    groups = OMNI_GROUPS if unwrap_type(model) == OMNI_ARCH else FREEZE_GROUPS
    prefixes = tuple(p for g in chosen for p in groups[g])
    if not prefixes:
        return []
    for name, param in multimodal_backbone(model).named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)
    if groups is OMNI_GROUPS:
        return chosen
    return [{"vision_tower": "audio_tower"}.get(g, g) for g in chosen]


def audio_lora_targets(model, requested, include_tower: bool = False):
    """LoRA targets of an audio model: ``all-linear`` means the language model's linear layers only (the audio
    tower's q/k/v/out_proj and fc1/fc2 are left alone) unless ``method.lora.include_vision`` asks for the tower."""
    import re

    from torch import nn

    from launcher.models.vision import unwrap

    if requested not in ("all-linear", None) and not isinstance(requested, (list, tuple)):
        return requested
    if include_tower and requested == "all-linear":
        return requested
    if requested in ("all-linear", None):
        names = sorted({n.rsplit(".", 1)[-1] for n, m in unwrap(model).named_modules()
                        if isinstance(m, nn.Linear) and "language_model" in n})
    else:
        names = list(requested)
    alternatives = "|".join(re.escape(n) for n in names)
    scope = "" if include_tower else r"(?!.*\b(audio_tower|multi_modal_projector|visual)\b)"  # visual: Omni's
    return rf"^{scope}.*\.({alternatives})$"


_CHAT_TEMPLATE = (
    # Qwen2-Audio-Instruct's released template: an audio part is "Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    # there; here the bare span, as LF's qwen2_audio template trains it. Plain-string contents render as training did.
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' or 'audio' in part or 'audio_url' in part %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_audio_files(out_dir: Path, cfg) -> None:
    """preprocessor_config.json (the feature extractor, processor_class Qwen2AudioProcessor) and a chat template
    with an audio slot beside a saved audio model; nothing for other models. Call after the tokenizer is saved."""
    info = audio_info(cfg.model)
    if info is None:
        return
    if info.family == "qwen2_5_omni_thinker":
        from launcher.models.omni import save_omni_files

        return save_omni_files(out_dir, build_feature_extractor(info))
    out_dir = Path(out_dir)
    (out_dir / "chat_template.jinja").write_text(_CHAT_TEMPLATE)
    extractor = build_feature_extractor(info)
    extractor.save_pretrained(out_dir)
    config_file = out_dir / "preprocessor_config.json"
    saved = json.loads(config_file.read_text())
    saved["processor_class"] = "Qwen2AudioProcessor"
    config_file.write_text(json.dumps(saved, indent=2) + "\n")
