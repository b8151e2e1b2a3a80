"""launcher serve: a real server on a free port, driven by the official openai client.

One server over the full run (run dir: final model, the run's template), one over the LoRA run's checkpoint
with an API key. Figures (start-up time, tokens/s) come from benchmarks/bench_serve.py, not from here.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: list, env: dict, log_path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "launcher", "serve", *args, "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{open(log_path).read()[-3000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"server not up after 240 s:\n{open(log_path).read()[-3000:]}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(full_run, repo_env, tmp_path_factory):
    s = Server([str(full_run), "--model-name", "tiny"], repo_env, tmp_path_factory.mktemp("serve") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed_server(lora_run, repo_env, tmp_path_factory):
    s = Server([str(lora_run), "--checkpoint", "step-2", "--api-key", "sesame"], repo_env,
               tmp_path_factory.mktemp("serve-key") / "server.log")
    yield s
    s.stop()


def client(server, key="unused") -> "openai.OpenAI":
    return openai.OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=0, timeout=120)


PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capitalize: abc"}]


def test_models_list(server):
    assert [m.id for m in client(server).models.list()] == ["tiny"]


def test_non_streamed_completion(server):
    r = client(server).chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=8)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10 and 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 8


def test_streamed_equals_non_streamed(server):
    c = client(server)
    whole = c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=12)
    chunks = list(c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_sequence_cuts_the_answer(server):
    c = client(server)
    text = c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=16).choices[0].message.content
    if len(text) < 4:
        pytest.skip(f"the greedy answer is too short to cut: {text!r}")
    stop = text[2:4]
    want = text[: text.find(stop)]
    for stream in (False, True):
        if stream:
            got = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model="tiny", messages=PROMPT, temperature=0, max_tokens=16, stop=[stop], stream=True) if ch.choices)
        else:
            r = c.chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=16, stop=stop)
            got = r.choices[0].message.content
            assert r.choices[0].finish_reason == "stop"
        assert got == want


def test_sampling_with_seed_is_reproducible(server):
    c = client(server)
    kw = dict(model="tiny", messages=PROMPT, temperature=1.3, top_p=0.9, max_tokens=10, seed=7)
    assert c.chat.completions.create(**kw).choices[0].message.content == \
        c.chat.completions.create(**kw).choices[0].message.content


@pytest.mark.parametrize("kwargs, param, words", [
    ({"temperature": 5}, "temperature", "'temperature' must be in [0, 2]"),
    ({"max_tokens": 0}, "max_tokens", "positive integer"),
    ({"n": 2}, "n", "'n' must be 1"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]},
     "messages[0].content[0]", "no vision tower"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "not one of"),
    ({"messages": []}, "messages", "non-empty"),
])
def test_bad_request_is_400_in_openai_shape(server, kwargs, param, words):
    args = {"model": "tiny", "messages": PROMPT, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(**args)
    assert info.value.status_code == 400
    error = info.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]


def test_unknown_model_and_route(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert info.value.response.json()["error"]["code"] == "model_not_found"
    r = httpx.post(server.base + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.get(server.base + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_concurrent_requests_are_queued(server):
    results, errors = [], []

    def ask(i):
        try:
            r = client(server).chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=6,
                                                       stream=bool(i % 2))
            results.append(r if not i % 2 else "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices))
        except Exception as exc:  # collected: a thread's exception would not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 6
    texts = {r if isinstance(r, str) else r.choices[0].message.content for r in results}
    assert len(texts) == 1  # greedy: every queued request got the same full answer
    assert httpx.get(server.base + "/health").json()["queued"] == 0


def test_client_leaving_mid_stream_frees_the_model(server):
    with httpx.stream("POST", server.base + "/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": PROMPT, "max_tokens": 400, "stream": True,
                            "temperature": 1.0}) as r:
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # leave after the first token
    r = client(server).chat.completions.create(model="tiny", messages=PROMPT, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_api_key_required(keyed_server):
    with pytest.raises(openai.AuthenticationError) as info:
        client(keyed_server, "wrong").models.list()
    assert info.value.status_code == 401
    r = httpx.post(keyed_server.base + "/v1/chat/completions", json={"model": "x", "messages": PROMPT})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key" and "no API key" in r.json()["error"]["message"]
    ok = client(keyed_server, "sesame")
    (model,) = ok.models.list()
    r = ok.chat.completions.create(model=model.id, messages=PROMPT, temperature=0, max_tokens=4)
    assert r.usage.completion_tokens >= 1


def test_non_loopback_host_needs_a_key(full_run, capsys, monkeypatch):
    from launcher.cli import main as cli_main

    monkeypatch.delenv("LAUNCHER_API_KEY", raising=False)
    assert cli_main(["serve", str(full_run), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --host 0.0.0.0: ") and "--api-key" in err and "\n" not in err


def test_a_plain_model_folder_loads_with_its_tokenizer_template(full_run):
    from launcher.serve.engine import load_for_serving

    loaded = load_for_serving(full_run / "model")
    assert loaded.name == "model" and "model folder" in loaded.source
    prompt = loaded.render([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<|im_start|>assistant\n") and "hi" in prompt
