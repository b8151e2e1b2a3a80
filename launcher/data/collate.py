"""Token rows -> model batches.

A batch always has ``input_ids``, ``labels`` (unshifted), ``shift_labels`` and ``position_ids``, LongTensors
[B, T]. shift_labels[t] is the target of position t: -100 at each sample's last position and on padding, so
no sample is trained to predict its neighbour. ``attention_mask`` depends on the rows and the attention:
- unpacked rows: a [B, T] padding mask (1 = token);
- packed rows + flash_attention_2: None; flash-attention's varlen path reads the boundaries from
  position_ids (they restart at 0 for every sample);
- packed rows + sdpa / eager: a [B, 1, T, T] block-diagonal causal mask, which transformers passes through
  unchanged. sdpa gets booleans (True = attend); eager *adds* the mask to the scores, so it gets float32
  0 / -inf-like values (a boolean mask added to scores would silently do nothing useful).

Why not rely on transformers' packed-sequence detection from position_ids (masking_utils)? It only runs
when attention_mask is None *and* there is no KV cache, and Qwen2Model makes a cache whenever use_cache is
on (the config default); an explicit mask does not depend on the caller remembering use_cache=False.

Padding inside packed rows forms one extra block that attends only to itself, so no row of the mask is
empty (an all-masked row gives NaN in sdpa, and NaN values leak through 0-weight products).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch

from launcher.data.tokenize import IGNORE_INDEX

ATTENTION_KINDS = ("sdpa", "eager", "flash_attention_2")


def shift_segment_labels(labels: list, segment_lengths: list) -> list:
    """Per-sample left shift of labels: the last position of each segment predicts nothing."""
    out, offset = [], 0
    for n in segment_lengths:
        seg = labels[offset: offset + n]
        out += seg[1:] + [IGNORE_INDEX]
        offset += n
    return out


def block_causal_mask(segment_lengths: list[list[int]], width: int, attn_implementation: str) -> torch.Tensor:
    """[B, 1, T, T] mask: causal within each segment, nothing across; padding is its own segment."""
    batch = len(segment_lengths)
    segment_ids = torch.empty(batch, width, dtype=torch.long)
    for b, lengths in enumerate(segment_lengths):
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
        segment_ids[b, : len(ids)] = ids
        segment_ids[b, len(ids):] = len(lengths)  # padding
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (same & causal)[:, None, :, :]
    if attn_implementation == "sdpa":
        return allowed
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)


def collate_rows(rows: list[dict], pad_token_id: int, attn_implementation: str = "sdpa") -> dict:
    """Supervised or pretraining rows (packed or not) -> a batch, right-padded to the longest row."""
    if attn_implementation not in ATTENTION_KINDS:
        raise ValueError(f"attn_implementation must be one of {ATTENTION_KINDS}, got {attn_implementation!r}")
    packed = any("segment_lengths" in r for r in rows)
    width = max(len(r["input_ids"]) for r in rows)
    input_ids, labels, shift, position_ids, segments = [], [], [], [], []
    for r in rows:
        n = len(r["input_ids"])
        pad = width - n
        lengths = r.get("segment_lengths", [n])
        input_ids.append(r["input_ids"] + [pad_token_id] * pad)
        labels.append(r["labels"] + [IGNORE_INDEX] * pad)
        shift.append(shift_segment_labels(r["labels"], lengths) + [IGNORE_INDEX] * pad)
        positions = r.get("position_ids") or list(range(n))
        # padding counts on from 0 as one more "sample", so flash-attention's varlen path sees it as its own
        position_ids.append(positions + list(range(pad)))
        segments.append(lengths)
    batch = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "shift_labels": torch.tensor(shift, dtype=torch.long),
        "position_ids": torch.tensor(position_ids, dtype=torch.long),
    }
    if not packed:
        attention = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        batch["attention_mask"] = torch.tensor(attention, dtype=torch.long)
        # position_ids of padding do not matter here: the padding mask hides it
        batch["position_ids"] = torch.tensor(
            [list(range(len(r["input_ids"]))) + [0] * (width - len(r["input_ids"])) for r in rows], dtype=torch.long
        )
    elif attn_implementation == "flash_attention_2":
        batch["attention_mask"] = None
    else:
        batch["attention_mask"] = block_causal_mask(segments, width, attn_implementation)
    return batch


def collate_preference(rows: list[dict], pad_token_id: int, attn_implementation: str = "sdpa") -> dict:
    """Preference rows -> one batch of 2B rows: the B chosen rows first, then the B rejected rows."""
    flat = [{"input_ids": r[f"{side}_input_ids"], "labels": r[f"{side}_labels"]}
            for side in ("chosen", "rejected") for r in rows]
    return collate_rows(flat, pad_token_id, attn_implementation)


def mismatched_rows(rows: list[dict], cutoff_len: Optional[int] = None) -> list[dict]:
    """KTO's KL rows for a micro-batch: row i's prompt with row i-1's answer (row 0 takes the last row's),
    TRL 1.16's rotation (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}) within the batch, so the mismatched answers
    are the same set as the batch's own. The answer is cut at ``cutoff_len`` (TRL cuts at max_length). A batch
    of one row takes the answer of its ``kl_input_ids`` (LLaMA-Factory's pairing, made when the data is
    preprocessed) instead of its own."""
    out = []
    for i, row in enumerate(rows):
        prev = rows[i - 1]
        if len(rows) == 1 and "kl_input_ids" in row:
            # A micro-batch of one row has no other answer: take the one LLaMA-Factory pairs it with when it
            # preprocesses (the previous sample's, launcher.data.kl_partner_records).
            prev = {"input_ids": row["kl_input_ids"], "prompt_len": row["kl_prompt_len"]}
        p, q = int(row["prompt_len"]), int(prev["prompt_len"])
        answer = list(prev["input_ids"][q:])
        if cutoff_len is not None:
            answer = answer[: max(cutoff_len - p, 0)]
        out.append({"input_ids": list(row["input_ids"][:p]) + answer, "labels": [IGNORE_INDEX] * p + answer})
    return out


def collate_feedback(rows: list[dict], pad_token_id: int, attn_implementation: str = "sdpa",
                     cutoff_len: Optional[int] = None) -> dict:
    """KTO rows -> one batch of 2B rows: the B rows first, then their B mismatched KL rows (``mismatched_rows``);
    ``kto_tag`` [B] bool."""
    flat = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows] + mismatched_rows(rows, cutoff_len)
    batch = collate_rows(flat, pad_token_id, attn_implementation)
    batch["kto_tag"] = torch.tensor([bool(r["kto_tag"]) for r in rows], dtype=torch.bool)
    return batch


def mrope_positions(rows: list[dict], width: int, packed: bool, rope_index, vision) -> torch.Tensor:
    """3-D position ids from the model's own ``get_rope_index``, computed per sample (per segment of a packed
    row), so samples never share positions: [3, B, T] for unpacked rows; for packed rows [4, B, T] with the
    text positions (restarting at 0 per sample) first, which transformers reads for the sample boundaries.
    Videos count with their grids and (Qwen2.5-VL) seconds per temporal patch."""
    from launcher.data.vision import token_type_ids

    rows_out = 4 if packed else 3
    positions = torch.zeros(rows_out, len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids = r["input_ids"]
        lengths = r.get("segment_lengths", [len(ids)])
        per_segment = r.get("segment_images", [len(r.get("images") or [])])
        videos_per_segment = r.get("segment_videos") or (
            [len(r.get("videos") or [])] if len(lengths) == 1 else [0] * len(lengths))
        grids = list(r.get("image_grid_thw") or [])
        video_grids = list(r.get("video_grid_thw") or [])
        seconds = list(r.get("video_second_per_grid") or [])
        offset, g, v = 0, 0, 0
        for n, k, nv in zip(lengths, per_segment, videos_per_segment):
            seg = torch.tensor(ids[offset: offset + n], dtype=torch.long)[None]
            if k or nv:
                types = torch.tensor(token_type_ids(ids[offset: offset + n], vision), dtype=torch.long)[None]
                grid = torch.tensor(grids[g: g + k], dtype=torch.long) if k else None
                video_grid = torch.tensor(video_grids[v: v + nv], dtype=torch.long) if nv else None
                pos, _ = rope_index(seg, types, image_grid_thw=grid, video_grid_thw=video_grid,
                                    second_per_grid_ts=torch.tensor(seconds[v: v + nv]) if nv else None)
                pos = pos[:, 0]
            else:  # text only: the three rows are the plain positions
                pos = torch.arange(n).expand(3, n)
            positions[rows_out - 3:, b, offset: offset + n] = pos
            if packed:
                positions[0, b, offset: offset + n] = torch.arange(n)
            offset += n
            g += k
            v += nv
        if packed:  # padding counts on from 0, its own "sample" (see collate_rows)
            positions[:, b, offset:] = torch.arange(width - offset)
    return positions


def with_dummy_image(rows: list[dict], vision) -> tuple[list[dict], dict, tuple[int, int]]:
    """(rows, dummy pixels, (start, length) of the span): the first row with a tiny white image's vision span
    appended, as a sample of its own that no token attends to and nothing is trained on.

    Why in the rows (LLaMA-Factory's fake image, LlamaFactory#5616): sharded engines gather the vision tower's
    weights as it runs, so every rank must run the model's own forward in the same module order. A separate
    call of the tower for text-only batches gathers the same weights in another order than a batch with
    images, which ZeRO-3's prefetch trace cannot follow (it hung at the step where ranks swapped roles)."""
    from launcher.data.vision import dummy_image_batch, image_token_count

    dummy = dummy_image_batch(vision)
    grid = dummy["image_grid_thw"][0].tolist()
    span = ([vision.ids["vision_start"]] + [vision.ids["image_pad"]] * image_token_count(grid, vision.merge_size)
            + [vision.ids["vision_end"]])
    first = dict(rows[0])
    start = len(first["input_ids"])
    first["input_ids"] = list(first["input_ids"]) + span
    first["labels"] = list(first["labels"]) + [IGNORE_INDEX] * len(span)
    first["images"], first["image_grid_thw"] = ["<dummy image>"], [grid]
    if "segment_lengths" in first:  # packed: one more segment (the block mask keeps it to itself)
        lengths = list(first["segment_lengths"])
        first["segment_images"] = list(first.get("segment_images") or [0] * len(lengths)) + [1]
        first["segment_lengths"] = lengths + [len(span)]
        first["position_ids"] = list(first.get("position_ids") or range(start)) + list(range(len(span)))
    return [first] + list(rows[1:]), dummy, (start, len(span))


def collate_vision_rows(rows: list[dict], pad_token_id: int, attn_implementation: str, vision, rope_index,
                        dummy_image: bool = False) -> dict:
    """VL rows -> a batch: ``collate_rows``' batch plus pixel_values, image_grid_thw (None without images),
    mm_token_type_ids and 3-D position ids. ``dummy_image``: a batch without images gets a tiny white image
    in its first row, masked out and untrained (``with_dummy_image``), so every rank runs the vision tower."""
    from launcher.data.vision import load_pixels, token_type_ids

    paths = [p for r in rows for p in (r.get("images") or [])]
    grids = [g for r in rows for g in (r.get("image_grid_thw") or [])]
    videos = [p for r in rows for p in (r.get("videos") or [])]
    dummy = None
    if not paths and not videos and dummy_image:
        rows, dummy, (start, length) = with_dummy_image(rows, vision)
    batch = collate_rows(rows, pad_token_id, attn_implementation)
    packed = any("segment_lengths" in r for r in rows)
    width = batch["input_ids"].shape[1]
    pixels = dummy if dummy is not None else load_pixels(paths, grids, vision)
    batch["pixel_values"] = pixels.get("pixel_values")
    batch["image_grid_thw"] = pixels.get("image_grid_thw")
    if videos:  # decoded here, per batch, in the data-loader workers (launcher/data/video.py)
        from launcher.data.video import load_video_pixels

        frames = load_video_pixels(videos, [g for r in rows for g in (r.get("video_grid_thw") or [])], vision.video)
        batch["pixel_values_videos"] = frames["pixel_values_videos"]
        batch["video_grid_thw"] = frames["video_grid_thw"]
        if vision.video.family == "qwen2_5_vl":  # the only family whose forward takes it
            batch["second_per_grid_ts"] = torch.tensor(
                [s for r in rows for s in (r.get("video_second_per_grid") or [])], dtype=torch.float32)
    if dummy is not None and not packed:  # no real token attends to the dummy span (a packed row's mask does it)
        batch["attention_mask"][0, start: start + length] = 0
    batch["mm_token_type_ids"] = torch.tensor(
        [token_type_ids(r["input_ids"], vision) + [0] * (width - len(r["input_ids"])) for r in rows], dtype=torch.long)
    batch["position_ids"] = mrope_positions(rows, width, packed, rope_index, vision)
    return batch


def collate_vision_preference(rows: list[dict], pad_token_id: int, attn_implementation: str, vision, rope_index,
                              dummy_image: bool = False) -> dict:
    """Preference VL rows -> 2B rows (chosen first, then rejected), each side with its own copy of the images,
    as LLaMA-Factory's pairwise collator does (the vision tower sees each image twice)."""
    flat = [{"input_ids": r[f"{side}_input_ids"], "labels": r[f"{side}_labels"], "images": r.get("images"),
             "image_grid_thw": r.get("image_grid_thw"), "videos": r.get("videos"),
             "video_grid_thw": r.get("video_grid_thw"), "video_second_per_grid": r.get("video_second_per_grid")}
            for side in ("chosen", "rejected") for r in rows]
    return collate_vision_rows(flat, pad_token_id, attn_implementation, vision, rope_index, dummy_image)


def collate_audio_rows(rows: list[dict], pad_token_id: int, attn_implementation: str, audio,
                       preference: bool = False) -> dict:
    """Audio-model rows -> a batch: ``collate_rows``' (or ``collate_preference``'s) batch plus input_features
    [audios, bins, frames] and feature_attention_mask of the batch's audios in row order (a preference pair's
    sides each their own copy, as LF's pairwise collator does); none for a batch without audio. The features
    are made here, per batch, in the data-loader workers (launcher/data/audio.py)."""
    from launcher.data.audio import load_audio_features

    if preference:
        batch = collate_preference(rows, pad_token_id, attn_implementation)
        rows = [r for _ in ("chosen", "rejected") for r in rows]
    else:
        batch = collate_rows(rows, pad_token_id, attn_implementation)
    sources = [p for r in rows for p in (r.get("audios") or [])]
    if sources:
        batch.update(load_audio_features(sources, [g for r in rows for g in (r.get("audio_grid") or [])], audio))
    return batch


def collate_omni_rows(rows: list[dict], pad_token_id: int, attn_implementation: str, vision, audio) -> dict:
    """Qwen2.5-Omni thinker rows -> a batch: ``collate_rows``' batch plus the images' pixels, the videos' frames
    (and video_second_per_grid), the audios' features, and use_audio_in_video. No position ids: the thinker
    computes its time-aligned 3-D positions from these in its forward (its get_rope_index needs the audio
    feature lengths, which only the features give), so the batch leaves them out."""
    from launcher.data.audio import load_audio_features
    from launcher.data.vision import load_pixels

    if any("segment_lengths" in r for r in rows):
        raise ValueError("packed rows are not supported for the Qwen2.5-Omni thinker (data.packing=false)")
    batch = collate_rows(rows, pad_token_id, attn_implementation)
    batch.pop("position_ids", None)
    paths = [p for r in rows for p in (r.get("images") or [])]
    if paths:
        batch.update(load_pixels(paths, [g for r in rows for g in (r.get("image_grid_thw") or [])], vision))
    videos = [p for r in rows for p in (r.get("videos") or [])]
    if videos:  # decoded here, per batch, in the data-loader workers (launcher/data/video.py)
        from launcher.data.video import load_video_pixels

        batch.update(load_video_pixels(videos, [g for r in rows for g in (r.get("video_grid_thw") or [])],
                                       vision.video))
        batch["video_second_per_grid"] = torch.tensor(
            [s for r in rows for s in (r.get("video_second_per_grid") or [])], dtype=torch.float32)
    sources = [p for r in rows for p in (r.get("audios") or [])]
    if sources:
        batch.update(load_audio_features(sources, [g for r in rows for g in (r.get("audio_grid") or [])], audio,
                                         pad_to_chunk=False))
    if audio.use_audio_in_video and videos:
        batch["use_audio_in_video"] = True
    return batch


def make_collate(kind: str, pad_token_id: int, attn_implementation: str = "sdpa", vision=None, rope_index=None,
                 dummy_image: bool = False, cutoff_len: Optional[int] = None, audio=None) -> Callable[[list[dict]], dict]:
    """The collate function for rows of ``kind`` (sft, pt, preference or kto; KTO's KL rows cut at cutoff_len);
    with ``vision`` (a VisionData) and ``rope_index`` (``launcher.models.vision.rope_index_for``), for a VL
    model's rows; with ``audio`` (an AudioData), for an audio model's."""
    if audio is not None and vision is not None:  # the Qwen2.5-Omni thinker
        if kind != "sft":
            raise ValueError(f"{kind} data is not supported for the Qwen2.5-Omni thinker; use SFT (method=sft_lora or"
                             " sft_full)")
        return partial(collate_omni_rows, pad_token_id=pad_token_id, attn_implementation=attn_implementation,
                       vision=vision, audio=audio)
    if audio is not None:
        if kind == "kto":
            raise ValueError("KTO with audio is not supported; use method=dpo or dpo_lora for audio preference data")
        return partial(collate_audio_rows, pad_token_id=pad_token_id, attn_implementation=attn_implementation,
                       audio=audio, preference=kind == "preference")
    if vision is not None:
        if kind == "kto":
            raise ValueError("KTO with images is not supported; use method=dpo or dpo_lora for image preference data")
        if rope_index is None:
            raise ValueError("a VL collate needs the model's rope index (launcher.models.vision.rope_index_for)")
        fn = collate_vision_preference if kind == "preference" else collate_vision_rows
        return partial(fn, pad_token_id=pad_token_id, attn_implementation=attn_implementation, vision=vision,
                       rope_index=rope_index, dummy_image=dummy_image)
    if kind == "kto":
        return partial(collate_feedback, pad_token_id=pad_token_id, attn_implementation=attn_implementation,
                       cutoff_len=cutoff_len)
    fn = collate_preference if kind == "preference" else collate_rows
    return partial(fn, pad_token_id=pad_token_id, attn_implementation=attn_implementation)


def resolve_attn_implementation(requested: Optional[str]) -> str:
    """``auto`` resolves to sdpa here; the training loop passes what it actually chose."""
    return "sdpa" if requested in (None, "auto") else requested
