"""launcher serve's app with a stand-in engine, in process: the per-request deadline stops generation with a 504,
/health answers while a request's preparation blocks, and the body limit holds with and without a length."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")

from launcher.serve.app import create_app  # noqa: E402
from launcher.serve.engine import Finished  # noqa: E402
from launcher.serve.limits import ServeLimits  # noqa: E402

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class SlowEngine:
    """Prepares when ``gate`` opens; generates one piece every 50 ms until cancelled."""

    name, has_vision, context = "slow", False, 100

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.pieces = 0

    def prepare(self, request):
        assert threading.current_thread() is not threading.main_thread()  # never on the event loop
        self.gate.wait(10)
        request.prepared = ([1, 2, 3], [])

    def stream(self, request, cancel):
        while not cancel.is_set() and self.pieces < 200:
            time.sleep(0.05)
            self.pieces += 1
            yield "x"
        yield Finished("length", 3, self.pieces)


def run(coro):
    # On a thread of its own: a session-wide browser (Playwright's sync API) may hold this thread's loop.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=10)


def test_a_request_past_its_deadline_is_a_504_and_generation_stops():
    engine = SlowEngine()
    app = create_app(engine, "m", limits=ServeLimits(request_timeout_s=0.5))

    async def go():
        async with client(app) as c:
            start = time.perf_counter()
            r = await c.post("/v1/chat/completions", json=BODY)
            return r, time.perf_counter() - start

    r, took = run(go())
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert took < 3 and engine.pieces < 40  # stopped near the deadline, not after 200 pieces


def test_health_answers_while_a_preparation_blocks():
    engine = SlowEngine()
    engine.gate.clear()
    app = create_app(engine, "m", limits=ServeLimits(request_timeout_s=30))

    async def go():
        async with client(app) as c:
            slow = asyncio.create_task(c.post("/v1/chat/completions", json={**BODY, "max_tokens": 2}))
            await asyncio.sleep(0.2)
            start = time.perf_counter()
            health = await c.get("/health")
            latency = time.perf_counter() - start
            engine.gate.set()
            return health, latency, await slow

    health, latency, slow = run(go())
    assert health.status_code == 200 and latency < 1.0
    assert slow.status_code == 200


def test_body_limit_with_and_without_a_length():
    app = create_app(SlowEngine(), "m", limits=ServeLimits(max_body_bytes=1000))

    async def chunked():
        for _ in range(5):
            yield b" " * 400

    async def go():
        async with client(app) as c:
            declared = await c.post("/v1/chat/completions", content=b" " * 2000)
            streamed = await c.post("/v1/chat/completions", content=chunked())
            small = await c.post("/v1/chat/completions", json={**BODY, "max_tokens": 1})
            return declared, streamed, small

    declared, streamed, small = run(go())
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200
