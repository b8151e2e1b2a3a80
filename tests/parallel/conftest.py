"""The 2-rank runs of tests/parallel/test_parallel_train.py, each launched once per session on first use.

test_export_sharded exports the final-step checkpoints of the same ZeRO-3 and FSDP runs (full and LoRA) instead
of training four runs of its own: every run here also checkpoints its final step (``--checkpoint-after``)."""
from __future__ import annotations

from pathlib import Path

import pytest

LORA = ["method=lora", "method.lr=5e-3"]
RUNS = {
    "ddp": ["parallelism=ddp"],
    "ddp-lora": ["parallelism=ddp", *LORA],
    # Gradient checkpointing changes no number, so the ZeRO-2 run also covers it under full fine-tuning.
    "zero2": ["parallelism=zero2", "train.save_every=2", "train.gradient_checkpointing=true"],
    "zero3": ["parallelism=zero3", "train.save_every=2"],
    "fsdp": ["parallelism=fsdp", "train.save_every=2"],
    "zero3-lora": ["parallelism=zero3", *LORA, "train.gradient_checkpointing=true"],
    "fsdp_offload-lora": ["parallelism=fsdp_offload", *LORA, "train.gradient_checkpointing=true"],
    "zero3_offload": ["parallelism=zero3_offload", "train.gradient_checkpointing=true"],
}


@pytest.fixture(scope="session")
def parallel_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parallel")


@pytest.fixture(scope="session")
def parallel_run(parallel_root):
    """``parallel_run(name)``: the run dir of RUNS[name], trained under torchrun the first time it is asked for."""
    from tests.parallel.test_parallel_train import launch

    done = {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = launch(parallel_root, name, RUNS[name], checkpoint_after=True)
        return done[name]

    return get
