"""Vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): which family a model is, its image processor, and
the module groups that ``model.freeze_*`` and LoRA act on.

The image processor is transformers' own. Where torchvision imports, the torchvision ("fast") class serves;
where it does not (PyPI's torchvision does not load beside the CPU torch), the PIL class does. Both resize
with the same ``smart_resize`` and give the same grids, so the token counts do not depend on which one ran.
A random-init model gets a processor built in code with the values of the released models'
``preprocessor_config.json``; a model folder's own ``preprocessor_config.json`` wins where there is one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import ConfigError

VL_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""config.model_type of the supported families."""

VL_TEMPLATE = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl", "qwen3_vl": "qwen3_vl"}
"""LLaMA-Factory's template name for each family (Qwen2.5-VL uses Qwen2-VL's)."""

RELEASED_PROCESSOR = {
    # Qwen2-VL-*-Instruct and Qwen2.5-VL-*-Instruct preprocessor_config.json: patch 14, CLIP mean/std
    "qwen2_vl": dict(size={"shortest_edge": 3136, "longest_edge": 12845056}, patch_size=14, temporal_patch_size=2,
                     merge_size=2, image_mean=[0.48145466, 0.4578275, 0.40821073],
                     image_std=[0.26862954, 0.26130258, 0.27577711]),
    # Qwen3-VL-*-Instruct: patch 16, mean/std 0.5, at least 256x256 pixels
    "qwen3_vl": dict(size={"shortest_edge": 65536, "longest_edge": 16777216}, patch_size=16, temporal_patch_size=2,
                     merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
}
RELEASED_PROCESSOR["qwen2_5_vl"] = RELEASED_PROCESSOR["qwen2_vl"]
# the Qwen2.5-Omni thinker's images and videos (launcher.models.omni): Qwen2.5-VL's processor values
RELEASED_PROCESSOR["qwen2_5_omni_thinker"] = RELEASED_PROCESSOR["qwen2_vl"]

RELEASED_VIDEO_SIZE = {
    # the video processor's pixel limits: Qwen2-VL/2.5-VL read them from preprocessor_config.json
    # (min_pixels / max_pixels); Qwen3-VL ships a video_preprocessor_config.json of its own
    "qwen2_vl": {"shortest_edge": 3136, "longest_edge": 12845056},
    "qwen2_5_vl": {"shortest_edge": 3136, "longest_edge": 12845056},
    "qwen3_vl": {"shortest_edge": 4096, "longest_edge": 25165824},
    "qwen2_5_omni_thinker": {"shortest_edge": 3136, "longest_edge": 12845056},
}

VISION_TOKENS = {"vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>", "image_pad": "<|image_pad|>",
                 "video_pad": "<|video_pad|>"}

FREEZE_GROUPS = {
    # (vision tower, projector) module-name prefixes under the VL model's `model` (LF's visual.py keys)
    "vision_tower": ("visual.patch_embed", "visual.blocks", "visual.pos_embed", "visual.rotary_pos_emb"),
    "projector": ("visual.merger", "visual.deepstack_merger_list"),
    "language_model": ("language_model",),
}


@dataclass(frozen=True)
class VideoSettings:
    """How a model's videos become frames: LF's options (data.video_*) and the model's video processor values."""

    family: str
    """qwen2_vl, qwen2_5_vl or qwen3_vl."""
    max_pixels: int
    """data.video_max_pixels: frames above are scaled down first."""
    min_pixels: int
    """data.video_min_pixels: frames below are scaled up first."""
    fps: float
    """data.video_fps: frames sampled per second."""
    maxlen: int
    """data.video_maxlen: the most frames sampled."""
    shortest_edge: int
    """The video processor's size.shortest_edge (min pixels of smart_resize)."""
    longest_edge: int
    """The video processor's size.longest_edge (max pixels; Qwen3-VL: over all frames)."""
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    image_mean: tuple
    image_std: tuple


@dataclass(frozen=True)
class VisionModelInfo:
    family: str
    """qwen2_vl, qwen2_5_vl or qwen3_vl."""
    template: str
    """LLaMA-Factory's template for it: qwen2_vl or qwen3_vl."""
    source: Optional[str] = None
    """The model folder, for its own preprocessor_config.json; None for random init."""


def read_model_type(model_cfg) -> Optional[str]:
    """config.model_type of ``model.name_or_path`` (a folder's config.json) or ``model.arch`` (random init)."""
    if not model_cfg.name_or_path:
        return model_cfg.arch
    config_file = Path(model_cfg.name_or_path) / "config.json"
    if config_file.is_file():
        try:
            return json.loads(config_file.read_text()).get("model_type")
        except (OSError, json.JSONDecodeError):
            return None
    return None  # a hub id: known only after download; treated as text unless its name says otherwise


def vision_info(model_cfg) -> Optional[VisionModelInfo]:
    """The VL family of a model config, or None for a text-only model."""
    model_type = read_model_type(model_cfg)
    if model_type is None and model_cfg.name_or_path:
        name = model_cfg.name_or_path.lower().replace("-", "").replace(".", "")
        model_type = next((f for f in ("qwen3_vl", "qwen2_5_vl", "qwen2_vl") if f.replace("_", "") in name), None)
    if model_type not in VL_ARCHS:
        return None
    folder = model_cfg.name_or_path if model_cfg.name_or_path and Path(model_cfg.name_or_path).is_dir() else None
    return VisionModelInfo(model_type, VL_TEMPLATE[model_type], folder)


def torchvision_usable() -> bool:
    """torchvision imports and its ops load (a CUDA wheel beside the CPU torch imports but fails)."""
    try:
        import torchvision  # noqa: F401
        from torchvision.transforms.v2 import functional  # noqa: F401
    except Exception:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        return False
    return True


def image_processor_class(fast: Optional[bool] = None):
    """Qwen2VLImageProcessor (torchvision) where usable, else Qwen2VLImageProcessorPil; Qwen3-VL uses the same."""
    if fast is None:
        fast = torchvision_usable()
    if fast:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        return Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil


def build_image_processor(info: VisionModelInfo, fast: Optional[bool] = None):
    """The family's image processor: the folder's preprocessor_config.json values, else the released ones."""
    values = dict(RELEASED_PROCESSOR[info.family])
    if info.source and (Path(info.source) / "preprocessor_config.json").is_file():
        saved = json.loads((Path(info.source) / "preprocessor_config.json").read_text())
        keys = ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "do_resize",
                "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb")
        values.update({k: saved[k] for k in keys if k in saved})
        if "min_pixels" in saved or "max_pixels" in saved:  # the older spelling of size
            values["size"] = {"shortest_edge": saved.get("min_pixels", values["size"]["shortest_edge"]),
                              "longest_edge": saved.get("max_pixels", values["size"]["longest_edge"])}
    return image_processor_class(fast)(**values)


def build_video_settings(info: VisionModelInfo, max_pixels: int, min_pixels: int, fps: float, maxlen: int):
    """The family's video processor values (the folder's video_preprocessor_config.json, else its
    preprocessor_config.json, else the released ones) with LF's frame options."""
    values = dict(RELEASED_PROCESSOR[info.family])
    size = dict(RELEASED_VIDEO_SIZE[info.family])
    folder = Path(info.source) if info.source else None
    # Qwen2-VL/2.5-VL's video processor reads preprocessor_config.json; Qwen3-VL ships its own video file, and
    # its preprocessor_config.json's size is the image processor's
    names = ("video_preprocessor_config.json",) if info.family == "qwen3_vl" else (
        "preprocessor_config.json", "video_preprocessor_config.json")
    for name in names:  # the later wins
        if folder and (folder / name).is_file():
            saved = json.loads((folder / name).read_text())
            values.update({k: saved[k] for k in ("patch_size", "temporal_patch_size", "merge_size", "image_mean",
                                                 "image_std") if k in saved})
            if isinstance(saved.get("size"), dict) and "shortest_edge" in saved["size"]:
                size = dict(saved["size"])
            if "min_pixels" in saved or "max_pixels" in saved:
                size = {"shortest_edge": saved.get("min_pixels", size["shortest_edge"]),
                        "longest_edge": saved.get("max_pixels", size["longest_edge"])}
    return VideoSettings(info.family, max_pixels, min_pixels, float(fps), int(maxlen), size["shortest_edge"],
                         size["longest_edge"], values["patch_size"], values["temporal_patch_size"],
                         values["merge_size"], tuple(values["image_mean"]), tuple(values["image_std"]))


_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}DEFAULT_SYSTEM{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VL_CHAT_TEMPLATES = {
    # Qwen2-VL's released template (image parts -> one <|image_pad|> that the processor expands), with LF's
    # qwen2_vl default system prompt; qwen3_vl has none. Plain-string contents render as training did.
    "qwen2_vl": _CHAT_TEMPLATE.replace("DEFAULT_SYSTEM", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"),
    "qwen3_vl": _CHAT_TEMPLATE.replace("{% if loop.first and message['role'] != 'system' %}DEFAULT_SYSTEM{% endif %}", ""),
}


def save_processor_files(out_dir: Path, image_processor, tokenizer, info: VisionModelInfo) -> None:
    """preprocessor_config.json (+ processor_class), video_preprocessor_config.json and a chat template with
    image and video slots beside the model, so that ``AutoProcessor`` and vLLM-style servers find the image and
    video settings and can render image and video messages.
    Call after ``tokenizer.save_pretrained``: the template written here replaces the tokenizer's text one."""
    out_dir = Path(out_dir)
    (out_dir / "chat_template.jinja").write_text(VL_CHAT_TEMPLATES[info.template])
    image_processor.save_pretrained(out_dir)
    config_file = out_dir / "preprocessor_config.json"
    saved = json.loads(config_file.read_text())
    # The fast class name: what the released checkpoints name, and AutoImageProcessor falls back to the PIL
    # class itself where torchvision is missing.
    saved["image_processor_type"] = "Qwen2VLImageProcessor"
    processor_class = "Qwen3VLProcessor" if info.family == "qwen3_vl" else (
        "Qwen2_5_VLProcessor" if info.family == "qwen2_5_vl" else "Qwen2VLProcessor")
    saved["processor_class"] = processor_class
    config_file.write_text(json.dumps(saved, indent=2) + "\n")
    # the video processor's own file (Qwen3-VL's size differs from its images'): what build_video_settings and
    # AutoVideoProcessor read back
    video = build_video_settings(info, 0, 0, 2.0, 1)
    (out_dir / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "Qwen3VLVideoProcessor" if info.family == "qwen3_vl" else "Qwen2VLVideoProcessor",
        "processor_class": processor_class, "size": {"shortest_edge": video.shortest_edge,
                                                     "longest_edge": video.longest_edge},
        "patch_size": video.patch_size, "temporal_patch_size": video.temporal_patch_size,
        "merge_size": video.merge_size, "image_mean": list(video.image_mean), "image_std": list(video.image_std),
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True}, indent=2) + "\n")


def save_vision_files(out: Path, cfg, tokenizer) -> None:
    """VL models: the image processor's config and a chat template with image slots (AutoProcessor, servers),
    beside a saved model; nothing for a text model."""
    info = vision_info(cfg.model)
    if info is not None:
        save_processor_files(out, build_image_processor(info), tokenizer, info)
    else:  # an audio model's feature extractor and audio chat template (nothing for a text model)
        from launcher.models.audio import save_audio_files

        save_audio_files(out, cfg)


def is_vision_model(model) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in VL_ARCHS


def unwrap(model):
    """The transformers model under PEFT / DDP / loss wrappers."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and not hasattr(model, "config"):
            model = model.module
        else:
            break
    return model


def multimodal_backbone(model):
    """The VL model's ``model`` (vision tower + language model, no LM head): takes pixel_values and grids."""
    return unwrap(model).model


def freeze_vision_parts(model, freeze_vision_tower: bool, freeze_projector: bool, freeze_language_model: bool) -> list[str]:
    """Set requires_grad=False on the chosen groups (LLaMA-Factory's defaults: tower and projector frozen).

    Returns the frozen group names. The parameter names are those under the VL model's ``model``.
    """
    base = multimodal_backbone(model)
    chosen = [g for g, on in (("vision_tower", freeze_vision_tower), ("projector", freeze_projector),
                              ("language_model", freeze_language_model)) if on]
    prefixes = tuple(p for g in chosen for p in FREEZE_GROUPS[g])
    if not prefixes:
        return []
    for name, param in base.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)
    return chosen


def lora_target_modules(model, requested, include_vision: bool = False):
    """LoRA targets: ``all-linear`` means the language model's linear layers only, unless the vision tower is
    asked for. Qwen2.5-VL's vision MLP reuses the text MLP's names (gate/up/down_proj), so suffix lists would
    adapt both: the result is a regex on full module names that excludes ``visual`` (anchors.md)."""
    import re

    if requested not in ("all-linear", None) and not isinstance(requested, (list, tuple)):
        return requested  # a user's own regex string: taken as given
    if include_vision and requested == "all-linear":
        return requested
    if requested in ("all-linear", None):
        from torch import nn

        base = unwrap(model)
        names = sorted({n.rsplit(".", 1)[-1] for n, m in base.named_modules()
                        if isinstance(m, nn.Linear) and "language_model" in n})
    else:
        names = list(requested)
    alternatives = "|".join(re.escape(n) for n in names)
    scope = "" if include_vision else r"(?!.*\bvisual\b)"
    return rf"^{scope}.*\.({alternatives})$"


def check_vision_config(model_cfg) -> None:
    """Refuse a random-init VL config whose rope sections do not fit its head size (the model would crash on the
    first forward with a shape error)."""
    if model_cfg.name_or_path or model_cfg.arch not in VL_ARCHS:
        return
    text = dict(model_cfg.config.get("text_config") or {})
    heads = text.get("num_attention_heads")
    head_dim = text.get("head_dim") or (text["hidden_size"] // heads if heads and text.get("hidden_size") else None)
    section = ((text.get("rope_parameters") or {}).get("mrope_section"))
    if head_dim and section and sum(section) * 2 != head_dim:
        raise ConfigError(f"model.config.text_config.rope_parameters.mrope_section: {list(section)} sums to"
                          f" {sum(section)}, but half the head size is {head_dim // 2}; make them equal")


def model_config(model_cfg):
    """The transformers config of a VL model config, without building the model."""
    from transformers import AutoConfig

    if model_cfg.name_or_path:
        return AutoConfig.from_pretrained(model_cfg.name_or_path, trust_remote_code=model_cfg.trust_remote_code)
    return AutoConfig.for_model(model_cfg.arch, **model_cfg.config)


class _ConfigOnly:
    """Stands in for the VL model in its own ``get_rope_index``, which reads only ``self.config`` and
    ``self.get_vision_position_ids`` (checked for the three families by tests/vl/test_positions.py)."""

    def __init__(self, model_class, config):
        import types

        self.config = config
        self.get_vision_position_ids = types.MethodType(model_class.get_vision_position_ids, self)
        self._get_rope_index = types.MethodType(model_class.get_rope_index, self)

    def __call__(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None):
        kwargs = {"video_grid_thw": video_grid_thw} if video_grid_thw is not None else {}
        if second_per_grid_ts is not None and self.config.model_type == "qwen2_5_vl":  # the others take none
            kwargs["second_per_grid_ts"] = second_per_grid_ts
        return self._get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw,
                                    **kwargs)

    def __getstate__(self):  # data-loader workers started by spawn get the config and rebuild the bindings
        return {"config": self.config, "cls": self._cls}

    def __setstate__(self, state):
        self.__init__(state["cls"], state["config"])


def rope_index_for(config):
    """The model's own 3-D (mrope) position function, callable without the model: (input_ids [1, n],
    mm_token_type_ids [1, n], image_grid_thw [k, 3]) -> (position_ids [3, 1, n], deltas)."""
    from transformers import AutoModel

    model_class = AutoModel._model_mapping[type(config)]
    index = _ConfigOnly(model_class, config)
    index._cls = model_class
    return index


def auto_class_for(folder) -> type:
    """The transformers auto class that loads a saved model folder: image-text-to-text for the VL families,
    sequence classification for a reward model (launcher.models.reward)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    config_file = Path(folder) / "config.json"
    model_type, architectures = None, []
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        model_type, architectures = config.get("model_type"), config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        from launcher.models.reward import reward_model_class

        return reward_model_class()
    if model_type in ("qwen2_audio", "qwen2_5_omni_thinker"):  # launcher.models.audio's (multimodal LMs)
        from transformers import AutoModelForMultimodalLM

        return AutoModelForMultimodalLM
    return AutoModelForImageTextToText if model_type in VL_ARCHS else AutoModelForCausalLM
