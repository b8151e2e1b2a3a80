"""The HTTP side of ``launcher serve``: FastAPI routes in the OpenAI shape, API-key check, one generation at a time.

The event loop only moves bytes: parsing the body, tokenizing, reading and decoding images run on a small
pool of preparation threads, generation on a worker thread, so /health and every other client are answered
while one request is refused or served. Each request has a deadline (``ServeLimits.request_timeout_s``) over
all of it: body (408 when it is late), preparation, queue and generation (504); a running generation stops at
its next token. Bodies are bounded by ``BodyLimit``.

Requests are queued on one asyncio lock (the model is not re-entrant and a CPU has no room for two
generations); a request that would wait behind more than ``max_queue`` others gets 503 at once, and so does
one arriving while ``max_queue`` others are still being read and prepared (each holds its body, so the bodies
held at once are bounded too). When a client goes away mid-answer, the generation is cancelled at the next
token and the lock passes on. Every error a client sees is an OpenAI-shaped body with its status code; an
exception inside generation becomes a 500 (or an error event in a stream) whose details go to the server's
log only, and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from launcher.serve.engine import Finished
from launcher.serve.limits import BodyLimit, ServeLimits
from launcher.serve.openai_protocol import (
    APIError, chunk_body, completion_body, parse_chat_request, parse_json_body, usage_body,
)

log = logging.getLogger("launcher.serve")


def error_response(exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def timed_out(limit: float) -> APIError:
    return APIError(504, f"the request took longer than this server's limit of {limit:g} s (--request-timeout)",
                    "server_error", None, "timeout")


def internal_error() -> APIError:
    # The exception's text may name server paths or internals: it goes to the log, not to the client.
    return APIError(500, "internal error; the server's log has the details", "server_error")


class Generation:
    """Serialises generations and counts who waits."""

    def __init__(self, engine, max_queue: int):
        self.engine, self.max_queue = engine, max_queue
        self.lock: Optional[asyncio.Lock] = None
        self.waiting = 0

    def check_capacity(self) -> None:
        if self.waiting >= self.max_queue:
            raise APIError(503, f"the server is busy ({self.waiting} requests queued); retry later",
                           "server_error", None, "server_overloaded")

    async def run(self, request, deadline: float, limit: float) -> AsyncIterator:
        """Text pieces, then a Finished; cancelled cleanly when the consumer stops, a 504 past ``deadline``
        (``time.monotonic()``; ``limit`` names the setting in the message)."""
        if self.lock is None:
            self.lock = asyncio.Lock()
        self.check_capacity()
        self.waiting += 1
        try:
            await asyncio.wait_for(self.lock.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise timed_out(limit) from None
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        done = object()
        # Past the deadline the worker stops at its next token; its Finished is then replaced by the 504.
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), cancel.set)

        def worker():
            try:
                for item in self.engine.stream(request, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # handed to the request's task
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        future = loop.run_in_executor(None, worker)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Finished) and time.monotonic() >= deadline:
                    raise timed_out(limit)
                yield item
        finally:
            timer.cancel()
            cancel.set()
            try:
                await asyncio.shield(future)  # the lock passes on only once the model is free
            except BaseException:
                pass
            self.lock.release()


def create_app(engine, model_name: str, api_key: Optional[str] = None, max_queue: int = 32,
               limits: ServeLimits = ServeLimits()) -> FastAPI:
    app = FastAPI(title="launcher serve", docs_url=None, redoc_url=None, openapi_url=None)
    generation = Generation(engine, max_queue)
    created = int(time.time())
    timeout = limits.request_timeout_s
    preparing = ThreadPoolExecutor(limits.prepare_threads, thread_name_prefix="prepare")
    has_vision = getattr(engine, "has_vision", False)
    has_audio = getattr(engine, "has_audio", False)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        log.error("internal error", exc_info=exc)
        return error_response(internal_error())

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1"):
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
                what = "no API key was given" if not header else "the API key is wrong"
                return error_response(APIError(401, f"{what}: send the header Authorization: Bearer <key>",
                                               "invalid_request_error", None, "invalid_api_key"))
        return await call_next(request)

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "launcher"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "engine": engine.name, "queued": generation.waiting}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != model_name:
            raise APIError(404, f"the model '{model_id}' does not exist; this server serves '{model_name}'",
                           "not_found_error", "model", "model_not_found")
        return model_card()

    def prepare(raw: bytes):
        """Body bytes -> a ChatRequest tokenized, its images read and decoded. Blocking: a preparation thread."""
        chat = parse_chat_request(parse_json_body(raw), has_vision, engine.context, has_audio)
        if chat.model != model_name:
            raise APIError(404, f"the model '{chat.model}' does not exist; this server serves '{model_name}'",
                           "not_found_error", "model", "model_not_found")
        engine.prepare(chat)
        return chat

    async def within(awaitable, deadline: float, error: APIError):
        try:
            return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise error from None

    # Requests between arrival and the generation queue: each holds its body, so they are counted too.
    admitted = {"preparing": 0}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        deadline = time.monotonic() + timeout
        if admitted["preparing"] >= max_queue:
            raise APIError(503, f"the server is busy ({admitted['preparing']} requests being read); retry later",
                           "server_error", None, "server_overloaded")
        admitted["preparing"] += 1
        try:
            slow_body = APIError(408, f"the request body did not arrive within {timeout:g} s (--request-timeout)",
                                 "invalid_request_error", None, "timeout")
            raw = await within(request.body(), deadline, slow_body)
            # Refusals (bad values, too long a prompt, a bad image, a full queue) come before a stream's 200 line.
            future = asyncio.get_running_loop().run_in_executor(preparing, prepare, raw)
            del raw
            chat = await within(future, deadline, timed_out(timeout))
        finally:
            admitted["preparing"] -= 1
        generation.check_capacity()
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        if chat.stream:
            return StreamingResponse(stream_events(chat, rid, now, deadline), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        pieces, finished = [], None
        async with contextlib.aclosing(generation.run(chat, deadline, timeout)) as items:
            async for item in items:
                if isinstance(item, Finished):
                    finished = item
                else:
                    pieces.append(item)
        usage = usage_body(finished.prompt_tokens, finished.completion_tokens)
        return completion_body(rid, now, model_name, "".join(pieces), finished.finish_reason, usage)

    async def stream_events(chat, rid: str, now: int, deadline: float):
        def event(data: dict) -> str:
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        try:
            yield event(chunk_body(rid, now, model_name, {"role": "assistant", "content": ""}, None))
            async with contextlib.aclosing(generation.run(chat, deadline, timeout)) as items:
                async for item in items:
                    if isinstance(item, Finished):
                        yield event(chunk_body(rid, now, model_name, {}, item.finish_reason))
                        if chat.include_usage:
                            yield event({**chunk_body(rid, now, model_name, {}, None), "choices": [],
                                         "usage": usage_body(item.prompt_tokens, item.completion_tokens)})
                    else:
                        yield event(chunk_body(rid, now, model_name, {"content": item}, None))
        except APIError as exc:  # the status line is already sent: the error travels as an event
            yield event(exc.body())
        except Exception:
            log.exception("internal error while streaming")
            yield event(internal_error().body())
        yield "data: [DONE]\n\n"

    # Outermost: a body over the limit is refused before any other middleware or route reads it.
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    return app
