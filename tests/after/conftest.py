"""The after-training tests' environment; their trained run dirs (lora_run, full_run) are tests/conftest.py's,
shared with the LLaMA-Factory file tests."""
from __future__ import annotations

import os

import pytest

from tests.conftest import train_run  # noqa: F401  (imported from here by older tests)


@pytest.fixture(scope="session")
def repo_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env
