"""What one request may cost the server: body size, time, and the ASGI guard that holds the body to its size.

The body limit is checked twice: from Content-Length before a byte of the body is read (an honest client
sending 200 MB gets its 413 at once), and again on every chunk as the app reads it (a client that lies about
its length or sends it chunked is cut off at the limit, having cost at most the limit in memory).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from launcher.serve.openai_protocol import APIError


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 32 << 20
    """Largest request body (--max-body-mb). A data-URL image travels in the body, base64 (4/3 of its size)."""
    request_timeout_s: float = 300.0
    """Wall time a request may take, from its arrival: reading the body, preparing the prompt, waiting for the
    model and generating (--request-timeout). Past it the request gets a 504 and generation stops."""
    prepare_threads: int = 2
    """Requests tokenized and their images decoded at once, off the event loop."""


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than this server's limit of {limit >> 20} MB (--max-body-mb);"
                         " send smaller images or a shorter prompt", "invalid_request_error", None,
                    "request_too_large")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413, however the client announces it. It
    answers itself, so it must sit outside every middleware that reads the body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                too_large = False  # the HTTP server has already refused a malformed length
            if too_large:
                return await self._refuse(send)
        seen, refused = 0, False

        async def counted():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer here and tell the app the client left: whatever middleware sits inside (and
                    # however it wraps errors), the app stops reading and its own response is dropped.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise  # the app's failure to read a refused body is expected; any other is not

    async def _refuse(self, send):
        body = json.dumps(body_too_large(self.limit).body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
