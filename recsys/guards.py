"""Request-level guards of the HTTP service (recsys/http.py): a cap on body size that never buffers more than
it allows, and per-client token buckets with bounded memory (events, drafts), answered 413 / 429 with how long
to wait. Connection-level guards are in recsys/server.py.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from recsys.config import HttpConfig


class BodyLimit:
    """ASGI middleware: refuses a request body over ``limit`` bytes with 413, by its Content-Length or,
    for a chunked body, as soon as the bytes received pass the limit (nothing larger is ever buffered)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = JSONResponse({"detail": f"request body over {self.limit:,} bytes"}, status_code=413)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_big(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_big(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RateLimiter:
    """Token buckets per client: ``burst`` events at once, refilled at ``per_minute``. Bounded memory:
    the least recently seen clients are forgotten past ``max_clients`` (a forgotten client starts full)."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, amount: int, now: float | None = None) -> float:
        """Take ``amount`` tokens; returns 0 when allowed, else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            wait = 0.0
            if amount > tokens:
                wait = (amount - tokens) / self.rate if self.rate > 0 else float("inf")
            else:
                tokens -= amount
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


def too_many(wait: float, what: str) -> JSONResponse:
    """429 with the seconds to wait, in the body and in Retry-After."""
    retry = max(1, int(wait + 0.999)) if wait != float("inf") else 3600
    return JSONResponse({"detail": f"{what}; retry in {retry} s"}, 429, headers={"Retry-After": str(retry)})


def printable(value: Any) -> Any:
    """A validation detail made safe for JSON: no lone surrogates, no raw bytes, nothing huge."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= 200 else text[:200] + "..."
    if isinstance(value, int | float | bool) or value is None:
        return value if not isinstance(value, float) or (value == value and abs(value) != float("inf")) else str(value)
    if isinstance(value, list | tuple):
        return [printable(v) for v in value[:20]]
    if isinstance(value, dict):
        return {str(printable(k)): printable(v) for k, v in list(value.items())[:20]}
    return printable(str(value))


def client_source(request: Request) -> str:
    """An untrusted client's identity in the events store: a hash of its address (no raw IPs on disk)."""
    host = request.client.host if request.client else "unknown"
    return "ip:" + hashlib.sha256(host.encode()).hexdigest()[:16]


def has_key(request: Request, config: HttpConfig) -> bool:
    if not config.write_key:
        return False
    given = request.headers.get("x-recsys-key", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return hmac.compare_digest(given.encode(), config.write_key.encode())


LIST_ROUTES = ("/related/", "/ranking", "/recommend", "/page/")  # the GETs that answer a list (cacheable)


def list_etag(state: str, path: str, query: str, cache_seconds: float) -> str:
    """A list answer's ETag: what it was served from (index version, rules, model: ``Recommender.state_tag``),
    the URL, and the ``cache_seconds`` slot of time (popularity moves; a list is not reused past its slot).
    Empty when caching is off."""
    if cache_seconds <= 0:
        return ""
    slot = int(time.time() // cache_seconds)
    digest = hashlib.blake2b(f"{state}|{path}|{query}|{slot}".encode("utf-8", "backslashreplace"), digest_size=12)
    return f'"{digest.hexdigest()}"'


def cache_headers(etag: str, cache_seconds: float, personal: bool) -> dict[str, str]:
    """Cache-Control (and ETag) of a list answer: ``private`` when it is one reader's list."""
    if not etag:
        return {"Cache-Control": "no-store"}
    scope = "private" if personal else "public"
    return {"Cache-Control": f"{scope}, max-age={int(cache_seconds)}", "ETag": etag}
