"""Which samples train and which evaluate: per-dataset caps, the mix of datasets, the held-out split.

All pure and seeded, so every rank (and every rerun) gets the same order.
"""
from __future__ import annotations

import random
from typing import Optional

from launcher.errors import DataError


def take(samples: list, caps: list[Optional[int]]) -> list:
    """The first N samples, N the smallest of the caps that are set (LLaMA-Factory's max_samples)."""
    set_caps = [c for c in caps if c is not None]
    return samples[: min(set_caps)] if set_caps else samples


def resample(samples: list, num_samples: Optional[int], seed: int) -> list:
    """dataset_info.json's ``num_samples``: a seeded subset, or repeats when it asks for more than there is."""
    if num_samples is None or num_samples == len(samples) or not samples:
        return samples
    rng = random.Random(seed)
    order = list(range(len(samples)))
    rng.shuffle(order)
    while len(order) < num_samples:
        order += rng.sample(range(len(samples)), min(len(samples), num_samples - len(order)))
    return [samples[i] for i in order[:num_samples]]


def mix(groups: list[list], weights: list[Optional[float]], strategy: str, seed: int) -> list:
    """concat: one dataset after the other. interleave: draw from each with probability ~ weight (default
    equal) until the first dataset runs out, so small datasets are not drowned by large ones."""
    if strategy == "concat" or len(groups) == 1:
        return [s for g in groups for s in g]
    if strategy != "interleave":
        raise DataError(f"data.mix_strategy: '{strategy}' is not concat or interleave")
    probs = [1.0 if w is None else float(w) for w in weights]
    if any(p < 0 for p in probs) or sum(probs) <= 0:
        raise DataError(f"data.datasets: weights must be >= 0 and not all 0, got {weights}")
    rng = random.Random(seed)
    cursors = [0] * len(groups)
    out = []
    while True:
        k = rng.choices(range(len(groups)), weights=probs)[0]
        if cursors[k] >= len(groups[k]):
            return out
        out.append(groups[k][cursors[k]])
        cursors[k] += 1


def split_eval(samples: list, val_size: float, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random fraction (0 < val_size < 1) or count (>= 1) held out, order kept."""
    if val_size <= 0:
        return samples, []
    n_eval = int(val_size) if val_size >= 1 else max(1, int(round(len(samples) * val_size)))
    if n_eval >= len(samples):
        raise DataError(f"data.val_size: {val_size} holds out {n_eval} of {len(samples)} samples, leaving none to train;"
                        " lower it or name data.eval_datasets")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]
