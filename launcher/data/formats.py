"""Raw rows -> canonical samples, the one shape everything downstream reads.

A canonical sample is ``{"messages": [{"role", "content"}], "tools": str | None}`` plus, when present,
``images`` / ``videos`` / ``audios`` (absolute paths), ``chosen`` / ``rejected`` (one answer message each, for
preference data; ``messages`` then ends with the prompt), ``kto_tag`` (bool), and ``text`` for pretraining
samples (whose ``messages`` is empty).

Roles: system, user, assistant, tool (an observation), function_call (an assistant turn that calls a tool,
content is the JSON call). As in LLaMA-Factory, after an optional system message, prompt turns (user, tool)
and answer turns (assistant, function_call) alternate, starting with a prompt turn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from launcher.errors import DataError
from launcher.data.registry import DatasetSpec

PROMPT_ROLES = ("user", "tool")
ANSWER_ROLES = ("assistant", "function_call")
MEDIA_PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}


def _text(value: Any, where: str, what: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise DataError(f"{where}: {what} is missing")
    if isinstance(value, (int, float)):
        return str(value)
    raise DataError(f"{where}: {what} must be text, got {type(value).__name__}")


def alpaca_to_sample(row: dict, spec: DatasetSpec, where: str) -> dict:
    cols = spec.resolved_columns()
    if spec.is_text():
        return {"messages": [], "tools": None, "text": _text(row.get(cols["prompt"]), where, f"column '{cols['prompt']}'")}
    if cols["prompt"] not in row:
        raise DataError(f"{where}: missing column '{cols['prompt']}'; alpaca rows need instruction and output"
                        " (or map yours with columns in dataset_info.json)")
    prompt = _text(row.get(cols["prompt"]), where, f"column '{cols['prompt']}'")
    query = row.get(cols["query"]) if cols.get("query") else None
    user = "\n".join([prompt, str(query)]) if query else prompt
    messages = []
    if cols.get("system") and row.get(cols["system"]):
        messages.append({"role": "system", "content": _text(row[cols["system"]], where, "system")})
    history = row.get(cols["history"]) if cols.get("history") else None
    for k, turn in enumerate(history or []):
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise DataError(f"{where}: history[{k}] must be a [question, answer] pair")
        messages.append({"role": "user", "content": _text(turn[0], where, f"history[{k}][0]")})
        messages.append({"role": "assistant", "content": _text(turn[1], where, f"history[{k}][1]")})
    messages.append({"role": "user", "content": user})
    sample: dict = {"messages": messages, "tools": row.get(cols["tools"]) if cols.get("tools") else None}
    if spec.ranking:
        for key in ("chosen", "rejected"):
            col = cols.get(key) or key
            if col not in row:
                raise DataError(f"{where}: missing column '{col}'; preference rows need chosen and rejected")
            sample[key] = {"role": "assistant", "content": _text(row[col], where, f"column '{col}'")}
    else:
        if cols["response"] not in row:
            raise DataError(f"{where}: missing column '{cols['response']}'; alpaca rows need instruction and output"
                            " (or map yours with columns in dataset_info.json)")
        response = row[cols["response"]]
        if isinstance(response, list):  # LLaMA-Factory's alpaca ranking-style list of answers: first one
            response = response[0] if response else ""
        messages.append({"role": "assistant", "content": _text(response, where, f"column '{cols['response']}'")})
    return sample


def _sharegpt_message(turn: Any, tags: dict, role_map: dict, where: str, k: Any) -> dict:
    if not isinstance(turn, dict):
        raise DataError(f"{where}: turn {k} must be an object with '{tags['role_tag']}' and '{tags['content_tag']}'")
    for tag in ("role_tag", "content_tag"):
        if tags[tag] not in turn:
            raise DataError(f"{where}: turn {k} has no '{tags[tag]}' key (the {tag}); its keys are"
                            f" {', '.join(map(str, turn)) or '(none)'}: set tags.role_tag and tags.content_tag of this"
                            " dataset in dataset_info.json to the keys your turns use")
    raw_role = turn.get(tags["role_tag"])
    role = role_map.get(raw_role)
    if role is None:
        expected = ", ".join(f"{t}={tags[t]!r}" for t in ("user_tag", "assistant_tag", "observation_tag",
                                                           "function_tag", "system_tag"))
        raise DataError(f"{where}: turn {k} has unknown role {raw_role!r}, which none of the tags names ({expected});"
                        " map yours with tags in dataset_info.json (the roles your turns use)")
    return {"role": role, "content": _text(turn.get(tags["content_tag"]), where, f"turn {k} content")}


def sharegpt_to_sample(row: dict, spec: DatasetSpec, where: str) -> dict:
    cols, tags = spec.resolved_columns(), spec.resolved_tags()
    role_map = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant",
                tags["observation_tag"]: "tool", tags["function_tag"]: "function_call",
                tags["system_tag"]: "system"}
    turns = row.get(cols["messages"])
    if not isinstance(turns, list):
        raise DataError(f"{where}: missing column '{cols['messages']}' (a list of turns);"
                        " name yours with columns.messages in dataset_info.json")
    messages: list[dict] = []
    if cols.get("system") and row.get(cols["system"]):
        messages.append({"role": "system", "content": _text(row[cols["system"]], where, "system")})
    for k, turn in enumerate(turns):
        messages.append(_sharegpt_message(turn, tags, role_map, where, k))
    sample: dict = {"messages": messages, "tools": row.get(cols["tools"]) if cols.get("tools") else None}
    if spec.ranking:
        for key in ("chosen", "rejected"):
            col = cols.get(key) or key
            if not isinstance(row.get(col), dict):
                raise DataError(f"{where}: column '{col}' must be one answer message; preference rows need chosen and rejected")
            sample[key] = _sharegpt_message(row[col], tags, role_map, where, key)
            if sample[key]["role"] not in ANSWER_ROLES:
                raise DataError(f"{where}: '{col}' must be an assistant message, got role {sample[key]['role']!r}")
    return sample


def check_roles(messages: list, where: str, ends_with_prompt: bool) -> None:
    """LLaMA-Factory's rule: [system] then prompt/answer turns alternating, none empty."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise DataError(f"{where}: no turns; a sample needs at least a prompt and an answer")
    for k, message in enumerate(body):
        expected = PROMPT_ROLES if k % 2 == 0 else ANSWER_ROLES
        if message["role"] not in expected:
            raise DataError(
                f"{where}: roles out of order at turn {k}: got {message['role']}, expected {' or '.join(expected)}"
                " (turns must alternate user/tool then assistant/function_call, after an optional system)"
            )
        if not message["content"].strip():
            raise DataError(f"{where}: turn {k} ({message['role']}) is empty; fill it or remove the row")
    last_is_prompt = body[-1]["role"] in PROMPT_ROLES
    if ends_with_prompt and not last_is_prompt:
        raise DataError(f"{where}: a preference sample's turns must end with the prompt (user), not an answer")
    if not ends_with_prompt and last_is_prompt:
        raise DataError(f"{where}: the last turn is a {body[-1]['role']} turn with no answer after it; add the answer or drop the turn")


def attach_media(sample: dict, row: dict, spec: DatasetSpec, where: str) -> None:
    """Resolve media paths (relative to the dataset dir) and check that the placeholders match the files."""
    cols = spec.resolved_columns()
    texts = [m["content"] for m in sample["messages"]]
    texts += [sample[k]["content"] for k in ("chosen", "rejected") if k in sample]
    for key, placeholder in MEDIA_PLACEHOLDERS.items():
        col = cols.get(key)
        value = row.get(col) if col else None
        if value is None and not any(placeholder in t for t in texts):
            continue  # neither files nor placeholders: the text-only row, by far the most common
        files = [] if value is None else ([value] if isinstance(value, str) else list(value))
        count = sum(t.count(placeholder) for t in texts)
        if count != len(files):
            raise DataError(
                f"{where}: {count} {placeholder} placeholder(s) in the text but {len(files)} {key};"
                f" put one {placeholder} in the text per file"
            )
        if not files:
            continue
        resolved = []
        for f in files:
            if key == "videos" and isinstance(f, list):  # LF's already sampled frames: a list of image paths
                resolved.append(_frame_list(f, spec, where))
                continue
            if not isinstance(f, str):
                raise DataError(f"{where}: {key} must be file paths, got {type(f).__name__}")
            path = Path(f) if Path(f).is_absolute() else Path(spec.dataset_dir or ".") / f
            if not (path.is_file() or (key == "videos" and path.is_dir())):  # a video may be a folder of frames
                raise DataError(f"{where}: {key[:-1]} file not found: {path}; paths are relative to data.dataset_dir")
            resolved.append(str(path))
        sample[key] = resolved


def _frame_list(frames: list, spec: DatasetSpec, where: str) -> str:
    """A video given as frame image paths -> one string (launcher.data.video.FRAME_LIST_SEPARATOR)."""
    from launcher.data.video import FRAME_LIST_SEPARATOR

    if not frames:
        raise DataError(f"{where}: a video given as frames has none; list its frame images or remove the row")
    out = []
    for f in frames:
        if not isinstance(f, str) or FRAME_LIST_SEPARATOR in f:
            raise DataError(f"{where}: a video's frames must be image file paths, got {f!r}")
        path = Path(f) if Path(f).is_absolute() else Path(spec.dataset_dir or ".") / f
        if not path.is_file():
            raise DataError(f"{where}: video frame file not found: {path}; paths are relative to data.dataset_dir")
        out.append(str(path))
    return FRAME_LIST_SEPARATOR.join(out)


def row_to_sample(row: Any, spec: DatasetSpec, where: str) -> Optional[dict]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object per row, got {type(row).__name__}")
    try:
        if spec.formatting == "sharegpt":
            sample = sharegpt_to_sample(row, spec, where)
        else:
            sample = alpaca_to_sample(row, spec, where)
        if "text" in sample:
            if not sample["text"].strip():
                raise DataError(f"{where}: empty text; fill it or remove the row")
            return sample
        check_roles(sample["messages"], where, ends_with_prompt=spec.ranking)
    except DataError:
        # A preference row read as an answer row fails for a reason that hides the real one (no output
        # column, a conversation that ends with the prompt): say what it is.
        if not spec.ranking and "chosen" in row and "rejected" in row:
            raise DataError(f"{where}: the row has chosen and rejected answers but dataset '{spec.name}' is not"
                            " marked as preference data; add \"ranking\": true to its entry in dataset_info.json"
                            " (and train it with method=dpo or dpo_lora)") from None
        raise
    for key in ("chosen", "rejected"):
        # an empty answer would still train its end-of-turn token, so it would not fail later
        if key in sample and not sample[key]["content"].strip():
            raise DataError(f"{where}: the {key} answer is empty; a preference row needs a non-empty chosen and"
                            " rejected answer (fill it or remove the row)")
    attach_media(sample, row, spec, where)
    if spec.is_feedback():
        col = spec.resolved_columns()["kto_tag"]
        if not isinstance(row.get(col), bool):
            got = "missing" if col not in row else f"{row[col]!r}"
            raise DataError(f"{where}: column '{col}' (kto_tag) must be true (a desirable answer) or false"
                            f" (an undesirable one), got {got}")
        sample["kto_tag"] = row[col]
    return sample
