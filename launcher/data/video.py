"""Videos in LLaMA-Factory's data contract -> video tokens in the text, and frames for the model.

A ``videos`` entry is a video file (anything FFmpeg reads, decoded with PyAV as LF does), a folder of frame
images (sorted by name), or a list of frame image paths (LF's "already sampled" frames).

Tokenization (once, cached) reads only the stream's header, as LLaMA-Factory 0.9.5 does
(``Qwen2VLPlugin._get_qwen_video_grid_metadata``):
- frames sampled: ``n = min(frames, video_maxlen, max(1, floor(duration * video_fps)))`` indices spread evenly
  over the stream (``np.linspace(0, frames - 1, n)``), one more copy of the last frame when n is odd (the
  model's temporal patch is 2 frames);
- each frame is resized as an image is (``vision.regularized_size`` with video_max_pixels / video_min_pixels),
  then by the processor's ``smart_resize`` (Qwen3-VL's video version, which also counts the frames);
- the grid is (n / temporal_patch_size, h / patch, w / patch) and the video takes t*h*w / merge**2 tokens:
  Qwen2-VL and Qwen2.5-VL one ``<|vision_start|>`` + pads + ``<|vision_end|>`` span; Qwen3-VL one span per
  temporal patch, each after its timestamp text ``<1.3 seconds>`` (the mean time of the patch's two frames).
- Qwen2.5-VL's ``second_per_grid_ts`` (its mRoPE's time step) is temporal_patch_size / (n / duration).

Where LF has no answer we choose: a stream whose header has no frame count (some WebM/MKV) has its packets
counted (LF would sample 128 indices from 0, decoding fewer frames than it counted tokens for); a stream with
no duration is refused (LF raises a TypeError). For frame folders and lists LF takes video_fps as their rate.
LF's Qwen3-VL plugin also reads the first video's frame count and the metadata by message index for every
video of a row (rows with one video, as LF's demo, are the same); here each video uses its own.

Frames (per batch, in ``load_video_pixels``): decoded with PyAV, resized as LF does, then resized to the
grid's size (PIL bicubic: transformers' video processors need torchvision, which does not load beside the CPU
torch), rescaled, normalized and cut into the model's patches (``patchify_frames``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from launcher.errors import DataError
from launcher.models.vision import VideoSettings  # LF's options with the model's video processor values

VIDEO_PLACEHOLDER = "<video>"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FRAME_LIST_SEPARATOR = "\n"
"""A list of frame paths travels through the token store as one string, its paths joined by this."""

@dataclass(frozen=True)
class VideoPlan:
    """What a video becomes: which frames, at which size, how many tokens."""

    source: str
    """The path as stored (a file, a frame folder, or frame paths joined by FRAME_LIST_SEPARATOR)."""
    frames: tuple
    """Indices of the decoded frames to keep (a file), or the frame image paths (a folder or list)."""
    grid: tuple
    """(t, h, w) patches: t temporal patches of h x w."""
    frame_size: tuple
    """(width, height) of each frame after LF's resize, before the processor's."""
    seconds_per_grid: float
    """Seconds one temporal patch spans (Qwen2.5-VL's second_per_grid_ts)."""
    timestamps: tuple
    """Seconds of each temporal patch (Qwen3-VL's timestamp text)."""

    def token_count(self, merge_size: int) -> int:
        t, h, w = self.grid
        return t * h * w // (merge_size ** 2)


def frame_paths(source: str) -> Optional[list[str]]:
    """The frame images of a frame folder or list, in order; None for a video file."""
    if FRAME_LIST_SEPARATOR in source:
        return source.split(FRAME_LIST_SEPARATOR)
    path = Path(source)
    if path.is_dir():
        return [str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in FRAME_SUFFIXES]
    return None


def sample_indices(total_frames: int, duration: float, fps: float, maxlen: int) -> list[int]:
    """LF 0.9.5's ``_get_video_sample_indices``: evenly spread indices of the frames to keep."""
    import numpy as np

    n = min(total_frames, maxlen, max(1, math.floor(duration * fps)))
    return np.linspace(0, total_frames - 1, n).astype(np.int32).tolist()


def _open_stream(path: str, where: str):
    import av

    if not Path(path).is_file():
        raise DataError(f"{where}: video file not found: {path}; paths are relative to data.dataset_dir")
    try:
        container = av.open(path, "r")
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"{where}: {path} is not a video FFmpeg can read ({type(exc).__name__}: {exc});"
                        " replace the file or remove the row") from None
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        container.close()
        raise DataError(f"{where}: {path} has no video stream; replace the file or remove the row")
    return container, stream


def probe_file(path: str, where: str) -> tuple[int, int, int, float, float]:
    """(width, height, frames, duration in seconds, average frame rate) from the header (frames counted from
    packets when the header has no count; the rate frames / duration when it has none)."""
    container, stream = _open_stream(path, where)
    try:
        if stream.duration is None or stream.time_base is None:
            raise DataError(f"{where}: {path}'s video stream has no duration in its header; re-encode it"
                            " (e.g. ffmpeg -i in -c:v libx264 out.mp4) or remove the row")
        frames = stream.frames
        if not frames:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        duration = float(stream.duration * stream.time_base)
        rate = float(stream.average_rate) if stream.average_rate else (frames / duration if duration > 0 else 0.0)
        return stream.width, stream.height, frames, duration, rate
    except DataError:
        raise
    except Exception as exc:  # a header PyAV cannot read further
        raise DataError(f"{where}: {path} is unreadable ({type(exc).__name__}: {exc}); replace the file or"
                        " remove the row") from None
    finally:
        container.close()


def _processor_resize(n_frames: int, height: int, width: int, s: VideoSettings) -> tuple[int, int]:
    factor = s.patch_size * s.merge_size
    try:
        if s.family == "qwen3_vl":
            from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

            return smart_resize(num_frames=n_frames, height=height, width=width, temporal_factor=s.temporal_patch_size,
                                factor=factor, min_pixels=s.shortest_edge, max_pixels=s.longest_edge)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        return smart_resize(height, width, factor=factor, min_pixels=s.shortest_edge, max_pixels=s.longest_edge)
    except ValueError as exc:  # an aspect ratio above 200
        raise DataError(str(exc)) from None


def timestamps_of(indices: Sequence[float], fps: float, merge_size: int) -> list[float]:
    """Qwen3VLProcessor._calculate_timestamps: the mean time of each temporal patch's first and last frame."""
    indices = list(indices)
    if len(indices) % merge_size:
        indices += [indices[-1]] * (merge_size - len(indices) % merge_size)
    times = [i / fps for i in indices]
    return [(times[i] + times[i + merge_size - 1]) / 2 for i in range(0, len(times), merge_size)]


def plan_video(source: str, settings: VideoSettings, where: str) -> VideoPlan:
    """The frames, grid and token count of one video, from its header (or its first frame's)."""
    from launcher.data.vision import image_size, regularized_size

    s = settings
    frames = frame_paths(source)
    if frames is not None:
        if not frames:
            raise DataError(f"{where}: video frame folder {source} has no frame images ({', '.join(FRAME_SUFFIXES)})")
        sizes = {image_size(f, where) for f in frames}
        if len(sizes) > 1:
            raise DataError(f"{where}: the frames of video {source.splitlines()[0]}... differ in size {sorted(sizes)};"
                            " resize them to one size")
        width, height = sizes.pop()
        n = len(frames)
        chosen: tuple = tuple(frames)
        # LF: frames given as images run at video_fps; their timestamps count them from 0 at that rate
        seconds_per_frame = 1 / s.fps
        time_indices = [float(i) for i in range(n)]
        time_fps = s.fps
    else:
        width, height, total, duration, average_fps = probe_file(source, where)
        if total <= 0:
            raise DataError(f"{where}: video {source} has no frames; replace the file or remove the row")
        if duration <= 0:
            raise DataError(f"{where}: video {source} has a duration of {duration} s in its header; re-encode it"
                            " or remove the row")
        picked = sample_indices(total, duration, s.fps, s.maxlen)
        n = len(picked)
        chosen = tuple(picked)
        seconds_per_frame = duration / n
        time_indices = [i / average_fps * s.fps for i in picked]
        time_fps = s.fps
    w, h = regularized_size(width, height, s.max_pixels, s.min_pixels)
    padded = n + (n % 2)  # LF repeats the last frame to fill the temporal patch
    rh, rw = _processor_resize(padded, h, w, s)
    grid = (math.ceil(padded / s.temporal_patch_size), rh // s.patch_size, rw // s.patch_size)
    return VideoPlan(source, chosen, grid, (w, h), s.temporal_patch_size * seconds_per_frame,
                     tuple(timestamps_of(time_indices, time_fps, s.merge_size)))


def video_text(plan: VideoPlan, family: str, merge_size: int, start: str, end: str, pad: str) -> str:
    """The text a ``<video>`` placeholder becomes: one span, or (Qwen3-VL) a timestamped span per temporal patch."""
    if family == "qwen3_vl":
        t, h, w = plan.grid
        per_frame = h * w // (merge_size ** 2)
        return "".join(f"<{ts:.1f} seconds>{start}{pad * per_frame}{end}" for ts in plan.timestamps[:t])
    return start + pad * plan.token_count(merge_size) + end


def span_counts(plan: VideoPlan, family: str, merge_size: int) -> list[int]:
    """The pad tokens of each vision span the video makes (one span, or one per temporal patch)."""
    t, h, w = plan.grid
    if family == "qwen3_vl":
        return [h * w // (merge_size ** 2)] * t
    return [plan.token_count(merge_size)]


# --------------------------------------------------------------------------------------- frames


def decode_frames(plan: VideoPlan, where: str = "video") -> list:
    """The plan's frames as RGB PIL images (a file decoded with PyAV, keeping the sampled indices, as LF does)."""
    from PIL import Image

    if frame_paths(plan.source) is not None:
        frames = [Image.open(p) for p in plan.frames]
    else:
        container, stream = _open_stream(plan.source, where)
        wanted = set(plan.frames)
        last = max(wanted)
        frames = []
        try:
            container.seek(0)
            for k, frame in enumerate(container.decode(stream)):
                if k in wanted:
                    frames.append(frame.to_image())
                if k >= last:
                    break
        finally:
            container.close()
        if len(frames) != len(plan.frames):
            raise DataError(f"{where}: {plan.source} decoded to {len(frames)} of the {len(plan.frames)} frames its"
                            " header promised; the file may be truncated: re-encode it or remove the row")
    if len(frames) % 2:
        frames.append(frames[-1])
    return frames


def frame_tensor(frames: list, plan: VideoPlan, settings: VideoSettings):
    """[T, C, H, W] float frames: LF's resize (``vision.lf_resize``), the processor's bicubic resize to the
    grid's size, rescaled to [0, 1] and normalized."""
    import numpy as np
    import torch
    from PIL import Image

    from launcher.data.vision import lf_resize

    _, gh, gw = plan.grid
    size = (gw * settings.patch_size, gh * settings.patch_size)
    out = []
    for frame in frames:
        frame = lf_resize(frame, settings.max_pixels, settings.min_pixels)
        if frame.size != size:
            frame = frame.resize(size, Image.BICUBIC)
        out.append(np.asarray(frame, dtype=np.float32))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(settings.image_mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(settings.image_std, dtype=torch.float32)[None, :, None, None]
    return (x - mean) / std


def patchify_frames(frames, patch_size: int, temporal_patch_size: int, merge_size: int):
    """[T, C, H, W] -> [t*h*w, C*tp*p*p] in the order the Qwen vision towers read (merge groups together):
    the layout transformers' Qwen2-VL processors produce."""
    t_all, c, height, width = frames.shape
    gt, gh, gw = t_all // temporal_patch_size, height // patch_size, width // patch_size
    x = frames.reshape(gt, temporal_patch_size, c, gh // merge_size, merge_size, patch_size,
                       gw // merge_size, merge_size, patch_size)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal_patch_size * patch_size * patch_size)


def load_video_pixels(sources: list[str], grids: list, settings: VideoSettings) -> dict:
    """{pixel_values_videos, video_grid_thw [n, 3]} for the videos of a batch, in order; the grid each video
    makes now must be the one its tokens were counted for."""
    import torch

    if not sources:
        return {}
    patches, made = [], []
    for source, grid in zip(sources, grids):
        plan = plan_video(source, settings, f"video {source.splitlines()[0]}")
        if list(plan.grid) != list(grid):
            raise DataError(f"video {source.splitlines()[0]}: it now makes grid {list(plan.grid)} but the tokenized rows"
                            f" expect {list(grid)}; the file or data.video_* changed since the data was cached:"
                            " delete the data cache (data.cache_dir) and rerun")
        frames = frame_tensor(decode_frames(plan), plan, settings)
        patches.append(patchify_frames(frames, settings.patch_size, settings.temporal_patch_size, settings.merge_size))
        made.append(list(plan.grid))
    return {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(made, dtype=torch.long)}
