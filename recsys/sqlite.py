"""One SQLite connection per thread, opened on first use: sqlite3 connections must not be shared across the
threads of a web server, and opening one per call would cost more than the queries."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable


class PerThreadConnection:
    """Hands each thread its own connection from ``connect``; ``close`` closes the calling thread's."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
