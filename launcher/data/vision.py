"""Images in LLaMA-Factory's data contract -> vision tokens in the text, and pixels for the model.

Tokenization (once, cached): each ``<image>`` placeholder, in order, becomes ``<|vision_start|>`` +
N x ``<|image_pad|>`` + ``<|vision_end|>``, N = t*h*w / merge_size**2 from the grid the image processor will
produce. The grid follows from the image's size alone (the header is read, not the pixels): LF's resize
(``regularized_size``: area scaled by sqrt into [image_min_pixels, image_max_pixels], sides raised to 28,
aspect ratio capped at 200) then the processor's own ``smart_resize``. Rows keep the image paths and grids.

Pixels (per batch, in ``load_pixels``): the image is decoded, resized exactly as LF does, and run through the
image processor. Why not cache the pixel values with the tokens? ``tests/benchmarks/bench_vl_pixels.py`` on
this project's 2-core machine (PIL processor): mllm_demo's 300x168 photo is 66 tokens but 1.2 MB of fp32
pixel values (1.6 MB for Qwen3-VL), a 768x768 image 729 tokens and 13.7 MB; processing costs 9-14 ms for
the small photos and 90-160 ms for 768-1024 px images. A cache of a 10k-image dataset would hold 12-140 GB
and has to be read back per step anyway, while decoding costs less than a training step and runs in the
data-loader workers (``train.num_workers``) in parallel with it. So pixels are made in the collate function,
and the cache holds only the token ids, paths and grids.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from launcher.errors import DataError

IMAGE_PLACEHOLDER = "<image>"
IGNORE_INDEX = -100
LF_IMAGE_MAX_PIXELS = 768 * 768
LF_IMAGE_MIN_PIXELS = 32 * 32


@dataclass
class VisionData:
    """What tokenization and collation need to know about the model's image input."""

    image_processor: Any
    image_max_pixels: int = LF_IMAGE_MAX_PIXELS
    image_min_pixels: int = LF_IMAGE_MIN_PIXELS
    vision_start: str = "<|vision_start|>"
    vision_end: str = "<|vision_end|>"
    image_pad: str = "<|image_pad|>"
    ids: dict = field(default_factory=dict)
    """Token ids of vision_start, vision_end, image_pad (filled by ``with_tokenizer``)."""

    @property
    def merge_size(self) -> int:
        return self.image_processor.merge_size

    def with_tokenizer(self, tokenizer) -> "VisionData":
        for key in ("vision_start", "vision_end", "image_pad"):
            token = getattr(self, key)
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise DataError(f"model.tokenizer: has no {token} token; a Qwen-VL model needs the Qwen tokenizer")
            self.ids[key] = token_id
        return self

    def fingerprint(self) -> dict:
        p = self.image_processor
        return {"class": type(p).__name__, "size": dict(p.size), "patch": p.patch_size, "merge": p.merge_size,
                "temporal": p.temporal_patch_size, "max": self.image_max_pixels, "min": self.image_min_pixels}


# ------------------------------------------------------------------------------------------ sizes


def regularized_size(width: int, height: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """LLaMA-Factory 0.9.5's Qwen2VLPlugin._preprocess_image, on sizes (its resize steps, in its order)."""
    if width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if width * height < min_pixels:
        factor = math.sqrt(min_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if min(width, height) < 28:
        width, height = max(width, 28), max(height, 28)
    if width / height > 200:
        width, height = height * 180, height
    if height / width > 200:
        width, height = width, width * 180
    return width, height


def processor_limits(image_processor) -> tuple[int, int]:
    size = image_processor.size
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return get("shortest_edge"), get("longest_edge")


def image_grid(width: int, height: int, vision: VisionData) -> tuple[int, int, int]:
    """(t, h, w) patches the processor makes of an image of this original size."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    p = vision.image_processor
    w, h = regularized_size(width, height, vision.image_max_pixels, vision.image_min_pixels)
    min_pixels, max_pixels = processor_limits(p)
    rh, rw = smart_resize(h, w, factor=p.patch_size * p.merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
    return 1, rh // p.patch_size, rw // p.patch_size


def image_token_count(grid: tuple[int, int, int], merge_size: int) -> int:
    t, h, w = grid
    return t * h * w // (merge_size ** 2)


@dataclass(frozen=True)
class InlineImage:
    """An image sent inline (an API request's data URL): its bytes, and a label for messages."""

    data: bytes
    label: str

    def __str__(self) -> str:
        return self.label


def open_image(source):
    """PIL's image of a path or an ``InlineImage``."""
    from io import BytesIO

    from PIL import Image

    return Image.open(BytesIO(source.data) if isinstance(source, InlineImage) else source)


def image_size(path, where: str) -> tuple[int, int]:
    """(width, height) from the file's header (or an InlineImage's bytes); one clear line when it is not an
    image."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(path) as image:
            return image.size
    except FileNotFoundError:
        raise DataError(f"{where}: image file not found: {path}; paths are relative to data.dataset_dir") from None
    except UnidentifiedImageError:
        raise DataError(f"{where}: {path} is not an image PIL can read (jpg, png, webp, ...);"
                        " replace the file or remove the row") from None
    except OSError as exc:
        raise DataError(f"{where}: image {path} is unreadable ({exc}); check the file and its permissions") from None


# ------------------------------------------------------------------------------------ tokenization


def check_media(sample: dict, template: str, image_slot: bool, vision_model: bool, model_name: str,
                where: str, suggested: Optional[str] = None) -> None:
    """Media the model or template cannot take: one line naming the row and what to do."""
    if sample.get("videos") or sample.get("audios"):
        kind = "videos" if sample.get("videos") else "audios"
        raise DataError(f"{where}: the row has {kind}, which launcher does not train yet (images only);"
                        f" drop the {kind} column from dataset_info.json or use image data")
    if not sample.get("images"):
        return
    if not vision_model:
        raise DataError(f"{where}: the row has images but model '{model_name}' has no vision tower; use a Qwen2-VL,"
                        " Qwen2.5-VL or Qwen3-VL model (model=tiny_qwen2_vl, or model=hf with a VL checkpoint),"
                        " or drop the images column from dataset_info.json")
    if not image_slot and suggested:
        raise DataError(f"{where}: data.template={template} has no image slot; use data.template={suggested} (the"
                        f" template of model '{model_name}', LLaMA-Factory's name), or leave it unset")
    if not image_slot:
        raise DataError(f"{where}: data.template={template} has no image slot; use data.template=qwen2_vl"
                        " (Qwen2-VL, Qwen2.5-VL), qwen3_vl or qwen3_vl_nothink (Qwen3-VL), or leave it unset for"
                        " the model's own")


def expand_placeholders(messages: list[dict], counts: list[int], vision: VisionData) -> list[dict]:
    """A copy of the messages with the i-th ``<image>`` replaced by its vision span of counts[i] pad tokens."""
    out, k = [], 0
    for m in messages:
        content = m["content"]
        while IMAGE_PLACEHOLDER in content:
            span = vision.vision_start + vision.image_pad * counts[k] + vision.vision_end
            content = content.replace(IMAGE_PLACEHOLDER, span, 1)
            k += 1
        out.append(dict(m, content=content))
    return out


def sample_grids(sample: dict, vision: VisionData, cutoff_len: int, where: str) -> list[tuple[int, int, int]]:
    grids = []
    for i, path in enumerate(sample.get("images") or []):
        grid = image_grid(*image_size(path, where), vision)
        n = image_token_count(grid, vision.merge_size) + 2
        if n > cutoff_len:
            raise DataError(f"{where}: image {i} ({path}) resizes to {n} tokens (grid {list(grid)}) but"
                            f" data.cutoff_len is {cutoff_len}; lower data.image_max_pixels or raise data.cutoff_len")
        grids.append(grid)
    return grids


def tokenize_vision_sample(tokenizer, renderer, sample: dict, cutoff_len: int, train_on_prompt: bool,
                           mask_history: bool, vision: VisionData, where: str) -> list:
    """``tokenize_sample`` for a sample with images: placeholders expanded to vision spans before rendering;
    rows whose truncation cut a span are None (the caller drops or refuses them); labels off vision tokens;
    each row carries the sample's ``images`` (paths) and ``image_grid_thw``."""
    from launcher.data.tokenize import tokenize_sample

    grids = sample_grids(sample, vision, cutoff_len, where)
    counts = [image_token_count(g, vision.merge_size) for g in grids]
    expanded = dict(sample, messages=expand_placeholders(sample["messages"], counts, vision))
    used = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in sample["messages"])
    for key in ("chosen", "rejected"):
        if key in sample:
            expanded[key] = expand_placeholders([sample[key]], counts[used:], vision)[0]
    rows = []
    for row in tokenize_sample(tokenizer, renderer, expanded, cutoff_len, train_on_prompt, mask_history, where):
        sides = ("chosen_", "rejected_") if "chosen_input_ids" in row else ("",)
        if not all(spans_intact(row[f"{s}input_ids"], counts, vision) for s in sides):
            rows.append(None)
            continue
        for s in sides:
            row[f"{s}labels"] = mask_vision_labels(row[f"{s}labels"], row[f"{s}input_ids"], vision)
        row["images"] = list(sample["images"])
        row["image_grid_thw"] = [list(g) for g in grids]
        rows.append(row)
    return rows


def image_cut_message(where: str, cutoff_len: int) -> str:
    """A row whose truncation cut an image's span (the model would fail on it: LlamaFactory#5964)."""
    return (f"{where}: data.cutoff_len={cutoff_len} cuts through an image's tokens; raise data.cutoff_len, lower"
            " data.image_max_pixels, or set data.lenient=true to drop such rows")


def expand_prompt(messages: list[dict], images: list[str], vision: VisionData,
                  where: str = "prompt") -> tuple[list[dict], list]:
    """Messages with each ``<image>`` expanded for generation, and the images' grids (no cutoff applies)."""
    count = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if count > len(images):
        raise DataError(f"{where}: {count} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s)")
    grids = [image_grid(*image_size(p, where), vision) for p in images[:count]]
    counts = [image_token_count(g, vision.merge_size) for g in grids]
    return expand_placeholders(messages, counts, vision), grids


def vision_spans(input_ids: list[int], vision: VisionData) -> list[tuple[int, int]]:
    """[(start, end)) of each vision span, vision_start..vision_end inclusive; unmatched markers give (s, -1)."""
    spans, start = [], None
    for i, t in enumerate(input_ids):
        if t == vision.ids["vision_start"]:
            if start is not None:
                spans.append((start, -1))
            start = i
        elif t == vision.ids["vision_end"]:
            spans.append((start if start is not None else -1, i + 1))
            start = None
    if start is not None:
        spans.append((start, -1))
    return spans


def spans_intact(input_ids: list[int], counts: list[int], vision: VisionData) -> bool:
    """Every image's span is whole: as many spans as images, each with its own number of pad tokens."""
    spans = vision_spans(input_ids, vision)
    if len(spans) != len(counts) or any(s < 0 or e < 0 for s, e in spans):
        return False
    pads = [sum(1 for t in input_ids[s:e] if t == vision.ids["image_pad"]) for s, e in spans]
    return pads == list(counts) and input_ids.count(vision.ids["image_pad"]) == sum(counts)


def mask_vision_labels(labels: list[int], input_ids: list[int], vision: VisionData) -> list[int]:
    """Labels are never on vision tokens, even with train_on_prompt."""
    vision_ids = set(vision.ids.values())
    return [IGNORE_INDEX if t in vision_ids else y for t, y in zip(input_ids, labels)]


# --------------------------------------------------------------------------------------- pixels


def load_image(path, vision: VisionData):
    """Decoded and resized exactly as LLaMA-Factory does before the processor (PIL's default resampling)."""
    image = open_image(path)
    width, height = regularized_size(*image.size, vision.image_max_pixels, vision.image_min_pixels)
    # LF resizes in steps; for the size only the final (w, h) matters, and for the pixels each step resamples:
    # replay its steps so the pixels match too.
    image = _lf_resize_steps(image, vision)
    if image.mode != "RGB":
        image = image.convert("RGB")
    assert image.size == (width, height)
    return image


def _lf_resize_steps(image, vision: VisionData):
    if image.width * image.height > vision.image_max_pixels:
        f = math.sqrt(vision.image_max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if image.width * image.height < vision.image_min_pixels:
        f = math.sqrt(vision.image_min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    if min(image.width, image.height) < 28:
        image = image.resize((max(image.width, 28), max(image.height, 28)))
    if image.width / image.height > 200:
        image = image.resize((image.height * 180, image.height))
    if image.height / image.width > 200:
        image = image.resize((image.width, image.width * 180))
    return image


def load_pixels(paths: list[str], grids: list, vision: VisionData) -> dict:
    """{pixel_values [patches, C*T*P*P], image_grid_thw [n, 3]} for the images of a batch, in order."""
    import torch

    if not paths:
        return {}
    images = [load_image(p, vision) for p in paths]
    out = vision.image_processor(images=images, return_tensors="pt")
    grid = out["image_grid_thw"]
    expected = torch.tensor([list(g) for g in grids], dtype=grid.dtype)
    if not torch.equal(grid, expected):
        raise DataError(f"images {[str(p) for p in paths]}: the processor made grids {grid.tolist()} but the tokenized rows expect"
                        f" {expected.tolist()}; the image files or the image processor changed since the data was"
                        " cached: delete the data cache (data.cache_dir) and rerun")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}


def dummy_image_batch(vision: VisionData) -> dict:
    """A tiny white image's pixels and grid, for micro-batches without images under sharded engines: every
    rank must run the vision tower as many times (LlamaFactory#5616). Its features are multiplied by zero."""
    from PIL import Image

    side = 28 if vision.image_processor.patch_size == 14 else 32
    lo, _ = processor_limits(vision.image_processor)
    side = max(side, int(math.ceil(math.sqrt(lo or 0))))
    image = Image.new("RGB", (side, side), (255, 255, 255))
    out = vision.image_processor(images=[image], return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def token_type_ids(input_ids: list[int], vision: VisionData) -> list[int]:
    """mm_token_type_ids: 1 on image pad tokens, 0 elsewhere (video 2 is not produced here)."""
    pad = vision.ids["image_pad"]
    return [1 if t == pad else 0 for t in input_ids]


def describe_positions(row: dict, vision: VisionData) -> list[dict]:
    """For previews: each vision span's [start, end) in the row and its image-token count."""
    ids = row["input_ids"]
    return [{"start": s, "end": e, "image_tokens": sum(1 for t in ids[s:e] if t == vision.ids["image_pad"])}
            for s, e in vision_spans(ids, vision)]

