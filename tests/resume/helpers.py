"""Shared by the resume tests: the tiny config, per-step losses and final weights of a run dir."""
from __future__ import annotations

from pathlib import Path

import torch

from launcher.training.metrics import read_metrics

TINY = [
    "train.micro_batch_size=4", "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0",
    "data.max_samples=200", "train.eval_max_batches=1", "method.lr=2e-3", "train.keep_checkpoints=2",
    "train.exact_match_samples=0",
]


def train_losses(run_dir: Path) -> dict:
    """step -> loss, one per step (metrics.jsonl after a resume must hold each step once)."""
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


def raw_train_steps(run_dir: Path) -> list:
    import json

    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if r.get("kind") == "train"]


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs: max |diff| {(a[name] - b[name]).abs().max()}"
