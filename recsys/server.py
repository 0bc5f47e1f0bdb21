"""How ``recsys serve`` runs the HTTP app on uvicorn: bounded connections and logs that cannot flood.

uvicorn (h11) never times out a request that is still arriving and accepts connections until the process
runs out of file descriptors; a few thousand silent sockets then stop the service, and every failed
``accept`` is logged. ``GuardedH11Protocol`` is uvicorn's h11 protocol with three additions:

- a deadline: a request must arrive whole within ``[http] request_timeout`` seconds of the connection
  opening or of the previous answer, else the connection is closed (slowloris, half-open sockets);
- a cap on open connections (``[http] max_connections``; by default the descriptor limit less a reserve
  for the index's files): past it the connection that has waited longest without a request in progress is
  closed to make room, so a fresh client is served even while the cap is full of silent sockets; when every
  connection is busy with a request, the new one gets a 503 and is closed;
- ``RateLimitedLog`` on uvicorn's and asyncio's loggers: a message repeated faster than it can be read is
  counted, not written.

A reverse proxy in front (README, "Deploying") still does what a single process cannot: TLS, per-address
connection limits, and absorbing floods from many addresses.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from recsys.config import HttpConfig, load_settings

RESERVED_DESCRIPTORS = 256  # kept free for SQLite connections, mapped index files, logs, the events store
SWEEP_SECONDS = 0.5
_BODY = b'{"detail": "too many connections; retry in a second"}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def descriptor_budget(configured: int = 0) -> tuple[int, int]:
    """(connections this process may hold, listen backlog). The cap is ``configured``, else the open-file
    limit less a reserve; the backlog is half of what is left. asyncio accepts up to ``backlog`` sockets in
    one go before any of them is counted, so cap + backlog must stay under the limit, or ``accept`` fails
    with EMFILE and asyncio stops accepting for a second."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = configured if configured > 0 else max(16, soft - max(RESERVED_DESCRIPTORS, soft // 10))
    backlog = max(16, min(2048, (soft - cap) // 2))
    return cap, backlog


class ConnectionGuard:
    """Open connections of one serving process, and which of them wait for a request (none in progress),
    oldest deadline first. One per process (``guard()``), used from the event loop's thread only.

    ``open`` counts connections made and not yet lost; ``closing`` those this guard closed whose
    descriptors are being released (asyncio reports them lost on the next loop turn), so the connections
    that still hold a descriptor are ``open - closing``, and that is what the cap bounds."""

    def __init__(self, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.open = 0
        self.closing = 0
        self.waiting: OrderedDict[GuardedH11Protocol, float] = OrderedDict()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._sweeping: asyncio.TimerHandle | None = None

    def admit(self, connection: GuardedH11Protocol) -> bool:
        """Count a new connection; False when it must be refused (the cap is full of busy connections)."""
        self.open += 1
        if self.open - self.closing > self.max_connections and not self._evict_one():
            self.refused += 1
            return False
        self.wait(connection)
        return True

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest without a request in progress."""
        while self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            if oldest.closed_by_guard or oldest.in_app():
                continue  # a request in progress leaves this list until its answer is sent
            self.close(oldest)
            self.evicted += 1
            return True
        return False

    def wait(self, connection: GuardedH11Protocol) -> None:
        """The connection now waits for a (next) request: it gets a fresh deadline (and the sweep runs)."""
        self.waiting.pop(connection, None)
        self.waiting[connection] = time.monotonic() + self.request_timeout
        self._schedule(connection.loop)

    def close(self, connection: GuardedH11Protocol) -> None:
        if not connection.closed_by_guard:
            connection.closed_by_guard = True
            self.closing += 1
        connection.transport.close()

    def gone(self, connection: GuardedH11Protocol) -> None:
        self.waiting.pop(connection, None)
        self.open -= 1
        if connection.closed_by_guard:
            self.closing -= 1

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close waiting connections past their deadline (deadlines grow along the list)."""
        self._sweeping = None
        now = time.monotonic()
        while self.waiting:
            connection, deadline = next(iter(self.waiting.items()))
            if deadline > now:
                break
            del self.waiting[connection]
            if not connection.in_app() and not connection.closed_by_guard:
                self.close(connection)
                self.timed_out += 1
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeping is None and self.waiting:
            self._sweeping = loop.call_later(SWEEP_SECONDS, self.sweep, loop)


_GUARD: ConnectionGuard | None = None


def guard() -> ConnectionGuard:
    """This process's guard, from ``[http]`` settings (each uvicorn worker process builds its own)."""
    global _GUARD
    if _GUARD is None:
        config = load_settings().http
        _GUARD = ConnectionGuard(descriptor_budget(config.max_connections)[0], config.request_timeout)
        limit_logs()
    return _GUARD


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under this process's ``ConnectionGuard`` (``uvicorn.run(..., http=...)``)."""

    closed_by_guard = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not guard().admit(self):
            transport.write(REFUSAL)
            guard().close(self)

    def connection_lost(self, exc: Exception | None) -> None:
        guard().gone(self)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            guard().wait(self)

    def in_app(self) -> bool:
        """A whole request has arrived and its answer is not complete: the app is working on it."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.more_body


class RateLimitedLog(logging.Filter):
    """Lets ``burst`` records of one message through per ``interval`` seconds; counts the rest and says how
    many were dropped on the next one it lets through."""

    def __init__(self, burst: int = 5, interval: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}  # key -> (window start, passed, dropped)
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        start, passed, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self.interval:
            start, passed = now, 0
        if passed >= self.burst:
            self._seen[key] = (start, passed, dropped + 1)
            self.dropped += 1
            return False
        if dropped:
            record.msg = f"{record.msg} ({dropped:,} more like this were not logged)"
        self._seen[key] = (start, passed + 1, 0)
        if len(self._seen) > 10_000:  # messages with varying text: forget the oldest windows
            self._seen = dict(list(self._seen.items())[-5_000:])
        return True


LOG_FILTER = RateLimitedLog()


def limit_logs(names: tuple[str, ...] = ("asyncio", "uvicorn.error", "uvicorn", "recsys")) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if LOG_FILTER not in logger.filters:
            logger.addFilter(LOG_FILTER)


def uvicorn_options(config: HttpConfig) -> dict[str, Any]:
    """What ``recsys serve`` passes to ``uvicorn.run`` besides the app, address and workers."""
    backlog = descriptor_budget(config.max_connections)[1]
    return {"http": GuardedH11Protocol, "timeout_keep_alive": config.keep_alive, "backlog": backlog}
