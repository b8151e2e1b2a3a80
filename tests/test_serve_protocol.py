"""The OpenAI wire format of launcher serve, without a model: parsing, refusals, stop sequences."""
from __future__ import annotations

import pytest

from launcher.serve.openai_protocol import APIError, find_stop, parse_chat_request, stop_holdback

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
