"""A tiny local Hugging Face model folder (what a llamafactory-cli file's model_name_or_path names) and the
LLaMA-Factory-shaped YAML files the translation tests read."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory) -> Path:
    """The default tiny Qwen2 (random init) with its character tokenizer and ChatML template, saved as HF."""
    import torch

    from launcher.config.compose import compose_config
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config([])
    tokenizer = load_tokenizer(cfg.model)
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    out = tmp_path_factory.mktemp("hf") / "tiny-qwen2"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def write_lf(tmp_path):
    """Write a dict as a llamafactory-cli train YAML file; return its path."""

    def write(data: dict, name: str = "lf.yaml", text: str | None = None) -> Path:
        path = tmp_path / name
        path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
        return path

    return write
