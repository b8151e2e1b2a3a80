"""Rows for the Qwen2.5-Omni thinker: ``<image>``, ``<video>`` and ``<audio>`` in one row, and LLaMA-Factory's
``use_audio_in_video`` (a video's audio interleaved with its frames).

LLaMA-Factory 0.9.5's ``Qwen2OmniPlugin.process_messages`` expands, message by message: each ``<image>`` to
``<|vision_bos|>`` + N x ``<|IMAGE|>`` + ``<|vision_eos|>`` (as Qwen2-VL's, launcher.data.vision), each
``<audio>`` to ``<|audio_bos|>`` + M x ``<|AUDIO|>`` + ``<|audio_eos|>`` (M from the feature frames as
Qwen2-Audio's, launcher.data.audio), each ``<video>`` to ``<|vision_bos|>`` + V x ``<|VIDEO|>`` +
``<|vision_eos|>`` (launcher.data.video). With ``data.use_audio_in_video`` the k-th ``<video>`` and the k-th
audio are one span: ``<|vision_bos|><|audio_bos|>`` then, per 2 s chunk (50 time positions, 25 per second),
that chunk's video tokens then its audio tokens, then ``<|audio_eos|><|vision_eos|>``; the ``<audio>`` that
follows the ``<video>`` is removed. A video token's time is its temporal patch times ``video_second_per_grid``
times 25, truncated (float32, as LF's tensors), an audio token's its index. The thinker's own
``get_rope_index`` gives these spans their time-aligned positions (the model computes them in its forward).

Only whole rows: a cutoff_len that cuts through a media span refuses the row (strict) or drops it (lenient).
"""
from __future__ import annotations

import re
from typing import Sequence

from launcher.errors import DataError
from launcher.data.audio import AUDIO_PLACEHOLDER, AudioData, audio_text, sample_audios
from launcher.data.video import VIDEO_PLACEHOLDER
from launcher.data.vision import (IGNORE_INDEX, IMAGE_PLACEHOLDER, VisionData, image_token_count, sample_grids,
                                  sample_videos)

TOKENS_PER_CHUNK = 50
"""position_id_per_seconds (25) x seconds_per_chunk (2): the thinker's config, LF's constant."""
POSITIONS_PER_SECOND = 25

_PLACEHOLDERS = re.compile("|".join(re.escape(p) for p in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, AUDIO_PLACEHOLDER)))


def chunked_index(token_times: Sequence[int], tokens_per_chunk: int = TOKENS_PER_CHUNK) -> list[tuple[int, int]]:
    """Qwen2_5OmniProcessor.get_chunked_index: [start, end) runs of tokens whose times fall in successive
    chunks of tokens_per_chunk."""
    out, start, chunk = [], 0, 1
    for i, t in enumerate(token_times):
        if t >= chunk * tokens_per_chunk:
            out.append((start, i))
            start, chunk = i, chunk + 1
    out.append((start, len(token_times)))
    return out


def video_token_times(grid: Sequence[int], seconds_per_grid: float, merge_size: int) -> list[int]:
    """Each video token's time position: (temporal patch x seconds_per_grid x 25) truncated, in float32 as LF's
    torch tensors compute it, repeated over the patch's (h / merge) x (w / merge) tokens."""
    import numpy as np

    t, h, w = (int(x) for x in grid)
    per_patch = (h // merge_size) * (w // merge_size)
    times = (np.arange(t).astype(np.float32) * np.float32(seconds_per_grid) * np.float32(POSITIONS_PER_SECOND))
    return np.repeat(times.astype(np.int64), per_patch).tolist()


def interleaved_text(video_tokens: int, times: list[int], audio_tokens: int, vision: VisionData,
                     audio: AudioData) -> str:
    """A video with its audio (use_audio_in_video): per 2 s chunk, its video tokens then its audio tokens."""
    assert len(times) == video_tokens
    video_chunks = chunked_index(times)
    audio_chunks = chunked_index(list(range(audio_tokens)))
    text = vision.vision_start + audio.audio_bos
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            text += vision.video_pad * (video_chunks[j][1] - video_chunks[j][0])
        if j < len(audio_chunks):
            text += audio.audio_pad * (audio_chunks[j][1] - audio_chunks[j][0])
    return text + audio.audio_eos + vision.vision_end


def check_pairs(messages: Sequence[dict], n_videos: int, n_audios: int, where: str) -> None:
    """use_audio_in_video: as many audios as videos, and each ``<video>`` followed (later in its message) by
    the ``<audio>`` of its sound."""
    if n_videos != n_audios:
        raise DataError(f"{where}: data.use_audio_in_video pairs each video with an audio, but the row has"
                        f" {n_videos} video(s) and {n_audios} audio(s); give each video its audio (the video file"
                        " itself, for its own track), or set data.use_audio_in_video=false")
    for m in messages:
        content = m["content"]
        if content.count(VIDEO_PLACEHOLDER) != content.count(AUDIO_PLACEHOLDER):
            raise DataError(f"{where}: with data.use_audio_in_video each {VIDEO_PLACEHOLDER} must be followed by an"
                            f" {AUDIO_PLACEHOLDER} in the same message (LLaMA-Factory's rule); the {m['role']} message"
                            f" has {content.count(VIDEO_PLACEHOLDER)} and {content.count(AUDIO_PLACEHOLDER)}")
        pending = 0
        for match in re.finditer(f"{re.escape(VIDEO_PLACEHOLDER)}|{re.escape(AUDIO_PLACEHOLDER)}", content):
            pending += 1 if match.group() == VIDEO_PLACEHOLDER else -1
            if pending < 0:
                raise DataError(f"{where}: with data.use_audio_in_video each {VIDEO_PLACEHOLDER} must be followed by an"
                                f" {AUDIO_PLACEHOLDER}; the {m['role']} message has an {AUDIO_PLACEHOLDER} before"
                                f" its {VIDEO_PLACEHOLDER}")


def expand_omni(messages: list[dict], image_texts: list[str], video_texts: list[str], audio_texts: list[str],
                use_audio_in_video: bool) -> list[dict]:
    """A copy of the messages with each placeholder replaced, in text order (kind by kind, as LF counts them);
    with use_audio_in_video the video's text holds its audio and the ``<audio>`` after it is removed."""
    out, k, v, a = [], 0, 0, 0
    for m in messages:
        pieces, last, skip_audio = [], 0, 0
        for match in _PLACEHOLDERS.finditer(m["content"]):
            pieces.append(m["content"][last: match.start()])
            last = match.end()
            if match.group() == IMAGE_PLACEHOLDER:
                pieces.append(image_texts[k])
                k += 1
            elif match.group() == VIDEO_PLACEHOLDER:
                pieces.append(video_texts[v])
                v += 1
                skip_audio += use_audio_in_video
            elif skip_audio:
                skip_audio -= 1  # the paired audio is in the video's span
            else:
                pieces.append(audio_texts[a])
                a += 1
        out.append(dict(m, content="".join(pieces) + m["content"][last:]))
    return out


def tokenize_omni_sample(tokenizer, renderer, sample: dict, cutoff_len: int, train_on_prompt: bool,
                         mask_history: bool, vision: VisionData, audio: AudioData, use_audio_in_video: bool,
                         lenient: bool, where: str) -> tuple[list, int]:
    """``tokenize_sample`` for an Omni row: placeholders expanded before rendering, labels off every media token,
    the row carrying images/videos/audios and their grids. (rows, rows dropped because cutoff_len cut a span)."""
    from launcher.data.tokenize import tokenize_sample

    for key in ("chosen", "rejected"):
        if key in sample:
            raise DataError(f"{where}: preference rows are not supported for the Qwen2.5-Omni thinker; use SFT data")
    grids = sample_grids(sample, vision, cutoff_len, where)
    image_texts = [vision.vision_start + vision.image_pad * image_token_count(g, vision.merge_size) + vision.vision_end
                   for g in grids]
    videos = sample_videos(sample, vision, cutoff_len, where)
    audios = sample_audios(sample, audio, cutoff_len, where)
    if use_audio_in_video and videos:
        check_pairs(sample["messages"], len(videos), len(audios), where)
        video_texts = [interleaved_text(p.token_count(vision.merge_size),
                                        video_token_times(p.grid, p.seconds_per_grid, vision.merge_size),
                                        a.tokens, vision, audio) for p, a in zip(videos, audios)]
        audio_texts: list[str] = []
    else:
        video_texts = [vision.vision_start + vision.video_pad * p.token_count(vision.merge_size) + vision.vision_end
                       for p in videos]
        audio_texts = [audio_text(p, audio) for p in audios]
    expanded = dict(sample, messages=expand_omni(sample["messages"], image_texts, video_texts, audio_texts,
                                                 use_audio_in_video and bool(videos)))
    expected = {vision.ids["image_pad"]: sum(image_token_count(g, vision.merge_size) for g in grids),
                vision.ids["video_pad"]: sum(p.token_count(vision.merge_size) for p in videos),
                audio.ids["audio_pad"]: sum(p.tokens for p in audios)}
    media_ids = set(vision.ids.values()) | set(audio.ids.values())
    rows, dropped = [], 0
    for row in tokenize_sample(tokenizer, renderer, expanded, cutoff_len, train_on_prompt, mask_history, where):
        ids = row["input_ids"]
        if any(sum(1 for t in ids if t == token) != n for token, n in expected.items()):
            if not lenient:
                raise DataError(f"{where}: data.cutoff_len={cutoff_len} cuts through the row's media tokens (the row"
                                f" takes more); raise data.cutoff_len, lower data.video_max_pixels / video_maxlen /"
                                " image_max_pixels, or set data.lenient=true to drop such rows")
            dropped += 1
            continue
        row["labels"] = [IGNORE_INDEX if t in media_ids else y for t, y in zip(ids, row["labels"])]
        row["images"] = list(sample.get("images") or [])
        row["image_grid_thw"] = [list(g) for g in grids]
        if videos:
            row["videos"] = [p.source for p in videos]
            row["video_grid_thw"] = [list(p.grid) for p in videos]
            row["video_second_per_grid"] = [p.seconds_per_grid for p in videos]
        row["audios"] = [p.source for p in audios]
        row["audio_grid"] = [p.grid() for p in audios]
        rows.append(row)
    return rows, dropped

