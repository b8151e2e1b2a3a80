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
