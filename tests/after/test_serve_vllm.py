"""launcher serve --engine vllm: a real server on a free port, generating with vLLM in its own venv, answers as
the transformers engine does at temperature 0 (the same text, finish reason and token counts), streamed or not,
and cuts stop sequences the same way. Skipped, with the reason, where the vLLM venv is absent (make vllm-env)."""
from __future__ import annotations

import threading

import pytest

from launcher.inference.vllm_engine import INSTALL_COMMAND, vllm_python

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.skipif(vllm_python() is None,
                                reason=f"the vLLM venv is absent: `{INSTALL_COMMAND}` makes it")

PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capitalize: abc"}]


@pytest.fixture(scope="module")
def vllm_server(full_run, repo_env, tmp_path_factory):
    from tests.after.test_serve_api import Server

    s = Server([str(full_run), "--model-name", "tiny", "--engine", "vllm"], repo_env,
               tmp_path_factory.mktemp("serve-vllm") / "server.log")
    yield s
    s.stop()


def transformers_answer(run_dir, max_tokens: int, stop=None) -> tuple[str, str, int]:
    """(text, finish reason, completion tokens) of the transformers engine, in this process."""
    from launcher.serve.engine import Finished, TransformersEngine, load_for_serving
    from launcher.serve.openai_protocol import parse_chat_request

    loaded = load_for_serving(run_dir)
    engine = TransformersEngine(loaded, 64)
    body = {"model": loaded.name, "messages": PROMPT, "temperature": 0, "max_tokens": max_tokens}
    if stop:
        body["stop"] = stop
    request = parse_chat_request(body, False, engine.context)
    pieces = list(engine.stream(request, threading.Event()))
    done = pieces[-1]
    assert isinstance(done, Finished)
    return "".join(pieces[:-1]), done.finish_reason, done.completion_tokens


def test_vllm_server_answers_as_the_transformers_engine(vllm_server, full_run):
    import httpx

    assert httpx.get(vllm_server.base + "/health").json()["engine"] == "vllm"
    c = openai.OpenAI(base_url=vllm_server.base + "/v1", api_key="unused", max_retries=0, timeout=300)
    text, finish, tokens = transformers_answer(full_run, 12)
    whole = c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=12)
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason, whole.usage.completion_tokens) == \
        (text, finish, tokens)
    chunks = list(c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    if len(text) >= 4:  # a stop sequence from inside the greedy answer
        stop = text[2:4]
        cut = c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=12, stop=[stop])
        assert cut.choices[0].message.content == text[: text.find(stop)] == transformers_answer(full_run, 12, [stop])[0]
        assert cut.choices[0].finish_reason == "stop"
    # the server keeps serving after a cut: the next answer is whole again
    again = c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=12)
    assert again.choices[0].message.content == text
