"""Shared fixtures: runs go to a temporary output root; tiny models, few steps."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMO = Path(os.environ.get("LAUNCHER_LF_DEMO_DIR", REPO_ROOT.parent / "shared" / "datasets" / "llamafactory-demo"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def output_root(tmp_path) -> Path:
    root = tmp_path / "outputs"
    root.mkdir()
    return root
