"""Which images a request may make the server read, and which it may make it decode.

A request names an image by a data URL (its bytes travel in the request) or by a path on the server. A path
is read only when it resolves (symlinks and ``..`` followed) to a regular file under one of the folders the
operator named with ``--image-root``; with none named, no path is read. Every refused path gets the same
message, whether it is missing, outside the roots, a directory, a FIFO or unreadable, so a client cannot use
the server to learn which files exist. A file is checked with ``stat`` before it is opened and opened with
``O_NONBLOCK``, so that a FIFO or a device can never block a worker.

Once read, an image is decoded here, in the request's preparation, under a pixel limit and from a short
list of formats, so that a decompression bomb, a truncated file or a format with a risky decoder is a 400
before the request queues for the model, never a 500 (or an exhausted machine) during generation.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.data.vision import InlineImage
from launcher.serve.openai_protocol import bad_request

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Decoders a client may reach. PIL knows dozens more (EPS would run Ghostscript); none is needed here."""


def refused_path(param: str, kind: str = "image"):
    example = "data:image/png;base64,..." if kind == "image" else "data:video/mp4;base64,..."
    return bad_request(f"{param}: this server does not read that path. {kind.capitalize()} paths must name {'an' if kind == 'image' else 'a'}"
                       f" {kind} file under a folder the server was started with (--image-root); otherwise send the"
                       f" {kind} as a data URL ({example})", param, f"{kind}_path_refused")


def too_large(param: str, size: str, limit: int):
    return bad_request(f"{param}: the image{size} has more pixels than this server decodes ({limit:,}, width x height)",
                       param, "image_too_large")


@dataclass(frozen=True)
class ImagePolicy:
    roots: tuple = ()
    """Resolved folders a request may read images from (``--image-root``); empty: data URLs only."""
    max_bytes: int = 32 << 20
    """Largest image file read from a path (a data URL is already bounded by the request body limit)."""
    max_pixels: int = 40_000_000
    """Largest image decoded, width x height (40 MP: 120 MB of RGB). PIL only warns from 89 MP and refuses
    from 179 MP."""
    max_video_frames: int = 20_000
    """Most frames a request's video may have (11 min at 30 fps): decoding walks the stream up to the last
    sampled frame, so its length bounds the work, whatever few frames are kept."""

    @classmethod
    def build(cls, roots, max_bytes: int, max_pixels: int, max_video_frames: int = 20_000) -> "ImagePolicy":
        resolved = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                from launcher.errors import ConfigError

                raise ConfigError(f"--image-root {root}: not a folder; name a folder of images the clients may use")
            resolved.append(path)
        return cls(tuple(resolved), max_bytes, max_pixels, max_video_frames)

    def read(self, source) -> InlineImage:
        """The bytes of a request's image (an InlineImage or an ImagePath): a data URL's as they are, a
        path's when the roots allow it."""
        if isinstance(source, InlineImage):
            return source
        return InlineImage(self.read_path(source.path, source.label), source.label)

    def read_path(self, given: str, param: str, kind: str = "image") -> bytes:
        """The bytes of a file a request names (an image, or a video: the same roots and size limit)."""
        data = self._read_path(given, param, kind)
        if data is None:
            raise refused_path(param, kind)
        return data

    def _read_path(self, given: str, param: str, kind: str = "image") -> Optional[bytes]:
        if not self.roots or "\0" in given:
            return None
        candidates = [Path(given)] if os.path.isabs(given) else [root / given for root in self.roots]
        for candidate in candidates:
            try:
                path = candidate.resolve(strict=True)
            except (OSError, RuntimeError):  # missing, a symlink loop, unreadable parent
                continue
            if not any(path.is_relative_to(root) for root in self.roots):
                continue
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):
                    continue
                # O_NONBLOCK: should the file be swapped for a FIFO after the stat, opening still returns at once.
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = f.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise bad_request(f"{param}: the {kind} file is larger than {self.max_bytes >> 20} MB", param,
                                  f"{kind}_too_large")
            return data
        return None

    def check(self, image: InlineImage) -> tuple[int, int]:
        """(width, height) of an image that decodes completely within the pixel limit; a 400 otherwise."""
        import warnings
        from io import BytesIO

        from PIL import Image, UnidentifiedImageError

        param = image.label
        with warnings.catch_warnings():
            # PIL warns (and from 2x its limit raises) on big images; ours is the limit that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(BytesIO(image.data), formats=FORMATS) as opened:
                    width, height = opened.size
                    if width * height > self.max_pixels:
                        raise too_large(param, f" ({width}x{height})", self.max_pixels)
                    opened.load()  # a truncated or corrupt file fails here, not in the model's worker
            except Image.DecompressionBombError:  # PIL's own limit, when it is below ours
                raise too_large(param, "", self.max_pixels) from None
            except UnidentifiedImageError:
                raise bad_request(f"{param}: not an image this server reads ({', '.join(FORMATS)})", param,
                                  "invalid_image") from None
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise bad_request(f"{param}: the image does not decode ({exc})", param, "invalid_image") from None
        return width, height
