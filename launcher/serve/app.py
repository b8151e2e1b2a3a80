"""The HTTP side of ``launcher serve``: FastAPI routes in the OpenAI shape, API-key check, one generation at a time.

Requests are queued on one asyncio lock (the model is not re-entrant and a CPU has no room for two
generations); a request that would wait behind more than ``max_queue`` others gets 503 at once. Generation
runs in a worker thread; when a client goes away mid-answer, the generation is cancelled at the next token and
the lock passes on. Every error a client sees is an OpenAI-shaped body with its status code; an exception
inside generation becomes a 500 (or an error event in a stream) and the server keeps serving.
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
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from launcher.serve.engine import Finished
from launcher.serve.openai_protocol import (
    APIError, chunk_body, completion_body, parse_chat_request, usage_body,
)

log = logging.getLogger("launcher.serve")


def error_response(exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


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

    async def run(self, request) -> AsyncIterator:
        """Text pieces, then a Finished; cancelled cleanly when the consumer stops."""
        if self.lock is None:
            self.lock = asyncio.Lock()
        self.check_capacity()
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        done = object()

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
                yield item
        finally:
            cancel.set()
            try:
                await asyncio.shield(future)  # the lock passes on only once the model is free
            except BaseException:
                pass
            self.lock.release()


def create_app(engine, model_name: str, api_key: Optional[str] = None, max_queue: int = 32) -> FastAPI:
    app = FastAPI(title="launcher serve", docs_url=None, redoc_url=None, openapi_url=None)
    generation = Generation(engine, max_queue)
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception):
        log.exception("internal error")
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error"))

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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the request body is not valid JSON ({exc})") from None
        chat = parse_chat_request(body, getattr(engine, "has_vision", False))
        if chat.model != model_name:
            raise APIError(404, f"the model '{chat.model}' does not exist; this server serves '{model_name}'",
                           "not_found_error", "model", "model_not_found")
        # Refusals that need no model (too long a prompt, a full queue) come before a stream's 200 status line.
        engine.budget(chat, len(engine.prompt_ids(chat)))
        generation.check_capacity()
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        if chat.stream:
            return StreamingResponse(stream_events(chat, rid, now), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        pieces, finished = [], None
        async with contextlib.aclosing(generation.run(chat)) as items:
            async for item in items:
                if isinstance(item, Finished):
                    finished = item
                else:
                    pieces.append(item)
        usage = usage_body(finished.prompt_tokens, finished.completion_tokens)
        return completion_body(rid, now, model_name, "".join(pieces), finished.finish_reason, usage)

    async def stream_events(chat, rid: str, now: int):
        def event(data: dict) -> str:
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        try:
            yield event(chunk_body(rid, now, model_name, {"role": "assistant", "content": ""}, None))
            async with contextlib.aclosing(generation.run(chat)) as items:
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
        except Exception as exc:
            log.exception("internal error while streaming")
            yield event(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").body())
        yield "data: [DONE]\n\n"

    return app
