"""Reader events in PostgreSQL (psycopg 3, a small connection pool): one database for every host and serving process.

Chosen by ``[events] url = "postgresql://user@host:5432/dbname"`` (or ``--events URL``, or
``RECSYS_EVENTS__URL``). The tables are the SQLite ones (recsys/signals/store/sqlite.py), created and migrated
here, versioned in ``recsys_schema``. Put each site in its own database or schema (``?options=-csearch_path%3Dsite``).

- **Tailing stays exact with many writers**: every write transaction first takes one advisory lock, so
  events get their sequence numbers in commit order and a process folding ``since(seq)`` can never
  skip an event that a slower transaction committed later with a smaller number.
- **Retries without losing or doubling**: a dropped connection is retried ``[events] retries`` times with
  backoff; the retried write inserts the same keys with ``ON CONFLICT DO NOTHING``, so an event whose
  first commit did land is not stored twice. After the last retry ``EventsUnavailable`` says so; the
  service then answers lists from the popularity it already folded and refuses event writes with 503.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from recsys.config import EventsConfig
from recsys.signals.store.base import ADVISORY_LOCK, EventStore, EventsUnavailable, schema_sql
from recsys.signals.store.served import SERVED_SCHEMA

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Versioned migrations: each runs once, in order, under an advisory lock (several processes may start at once).
MIGRATIONS: list[tuple[int, str]] = [
    (1, schema_sql("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "BIGINT")),
    (2, SERVED_SCHEMA.format(real="DOUBLE PRECISION", integer="BIGINT")),  # the served-list log (recsys.feedback)
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
DOWN_SECONDS = 2.0  # after the retries failed, calls fail at once for this long (then the next one tries again)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class PostgresEventStore(EventStore):
    """Events in a PostgreSQL database, shared by every process that names the same URL."""

    PH = "%s"
    LEAST = "LEAST"
    INSERT_IGNORE = ("INSERT INTO", "ON CONFLICT DO NOTHING")

    def __init__(self, url: str, config: EventsConfig | None = None) -> None:
        super().__init__(config)
        self.url = url
        self.description = redact(url)
        self._migrated = False
        self._down_until = 0.0
        self._down_message = ""
        self._migrate_lock = threading.Lock()
        self._pool = _Pool(url, max(1, self.config.pool_size), max(1, round(self.config.connect_timeout)))

    def exists(self) -> bool:
        return True  # the tables are created on first use; empty tables answer empty

    def _run(self, use: Callable[[psycopg.Connection], T]) -> T:
        if time.monotonic() < self._down_until:  # failed moments ago: answer at once, don't make a request wait
            raise EventsUnavailable(self._down_message)
        delay = self.config.retry_seconds
        failure: Exception | None = None
        for attempt in range(max(0, self.config.retries) + 1):
            try:
                with self._pool.connection() as conn:
                    if not self._migrated:
                        self._migrate(conn)
                    return use(conn)
            except psycopg.OperationalError as exc:
                failure = exc
                self._pool.close()  # the idle connections went down with this one
                if attempt < self.config.retries:
                    logger.warning("events database %s: %s; retrying", self.description, str(exc).strip())
                    time.sleep(delay)
                    delay *= 2
        self._down_message = (
            f"the events database {self.description} cannot be reached ({str(failure).strip()}); "
            "a write was refused, not lost. Check that PostgreSQL is running and [events] url is right"
        )
        self._down_until = time.monotonic() + DOWN_SECONDS
        raise EventsUnavailable(self._down_message)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        query = self._sql(sql)
        return self._run(lambda conn: conn.execute(query, params).fetchall())

    def _transaction(self, work: Callable[[Any], int]) -> int:
        def run(conn: psycopg.Connection) -> int:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))  # commit order = seq order
                return work(cursor)

        return self._run(run)

    def _migrate(self, conn: psycopg.Connection) -> None:
        with self._migrate_lock:
            if self._migrated:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK + 1,))
                conn.execute("CREATE TABLE IF NOT EXISTS recsys_schema (version INTEGER NOT NULL)")
                row = conn.execute("SELECT max(version) FROM recsys_schema").fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
                if version > SCHEMA_VERSION:
                    raise EventsUnavailable(
                        f"the events database {self.description} has schema {version}, newer than this recsys "
                        f"knows ({SCHEMA_VERSION}); upgrade recsys on this host"
                    )
                for number, script in MIGRATIONS:
                    if number > version:
                        conn.execute(script)
                        conn.execute("INSERT INTO recsys_schema (version) VALUES (%s)", (number,))
            self._migrated = True

    def close(self) -> None:
        self._pool.close()


class _Pool:
    """Up to ``size`` idle connections kept for reuse; a caller with none idle connects itself.

    A connection that broke (server restart, network) is dropped when it is handed back, so the first
    call after PostgreSQL returns connects afresh: recovery is immediate, with no reconnect schedule.
    """

    def __init__(self, url: str, size: int, connect_timeout: int) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue(maxsize=size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout)
        try:
            yield conn
        except BaseException:
            if conn.broken or conn.closed:
                conn.close()
                raise
            self._put(conn)
            raise
        self._put(conn)

    def _put(self, conn: psycopg.Connection) -> None:
        if conn.broken or conn.closed:
            conn.close()
            return
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
