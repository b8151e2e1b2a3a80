"""The Qwen2.5-Omni thinker (audio + images + video, text out): its family, processor values, tokenizer,
token names, and the module groups that ``model.freeze_*`` and LoRA act on.

Only the thinker is trained (LLaMA-Factory's ``qwen2_omni`` template trains the thinker too); the talker and
token2wav that make speech are not built. transformers' ``Qwen2_5OmniThinkerForConditionalGeneration`` is the
model. Its processor parts are transformers' own where they run without torchvision: the feature extractor is
``WhisperFeatureExtractor`` (launcher.data.audio turns waveforms into its log-mels), images go through
``Qwen2VLImageProcessorPil`` (launcher.models.vision) and video frames through launcher.data.video (transformers'
video processors need torchvision). A random-init model gets them built in code with the values of
Qwen2.5-Omni-7B's ``preprocessor_config.json``; a model folder's own file wins where there is one.

Omni's tokenizer is Qwen's BPE with its special tokens renamed: ``<|AUDIO|>`` 151646, ``<|audio_bos|>``
151647, ``<|audio_eos|>`` 151648, ``<|vision_bos|>`` 151652, ``<|vision_eos|>`` 151653, ``<|IMAGE|>``
151655, ``<|VIDEO|>`` 151656 (``builtin:qwen2_5_omni`` is built that way, as ``builtin:qwen2_audio`` is).
"""
from __future__ import annotations

import json
from pathlib import Path

OMNI_ARCH = "qwen2_5_omni_thinker"
"""config.model_type of the thinker (the full ``qwen2_5_omni`` checkpoint's thinker_config has it too)."""

OMNI_TEMPLATE = "qwen2_omni"
OMNI_DEFAULT_SYSTEM = "You are a helpful assistant."
"""LF's qwen2_omni template's default_system (launcher.data.templates.DEFAULT_SYSTEM takes it from here)."""
"""LLaMA-Factory's template for it."""

RELEASED_FEATURE_EXTRACTOR = dict(
    # Qwen2.5-Omni-7B preprocessor_config.json: Whisper's 128-bin log-mel at 16 kHz, in 300 s chunks
    feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400, padding_value=0.0,
    return_attention_mask=True)

RELEASED_IMAGE_PROCESSOR = dict(
    # the same file's image values (Qwen2.5-VL's): patch 14, merge 2, CLIP mean/std
    size={"shortest_edge": 3136, "longest_edge": 12845056}, patch_size=14, temporal_patch_size=2, merge_size=2,
    image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])

TOKENS = {"audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>", "audio_pad": "<|AUDIO|>",
          "vision_start": "<|vision_bos|>", "vision_end": "<|vision_eos|>", "image_pad": "<|IMAGE|>",
          "video_pad": "<|VIDEO|>"}
"""Omni's names of the media tokens (the keys are launcher.data's AudioData / VisionData fields)."""

QWEN_TOKENS_RENAMED = {"<|object_ref_start|>": "<|AUDIO|>", "<|object_ref_end|>": "<|audio_bos|>",
                       "<|box_start|>": "<|audio_eos|>", "<|vision_start|>": "<|vision_bos|>",
                       "<|vision_end|>": "<|vision_eos|>", "<|image_pad|>": "<|IMAGE|>", "<|video_pad|>": "<|VIDEO|>"}
"""``builtin:qwen2_5_omni``: Qwen's BPE with the added tokens at 151646-151648 and 151652-151656 given Omni's
names, which is what Qwen2.5-Omni's tokenizer has there."""

SECONDS_PER_CHUNK = 2
POSITION_ID_PER_SECONDS = 25
"""The thinker's config (seconds_per_chunk, position_id_per_seconds): with use_audio_in_video, a video's frames
and its audio interleave in 2 s chunks of 50 time positions."""

FREEZE_GROUPS = {
    # LLaMA-Factory's visual.py for qwen2_omni: the towers are the vision blocks and the audio tower, the
    # projector the vision merger (names under the thinker's ``model``)
    "vision_tower": ("visual.patch_embed", "visual.blocks", "audio_tower"),
    "projector": ("visual.merger",),
    "language_model": ("language_model",),
}


def is_omni(model_cfg) -> bool:
    """The model config is the Qwen2.5-Omni thinker's (launcher.models.audio.audio_info's family)."""
    from launcher.models.audio import audio_info

    info = audio_info(model_cfg)
    return info is not None and info.family == OMNI_ARCH


def omni_vision_info(model_cfg):
    """The thinker's image/video side as a VisionModelInfo (family qwen2_5_omni_thinker: one vision span per
    video, as Qwen2.5-VL), or None for another model."""
    from launcher.models.vision import VisionModelInfo

    if not is_omni(model_cfg):
        return None
    folder = model_cfg.name_or_path if model_cfg.name_or_path and Path(model_cfg.name_or_path).is_dir() else None
    return VisionModelInfo(OMNI_ARCH, OMNI_TEMPLATE, folder)


CHAT_TEMPLATE = (
    # Qwen2.5-Omni's released template's media parts (one pad token each, which the processor expands), with
    # LF's qwen2_omni default system prompt. Plain-string contents render as training did.
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nDEFAULT_SYSTEM<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' or 'audio' in part or 'audio_url' in part %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'image' or 'image' in part or 'image_url' in part %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_omni_files(out_dir: Path, feature_extractor) -> None:
    """preprocessor_config.json (the feature extractor's and the image processor's values in one file, as
    Qwen2.5-Omni ships it, processor_class Qwen2_5OmniProcessor) and a chat template with audio, image and
    video slots beside a saved thinker."""
    out_dir = Path(out_dir)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE.replace("DEFAULT_SYSTEM", OMNI_DEFAULT_SYSTEM))
    feature_extractor.save_pretrained(out_dir)
    config_file = out_dir / "preprocessor_config.json"
    saved = json.loads(config_file.read_text())
    image = dict(RELEASED_IMAGE_PROCESSOR)
    saved.update(image, min_pixels=image["size"]["shortest_edge"], max_pixels=image["size"]["longest_edge"],
                 image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2_5OmniProcessor")
    config_file.write_text(json.dumps(saved, indent=2) + "\n")


def refuse_omni_generation(where: str) -> None:
    """Generation after training (chat, predict, serve, the UI's chat) builds prompts for a VL model or an audio
    model, not for the thinker's images, videos and audio in one prompt: refused in one line rather than
    rendering the audio model's prompt and dropping the images and videos without a word."""
    from launcher.errors import ConfigError

    raise ConfigError(f"{where}: the Qwen2.5-Omni thinker trains and exports here, but generating with it (chat,"
                      " predict, serve) is not supported yet; load the exported model with transformers'"
                      " Qwen2_5OmniThinkerForConditionalGeneration and its processor")
