"""Canonical samples -> token rows, with LLaMA-Factory's label masks and truncation.

Each (prompt, answer) pair from ``templates.split_pairs`` is tokenized on its own and the pieces are
concatenated, as LLaMA-Factory does: the label boundary is then exact by construction (no BPE merge can
straddle it). An answer includes its end-of-turn text (for ChatML ``<|im_end|>\\n``), so the model learns
to stop.

Rows:
- supervised: ``{"input_ids", "labels"}``;
- preference: ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "prompt_len"}``
  (the prompt ids are shared; prompt labels are -100);
- feedback (KTO): ``{"input_ids", "labels", "prompt_len", "kto_tag"}``: the last answer trained, all before it
  the prompt (its mismatched KL row is made per micro-batch: launcher.data.collate.collate_feedback);
- pretraining text: ``{"input_ids", "labels"}`` with every token trained, long texts cut into cutoff_len pieces.
"""
from __future__ import annotations

from typing import Callable, Optional

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


# A prompt or answer longer than this many characters per token of cutoff_len (and at least LONG_PIECE_MIN
# characters) is cut to that many characters before it is tokenized. Rows keep only their first cutoff_len
# tokens, and no real tokenizer needs 32 characters per token, so the kept tokens are the same; tokenizing
# all of a 100 MB row first would take tens of GB (the fast tokenizers keep offsets and strings per token).
# What changes: LLaMA-Factory's split of the budget between a long prompt and a long answer (infer_seqlen's
# last case) sees the cut length of a side that was cut; ordinary rows are never cut.
LONG_PIECE_CHARS_PER_TOKEN = 32
LONG_PIECE_MIN = 1 << 20
# Pretraining text is kept whole (cut into cutoff_len rows), so a single text is bounded instead.
MAX_TEXT_CHARS = 32 << 20


def piece_char_limit(cutoff_len: int) -> int:
    return max(LONG_PIECE_MIN, LONG_PIECE_CHARS_PER_TOKEN * cutoff_len)


def text_encoder(tokenizer) -> Callable[[str], list[int]]:
    """text -> its ids without special tokens added. A fast tokenizer's Rust backend is called directly: the
    same ids as ``tokenizer(text, add_special_tokens=False)`` (the golden-row test holds it to that), without
    transformers' Python bookkeeping around each call; the tokenizer is the pipeline's main cost."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode"):
        encode = backend.encode
        return lambda text: encode(text, add_special_tokens=False).ids if text else []
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], cutoff_len: Optional[int] = None
                 ) -> list[tuple[list[int], list[int]]]:
    """Each (prompt, answer) tokenized on its own; with ``cutoff_len``, a piece too long to matter whole is cut
    first (``piece_char_limit``), so memory does not grow with the length of a row."""
    encode = text_encoder(tokenizer)
    if cutoff_len:
        limit = piece_char_limit(cutoff_len)
        return [(encode(p[:limit]), encode(a[:limit])) for p, a in pairs]
    return [(encode(p), encode(a)) for p, a in pairs]


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


def encode_feedback(encoded: list[tuple[list[int], list[int]]], cutoff_len: int, kto_tag: bool) -> dict:
    """KTO: the whole conversation before the last answer is the prompt (untrained), the last answer the
    completion, cut as a preference pair is; ``kto_tag`` says whether the answer is desirable."""
    prompt_ids = [t for source, target in encoded[:-1] for t in source + target] + encoded[-1][0]
    completion = encoded[-1][1]
    source_len, target_len = infer_seqlen(len(prompt_ids), len(completion), cutoff_len)
    return {"input_ids": prompt_ids[:source_len] + completion[:target_len],
            "labels": [IGNORE_INDEX] * source_len + completion[:target_len],
            "prompt_len": source_len, "kto_tag": int(bool(kto_tag))}


def encode_text(tokenizer, text: str, cutoff_len: int) -> list[dict]:
    """Pretraining: text + eos, every token trained, cut into pieces of cutoff_len (no text is thrown away)."""
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(
            f"a pretraining text of {len(text):,} characters (more than {MAX_TEXT_CHARS:,}) in one row; every"
            " token of it would be kept, so split it into several rows (e.g. one per document or chapter)"
        )
    ids = text_encoder(tokenizer)(text)
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return [{"input_ids": ids[i: i + cutoff_len], "labels": ids[i: i + cutoff_len]} for i in range(0, len(ids), cutoff_len)]


def tokenize_sample(tokenizer, renderer, sample: dict, cutoff_len: int, train_on_prompt: bool = False,
                    mask_history: bool = False, where: str = "") -> list[dict]:
    """One canonical sample -> its rows (one, or several for a long pretraining text)."""
    if "text" in sample:
        try:
            return encode_text(tokenizer, sample["text"], cutoff_len)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
    tools = parse_tools(sample.get("tools"), where)
    if tools and not renderer.supports_tools:
        raise DataError(f"{where}: the sample has tools but the tokenizer's chat template ignores them;"
                        " set data.template=qwen (or llama3, mistral) to render them")
    if "chosen" in sample:
        encoded = {}
        for key in ("chosen", "rejected"):
            pairs = split_pairs(renderer, sample["messages"] + [sample[key]], tools, where)
            enc = encode_pairs(tokenizer, pairs, cutoff_len)
            prompt_ids = [t for source, target in enc[:-1] for t in source + target] + enc[-1][0]
            encoded[key] = (prompt_ids, enc[-1][1])
        return [encode_pairwise(encoded["chosen"][0], encoded["chosen"][1], encoded["rejected"][1], cutoff_len)]
    pairs = split_pairs(renderer, sample["messages"], tools, where)
    if "kto_tag" in sample:
        return [encode_feedback(encode_pairs(tokenizer, pairs, cutoff_len), cutoff_len, sample["kto_tag"])]
    return [encode_supervised(encode_pairs(tokenizer, pairs, cutoff_len), cutoff_len, train_on_prompt, mask_history)]


def count_trained(labels: list) -> int:
    if not isinstance(labels, list):
        labels = list(labels)
    return len(labels) - labels.count(IGNORE_INDEX)  # list.count runs in C


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
