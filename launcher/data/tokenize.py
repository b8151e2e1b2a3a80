"""Canonical samples -> token rows, with LLaMA-Factory's label masks and truncation.

Each (prompt, answer) pair from ``templates.split_pairs`` is tokenized on its own and the pieces are
concatenated, as LLaMA-Factory does: the label boundary is then exact by construction (no BPE merge can
straddle it). An answer includes its end-of-turn text (for ChatML ``<|im_end|>\\n``), so the model learns
to stop.

Rows:
- supervised: ``{"input_ids", "labels"}``;
- preference: ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "prompt_len"}``
  (the prompt ids are shared; prompt labels are -100);
- pretraining text: ``{"input_ids", "labels"}`` with every token trained, long texts cut into cutoff_len pieces.
"""
from __future__ import annotations

from typing import Optional

from launcher.errors import DataError
from launcher.data.templates import parse_tools, split_pairs

IGNORE_INDEX = -100


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's budget split: keep the answer if it fits in half; otherwise cut the longer side first."""
    if target_len * 2 < cutoff_len:  # a short answer is kept whole; the prompt is cut
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # a short prompt is kept whole; the answer is cut
        max_target_len = cutoff_len - source_len
    else:  # both long: share the budget in proportion
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    max_source_len = max(cutoff_len - new_target_len, 0)
    new_source_len = min(max_source_len, source_len)
    return new_source_len, new_target_len


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    return [(_ids(tokenizer, p), _ids(tokenizer, a)) for p, a in pairs]


def encode_supervised(encoded: list[tuple[list[int], list[int]]], cutoff_len: int, train_on_prompt: bool = False,
                      mask_history: bool = False) -> dict:
    """Token pairs -> one row; a pure function (LLaMA-Factory's ``_encode_supervised_example``)."""
    input_ids: list[int] = []
    labels: list[int] = []
    total = 0
    order = encoded[::-1] if mask_history else encoded  # mask_history: the last turn gets the budget first
    for turn, (source, target) in enumerate(order):
        if total >= cutoff_len:
            break
        source_len, target_len = infer_seqlen(len(source), len(target), cutoff_len - total)
        source, target = source[:source_len], target[:target_len]
        total += source_len + target_len
        source_labels = list(source) if train_on_prompt else [IGNORE_INDEX] * source_len
        target_labels = [IGNORE_INDEX] * target_len if (mask_history and turn != 0) else list(target)
        if mask_history:
            input_ids = source + target + input_ids
            labels = source_labels + target_labels + labels
        else:
            input_ids += source + target
            labels += source_labels + target_labels
    return {"input_ids": input_ids, "labels": labels}


def encode_pairwise(prompt_ids: list[int], chosen_ids: list[int], rejected_ids: list[int], cutoff_len: int) -> dict:
    """Shared prompt + each answer, cut together so both rows keep the same prompt."""
    source_len, target_len = infer_seqlen(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), cutoff_len)
    prompt_ids = prompt_ids[:source_len]
    chosen_ids, rejected_ids = chosen_ids[:target_len], rejected_ids[:target_len]
    return {
        "chosen_input_ids": prompt_ids + chosen_ids,
        "chosen_labels": [IGNORE_INDEX] * source_len + chosen_ids,
        "rejected_input_ids": prompt_ids + rejected_ids,
        "rejected_labels": [IGNORE_INDEX] * source_len + rejected_ids,
        "prompt_len": source_len,
    }


def encode_text(tokenizer, text: str, cutoff_len: int) -> list[dict]:
    """Pretraining: text + eos, every token trained, cut into pieces of cutoff_len (no text is thrown away)."""
    ids = _ids(tokenizer, text)
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return [{"input_ids": ids[i: i + cutoff_len], "labels": ids[i: i + cutoff_len]} for i in range(0, len(ids), cutoff_len)]


def tokenize_sample(tokenizer, renderer, sample: dict, cutoff_len: int, train_on_prompt: bool = False,
                    mask_history: bool = False, where: str = "") -> list[dict]:
    """One canonical sample -> its rows (one, or several for a long pretraining text)."""
    if "text" in sample:
        return encode_text(tokenizer, sample["text"], cutoff_len)
    tools = parse_tools(sample.get("tools"), where)
    if tools and not renderer.supports_tools:
        raise DataError(f"{where}: the sample has tools but the tokenizer's chat template ignores them;"
                        " set data.template=qwen (or llama3, mistral) to render them")
    if "chosen" in sample:
        encoded = {}
        for key in ("chosen", "rejected"):
            pairs = split_pairs(renderer, sample["messages"] + [sample[key]], tools, where)
            enc = encode_pairs(tokenizer, pairs)
            prompt_ids = [t for source, target in enc[:-1] for t in source + target] + enc[-1][0]
            encoded[key] = (prompt_ids, enc[-1][1])
        return [encode_pairwise(encoded["chosen"][0], encoded["chosen"][1], encoded["rejected"][1], cutoff_len)]
    pairs = split_pairs(renderer, sample["messages"], tools, where)
    return [encode_supervised(encode_pairs(tokenizer, pairs), cutoff_len, train_on_prompt, mask_history)]


def count_trained(labels: list) -> int:
    return sum(1 for x in labels if x != IGNORE_INDEX)


def row_trained(row: dict) -> int:
    if "chosen_labels" in row:
        return min(count_trained(row["chosen_labels"]), count_trained(row["rejected_labels"]))
    return count_trained(row["labels"])


def row_length(row: dict) -> int:
    if "chosen_input_ids" in row:
        return len(row["chosen_input_ids"]) + len(row["rejected_input_ids"])
    return len(row["input_ids"])


def check_trainable(row: dict, where: str, lenient: bool) -> Optional[dict]:
    """A row with no trained token is an error, or in lenient mode a counted drop (returns None)."""
    if row_trained(row) > 0:
        return row
    if lenient:
        return None
    raise DataError(
        f"{where}: no trained token left (empty answer, or cut away by data.cutoff_len); fix the row,"
        " raise data.cutoff_len, or set data.lenient=true to drop such rows"
    )
