"""The LLaMA-Factory-shaped YAML files the translation tests read (their tiny local Hugging Face model folder,
``tiny_hf_model``, is tests/conftest.py's)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def write_lf(tmp_path):
    """Write a dict as a llamafactory-cli train YAML file; return its path."""

    def write(data: dict, name: str = "lf.yaml", text: str | None = None) -> Path:
        path = tmp_path / name
        path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
        return path

    return write
