"""The data pipeline: registry -> canonical samples -> tokenized rows -> batches.

``build_datasets`` is what a recipe calls; ``DataBundle`` is what it gets back.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from launcher.config.schema import Config, DataConfig
from launcher.errors import DataError
from recipes.data.collate import collate_padded
from recipes.data.formats import read_rows, to_sample
from recipes.data.registry import load_registry, lookup
from recipes.data.tokenize import check_trainable, count_trained, tokenize_messages

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DataBundle:
    train: list
    """Token rows: {input_ids, labels}."""
    eval: Optional[list]
    eval_samples: Optional[list]
    """Canonical held-out samples (messages), for generation checks."""
    collate: Callable[[list], dict]
    stats: dict = field(default_factory=dict)


def resolve_dataset_dir(data: DataConfig) -> Path:
    path = Path(data.dataset_dir)
    return path if path.is_absolute() else (REPO_ROOT / path)


def load_samples(data: DataConfig, names: list) -> list:
    dataset_dir = resolve_dataset_dir(data)
    specs = load_registry(dataset_dir)
    samples = []
    for entry in names:
        spec = lookup(specs, entry.name, dataset_dir)
        if not spec.file_name:
            raise DataError(f"dataset '{entry.name}': only local files are supported offline (no file_name)")
        path = dataset_dir / spec.file_name
        rows = []
        for row_no, row in read_rows(path):
            rows.append(to_sample(row, spec, f"{path}:{row_no}"))
        cap = min(x for x in (entry.max_samples, data.max_samples, spec.num_samples, len(rows)) if x is not None)
        samples += rows[:cap]
    return samples


def tokenize_samples(samples: list, tokenizer, data: DataConfig, stats: dict) -> list:
    rows = []
    for i, sample in enumerate(samples):
        row = tokenize_messages(tokenizer, sample, data.cutoff_len, data.train_on_prompt, data.mask_history)
        row = check_trainable(row, f"sample {i}", data.lenient)
        if row is None:
            stats["dropped"] = stats.get("dropped", 0) + 1
            continue
        rows.append(row)
    return rows


def build_datasets(cfg: Config, tokenizer) -> DataBundle:
    data = cfg.data
    samples = load_samples(data, data.datasets)
    eval_samples = None
    if data.eval_datasets:
        eval_samples = load_samples(data, data.eval_datasets)
    elif data.val_size > 0:
        rng = random.Random(cfg.train.seed)
        order = list(range(len(samples)))
        rng.shuffle(order)
        n_eval = int(data.val_size) if data.val_size >= 1 else max(1, int(round(len(samples) * data.val_size)))
        held = set(order[:n_eval])
        eval_samples = [samples[i] for i in sorted(held)]
        samples = [s for i, s in enumerate(samples) if i not in held]
    stats = {"dropped": 0}
    train_rows = tokenize_samples(samples, tokenizer, data, stats)
    eval_rows = tokenize_samples(eval_samples, tokenizer, data, {}) if eval_samples else None
    stats.update(
        samples=len(train_rows),
        tokens=sum(len(r["input_ids"]) for r in train_rows),
        trained_tokens=sum(count_trained(r["labels"]) for r in train_rows),
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataBundle(train_rows, eval_rows, eval_samples, partial(collate_padded, pad_token_id=pad_id), stats)
