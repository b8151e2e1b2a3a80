"""What the UI serves before a login, and how fast a client may guess the token.

Gradio's own login leaves a good deal open: the login page embeds the API description of every handler, and
routes such as /gradio_api/startup-events, /gradio_api/app_id and /monitoring/KEY answer anyone. With a token
set, ``LoginGate`` (an ASGI middleware inside Gradio's app) lets a client without a session reach only the
login page (with the API description emptied), its static files and ``POST /login``; everything else is 401.
Logins are throttled per client address (``LoginThrottle``): after ``FREE_FAILURES`` failures each further
try waits an exponentially longer lockout, answered at once with 429 and Retry-After (nothing sleeps, the
event loop keeps serving). The address is the connection's: a reverse proxy in front makes all clients one.
"""
from __future__ import annotations

import json
import math
import re
import time
from http.cookies import SimpleCookie
from typing import Callable, Optional

from launcher.network import is_loopback

FREE_FAILURES = 5
"""Wrong passwords a client may send before lockouts start."""
FIRST_LOCKOUT_S = 1.0
"""The lockout after the FREE_FAILURES-th failure; each further failure doubles it."""
MAX_LOCKOUT_S = 300.0
FORGET_S = 900.0
"""A client with no login attempt for this long starts afresh."""

LOGIN_PATHS = ("/login", "/login/")
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/favicon.ico", "/theme.css", "/gradio_api/theme.css",
                 "/manifest.json", "/pwa_icon", "/robots.txt")
"""What the login page itself loads: the frontend's code, styles and icons (the same for every Gradio app)."""
PAGE_PATHS = ("/", "")
STARTUP_PATH = "/gradio_api/startup-events"
"""Gradio's launch() calls it from this host to start the queue; it answers only "started"."""

API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)
EMPTY_API_INFO = b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'


class LoginThrottle:
    """Failed logins per client; ``retry_after`` says how long a client must wait (0: it may try now)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.clients: dict = {}  # client -> [failures, locked_until, last_attempt]

    def _forget_old(self, now: float) -> None:
        for key in [k for k, v in self.clients.items() if now - v[2] > FORGET_S]:
            del self.clients[key]

    def retry_after(self, client: str) -> float:
        now = self.clock()
        self._forget_old(now)
        state = self.clients.get(client)
        return max(0.0, state[1] - now) if state else 0.0

    def attempt(self, client: str) -> None:
        """Count a try as failed before it is checked (parallel guesses cannot outrun the count)."""
        now = self.clock()
        self._forget_old(now)
        state = self.clients.setdefault(client, [0, 0.0, now])
        state[0] += 1
        state[2] = now
        if state[0] >= FREE_FAILURES:
            state[1] = now + min(MAX_LOCKOUT_S, FIRST_LOCKOUT_S * 2 ** (state[0] - FREE_FAILURES))

    def succeeded(self, client: str) -> None:
        self.clients.pop(client, None)


def _client(scope: dict) -> str:
    client = scope.get("client")
    return client[0] if client else "?"


def _logged_in(scope: dict, gradio_app) -> bool:
    header = b"; ".join(v for k, v in scope.get("headers", []) if k == b"cookie").decode("latin-1")
    if not header:
        return False
    cookie = SimpleCookie()
    try:
        cookie.load(header)
    except Exception:  # a malformed cookie header: no session
        return False
    cookie_id = getattr(gradio_app, "cookie_id", None)
    tokens = getattr(gradio_app, "tokens", {}) or {}
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookie and cookie[name].value in tokens:
            return True
    return False


async def _answer(send, status: int, detail: str, headers: Optional[list] = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class LoginGate:
    """ASGI middleware (``launch(app_kwargs={"middleware": [Middleware(LoginGate)]})``); passes everything
    through when the app has no login."""

    def __init__(self, app, throttle: Optional[LoginThrottle] = None) -> None:
        self.app = app
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope, receive, send) -> None:
        gradio_app = scope.get("app")
        if scope["type"] not in ("http", "websocket") or getattr(gradio_app, "auth", None) is None \
                or _logged_in(scope, gradio_app):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path in LOGIN_PATHS and scope.get("method") == "POST":
            return await self._login(scope, receive, send)
        if path in PAGE_PATHS and scope.get("method") in ("GET", "HEAD"):
            return await self._login_page(scope, receive, send)
        if path.startswith(OPEN_PREFIXES) and scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        if path == STARTUP_PATH and is_loopback(_client(scope)):
            return await self.app(scope, receive, send)
        await _answer(send, 401, "Not authenticated")

    async def _login(self, scope, receive, send) -> None:
        client = _client(scope)
        wait = self.throttle.retry_after(client)
        if wait > 0:
            seconds = math.ceil(wait)
            await _answer(send, 429, f"too many failed logins from {client}; try again in {seconds} s",
                          [(b"retry-after", str(seconds).encode())])
            return
        self.throttle.attempt(client)
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") == 200:
            self.throttle.succeeded(client)

    async def _login_page(self, scope, receive, send) -> None:
        """The login page without the API description Gradio puts into it."""
        start: dict = {}
        chunks: list = []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = API_INFO.sub(EMPTY_API_INFO, b"".join(chunks)) if scope["method"] == "GET" else b""
                    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                    if scope["method"] == "GET":
                        headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, keep)
