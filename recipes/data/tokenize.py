"""Canonical samples -> ``input_ids`` and ``labels`` through the tokenizer's own chat template.

Labels are -100 everywhere but on assistant turns (content and end-of-turn). The assistant spans are found
as character ranges by rendering growing prefixes of the conversation, then mapped onto the tokens of one
tokenization of the whole text (offsets), so that BPE merges across a boundary cannot shift a mask.
"""
from __future__ import annotations

from typing import Optional

from launcher.errors import DataError

IGNORE_INDEX = -100


def _render(tokenizer, messages: list, tools, add_generation_prompt: bool) -> str:
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )


def assistant_spans(tokenizer, messages: list, tools=None) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the (start, end) character span of each assistant turn."""
    full = _render(tokenizer, messages, tools, False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:k], tools, True)
        upto = _render(tokenizer, messages[: k + 1], tools, False)
        if not (full.startswith(upto) and upto.startswith(prompt)):
            raise DataError(
                "the chat template does not render conversations prefix by prefix; name a template with data.template"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def tokenize_messages(tokenizer, sample: dict, cutoff_len: int, train_on_prompt: bool = False,
                      mask_history: bool = False) -> dict:
    messages = sample["messages"]
    full, spans = assistant_spans(tokenizer, messages, sample.get("tools"))
    if mask_history and spans:
        spans = spans[-1:]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, (start, end) in enumerate(enc["offset_mapping"]):
        if train_on_prompt or any(s <= start < e for s, e in spans):
            labels[i] = input_ids[i]
    return {"input_ids": input_ids[:cutoff_len], "labels": labels[:cutoff_len]}


def count_trained(labels: list) -> int:
    return sum(1 for x in labels if x != IGNORE_INDEX)


def check_trainable(row: dict, where: str, lenient: bool) -> Optional[dict]:
    """A row with no trained token is an error, or in lenient mode a counted drop (returns None)."""
    if count_trained(row["labels"]) > 0:
        return row
    if lenient:
        return None
    raise DataError(
        f"{where}: no trained token left (empty answer, or cut away by data.cutoff_len); fix the row,"
        " raise data.cutoff_len, or set data.lenient=true to drop such rows"
    )
