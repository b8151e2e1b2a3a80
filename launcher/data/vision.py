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
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from launcher.errors import DataError
from launcher.data.video import VIDEO_PLACEHOLDER

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
    """Token ids of vision_start, vision_end, image_pad, video_pad (filled by ``with_tokenizer``)."""
    video: Any = None
    """The model's video settings (launcher.data.video.VideoSettings); its family decides the video layout."""
    video_pad: str = "<|video_pad|>"

    @property
    def merge_size(self) -> int:
        return self.image_processor.merge_size

    def with_tokenizer(self, tokenizer) -> "VisionData":
        for key in ("vision_start", "vision_end", "image_pad", "video_pad"):
            token = getattr(self, key)
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise DataError(f"model.tokenizer: has no {token} token; a Qwen-VL model needs the Qwen tokenizer")
            self.ids[key] = token_id
        return self

    def fingerprint(self) -> dict:
        p = self.image_processor
        out = {"class": type(p).__name__, "size": dict(p.size), "patch": p.patch_size, "merge": p.merge_size,
               "temporal": p.temporal_patch_size, "max": self.image_max_pixels, "min": self.image_min_pixels}
        if self.video is not None:
            from dataclasses import asdict

            out["video"] = asdict(self.video)
        return out


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
                where: str, suggested: Optional[str] = None, audio_model: bool = False) -> None:
    """Media the model or template cannot take: one line naming the row and what to do."""
    if sample.get("audios") and (sample.get("videos") or sample.get("images")):
        raise DataError(f"{where}: the row has audios and {'videos' if sample.get('videos') else 'images'}: a model"
                        " that takes both (the Qwen2.5-Omni thinker, LF's mllm_video_audio_demo) is needed: use"
                        " model=tiny_qwen2_5_omni (or model=hf with a Qwen2.5-Omni thinker), or drop one column from"
                        " dataset_info.json (audio trains Qwen2-Audio, images and videos the Qwen-VL models)")
    if sample.get("audios") and not audio_model:
        raise DataError(f"{where}: the row has audios but model '{model_name}' has no audio tower; use a Qwen2-Audio"
                        " model (model=tiny_qwen2_audio, or model=hf with a Qwen2-Audio checkpoint), or drop the audios"
                        " column from dataset_info.json")
    kind = next((k for k in ("images", "videos") if sample.get(k)), None)
    if kind is None:
        return
    if audio_model:
        raise DataError(f"{where}: the row has {kind} but model '{model_name}' (Qwen2-Audio) takes audio only; use a"
                        f" VL model for {kind}, or drop the {kind} column from dataset_info.json")
    if not vision_model:
        raise DataError(f"{where}: the row has {kind} but model '{model_name}' has no vision tower; use a Qwen2-VL,"
                        " Qwen2.5-VL or Qwen3-VL model (model=tiny_qwen2_vl, or model=hf with a VL checkpoint),"
                        f" or drop the {kind} column from dataset_info.json")
    slot = "image" if kind == "images" else "video"
    if not image_slot and suggested:
        raise DataError(f"{where}: data.template={template} has no {slot} slot; use data.template={suggested} (the"
                        f" template of model '{model_name}', LLaMA-Factory's name), or leave it unset")
    if not image_slot:
        raise DataError(f"{where}: data.template={template} has no {slot} slot; use data.template=qwen2_vl"
                        " (Qwen2-VL, Qwen2.5-VL), qwen3_vl or qwen3_vl_nothink (Qwen3-VL), or leave it unset for"
                        " the model's own")


MEDIA_PATTERN = re.compile(f"{re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)}")


def expand_placeholders(messages: list[dict], counts: list[int], vision: VisionData,
                        video_texts: Sequence[str] = ()) -> list[dict]:
    """A copy of the messages with the i-th ``<image>`` replaced by its vision span of counts[i] pad tokens and
    the j-th ``<video>`` by video_texts[j] (``video.video_text``), in text order."""
    out, k, v = [], 0, 0
    for m in messages:
        pieces, last = [], 0
        for match in MEDIA_PATTERN.finditer(m["content"]):
            pieces.append(m["content"][last: match.start()])
            if match.group() == IMAGE_PLACEHOLDER:
                pieces.append(vision.vision_start + vision.image_pad * counts[k] + vision.vision_end)
                k += 1
            else:
                pieces.append(video_texts[v])
                v += 1
            last = match.end()
        out.append(dict(m, content="".join(pieces) + m["content"][last:]))
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


def sample_videos(sample: dict, vision: VisionData, cutoff_len: int, where: str) -> list:
    """The VideoPlan of each of the sample's videos; a video that alone takes more than cutoff_len tokens is
    refused, naming what to lower."""
    from launcher.data.video import plan_video, span_counts

    if sample.get("videos") and vision.video is None:
        raise DataError(f"{where}: the row has videos but the model's video settings are unknown")
    plans = []
    for i, source in enumerate(sample.get("videos") or []):
        plan = plan_video(source, vision.video, where)
        spans = span_counts(plan, vision.video.family, vision.merge_size)
        n = sum(spans) + 2 * len(spans)
        if n > cutoff_len:
            raise DataError(f"{where}: video {i} ({source.splitlines()[0]}) takes at least {n} tokens"
                            f" ({len(plan.frames)} frames, grid {list(plan.grid)}) but data.cutoff_len is {cutoff_len};"
                            " lower data.video_maxlen, data.video_fps or data.video_max_pixels, or raise data.cutoff_len")
        plans.append(plan)
    return plans


@dataclass(frozen=True)
class ExpectedSpan:
    kind: str
    """image or video."""
    index: int
    """The image's or video's place in the row's list."""
    pads: int
    """Its pad tokens in this span."""
    first: bool
    """The media's first span (a Qwen3-VL video has one per temporal patch)."""


def expected_spans(messages: list[dict], image_counts: list[int], video_spans: list[list[int]]) -> list[ExpectedSpan]:
    """The vision spans the rendered row should hold, in text order."""
    out, k, v = [], 0, 0
    for m in messages:
        for match in MEDIA_PATTERN.finditer(m["content"]):
            if match.group() == IMAGE_PLACEHOLDER:
                out.append(ExpectedSpan("image", k, image_counts[k], True))
                k += 1
            else:
                out += [ExpectedSpan("video", v, n, j == 0) for j, n in enumerate(video_spans[v])]
                v += 1
    return out


def first_cut_span(input_ids: list[int], expected: list[ExpectedSpan], vision: VisionData) -> Optional[int]:
    """The index (in ``expected``) of the first span the row does not hold whole; None when all are whole."""
    actual = vision_spans(input_ids, vision)
    for j, span in enumerate(expected):
        if j >= len(actual) or actual[j][0] < 0 or actual[j][1] < 0:
            return j
        s, e = actual[j]
        pad = vision.ids["image_pad" if span.kind == "image" else "video_pad"]
        if sum(1 for t in input_ids[s:e] if t == pad) != span.pads or e - s != span.pads + 2:
            return j
    return None if len(actual) == len(expected) else len(expected)


@dataclass
class MediaCut:
    """A row whose cutoff_len cut lands in an image's or a video's tokens."""

    kind: str
    index: int
    source: str
    start: int
    """Where the media's tokens start in the row."""
    tokens: int


def media_cut_message(where: str, cutoff_len: int, cut: Optional[MediaCut] = None) -> str:
    """Strict mode's refusal of a row whose truncation cut a media span (the model would fail on it:
    LlamaFactory#5964), saying which."""
    kind = cut.kind if cut else "image"
    article = "an" if kind == "image" else "a"
    lower = "data.image_max_pixels" if kind == "image" else "data.video_max_pixels or data.video_maxlen"
    which = (f" ({kind} {cut.index}: {cut.source}, {cut.tokens} tokens from token {cut.start})" if cut else "")
    return (f"{where}: data.cutoff_len={cutoff_len} cuts through {article} {kind}'s tokens; raise data.cutoff_len,"
            f" lower {lower}, or set data.lenient=true to shorten such rows before the cut {kind} (rows left with"
            f" nothing trained are dropped){which}")


image_cut_message = media_cut_message


@dataclass
class CutRow:
    """A token row whose truncation cut a media span, in place of the row: strict mode refuses it
    (``media_cut_message``), lenient mode shortens it before the cut media (``shorten_at_cut``)."""

    cut: MediaCut
    row: Optional[dict] = None
    """The row as truncated (a supervised row); None for a preference pair, which is dropped whole."""
    expected: list = field(default_factory=list)
    media: dict = field(default_factory=dict)


def tokenize_vision_sample(tokenizer, renderer, sample: dict, cutoff_len: int, train_on_prompt: bool,
                           mask_history: bool, vision: VisionData, where: str) -> list:
    """``tokenize_sample`` for a sample with images or videos: placeholders expanded to vision spans before
    rendering; labels off vision tokens; each row carries its ``images`` (paths) and ``image_grid_thw``, and
    with videos ``videos``, ``video_grid_thw`` and ``video_second_per_grid``. A row whose truncation cut a
    span comes back as a ``CutRow``."""
    from launcher.data.tokenize import tokenize_sample
    from launcher.data.video import span_counts, video_text

    grids = sample_grids(sample, vision, cutoff_len, where)
    counts = [image_token_count(g, vision.merge_size) for g in grids]
    plans = sample_videos(sample, vision, cutoff_len, where)
    family = vision.video.family if vision.video is not None else ""
    texts = [video_text(p, family, vision.merge_size, vision.vision_start, vision.vision_end, vision.video_pad)
             for p in plans]
    spans_per_video = [span_counts(p, family, vision.merge_size) for p in plans]
    expanded = dict(sample, messages=expand_placeholders(sample["messages"], counts, vision, texts))
    used_images = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in sample["messages"])
    used_videos = sum(m["content"].count(VIDEO_PLACEHOLDER) for m in sample["messages"])
    for key in ("chosen", "rejected"):
        if key in sample:
            expanded[key] = expand_placeholders([sample[key]], counts[used_images:], vision, texts[used_videos:])[0]
    media = {"images": list(sample.get("images") or []), "grids": [list(g) for g in grids], "plans": list(plans)}
    rows: list = []
    for row in tokenize_sample(tokenizer, renderer, expanded, cutoff_len, train_on_prompt, mask_history, where):
        sides = (("chosen_", sample["messages"] + [sample.get("chosen")]),
                 ("rejected_", sample["messages"] + [sample.get("rejected")])) \
            if "chosen_input_ids" in row else (("", sample["messages"]),)
        cut = None
        for prefix, messages in sides:
            expected = expected_spans(messages, counts, spans_per_video)
            j = first_cut_span(row[f"{prefix}input_ids"], expected, vision)
            if j is not None:
                cut = CutRow(_cut_of(row[f"{prefix}input_ids"], expected, j, media, vision),
                             None if prefix else row, expected, media)
                break
            row[f"{prefix}labels"] = mask_vision_labels(row[f"{prefix}labels"], row[f"{prefix}input_ids"], vision)
        if cut is not None:
            rows.append(cut)
            continue
        _attach_media(row, media)
        rows.append(row)
    return rows


def _cut_of(input_ids: list[int], expected: list[ExpectedSpan], j: int, media: dict, vision: VisionData) -> MediaCut:
    while j > 0 and not expected[j].first:  # a Qwen3-VL video: back to its first span
        j -= 1
    span = expected[j] if j < len(expected) else expected[-1]
    actual = vision_spans(input_ids, vision)
    start = actual[j][0] if j < len(actual) and actual[j][0] >= 0 else len(input_ids)
    if span.kind == "image":
        source, tokens = media["images"][span.index], span.pads + 2
    else:
        plan = media["plans"][span.index]
        source, tokens = plan.source.splitlines()[0], sum(e.pads + 2 for e in expected if e.kind == "video"
                                                          and e.index == span.index)
    return MediaCut(span.kind, span.index, str(source), start, tokens)


def _attach_media(row: dict, media: dict) -> None:
    row["images"] = list(media["images"])
    row["image_grid_thw"] = [list(g) for g in media["grids"]]
    if media["plans"]:
        row["videos"] = [p.source for p in media["plans"]]
        row["video_grid_thw"] = [list(p.grid) for p in media["plans"]]
        row["video_second_per_grid"] = [p.seconds_per_grid for p in media["plans"]]


def shorten_at_cut(cut_row: CutRow, vision: VisionData) -> Optional[dict]:
    """Lenient mode: the row cut before the media whose span the cutoff split, keeping only the media before
    it (None for a preference pair: its sides share the prompt, so it is dropped)."""
    if cut_row.row is None:
        return None
    row, cut, expected = cut_row.row, cut_row.cut, cut_row.expected
    row["input_ids"], row["labels"] = row["input_ids"][: cut.start], row["labels"][: cut.start]
    j = next((k for k, e in enumerate(expected) if e.kind == cut.kind and e.index == cut.index), len(expected))
    kept = {(e.kind, e.index) for e in expected[:j]}
    media = cut_row.media
    media = {"images": [p for k, p in enumerate(media["images"]) if ("image", k) in kept],
             "grids": [g for k, g in enumerate(media["grids"]) if ("image", k) in kept],
             "plans": [p for k, p in enumerate(media["plans"]) if ("video", k) in kept]}
    row["labels"] = mask_vision_labels(row["labels"], row["input_ids"], vision)
    _attach_media(row, media)
    return row


def expand_prompt(messages: list[dict], images: list[str], vision: VisionData,
                  where: str = "prompt", videos: Sequence[str] = ()) -> tuple[list[dict], list]:
    """Messages with each ``<image>`` (and ``<video>``) expanded for generation, and the images' grids (no
    cutoff applies); with videos, (messages, grids, video plans)."""
    from launcher.data.video import plan_video, video_text

    count = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if count > len(images):
        raise DataError(f"{where}: {count} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s)")
    n_videos = sum(m["content"].count(VIDEO_PLACEHOLDER) for m in messages)
    if n_videos != len(videos) and (videos or n_videos):
        raise DataError(f"{where}: {n_videos} {VIDEO_PLACEHOLDER} placeholder(s) but {len(videos)} video(s)")
    grids = [image_grid(*image_size(p, where), vision) for p in images[:count]]
    counts = [image_token_count(g, vision.merge_size) for g in grids]
    if not videos:
        return expand_placeholders(messages, counts, vision), grids
    plans = [plan_video(str(v), vision.video, where) for v in videos]
    texts = [video_text(p, vision.video.family, vision.merge_size, vision.vision_start, vision.vision_end,
                        vision.video_pad) for p in plans]
    return expand_placeholders(messages, counts, vision, texts), grids, plans


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
    image = lf_resize(image, vision.image_max_pixels, vision.image_min_pixels)
    if image.mode != "RGB":
        image = image.convert("RGB")
    assert image.size == (width, height)
    return image


def lf_resize(image, max_pixels: int, min_pixels: int):
    """LLaMA-Factory's Qwen2VLPlugin._preprocess_image step by step (images, and each video frame with the
    video limits)."""
    if image.width * image.height > max_pixels:
        f = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if image.width * image.height < min_pixels:
        f = math.sqrt(min_pixels / (image.width * image.height))
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
    """mm_token_type_ids: 1 on image pad tokens, 2 on video pad tokens, 0 elsewhere."""
    image, video = vision.ids["image_pad"], vision.ids.get("video_pad")
    return [1 if t == image else 2 if t == video else 0 for t in input_ids]


def describe_positions(row: dict, vision: VisionData) -> list[dict]:
    """For previews: each vision span's [start, end) in the row and its image- and video-token counts."""
    ids = row["input_ids"]
    return [{"start": s, "end": e, "image_tokens": sum(1 for t in ids[s:e] if t == vision.ids["image_pad"]),
             "video_tokens": sum(1 for t in ids[s:e] if t == vision.ids.get("video_pad"))}
            for s, e in vision_spans(ids, vision)]

