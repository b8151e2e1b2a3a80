"""launcher serve under requests meant to hurt it (issue 29), against a real server over a tiny Qwen2-VL folder:
the context length kept under text_config is enforced, the event loop never waits on a request's work (/health
answers while a 10 MB prompt or a FIFO image path is refused), bodies are bounded however they are sent, image
paths are read only under --image-root with one message for every refused path, and every bad value is a 400.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import struct
import threading
import time
import zlib

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


BODY_LIMIT = 32 << 20  # the server's default --max-body-mb
HEALTH_WITHIN = 1.0  # seconds


@pytest.fixture(scope="module")
def root(vl_serve):
    """The --image-root: one real image, a FIFO, a symlink out of the root, a subfolder (tests/conftest.py)."""
    return vl_serve[1]


@pytest.fixture(scope="module")
def vl(vl_serve):
    """The session's server over a tiny Qwen2-VL folder (shared with test_serve_vl.py)."""
    return vl_serve[0]


def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(server, body, timeout=60) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.base + "/v1/chat/completions", content=raw, timeout=timeout,
                      headers={"content-type": "application/json"})


def ask(content, **extra) -> dict:
    return {"model": "vl", "messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0,
            **extra}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@contextlib.contextmanager
def health_watch(server):
    """Polls /health every 0.1 s while the block runs; yields the list of latencies (a timeout counts as 5 s)."""
    latencies, stop = [], threading.Event()

    def poll():
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    ok = c.get(server.base + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start if ok else 5.0)
                stop.wait(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(10)


# ------------------------------------------------------------------------------ 1. the context length


def test_context_under_text_config_is_enforced(vl):
    c = client(vl)
    with pytest.raises(openai.BadRequestError) as info:  # ~5000 tokens; the tiny model's context is 4096
        c.chat.completions.create(model="vl", messages=[{"role": "user", "content": "hello " * 5000}], max_tokens=2)
    assert info.value.response.json()["error"]["code"] == "context_length_exceeded"
    for max_tokens in (5000, 10 ** 30):
        r = post(vl, ask("hi", max_tokens=max_tokens))
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
    assert post(vl, ask("hi")).status_code == 200


def test_a_10mb_prompt_is_refused_without_stalling_the_server(vl):
    with health_watch(vl) as latencies:
        start = time.perf_counter()
        r = post(vl, ask("hello " * ((10 << 20) // 6)))
        took = time.perf_counter() - start
        time.sleep(0.3)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert latencies and max(latencies) < HEALTH_WITHIN, (latencies, took)


# ------------------------------------------------------------------------------ 2. the event loop and the body


def test_fifo_and_device_paths_never_block(vl, root):
    for path in (str(root / "pipe.png"), "/dev/stdin", "/dev/zero"):
        with health_watch(vl) as latencies:
            r = post(vl, ask([image(path), {"type": "text", "text": "hi"}]), timeout=20)
            time.sleep(0.3)
        assert r.status_code == 400 and r.json()["error"]["code"] == "image_path_refused", (path, r.text)
        assert latencies and max(latencies) < HEALTH_WITHIN, (path, latencies)


def raw_request(server, head: bytes, chunks=(), timeout=30) -> tuple[int, bytes]:
    """Send ``head`` and ``chunks`` on a bare socket, then read the answer: (status, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head)
        for chunk in chunks:
            s.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < content_length(data):
            more = s.recv(65536)
            if not more:
                break
            data += more
    head_out, _, body = data.partition(b"\r\n\r\n")
    return int(head_out.split()[1]), body


def content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62


def test_body_limit_holds_for_declared_and_chunked_bodies(vl):
    # 200 MB announced: refused from the header alone, before a byte of the body is sent.
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (200 << 20))
    status, body = raw_request(vl, head)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    # Chunked (no length announced): cut off as the count passes the limit.
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
    status, body = raw_request(vl, head, [piece] * (BODY_LIMIT // (1 << 20) + 1))
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert httpx.get(vl.base + "/health", timeout=5).status_code == 200


# ------------------------------------------------------------------------------ 3. image paths


def test_image_paths_only_under_the_root_with_one_refusal(vl, root):
    refused = [
        "/etc/hostname",  # outside the root
        str(root / "missing.png"),  # does not exist
        str(root / "sub"),  # a directory
        str(root / "out.png"),  # a symlink that leaves the root
        str(root / ".." / root.name / ".." / ".." / "etc" / "hostname"),  # .. out of the root
        str(root.parent / (root.name + "-sibling") / "black.png"),  # the root's name as a prefix is not the root
        str(root / "pipe.png"),  # a FIFO
        "/dev/stdin",
        "file:///etc/hostname",
        "../" * 8 + "etc/hostname",  # relative paths are looked up under the root
    ]
    messages = set()
    for path in refused:
        r = post(vl, ask([image(path), {"type": "text", "text": "hi"}]), timeout=20)
        assert r.status_code == 400, (path, r.text)
        messages.add(r.json()["error"]["message"])
    assert len(messages) == 1, messages
    for path in (str(root / "red.png"), "red.png", f"file://{root / 'red.png'}", str(root / "sub" / ".." / "red.png")):
        r = post(vl, ask([image(path), {"type": "text", "text": "hi"}]))
        assert r.status_code == 200, (path, r.text)


# ------------------------------------------------------------------------------ 4. values


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few bytes (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def truncated_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()[:-200]


BASE = '{"model": "vl", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2'
BAD_BODIES = {
    "temperature NaN": BASE + ', "temperature": NaN}',
    "top_p NaN": BASE + ', "top_p": NaN}',
    "temperature Infinity": BASE + ', "temperature": Infinity}',
    "top_p 1e400": BASE + ', "top_p": 1e400}',
    "temperature 1e-300": BASE + ', "temperature": 1e-300}',
    "seed 2**70": BASE + f', "seed": {2 ** 70}}}',
    "seed of 5000 digits": BASE + ', "seed": ' + "9" * 5000 + "}",
    "n 1e400": BASE + ', "n": 1e400}',
    "stop of 10k characters": BASE + ', "stop": "' + "x" * 10000 + '"}',
    "nested 100k deep": "[" * 100000 + "]" * 100000,
    "nested 40 deep": BASE + ', "metadata": ' + "[" * 40 + "]" * 40 + "}",
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_bad_values_are_400s(vl, name):
    r = post(vl, BAD_BODIES[name].encode())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("name, code", [
    ("200-megapixel PNG", "image_too_large"), ("50-megapixel PNG", "image_too_large"),
    ("truncated PNG", "invalid_image"),
])
def test_bad_images_are_400s(vl, name, code):
    data = {"200-megapixel PNG": lambda: png_header(20000, 10000), "50-megapixel PNG": lambda: png_header(10000, 5000),
            "truncated PNG": truncated_png}[name]()
    r = post(vl, ask([image(data_url(data)), {"type": "text", "text": "hi"}]))
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
