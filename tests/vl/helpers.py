"""Configs, tokenizer and tiny models for the vision-language tests (offline)."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

from launcher.config.schema import Config, parse_config
from tests.data.helpers import lf_demo_dir  # noqa: F401  (re-exported: the demo folder or None)

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("tiny_qwen2_vl", "tiny_qwen2_5_vl", "tiny_qwen3_vl")
FIXTURE = Path(__file__).with_name("fixtures") / "lf_mllm_demo.json"


def model_yaml(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())


def vl_config(model: str, dataset_dir, datasets, **data) -> Config:
    return parse_config({"model": model_yaml(model),
                         "data": {"dataset_dir": str(dataset_dir), "datasets": datasets, "use_cache": False, **data}})


@functools.lru_cache(maxsize=None)
def tokenizer_for(model: str):
    from launcher.config.schema import parse_config as parse
    from launcher.models.tokenizers import load_tokenizer

    return load_tokenizer(parse({"model": model_yaml(model), "data": {"datasets": ["x"]}}).model)


def tiny_model(model: str, attn: str = "sdpa", seed: int = 0):
    import torch

    from launcher.models.build import build_base_model

    cfg = parse_config({"model": model_yaml(model), "data": {"datasets": ["x"]}, "train": {"seed": seed}})
    return build_base_model(cfg, tokenizer_for(model), attn, torch.float32)


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    """Small PNGs of random colours (PIL, no files shipped)."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    names = []
    for i, (w, h) in enumerate(sizes):
        image = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        for _ in range(20):
            x, y = rng.randrange(w), rng.randrange(h)
            image.putpixel((x, y), tuple(rng.randrange(256) for _ in range(3)))
        name = f"img{i}.png"
        image.save(folder / name)
        names.append(name)
    return names


def save_tiny_vl_folder(out: Path, model: str = "tiny_qwen2_vl", weight_std: float | None = None) -> Path:
    """A tiny random-init VL model saved as a Hugging Face folder: weights, tokenizer, processor files.
    ``weight_std``: redraw every weight at this scale, so that the greedy answer depends on the input (at the
    default init, random logits are flat and every input gets the same answer)."""
    import torch

    from launcher.models.vision import save_vision_files

    built = tiny_model(model)
    if weight_std is not None:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in built.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * weight_std)
    built.save_pretrained(out)
    tokenizer = tokenizer_for(model)
    tokenizer.save_pretrained(out)
    save_vision_files(out, parse_config({"model": model_yaml(model), "data": {"datasets": ["x"]}}), tokenizer)
    return out


def write_video(path: Path, frames: int = 8, size: tuple[int, int] = (64, 48), fps: int = 4, seed: int = 0) -> Path:
    """A small MPEG-4 video of random colours, written with PyAV (no files shipped); frames=0 with an .avi path
    writes a video stream with no frame in it."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        container.start_encoding()  # the header, even with no frame (an .avi then says 0 frames)
        for _ in range(frames):
            picture = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def run_length_decoded(ids: list) -> list:
    """A fixture's run-length coded ids (``[token, count]`` for runs of 4 or more) back to the ids."""
    return [t for x in ids for t in ([x[0]] * x[1] if isinstance(x, list) else [x])]


def assert_audio_rows_equal(rows: list, expected: list) -> None:
    """Our tokenized audio rows against an LF fixture's: ids, labels, and each audio's samples at 16 kHz, feature
    frames and audio tokens."""
    for k, (ours, lf) in enumerate(zip(rows, expected)):
        assert ours["input_ids"] == run_length_decoded(lf["input_ids"]), f"row {k}"
        assert ours["labels"] == run_length_decoded(lf["labels"]), f"row {k}"
        assert [g[0] for g in ours["audio_grid"]] == lf["samples"], f"row {k}"
        assert [g[1] for g in ours["audio_grid"]] == lf["feature_frames"], f"row {k}"
        assert [g[2] for g in ours["audio_grid"]] == lf["audio_tokens"], f"row {k}"
