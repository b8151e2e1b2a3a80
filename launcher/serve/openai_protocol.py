"""The OpenAI chat-completions wire format: request parsing and validation, error bodies. Pure, no model.

Everything a client can get wrong becomes an ``APIError`` with the status code and the error body the
OpenAI API gives (``{"error": {"message", "type", "param", "code"}}``), so the official clients raise their
usual exceptions (BadRequestError, AuthenticationError, NotFoundError, ...).

Message contents may be a string or a list of parts; text parts are joined. Image parts (``image_url`` with a
``data:image/...;base64,`` URL, a local file path or a ``file://`` URL) become ``<image>`` placeholders where
they stand, their sources collected in order (``ChatRequest.images``) for a vision-language model; a text
model refuses them with a 400 naming the reason. Remote http(s) URLs are refused: the server does not fetch.
Likewise video parts (vLLM's ``video_url``: a ``data:video/...;base64,`` URL or a path) become ``<video>`` for
a VL model, and audio parts (OpenAI's ``input_audio``: base64 ``data`` in ``wav`` or ``mp3`` ``format``)
become ``<audio>`` for an audio model; a model without the tower refuses them with a 400 naming the part.
Whether a path may be read at all is the server's decision (launcher.serve.images), not this module's.

Every value a client sends is checked before any work is done on it: the body is JSON without NaN/Infinity
and nested at most ``MAX_JSON_DEPTH`` deep; numbers are finite and in range (a NaN fails every comparison,
so ranges are written as ``low <= x <= high``, which NaN never passes); sizes that would make work
unbounded (max_tokens, stop sequences) are capped.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4
MAX_STOP_CHARS = 256
"""A stop sequence is matched against the answer's tail on every token: its length bounds that work."""
MAX_JSON_DEPTH = 32
"""A chat request nests about 5 deep; Python's JSON parser would recurse ~1000 deep and fail with a 500."""
MIN_TEMPERATURE = 0.01
"""Below this (and above 0) logits / temperature overflow to inf and sampling fails; 0 is greedy."""
SEED_RANGE = (-2 ** 63, 2 ** 63 - 1)
"""A 64-bit seed, as the OpenAI API documents it; torch refuses larger ones."""


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json_body(raw: bytes) -> Any:
    """The request body as JSON: NaN/Infinity literals, over-long integers and nesting deeper than
    ``MAX_JSON_DEPTH`` are 400s, like any other malformed body."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise bad_request(f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})") from None
    except ValueError:  # from parse_constant, or Python's cap on integer digits
        raise bad_request("the request body is not valid JSON: it holds NaN, Infinity or an integer of over 4300"
                          " digits") from None
    # Iterative, so that checking the depth cannot itself run out of stack.
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise bad_request(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return body


@dataclass
class ChatRequest:
    model: str
    messages: list
    """Canonical ``{"role", "content"}`` dicts (content a string), as the chat renderer takes them."""
    stream: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: Optional[int] = None
    stop: list = field(default_factory=list)
    seed: Optional[int] = None
    include_usage: bool = False
    images: list = field(default_factory=list)
    """Image sources in placeholder order: ``InlineImage`` (a data URL's bytes) or ``ImagePath``."""
    videos: list = field(default_factory=list)
    """Video sources in placeholder order: ``InlineMedia`` or ``MediaPath`` (launcher.serve.media)."""
    audios: list = field(default_factory=list)
    """Audio sources in placeholder order: ``InlineMedia``."""
    files: list = field(default_factory=list)
    """Files the engine wrote for this request (its videos and audio), removed when it ends."""
    prepared: Any = None
    """The engine's prompt for this request, made once (``TransformersEngine.prepare``)."""


IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
AUDIO_PLACEHOLDER = "<audio>"


@dataclass(frozen=True)
class ImagePath:
    """An image a request names by a path on the server; whether it is read is launcher.serve.images' call."""

    path: str
    label: str
    """The message part that named it, for messages."""


def image_source(part: dict, param: str):
    """The image a content part names: an InlineImage of a data URL's bytes, or an ImagePath."""
    import base64
    import binascii

    from launcher.data.vision import InlineImage

    value = part.get("image_url", part.get("image"))
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise bad_request(f"{param}: an image part needs image_url.url (a data URL or a file path)", param)
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        if not head.startswith("data:image/") or not head.endswith(";base64"):
            raise bad_request(f"{param}: a data URL must look like data:image/png;base64,...", param)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{param}: the data URL's base64 payload does not decode", param) from None
        return InlineImage(data, param)
    if url.startswith(("http://", "https://")):
        raise bad_request(f"{param}: this server does not fetch URLs; send the image as a data URL"
                          " (data:image/png;base64,...) or a path on the server", param, "image_url_not_supported")
    return ImagePath(url[len("file://"):] if url.startswith("file://") else url, param)


def _base64(payload: str, param: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{param}: the base64 payload does not decode", param) from None


def video_source(part: dict, param: str):
    """The video a ``video_url`` part names: an InlineMedia of a data URL's bytes, or a MediaPath."""
    from launcher.serve.media import VIDEO_CONTAINERS, InlineMedia, MediaPath

    value = part.get("video_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise bad_request(f"{param}: a video part needs video_url.url (a data URL or a file path)", param)
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        kind = head[len("data:video/"):-len(";base64")] if head.startswith("data:video/") else None
        if not head.endswith(";base64") or kind not in VIDEO_CONTAINERS:
            raise bad_request(f"{param}: a video data URL must look like data:video/mp4;base64,... (video/"
                              f"{', video/'.join(VIDEO_CONTAINERS)})", param)
        return InlineMedia(_base64(payload, param), VIDEO_CONTAINERS[kind], param)
    if url.startswith(("http://", "https://")):
        raise bad_request(f"{param}: this server does not fetch URLs; send the video as a data URL"
                          " (data:video/mp4;base64,...) or a path on the server", param, "video_url_not_supported")
    return MediaPath(url[len("file://"):] if url.startswith("file://") else url, param)


def audio_source(part: dict, param: str):
    """The clip an ``input_audio`` part carries: an InlineMedia of its base64 data, read with its format's demuxer."""
    from launcher.serve.media import AUDIO_FORMATS, InlineMedia

    value = part.get("input_audio")
    if not isinstance(value, dict) or not isinstance(value.get("data"), str) or not value["data"]:
        raise bad_request(f"{param}: an audio part needs input_audio.data (base64) and input_audio.format"
                          f" ({' or '.join(AUDIO_FORMATS)})", param)
    fmt = value.get("format")
    if fmt not in AUDIO_FORMATS:
        raise bad_request(f"{param}: input_audio.format must be {' or '.join(AUDIO_FORMATS)}, got {fmt!r}", param)
    return InlineMedia(_base64(value["data"], param), AUDIO_FORMATS[fmt], param)


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"'{key}' must be a number, got {value!r}", key)
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        value = math.inf
    # Written so that NaN (false in every comparison) is refused too.
    if not (math.isfinite(value) and low <= value <= high) or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise bad_request(f"'{key}' must be in {interval}, got {value}", key)
    return value


def _integer(body: dict, key: str, low: int, high: int, what: str) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"'{key}' must be {what}, got {value!r}"[:300], key)
    return value


def _content_text(content: Any, i: int, has_vision: bool, images: Optional[list] = None,
                  has_audio: bool = False, videos: Optional[list] = None, audios: Optional[list] = None) -> str:
    """The message's text; image, video and audio parts become <image>, <video> and <audio> placeholders, their
    sources appended to ``images``, ``videos`` and ``audios``."""
    param = f"messages[{i}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{param} must be a string or a list of content parts", param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            if not has_vision:
                raise bad_request(f"{param}[{j}]: this model has no vision tower; it takes text only",
                                  f"{param}[{j}]", "image_not_supported")
            images.append(image_source(part, f"{param}[{j}]"))
            texts.append(IMAGE_PLACEHOLDER)
        elif kind == "video_url":
            if not has_vision:
                raise bad_request(f"{param}[{j}]: this model has no vision tower; it takes no video",
                                  f"{param}[{j}]", "video_not_supported")
            videos.append(video_source(part, f"{param}[{j}]"))
            texts.append(VIDEO_PLACEHOLDER)
        elif kind == "input_audio":
            if not has_audio:
                raise bad_request(f"{param}[{j}]: this model has no audio tower; it takes no audio",
                                  f"{param}[{j}]", "audio_not_supported")
            audios.append(audio_source(part, f"{param}[{j}]"))
            texts.append(AUDIO_PLACEHOLDER)
        elif kind in ("audio", "file"):
            raise bad_request(f"{param}[{j}]: '{kind}' parts are not supported; send text (audio as an"
                              " input_audio part)", f"{param}[{j}]")
        else:
            raise bad_request(f"{param}[{j}]: expected a content part like {{\"type\": \"text\", \"text\": ...}}",
                              f"{param}[{j}]")
    return "".join(texts)


def parse_messages(messages: Any, has_vision: bool = False, images: Optional[list] = None, has_audio: bool = False,
                   videos: Optional[list] = None, audios: Optional[list] = None) -> list:
    """Canonical messages; with ``has_vision``, image and video parts' sources are appended to ``images`` and
    ``videos`` in order; with ``has_audio``, audio parts' to ``audios``."""
    images = images if images is not None else []
    videos = videos if videos is not None else []
    audios = audios if audios is not None else []
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role = message.get("role")
        if role in ("tool", "function") or message.get("tool_calls"):
            raise bad_request(f"messages[{i}]: tool messages and tool calls are not supported yet",
                              f"messages[{i}].role")
        if role not in ROLES:
            raise bad_request(f"messages[{i}].role: '{role}' is not one of system, developer, user, assistant",
                              f"messages[{i}].role")
        out.append({"role": ROLES[role], "content": _content_text(message.get("content"), i, has_vision, images,
                                                                  has_audio, videos, audios)})
    if out[-1]["role"] == "assistant":
        raise bad_request("the last message is the assistant's; end with a user message to get an answer",
                          "messages")
    return out


def parse_stop(value: Any) -> list:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP:
        raise bad_request(f"'stop' takes at most {MAX_STOP} sequences, got {len(stops)}", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise bad_request(f"a stop sequence may be at most {MAX_STOP_CHARS} characters", "stop")
    return stops


# Parameters that would change the answer but that we do not implement: refused, never silently ignored.
UNSUPPORTED = {
    "tools": "tools / function calling is not supported yet",
    "functions": "function calling is not supported yet",
    "logprobs": "logprobs are not supported yet",
    "top_logprobs": "logprobs are not supported yet",
    "logit_bias": "logit_bias is not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
}


def parse_chat_request(body: Any, has_vision: bool = False, max_tokens_limit: Optional[int] = None,
                       has_audio: bool = False) -> ChatRequest:
    """The request, every field checked. ``max_tokens_limit``: the model's context length (max_tokens above it
    could never be honoured)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (GET /v1/models lists the served one)", "model")
    for key, reason in UNSUPPORTED.items():
        if body.get(key) not in (None, False, [], {}):
            raise bad_request(reason, key)
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise bad_request("'n' must be 1: one answer per request", "n")
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise bad_request(f"'{key}' is not supported; leave it 0", key)
    fmt = body.get("response_format")
    if fmt not in (None, {}) and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("'response_format': only {\"type\": \"text\"} is supported", "response_format")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = max_tokens_limit or 2 ** 31 - 1
    max_tokens = _integer(body, key, 1, limit, "a positive integer" + (
        f" no larger than this model's context ({max_tokens_limit} tokens)" if max_tokens_limit else ""))
    seed = _integer(body, "seed", *SEED_RANGE, "a 64-bit integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    if 0 < temperature < MIN_TEMPERATURE:
        raise bad_request(f"'temperature' must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {temperature}",
                          "temperature")
    images: list = []
    videos: list = []
    audios: list = []
    return ChatRequest(
        model=model,
        messages=parse_messages(body.get("messages"), has_vision, images, has_audio, videos, audios),
        images=images,
        videos=videos,
        audios=audios,
        stream=stream,
        temperature=temperature,
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        max_tokens=max_tokens,
        stop=parse_stop(body.get("stop")),
        seed=seed,
        include_usage=bool(options.get("include_usage")),
    )


# ----------------------------------------------------------------------------------------- stop strings


def find_stop(text: str, stops: list) -> Optional[int]:
    """Index where the earliest stop sequence starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def stop_holdback(text: str, stops: list) -> int:
    """How many trailing characters could be the start of a stop sequence (held back from a stream)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                best = max(best, n)
                break
    return best


def releasable(text: str, sent: int, stops: list) -> tuple[str, int, bool]:
    """What a stream may send of ``text`` (``sent`` characters of it already sent): (piece, new sent, stopped).
    Up to the earliest stop sequence, which ends the stream; else all but what could begin one."""
    cut = find_stop(text, stops) if stops else None
    if cut is not None:
        return (text[sent:cut] if cut > sent else ""), cut, True
    safe = len(text) - stop_holdback(text, stops)
    return (text[sent:safe], safe, False) if safe > sent else ("", sent, False)


# ----------------------------------------------------------------------------------------- responses


def completion_body(rid: str, created: int, model: str, text: str, finish: str, usage: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage}


def chunk_body(rid: str, created: int, model: str, delta: dict, finish: Optional[str]) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
