"""Which videos and audio clips a request may make the server read, and which it may make it decode.

A video comes as a ``video_url`` part (vLLM's form): a ``data:video/...;base64,`` URL, or a path on the server
read only under the folders named with ``--image-root``, by the same rule, message and limits as images
(launcher.serve.images). An audio clip comes as OpenAI's ``input_audio`` part: base64 ``data`` in ``wav`` or
``mp3`` ``format``. The bytes go to a file in the server's private temp folder (the data code decodes from a
path, as training does), removed when the request ends.

Before a request queues for the model, each file is opened with the one demuxer its kind allows and its
streams checked against bounds that hold its decode to a known cost, so that a small file that would decode to
hours of audio or a thousand-frame 8K video is a 400 naming the part, never an exhausted worker:
- audio: decoded frame by frame, refused as soon as it passes the model's longest clip (Qwen2-Audio: 30 s);
- video: its header's frame size (``--max-image-pixels``, as an image) and frame count (``max_video_frames``)
  checked before a frame is decoded; the frames then sampled are the data code's (data.video_fps, maxlen).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.serve.openai_protocol import bad_request

AUDIO_FORMATS = {"wav": "wav", "mp3": "mp3"}
"""input_audio.format -> the FFmpeg demuxer that may read it (OpenAI's two input formats)."""
VIDEO_CONTAINERS = {"mp4": "mp4", "quicktime": "mov", "webm": "webm", "x-matroska": "matroska", "x-msvideo": "avi"}
"""data:video/<type> -> the FFmpeg demuxer that may read it."""
VIDEO_DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi")
"""Containers a video read from a path may be in (PyAV's names for the demuxers above)."""
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg")


@dataclass(frozen=True)
class InlineMedia:
    """A video or audio clip sent in the request: its bytes, the demuxer it must open with, a label for messages."""

    data: bytes
    demuxer: Optional[str]
    """None: any of the kind's allowed containers (a path on the server)."""
    label: str


@dataclass(frozen=True)
class MediaPath:
    """A video a request names by a path on the server; read under ImagePolicy's roots."""

    path: str
    label: str


class MediaFiles:
    """The server's private folder of request media; ``write`` gives a file, ``release`` removes a request's."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="launcher-serve-media-"))  # mode 0700
        import atexit

        atexit.register(self.close)  # what a refused request left (it was written before the refusal)

    def write(self, data: bytes, suffix: str) -> str:
        path = self.folder / f"{hashlib.sha256(data).hexdigest()[:20]}-{os.urandom(4).hex()}{suffix}"
        path.write_bytes(data)
        return str(path)

    @staticmethod
    def release(paths) -> None:
        for path in paths:
            Path(path).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def invalid(kind: str, param: str, detail: str):
    return bad_request(f"{param}: the {kind} {detail}", param, f"invalid_{kind}")


def check_audio(path: str, demuxer: str, max_seconds: float, param: str) -> None:
    """The clip opens with ``demuxer``, has an audio stream, and decodes to at most ``max_seconds`` (stopping as
    soon as it passes them)."""
    import av

    try:
        container = av.open(path, "r", format=demuxer)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise invalid("audio", param, f"is not {demuxer} audio ({type(exc).__name__})") from None
    try:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise invalid("audio", param, "has no audio stream")
        seconds = 0.0
        for frame in container.decode(stream):
            seconds += frame.samples / (frame.sample_rate or stream.rate or 1)
            if seconds > max_seconds:
                raise bad_request(f"{param}: the audio is longer than the {max_seconds:g} s this model hears; cut it"
                                  " (e.g. ffmpeg -i in -t 30 out.wav)", param, "audio_too_long")
        if seconds <= 0:
            raise invalid("audio", param, "has no samples")
    except av.FFmpegError as exc:
        raise invalid("audio", param, f"does not decode ({type(exc).__name__})") from None
    finally:
        container.close()


def check_video(path: str, demuxer: Optional[str], max_pixels: int, max_frames: int, param: str) -> None:
    """The header's container, codec, frame size and frame count are within the server's bounds."""
    import av

    try:
        container = av.open(path, "r", format=demuxer)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise invalid("video", param, f"is not a video this server reads ({type(exc).__name__})") from None
    try:
        if demuxer is None and container.format.name not in VIDEO_DEMUXERS:  # a data URL's is forced already
            raise invalid("video", param, f"is in a container this server does not read ({container.format.name});"
                                          " send mp4, webm, mkv or avi")
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise invalid("video", param, "has no video stream")
        codec = stream.codec_context.name
        if codec not in VIDEO_CODECS:
            raise invalid("video", param, f"is encoded with {codec}; send {', '.join(VIDEO_CODECS)}")
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height or width * height > max_pixels:
            raise bad_request(f"{param}: the video's frames ({width}x{height}) have more pixels than this server"
                              f" decodes ({max_pixels:,}, width x height)", param, "video_too_large")
        frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        if frames > max_frames:
            raise bad_request(f"{param}: the video has {frames:,} frames; this server decodes videos of at most"
                              f" {max_frames:,}", param, "video_too_large")
    except av.FFmpegError as exc:
        raise invalid("video", param, f"does not decode ({type(exc).__name__})") from None
    finally:
        container.close()
