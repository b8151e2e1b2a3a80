"""Chat rendering: canonical messages -> text, split into (prompt, answer) pairs for label masking.

Two kinds of renderer share one interface, ``render(messages, tools, add_generation_prompt) -> str``:
- ``TokenizerTemplate``: the tokenizer's own Jinja chat template (the default), and
- named templates written here (chatml/qwen/qwen3_nothink, llama3, mistral, plain), used with ``data.template``
  or when the tokenizer has no template, or when its template cannot be split into turns (see ``choose_renderer``).

``split_pairs`` finds each answer by rendering growing prefixes: the prompt of answer k is what the
generation prompt adds after the previous answer, and the answer is what rendering turn k adds after that.
This needs a template that renders a conversation prefix by prefix. Qwen3's does not: it puts an empty
``<think></think>`` block only into the *last* assistant turn, so the same turn renders differently as a
prefix and in the whole conversation. Such templates are detected once with a probe conversation, and the
matching named template is used instead (for Qwen3: qwen3_nothink, which is Qwen3's format without the think
block and, like Qwen3's own template, without a default system prompt).

Named templates that carry LLaMA-Factory's names render what LF's template of that name renders, its default
system prompt included (``DEFAULT_SYSTEM``): qwen adds "You are Qwen, created by Alibaba Cloud. ..." to every
conversation without a system prompt (or with an empty one), as LF 0.9.5's qwen template does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from launcher.errors import DataError
from launcher.data.formats import ANSWER_ROLES

from launcher.config.schema import NAMED_TEMPLATES, TEXT_TEMPLATES  # noqa: F401  (the names, in the config layer)
from launcher.models.omni import OMNI_DEFAULT_SYSTEM

IMAGE_TEMPLATES = ("qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "qwen2_omni")
"""Named templates with an image slot (LLaMA-Factory's names): ChatML whose user turns carry vision spans.
qwen2_vl (Qwen2-VL, Qwen2.5-VL) adds LF's default system prompt; qwen3_vl starts every answer that has no
think block with an empty one, trained (LF's ReasoningTemplate with enable_thinking, its default);
qwen3_vl_nothink is LF's plain copy of the qwen template (no think block added, no default system)."""
DEFAULT_SYSTEM = {"qwen": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                  "qwen2_vl": "You are a helpful assistant.", "qwen2_audio": "You are a helpful assistant.",
                  "qwen2_omni": OMNI_DEFAULT_SYSTEM}
"""LLaMA-Factory's default_system of the templates of that name: used when a conversation has no system prompt or an
empty one (LF: ``system or default_system``). chatml, qwen3_nothink and the others have none."""
EMPTY_THINK = "<think>\n\n</think>\n\n"


def parse_tools(tools: Any, where: str) -> Optional[list]:
    """The tools column (a JSON string or a list) -> list of OpenAI-style ``{"type": "function", ...}``."""
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: tools column is not valid JSON ({exc.msg}); it must be a JSON list of functions") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise DataError(f"{where}: tools must be a JSON list of function objects")
    return [t if "type" in t else {"type": "function", "function": t} for t in tools]


def parse_tool_calls(content: str, where: str) -> list[dict]:
    """A function_call turn (``{"name", "arguments"}`` or a list of them) -> list of calls."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: function_call turn is not JSON ({exc.msg}); it must be"
                        ' {"name": ..., "arguments": {...}}') from None
    calls = calls if isinstance(calls, list) else [calls]
    for call in calls:
        if not (isinstance(call, dict) and "name" in call):
            raise DataError(f'{where}: function_call turn must be {{"name": ..., "arguments": {{...}}}}')
    return [{"name": c["name"], "arguments": c.get("arguments", {})} for c in calls]


def _call_json(call: dict) -> str:
    args = call["arguments"] if isinstance(call["arguments"], str) else json.dumps(call["arguments"], ensure_ascii=False)
    return f'{{"name": "{call["name"]}", "arguments": {args}}}'


# ----------------------------------------------------------------------------------------- renderers


@dataclass
class TokenizerTemplate:
    """The tokenizer's own chat template, fed OpenAI-style messages (tool_calls, role tool)."""

    tokenizer: Any
    name: str = "tokenizer"

    @property
    def supports_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    def render(self, messages: list, tools: Optional[list], add_generation_prompt: bool, where: str = "") -> str:
        hf_messages = []
        for m in messages:
            if m["role"] == "function_call":
                calls = [{"type": "function", "function": c} for c in parse_tool_calls(m["content"], where)]
                hf_messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            else:
                hf_messages.append({"role": m["role"], "content": m["content"]})
        kwargs = {"tools": tools} if tools else {}
        return self.tokenizer.apply_chat_template(
            hf_messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )


@dataclass
class NamedTemplate:
    """A template written out here; renders prefix by prefix by construction."""

    name: str
    eos_token: str = ""
    supports_tools: bool = True

    @property
    def image_slot(self) -> bool:
        return self.name in IMAGE_TEMPLATES

    def render(self, messages: list, tools: Optional[list], add_generation_prompt: bool, where: str = "") -> str:
        if self.name in DEFAULT_SYSTEM:
            system, body = _split_system(messages)
            if not system:  # none, or empty: LF's ``system or default_system``
                messages = [{"role": "system", "content": DEFAULT_SYSTEM[self.name]}] + list(body)
        if self.name in IMAGE_TEMPLATES:
            if self.name == "qwen3_vl":
                messages = [dict(m, content=EMPTY_THINK + m["content"])
                            if m["role"] == "assistant" and "<think>" not in m["content"]
                            and "</think>" not in m["content"] else m for m in messages]
            return _render_chatml(messages, tools, add_generation_prompt, self.eos_token, where)
        render = {"chatml": _render_chatml, "qwen": _render_chatml, "qwen3_nothink": _render_chatml,
                  "qwen2_audio": _render_chatml,  # LF's qwen2_audio: ChatML, its audio spans in the user turns
                  "llama3": _render_llama3, "mistral": _render_mistral, "plain": _render_plain}[self.name]
        return render(messages, tools, add_generation_prompt, self.eos_token, where)


def _split_system(messages: list) -> tuple[Optional[str], list]:
    """The leading system message's content (None without one) and the messages after it."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def _tool_lines(tools: list) -> str:
    return "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)


def _render_chatml(messages, tools, gen, eos, where) -> str:
    """ChatML as Qwen2.5/Qwen3 write it, tools included (Qwen3 without the think block)."""
    out = []
    system, body = _split_system(messages)
    if tools:
        out.append("<|im_start|>system\n" + (system + "\n\n" if system else "")
                   + "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                   "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
                   + _tool_lines(tools)
                   + "\n</tools>\n\nFor each function call, return a json object with function name and arguments"
                   " within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                   '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')
    elif system is not None:
        out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for m in body:
        if m["role"] == "function_call":
            calls = "\n".join(f"<tool_call>\n{_call_json(c)}\n</tool_call>" for c in parse_tool_calls(m["content"], where))
            out.append(f"<|im_start|>assistant\n{calls}<|im_end|>\n")
        elif m["role"] == "tool":
            out.append(f"<|im_start|>user\n<tool_response>\n{m['content']}\n</tool_response><|im_end|>\n")
        else:
            out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if gen:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _render_llama3(messages, tools, gen, eos, where) -> str:
    out = ["<|begin_of_text|>"]
    system, body = _split_system(messages)
    if tools:
        system = (system + "\n\n" if system else "") + "You have access to the following functions:" + _tool_lines(tools)
    if system is not None:
        out.append(f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>")
    for m in body:
        role, content = m["role"], m["content"]
        if role == "function_call":
            role = "assistant"
            content = json.dumps(parse_tool_calls(content, where), ensure_ascii=False)
        elif role == "tool":
            role = "ipython"
        out.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>")
    if gen:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _render_mistral(messages, tools, gen, eos, where) -> str:
    out = ["<s>"]
    system, body = _split_system(messages)
    if tools:
        out.append(f"[AVAILABLE_TOOLS] {json.dumps(tools, ensure_ascii=False)}[/AVAILABLE_TOOLS]")
    for k, m in enumerate(body):
        content = m["content"]
        if m["role"] == "user":
            if k == 0 and system:
                content = f"{system}\n\n{content}"
            out.append(f"[INST] {content} [/INST]")
        elif m["role"] == "tool":
            out.append(f"[TOOL_RESULTS] {json.dumps({'content': content}, ensure_ascii=False)}[/TOOL_RESULTS]")
        elif m["role"] == "function_call":
            calls = json.dumps(parse_tool_calls(content, where), ensure_ascii=False)
            out.append(f"[TOOL_CALLS] {calls}</s>")
        else:
            out.append(f"{content}</s>")
    return "".join(out)


def _render_plain(messages, tools, gen, eos, where) -> str:
    out = []
    if tools:
        out.append(f"Tools: {json.dumps(tools, ensure_ascii=False)}\n")
    for m in messages:
        if m["role"] == "system":
            out.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            out.append(f"User: {m['content']}\n")
        elif m["role"] == "tool":
            out.append(f"Observation: {m['content']}\n")
        elif m["role"] == "function_call":
            out.append(f"Assistant: {json.dumps(parse_tool_calls(m['content'], where), ensure_ascii=False)}{eos}\n")
        else:
            out.append(f"Assistant: {m['content']}{eos}\n")
    if gen:
        out.append("Assistant: ")
    return "".join(out)


# ------------------------------------------------------------------------------------------- choice


def template_family(tokenizer) -> str:
    """The named template that matches a tokenizer's special tokens."""
    def has(token: str) -> bool:  # one lookup, not a copy of a 100k+ vocabulary
        found = tokenizer.convert_tokens_to_ids(token)
        return found is not None and found != tokenizer.unk_token_id

    if has("<|im_start|>"):
        return "qwen"
    if has("<|start_header_id|>"):
        return "llama3"
    if has("[INST]"):
        return "mistral"
    return "plain"


FALLBACK = {"qwen": "qwen3_nothink"}
"""The named template used in place of a tokenizer template that cannot be split, per family: a ChatML tokenizer
(Qwen3's) gets qwen3_nothink, its format without a default system prompt, since its own template adds none."""


def named_template(name: str, tokenizer) -> NamedTemplate:
    if name not in NAMED_TEMPLATES:
        raise DataError(f"data.template: unknown template '{name}'; use one of {', '.join(NAMED_TEMPLATES)}"
                        " (or leave it unset to use the tokenizer's chat template)")
    return NamedTemplate(name, eos_token=tokenizer.eos_token or "")


PROBE = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "<think>\nT\n</think>\n\nA2"},
]
PROBE_TOOLS = [
    {"role": "user", "content": "Q1"},
    {"role": "function_call", "content": '{"name": "f", "arguments": {"x": 1}}'},
    {"role": "tool", "content": "R"},
    {"role": "assistant", "content": "A1"},
]


def choose_renderer(tokenizer, template: Optional[str]):
    """(renderer, note): data.template if set, else the tokenizer's template if it splits into turns.

    ``note`` says why a named template replaced the tokenizer's (empty when it did not).
    """
    if template and template != "auto":
        return named_template(template, tokenizer), ""
    if not getattr(tokenizer, "chat_template", None):
        # Refused rather than guessed, as the preflight does: a guessed format trains silently on the wrong
        # prompt layout, and a queued job should not behave differently from a local one.
        raise DataError(
            f"data.template: the tokenizer has no chat template; name one with data.template="
            f" ({', '.join(NAMED_TEMPLATES)}); its special tokens suggest '{template_family(tokenizer)}'"
        )
    own = TokenizerTemplate(tokenizer)
    probes = [PROBE] + ([PROBE_TOOLS] if own.supports_tools else [])
    try:
        for probe in probes:
            tools = parse_tools([{"name": "f", "parameters": {}}], "probe") if probe is PROBE_TOOLS else None
            split_pairs(own, probe, tools, "probe")
    except Exception as exc:  # any template error here means "cannot use it turn by turn"
        family = template_family(tokenizer)
        family = FALLBACK.get(family, family)
        reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        return named_template(family, tokenizer), (
            f"the tokenizer's chat template cannot be split into turns ({reason}); using the named template '{family}'"
        )
    return own, ""


def split_pairs(renderer, messages: list, tools: Optional[list], where: str) -> list[tuple[str, str]]:
    """[(prompt text, answer text)] for each answer turn; concatenated, they are the rendered conversation."""
    pairs, done = [], ""
    for k, message in enumerate(messages):
        if message["role"] not in ANSWER_ROLES:
            continue
        prompt_end = renderer.render(messages[:k], tools, True, where)
        answer_end = renderer.render(messages[: k + 1], tools, False, where)
        if not (prompt_end.startswith(done) and answer_end.startswith(prompt_end)):
            raise DataError(f"{where}: the chat template does not render this conversation prefix by prefix;"
                            f" set data.template to one of {', '.join(NAMED_TEMPLATES)}")
        pairs.append((prompt_end[len(done):], answer_end[len(prompt_end):]))
        done = answer_end
    if pairs and not renderer.render(messages, tools, False, where).startswith(done):
        raise DataError(f"{where}: the chat template does not render this conversation prefix by prefix;"
                        f" set data.template to one of {', '.join(NAMED_TEMPLATES)}")
    return pairs
