"""Token rows -> model batches.

A batch always has ``input_ids``, ``labels`` (unshifted), ``shift_labels`` and ``position_ids``, LongTensors
[B, T]. shift_labels[t] is the target of position t: -100 at each sample's last position and on padding, so
no sample is trained to predict its neighbour. ``attention_mask`` depends on the rows and the attention:
- unpacked rows: a [B, T] padding mask (1 = token);
- packed rows + flash_attention_2: None; flash-attention's varlen path reads the boundaries from
  position_ids (they restart at 0 for every sample);
- packed rows + sdpa / eager: a [B, 1, T, T] block-diagonal causal mask, which transformers passes through
  unchanged. sdpa gets booleans (True = attend); eager *adds* the mask to the scores, so it gets float32
  0 / -inf-like values (a boolean mask added to scores would silently do nothing useful).

Why not rely on transformers' packed-sequence detection from position_ids (masking_utils)? It only runs
when attention_mask is None *and* there is no KV cache, and Qwen2Model makes a cache whenever use_cache is
on (the config default); an explicit mask does not depend on the caller remembering use_cache=False.

Padding inside packed rows forms one extra block that attends only to itself, so no row of the mask is
empty (an all-masked row gives NaN in sdpa, and NaN values leak through 0-weight products).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch

from launcher.data.tokenize import IGNORE_INDEX

ATTENTION_KINDS = ("sdpa", "eager", "flash_attention_2")


def shift_segment_labels(labels: list, segment_lengths: list) -> list:
    """Per-sample left shift of labels: the last position of each segment predicts nothing."""
    out, offset = [], 0
    for n in segment_lengths:
        seg = labels[offset: offset + n]
        out += seg[1:] + [IGNORE_INDEX]
        offset += n
    return out


def block_causal_mask(segment_lengths: list[list[int]], width: int, attn_implementation: str) -> torch.Tensor:
    """[B, 1, T, T] mask: causal within each segment, nothing across; padding is its own segment."""
    batch = len(segment_lengths)
    segment_ids = torch.empty(batch, width, dtype=torch.long)
    for b, lengths in enumerate(segment_lengths):
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
        segment_ids[b, : len(ids)] = ids
        segment_ids[b, len(ids):] = len(lengths)  # padding
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (same & causal)[:, None, :, :]
    if attn_implementation == "sdpa":
        return allowed
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)


def collate_rows(rows: list[dict], pad_token_id: int, attn_implementation: str = "sdpa") -> dict:
    """Supervised or pretraining rows (packed or not) -> a batch, right-padded to the longest row."""
    if attn_implementation not in ATTENTION_KINDS:
        raise ValueError(f"attn_implementation must be one of {ATTENTION_KINDS}, got {attn_implementation!r}")
    packed = any("segment_lengths" in r for r in rows)
    width = max(len(r["input_ids"]) for r in rows)
    input_ids, labels, shift, position_ids, segments = [], [], [], [], []
    for r in rows:
        n = len(r["input_ids"])
        pad = width - n
        lengths = r.get("segment_lengths", [n])
        input_ids.append(r["input_ids"] + [pad_token_id] * pad)
        labels.append(r["labels"] + [IGNORE_INDEX] * pad)
        shift.append(shift_segment_labels(r["labels"], lengths) + [IGNORE_INDEX] * pad)
        positions = r.get("position_ids") or list(range(n))
        # padding counts on from 0 as one more "sample", so flash-attention's varlen path sees it as its own
        position_ids.append(positions + list(range(pad)))
        segments.append(lengths)
    batch = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "shift_labels": torch.tensor(shift, dtype=torch.long),
        "position_ids": torch.tensor(position_ids, dtype=torch.long),
    }
    if not packed:
        attention = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        batch["attention_mask"] = torch.tensor(attention, dtype=torch.long)
        # position_ids of padding do not matter here: the padding mask hides it
        batch["position_ids"] = torch.tensor(
            [list(range(len(r["input_ids"]))) + [0] * (width - len(r["input_ids"])) for r in rows], dtype=torch.long
        )
    elif attn_implementation == "flash_attention_2":
        batch["attention_mask"] = None
    else:
        batch["attention_mask"] = block_causal_mask(segments, width, attn_implementation)
    return batch


def collate_preference(rows: list[dict], pad_token_id: int, attn_implementation: str = "sdpa") -> dict:
    """Preference rows -> one batch of 2B rows: the B chosen rows first, then the B rejected rows."""
    flat = [{"input_ids": r[f"{side}_input_ids"], "labels": r[f"{side}_labels"]}
            for side in ("chosen", "rejected") for r in rows]
    return collate_rows(flat, pad_token_id, attn_implementation)


def mismatched_rows(rows: list[dict], cutoff_len: Optional[int] = None) -> list[dict]:
    """KTO's KL rows for a micro-batch: row i's prompt with row i-1's answer (row 0 takes the last row's),
    TRL 1.16's rotation (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}) within the batch, so the mismatched answers
    are the same set as the batch's own. The answer is cut at ``cutoff_len`` (TRL cuts at max_length)."""
    out = []
    for i, row in enumerate(rows):
        prev = rows[i - 1]
        p, q = int(row["prompt_len"]), int(prev["prompt_len"])
        answer = list(prev["input_ids"][q:])
        if cutoff_len is not None:
            answer = answer[: max(cutoff_len - p, 0)]
        out.append({"input_ids": list(row["input_ids"][:p]) + answer, "labels": [IGNORE_INDEX] * p + answer})
    return out


def collate_feedback(rows: list[dict], pad_token_id: int, attn_implementation: str = "sdpa",
                     cutoff_len: Optional[int] = None) -> dict:
    """KTO rows -> one batch of 2B rows: the B rows first, then their B mismatched KL rows (``mismatched_rows``);
    ``kto_tag`` [B] bool."""
    flat = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows] + mismatched_rows(rows, cutoff_len)
    batch = collate_rows(flat, pad_token_id, attn_implementation)
    batch["kto_tag"] = torch.tensor([bool(r["kto_tag"]) for r in rows], dtype=torch.bool)
    return batch


def make_collate(kind: str, pad_token_id: int, attn_implementation: str = "sdpa",
                 cutoff_len: Optional[int] = None) -> Callable[[list[dict]], dict]:
    """The collate function for rows of ``kind`` (sft, pt, preference or kto; KTO's KL rows cut at cutoff_len)."""
    if kind == "kto":
        return partial(collate_feedback, pad_token_id=pad_token_id, attn_implementation=attn_implementation,
                       cutoff_len=cutoff_len)
    fn = collate_preference if kind == "preference" else collate_rows
    return partial(fn, pad_token_id=pad_token_id, attn_implementation=attn_implementation)


def resolve_attn_implementation(requested: Optional[str]) -> str:
    """``auto`` resolves to sdpa here; the training loop passes what it actually chose."""
    return "sdpa" if requested in (None, "auto") else requested
