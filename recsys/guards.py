"""Request-level guards of the HTTP service (recsys/http.py): a cap on body size that never buffers more than
it allows, and per-client token buckets with bounded memory (events, drafts), answered 413 / 429 with how long
to wait. Connection-level guards are in recsys/server.py.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from fastapi.responses import JSONResponse


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
