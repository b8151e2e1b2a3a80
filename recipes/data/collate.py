"""Token rows -> model batches.

A batch always has ``input_ids``, ``position_ids``, ``labels`` and ``shift_labels`` ([B, T]); shift_labels[t]
is the target for position t, set to -100 where the next token belongs to another sample or to padding,
so no sample is trained to predict its neighbour. ``attention_mask`` is a [B, T] padding mask.
"""
from __future__ import annotations

import torch

from recipes.data.tokenize import IGNORE_INDEX


def shift_segment_labels(labels: list, segment_lengths: list) -> list:
    """Per-sample left shift of labels: the last position of each segment predicts nothing."""
    out, offset = [], 0
    for n in segment_lengths:
        seg = labels[offset: offset + n]
        out += seg[1:] + [IGNORE_INDEX]
        offset += n
    return out


def collate_padded(rows: list[dict], pad_token_id: int) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    input_ids, labels, shift, position_ids, attention = [], [], [], [], []
    for r in rows:
        n = len(r["input_ids"])
        pad = width - n
        input_ids.append(r["input_ids"] + [pad_token_id] * pad)
        labels.append(r["labels"] + [IGNORE_INDEX] * pad)
        shift.append(shift_segment_labels(r["labels"], [n]) + [IGNORE_INDEX] * pad)
        position_ids.append(list(range(n)) + [0] * pad)
        attention.append([1] * n + [0] * pad)
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "shift_labels": torch.tensor(shift, dtype=torch.long),
        "position_ids": torch.tensor(position_ids, dtype=torch.long),
        "attention_mask": torch.tensor(attention, dtype=torch.long),
    }
