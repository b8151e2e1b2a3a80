"""Packing: several samples in one row of at most cutoff_len tokens, each sample still alone in attention.

``plan_packs`` is a pure best-fit-decreasing planner (``plan_packs_flat`` the same on a numpy lengths array,
returning index arrays); ``pack_rows`` applies a plan to rows in memory, the store (``store.TokenRows``) reads
a packed row through the plan's indices without copying the tokens. A packed row keeps the
sample boundaries (``segment_lengths``) and restarts ``position_ids`` at 0 for every sample; the collator
turns those into a block-diagonal causal mask (sdpa/eager) or leaves them to flash-attention's varlen path.
"""
from __future__ import annotations

import bisect
import heapq

import numpy as np


def plan_packs(lengths, capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of at most ``capacity`` tokens (best fit decreasing).

    Longest first, each into the fullest bin that still has room (ties: the earliest bin), else a new bin.
    Deterministic: equal inputs give equal plans, on every rank.
    """
    order, offsets = plan_packs_flat(np.asarray(lengths, dtype=np.int64), capacity)
    order = order.tolist()
    return [order[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def plan_packs_flat(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """``plan_packs`` as two arrays: bin b holds ``order[offsets[b]:offsets[b + 1]]``, in the order filled.

    Free space is an integer in [0, capacity], so the bins are kept in one heap of bin numbers per free
    space, and ``spaces`` lists the free spaces that have a bin, sorted: the best fit for n tokens is the first
    space >= n (a bisect over at most capacity + 1 values) and its earliest bin (the heap's top). That is
    O(log) per sample with no search over bins, a few seconds for 10M samples.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and int(lengths.max()) > capacity:
        raise ValueError(f"a sample of {int(lengths.max())} tokens does not fit a bin of {capacity}")
    order = np.argsort(-lengths, kind="stable")  # longest first, ties by index
    order = order[lengths[order] > 0]
    bin_of = np.empty(len(order), np.int64)
    heaps: dict[int, list[int]] = {}
    spaces: list[int] = []
    n_bins = 0
    sorted_lengths = lengths[order]
    # Runs of equal lengths: k samples of n tokens. A bin that takes one of them keeps space - n free; when
    # that is < n no other sample of the run fits it, so the run takes whole groups of bins at once.
    run_starts = np.flatnonzero(np.diff(sorted_lengths, prepend=-1)).tolist() + [len(order)]
    for j, end in zip(run_starts[:-1], run_starts[1:]):
        n = int(sorted_lengths[j])
        while j < end:
            at = bisect.bisect_left(spaces, n)
            if at == len(spaces):
                space, k = capacity, (end - j if 2 * n > capacity else 1)
                taken = list(range(n_bins, n_bins + k))
                n_bins += k
            else:
                space = spaces[at]
                heap = heaps[space]
                if 2 * n > space:  # the rest of the run cannot come back to these bins
                    k = min(end - j, len(heap))
                    if k == len(heap):
                        taken = sorted(heap)
                        heap.clear()
                    else:
                        taken = [heapq.heappop(heap) for _ in range(k)]
                else:
                    k, taken = 1, [heapq.heappop(heap)]
                if not heap:
                    del spaces[at]
            bin_of[j: j + k] = taken
            j += k
            left = space - n
            heap = heaps.setdefault(left, [])
            if not heap:
                bisect.insort(spaces, left)
            for b in taken:
                heapq.heappush(heap, b)
    by_bin = np.argsort(bin_of, kind="stable")  # within a bin: the order it was filled
    offsets = np.zeros(n_bins + 1, np.int64)
    np.cumsum(np.bincount(bin_of, minlength=n_bins), out=offsets[1:])
    return order[by_bin], offsets


def pack_rows(rows: list[dict], plan: list[list[int]]) -> list[dict]:
    packed = []
    vision = any("images" in r for r in rows)
    with_videos = any(r.get("videos") for r in rows)
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
        if with_videos:  # videos likewise
            for key in ("videos", "video_grid_thw", "video_second_per_grid"):
                row[key] = [v for i in group for v in rows[i].get(key) or []]
            row["segment_videos"] = [len(rows[i].get("videos") or []) for i in group]
        packed.append(row)
    return packed


def packing_fill(packed: list[dict], capacity: int) -> float:
    """Real tokens / positions of full-length rows: how much of the compute packing keeps useful."""
    if not packed:
        return 0.0
    return sum(len(r["input_ids"]) for r in packed) / (len(packed) * capacity)
