"""The OpenAI wire format of launcher serve, without a model: parsing, refusals, stop sequences."""
from __future__ import annotations

import pytest

from launcher.serve.openai_protocol import (
    MAX_JSON_DEPTH, APIError, find_stop, parse_chat_request, parse_json_body, stop_holdback,
)

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_defaults_and_content_parts():
    r = parse_chat_request({**BASE, "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert r.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert (r.temperature, r.top_p, r.max_tokens, r.stop, r.stream) == (1.0, 1.0, None, [], False)
    assert parse_chat_request({**BASE, "max_completion_tokens": 5, "stop": "x"}).max_tokens == 5


@pytest.mark.parametrize("extra, param", [
    ({"top_p": 0}, "top_p"), ({"temperature": "hot"}, "temperature"), ({"stop": ["a"] * 5}, "stop"),
    ({"tools": [{"type": "function"}]}, "tools"), ({"logprobs": True}, "logprobs"), ({"stream": "yes"}, "stream"),
    ({"model": ""}, "model"), ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "f.png"}}]}]},
     "messages[0].content[0]"),
])
def test_refusals_name_the_parameter(extra, param):
    with pytest.raises(APIError) as info:
        parse_chat_request({**BASE, **extra})
    assert info.value.status == 400 and info.value.body()["error"]["param"] == param


def test_stop_sequences():
    assert find_stop("hello world", ["wor", "lo"]) == 3
    assert find_stop("hello", ["x"]) is None
    assert stop_holdback("abc<|e", ["<|end|>"]) == 3  # "<|e" may start the stop sequence: hold it back
    assert stop_holdback("abc", ["<|end|>"]) == 0


@pytest.mark.parametrize("extra, param", [
    ({"temperature": float("nan")}, "temperature"), ({"top_p": float("nan")}, "top_p"),
    ({"temperature": float("inf")}, "temperature"), ({"temperature": 1e-300}, "temperature"),
    ({"temperature": 10 ** 400}, "temperature"), ({"seed": 2 ** 70}, "seed"), ({"seed": True}, "seed"),
    ({"n": float("nan")}, "n"), ({"n": True}, "n"), ({"max_tokens": 10 ** 30}, "max_tokens"),
    ({"max_tokens": 4097}, "max_tokens"), ({"max_completion_tokens": 1.0}, "max_completion_tokens"),
    ({"stop": "x" * 257}, "stop"),
])
def test_numbers_are_finite_and_in_range(extra, param):
    with pytest.raises(APIError) as info:
        parse_chat_request({**BASE, **extra}, max_tokens_limit=4096)
    assert info.value.status == 400 and info.value.body()["error"]["param"] == param


def test_edges_that_stay_accepted():
    r = parse_chat_request({**BASE, "temperature": 0, "seed": -(2 ** 63), "max_tokens": 4096, "n": 1},
                           max_tokens_limit=4096)
    assert (r.temperature, r.seed, r.max_tokens) == (0.0, -(2 ** 63), 4096)
    assert parse_chat_request({**BASE, "temperature": 0.01, "seed": 2 ** 63 - 1}).temperature == 0.01


@pytest.mark.parametrize("raw, words", [
    (b'{"a": NaN}', "NaN"), (b'{"a": -Infinity}', "Infinity"), (b'{"a": ' + b"9" * 5000 + b"}", "4300"),
    (b"[" * 100000 + b"]" * 100000, "nests deeper"), (b'{"a": ' + b"[" * 33 + b"]" * 33 + b"}", "nests deeper"),
    (b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"),
])
def test_bodies_that_are_not_plain_json(raw, words):
    with pytest.raises(APIError) as info:
        parse_json_body(raw)
    assert info.value.status == 400 and words in info.value.message


def test_nesting_within_the_limit_parses():
    body = parse_json_body(b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}")
    assert isinstance(body["a"], list)
