"""Prompts for online RL (GRPO): each row is a conversation up to its last answer, rendered and tokenized as the
generation prompt, with that answer kept (the exact-match reward's reference) and the dataset row as read (what a
``module:function`` reward gets).

The rows are read through the same registry, formats, caps, mix and held-out split as SFT's
(``launcher.data``), so the same ``data.*`` keys pick the same samples; they are not stored as token rows
because the trained sequences are the policy's own completions, made during training. A prompt longer than
``data.cutoff_len`` tokens is dropped and counted (cutting it would change the question).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from launcher.config.schema import Config
from launcher.errors import DataError


@dataclass
class PromptData:
    train: list
    """Prompt rows: {prompt_ids, prompt (text), answer (text or None), row (the dataset row), where,
    answer_suffix (what the template writes after an answer)}."""
    eval: Optional[list]
    """Held-out prompt rows (data.eval_datasets or the data.val_size split), or None."""
    eval_samples: Optional[list]
    """Canonical held-out samples (messages): the Trainer's greedy exact-match check before and after."""
    stats: dict = field(default_factory=dict)
    kind: str = "prompt"


def _read(spec, cap: Optional[int]) -> list[dict]:
    """Canonical samples with their row; no further than ``cap`` rows when set (and num_samples is not)."""
    from launcher.data.formats import row_to_sample
    from launcher.data.readers import read_spec_rows

    out = []
    for where, row in read_spec_rows(spec):
        if cap is not None and spec.num_samples is None and len(out) >= cap:
            break
        sample = row_to_sample(row, spec, where)
        if sample is None:
            continue
        sample["row"], sample["where"] = row, where
        out.append(sample)
    return out


def _mix(cfg: Config, entries: list) -> list[dict]:
    from launcher.data import resolve_dataset_dir
    from launcher.data.mixing import mix, resample, take
    from launcher.data.registry import load_registry, lookup

    d = cfg.data
    dataset_dir = resolve_dataset_dir(d)
    registry = load_registry(dataset_dir)
    groups = []
    for entry in entries:
        spec = lookup(registry, entry.name, dataset_dir)
        if spec.ranking or spec.is_text() or spec.is_feedback():
            kind = "preference (ranking: true)" if spec.ranking else "KTO feedback" if spec.is_feedback() else \
                "plain text"
            raise DataError(f"data.datasets: method={cfg.method.name} samples answers to prompts, and '{entry.name}'"
                            f" is {kind} data; use instruction data (alpaca/sharegpt) whose answer column is kept"
                            " for the rewards (e.g. data=tasks)")
        caps = [entry.max_samples, d.max_samples]
        cap = min((c for c in caps if c is not None), default=None)
        samples = take(resample(_read(spec, cap), spec.num_samples, cfg.train.seed), caps)
        groups.append(samples)
    return mix(groups, [e.weight for e in entries], d.mix_strategy, cfg.train.seed)


def prompt_row(sample: dict, renderer, tokenizer) -> dict:
    """The generation prompt of ``sample`` (up to its last answer) and that answer."""
    from launcher.data.templates import parse_tools

    messages = sample["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    answer = messages[last]["content"]
    text = renderer.render(messages[:last], parse_tools(sample.get("tools"), "prompt"), True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"prompt_ids": ids, "prompt": text, "answer": answer, "row": sample["row"], "where": sample["where"]}


def answer_suffix(renderer) -> str:
    """What the template writes after an answer's text (qwen: "<|im_end|>\\n"): a reward model trained on
    rendered pairs saw it after every answer, so ``rm:RUN_DIR`` scores a finished completion with it."""
    sentinel = "\x00answer\x00"
    text = renderer.render([{"role": "user", "content": "q"}, {"role": "assistant", "content": sentinel}], None, False)
    return text.split(sentinel, 1)[1] if sentinel in text else ""


def build_prompt_datasets(cfg: Config, tokenizer) -> PromptData:
    """Training and held-out prompt rows (see the module docstring)."""
    from launcher.data import template_request
    from launcher.data.mixing import split_eval
    from launcher.data.templates import choose_renderer

    d = cfg.data
    samples = _mix(cfg, d.datasets)
    held: list = []
    if d.eval_datasets:
        held = _mix(cfg, d.eval_datasets)
    elif d.val_size > 0:
        samples, held = split_eval(samples, d.val_size, cfg.train.seed)
    # the template SFT on this data renders with (text models: data.template, else the tokenizer's own)
    render, _ = choose_renderer(tokenizer, template_request(d, "sft", None, tokenizer))
    dropped = 0
    rows = []
    for s in samples:
        row = prompt_row(s, render, tokenizer)
        if len(row["prompt_ids"]) > d.cutoff_len:
            dropped += 1
            continue
        rows.append(row)
    if not rows:
        raise DataError(f"data.cutoff_len: every one of the {len(samples)} prompts is longer than {d.cutoff_len}"
                        " tokens; raise data.cutoff_len")
    eval_rows = [prompt_row(s, render, tokenizer) for s in held] or None
    suffix = answer_suffix(render)
    for row in rows + (eval_rows or []):
        row["answer_suffix"] = suffix
    eval_samples = [{k: v for k, v in s.items() if k in ("messages", "tools")} for s in held] or None
    lengths = [len(r["prompt_ids"]) for r in rows]
    stats = {"train_prompts": len(rows), "eval_prompts": len(eval_rows or []), "dropped_long_prompts": dropped,
             "max_prompt_tokens": max(lengths), "mean_prompt_tokens": round(sum(lengths) / len(lengths), 1)}
    return PromptData(rows, eval_rows, eval_samples, stats)
