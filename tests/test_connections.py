"""Hostile connections cannot stop the service: silent sockets and stalled partial requests past the
process's descriptor budget still leave a fresh client's /health answered at once, every hostile socket is
closed by the server within its request timeout, and the log does not flood. ``benchmarks/connections.py``
runs the same scenario at 20,000 connections."""

from __future__ import annotations

import logging

import pytest

from benchmarks.connections import flood_check
from recsys.server import ConnectionGuard, RateLimitedLog, descriptor_budget
from tests.conftest import art


@pytest.fixture
def index(make_indexer, tmp_path):
    make_indexer().add_articles([art(f"a{i}", f"storm coast flood {i}", f"storm homes {i}") for i in range(30)])
    return tmp_path / "index"


def test_silent_and_stalled_connections_past_the_budget_do_not_stop_the_service(index, tmp_path):
    # 1,024 descriptors: 768 connections at once; 1,200 silent + 100 half-sent requests go past it
    figures = flood_check(index, silent=1200, partial=100, nofile=1024, request_timeout=1.0, log=tmp_path / "log")
    assert figures["server_alive"] == 1
    assert figures["health_max_seconds"] < 1.0 and figures["health_after_seconds"] < 1.0
    assert figures["hostile_connected"] > 768
    assert figures["hostile_closed_by_server"] == figures["hostile_connected"]
    assert figures["log_growth_bytes"] < 1_000_000


def test_the_budget_leaves_room_for_the_accept_batch_and_the_index_files():
    cap, backlog = descriptor_budget()
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert 16 <= cap < soft and cap + backlog < soft - 64
    assert descriptor_budget(100)[0] == 100


def test_a_repeated_log_message_is_counted_not_written():
    limiter = RateLimitedLog(burst=3, interval=60.0)
    records = [logging.LogRecord("asyncio", logging.ERROR, "x", 1, "accept failed", None, None) for _ in range(1000)]
    passed = [r for r in records if limiter.filter(r)]
    assert len(passed) == 3 and limiter.dropped == 997
    other = logging.LogRecord("asyncio", logging.ERROR, "x", 1, "another message", None, None)
    assert limiter.filter(other)


class FakeConnection:
    def __init__(self, busy: bool = False) -> None:
        self.closed_by_guard = False
        self.busy = busy
        self.closed = False
        self.loop = None
        self.transport = self

    def in_app(self) -> bool:
        return self.busy

    def close(self) -> None:
        self.closed = True


def test_the_guard_evicts_the_longest_waiting_idle_connection_and_refuses_when_all_are_busy(monkeypatch):
    guard = ConnectionGuard(max_connections=2, request_timeout=10.0)
    monkeypatch.setattr(guard, "_schedule", lambda loop: None)
    first, second, third = FakeConnection(), FakeConnection(), FakeConnection()
    assert guard.admit(first) and guard.admit(second)
    assert guard.admit(third) and first.closed and not second.closed  # the oldest idle one made room
    guard.gone(first)
    second.busy = third.busy = True
    fourth = FakeConnection()
    assert not guard.admit(fourth) and guard.refused == 1  # every connection is handling a request
