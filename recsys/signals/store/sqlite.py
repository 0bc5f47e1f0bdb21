"""The embedded events store: ``events.sqlite`` in the index folder (WAL; one writer at a time, many readers).

Events live beside the versions: they accumulate continuously and are not rebuilt with the articles.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recsys.config import EventsConfig
from recsys.signals.store.base import EventStore, EventsUnavailable, schema_sql
from recsys.sqlite import PerThreadConnection

EVENTS_FILE = "events.sqlite"
SCHEMA_VERSION = 3  # PRAGMA user_version; 1 had no `source` column and no unindexed_events table, 2 no served lists
SCHEMA = schema_sql("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "INTEGER", " WITHOUT ROWID")


class SQLiteEventStore(EventStore):
    """The events database of one index directory. Writers and readers may run at once (WAL)."""

    def __init__(self, root: str | Path, config: EventsConfig | None = None) -> None:
        super().__init__(config)
        self.path = Path(root) / EVENTS_FILE
        self.description = str(self.path)
        self._connections = PerThreadConnection(self._open)
        self._write_lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        for attempt in range(100):  # switching a new file to WAL needs a moment alone, with no busy handler
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 99:
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def exists(self) -> bool:
        return self.path.is_file()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from None

    def _transaction(self, work: Callable[[Any], int]) -> int:
        with self._write_lock:
            try:
                conn = self.conn
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self._unavailable(exc) from None
            try:
                result = work(conn.cursor())
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._unavailable(exc) from None
                raise
        return result

    def _unavailable(self, exc: sqlite3.DatabaseError) -> EventsUnavailable:
        """A locked, damaged or foreign events.sqlite: the lists go on without new events (Related needs
        none), and the message says how to recover."""
        if not isinstance(exc, sqlite3.OperationalError):  # damage, not a lock: reopen on the next use
            self._connections.close()
        return EventsUnavailable(
            f"{self.path}: {exc}; if the file is damaged, move it aside (a new one is created; events are "
            "optional for Related) or restore it from a backup"
        )

    def close(self) -> None:
        self._connections.close()


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the schema, or bring an older events.sqlite up to SCHEMA_VERSION (idempotent)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if columns and "source" not in columns:
            conn.execute("ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT ''")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
