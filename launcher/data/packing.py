"""Packing: several samples in one row of at most cutoff_len tokens, each sample still alone in attention.

``plan_packs`` is a pure best-fit-decreasing planner; ``pack_rows`` applies a plan. A packed row keeps the
sample boundaries (``segment_lengths``) and restarts ``position_ids`` at 0 for every sample; the collator
turns those into a block-diagonal causal mask (sdpa/eager) or leaves them to flash-attention's varlen path.
"""
from __future__ import annotations

import bisect


def plan_packs(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of at most ``capacity`` tokens (best fit decreasing).

    Longest first, each into the fullest bin that still has room (ties: the earliest bin), else a new bin.
    Deterministic: equal inputs give equal plans, on every rank.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sample of {max(lengths)} tokens does not fit a bin of {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (free space, bin index), sorted: bisect finds the smallest free space that still fits
    free: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        if n == 0:
            continue
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
        else:
            space, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
    return bins


def pack_rows(rows: list[dict], plan: list[list[int]]) -> list[dict]:
    packed = []
    vision = any("images" in r for r in rows)
    for group in plan:
        input_ids, labels, position_ids, lengths = [], [], [], []
        images, grids, per_segment = [], [], []
        for i in group:
            n = len(rows[i]["input_ids"])
            input_ids += rows[i]["input_ids"]
            labels += rows[i]["labels"]
            position_ids += list(range(n))
            lengths.append(n)
            images += rows[i].get("images") or []
            grids += rows[i].get("image_grid_thw") or []
            per_segment.append(len(rows[i].get("images") or []))
        row = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "segment_lengths": lengths}
        if vision:  # images in order, with how many belong to each sample (for its own 3-D positions)
            row.update(images=images, image_grid_thw=grids, segment_images=per_segment)
        packed.append(row)
    return packed


def packing_fill(packed: list[dict], capacity: int) -> float:
    """Real tokens / positions of full-length rows: how much of the compute packing keeps useful."""
    if not packed:
        return 0.0
    return sum(len(r["input_ids"]) for r in packed) / (len(packed) * capacity)
