"""Rows of a dataset file -> canonical samples: ``{"messages": [{"role", "content"}], "tools": str|None}``.

Roles: system, user, assistant, tool (observation), function_call (assistant tool call).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from launcher.errors import DataError
from recipes.data.registry import DatasetSpec


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(row number, row) for json (a list) and jsonl files; errors name the file and line."""
    if not path.exists():
        raise DataError(f"{path}: dataset file not found; check file_name in dataset_info.json")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or remove the line") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); fix the file") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    for i, row in enumerate(data):
        yield i, row


def alpaca_to_messages(row: dict, spec: DatasetSpec, where: str) -> dict:
    cols = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
            "history": "history", **spec.columns}
    prompt = row.get(cols["prompt"])
    if prompt is None:
        raise DataError(f"{where}: missing column '{cols['prompt']}'; alpaca rows need instruction and output")
    query = row.get(cols["query"]) or ""
    user = f"{prompt}\n{query}" if query else str(prompt)
    messages = []
    if row.get(cols["system"]):
        messages.append({"role": "system", "content": str(row[cols["system"]])})
    for turn in row.get(cols["history"]) or []:
        messages += [{"role": "user", "content": str(turn[0])}, {"role": "assistant", "content": str(turn[1])}]
    messages.append({"role": "user", "content": user})
    response = row.get(cols["response"])
    if response is None:
        raise DataError(f"{where}: missing column '{cols['response']}'; alpaca rows need instruction and output")
    messages.append({"role": "assistant", "content": str(response)})
    return {"messages": messages, "tools": None}


def sharegpt_to_messages(row: dict, spec: DatasetSpec, where: str) -> dict:
    cols = {"messages": "conversations", "system": "system", "tools": "tools", **spec.columns}
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
            "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
            **spec.tags}
    role_map = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant",
                tags["observation_tag"]: "tool", tags["function_tag"]: "function_call",
                tags["system_tag"]: "system"}
    turns = row.get(cols["messages"])
    if not isinstance(turns, list):
        raise DataError(f"{where}: missing column '{cols['messages']}' (a list of turns)")
    messages: list[dict[str, Any]] = []
    if row.get(cols["system"]):
        messages.append({"role": "system", "content": str(row[cols["system"]])})
    for turn in turns:
        role = role_map.get(turn.get(tags["role_tag"]))
        if role is None:
            raise DataError(f"{where}: unknown role {turn.get(tags['role_tag'])!r}; expected one of {sorted(role_map)}")
        messages.append({"role": role, "content": str(turn.get(tags["content_tag"], ""))})
    return {"messages": messages, "tools": row.get(cols["tools"]) or None}


def to_sample(row: dict, spec: DatasetSpec, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object per row, got {type(row).__name__}")
    if spec.formatting == "sharegpt":
        return sharegpt_to_messages(row, spec, where)
    return alpaca_to_messages(row, spec, where)
