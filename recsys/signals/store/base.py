"""The events store's interface (``EventStore``) and the SQL every backend shares.

Events live in the store the configuration names (``events.sqlite`` in the index folder by default):
they accumulate continuously and are not rebuilt with the articles. Every event has a key (its
``event_id``, or a fingerprint; see ``recsys.ingest.events``), so ingesting a file twice counts nothing
twice. This module never imports a backend: ``recsys.signals.store`` picks one.
"""

from __future__ import annotations

import bisect
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from recsys.config import EventsConfig
from recsys.ingest.events import iter_event_batches
from recsys.signals.records import Event, Impression, IngestReport
from recsys.signals.store.served import SERVED_SCHEMA, ServedTables, attribution_rows, reader_sql
from recsys.types import InputError, RecsysError

READER_SQL = reader_sql()  # who an event counts for in popularity (see reader_sql)


EVENT_COLUMNS = "event_key, article_id, type, reaction, user_id, ts, count, source"
# Counted events, and events posted for ids that are not indexed yet (held, bounded): the same columns.
EVENT_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq {serial},
    event_key TEXT NOT NULL UNIQUE,
    article_id TEXT NOT NULL,
    type TEXT NOT NULL,
    reaction TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    ts {real} NOT NULL,
    count {integer} NOT NULL DEFAULT 1,
    source TEXT NOT NULL DEFAULT ''
);"""
SCHEMA_REST = """
CREATE INDEX IF NOT EXISTS events_article_ts ON events (article_id, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts);
CREATE TABLE IF NOT EXISTS history (
    user_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    ts {real} NOT NULL,
    PRIMARY KEY (user_id, article_id)
){history_options};
"""


def schema_sql(serial: str, real: str, integer: str, history_options: str = "") -> str:
    """The events tables in one SQL dialect (each backend names its types); every backend has the same ones."""
    types = {"serial": serial, "real": real, "integer": integer}
    return (
        EVENT_TABLE.format(name="events", **types)
        + EVENT_TABLE.format(name="unindexed_events", **types)
        + SCHEMA_REST.format(real=real, history_options=history_options)
        + SERVED_SCHEMA.format(real=real, integer=integer)
    )


ADVISORY_LOCK = 7_265_637_379  # PostgreSQL: the one lock every events write takes (see PostgresEventStore)


class EventsUnavailable(RecsysError):
    """The events store could not be reached, even after retries (e.g. PostgreSQL is down)."""


def event_values(key: str, e: Event) -> tuple[Any, ...]:
    return (key, e.article_id, e.type, e.reaction, e.user_id, e.ts, e.count, e.source)


class EventStore(ServedTables, ABC):
    """Where reader events and histories live; the same semantics on every backend.

    - **Idempotent ingest**: every event has a key (its ``event_id``, or a fingerprint; see the module
      docstring) and a key already stored is skipped, so a file ingested twice or a write retried after a
      dropped connection counts each event once.
    - **Tailing**: events get increasing sequence numbers in the order they become visible; ``since(seq)``
      returns everything stored after ``seq``, so a serving process folds only what is new.
    - **As of a time**: every read that feeds a list or a model takes ``until`` and sees nothing later.
    - **Histories**: imported reads (MIND history) per reader, merged with their views and clicks.

    Backends implement ``_rows`` (a read), ``_transaction`` (a write: all or nothing, retried where the
    backend can lose its connection) and ``exists``; every query below is written once for both SQL
    dialects. ``tests/test_events_backends.py`` is the suite every backend passes.
    """

    PH = "?"  # parameter marker of the driver
    LEAST = "min"  # two-argument minimum
    INSERT_IGNORE = ("INSERT OR IGNORE INTO", "")  # insert that skips rows whose key is stored (prefix, suffix)
    description = "events store"

    def __init__(self, config: EventsConfig | None = None) -> None:
        self.config = config or EventsConfig()

    @abstractmethod
    def exists(self) -> bool:
        """False while nothing was ever stored (reads then answer empty without creating anything)."""

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one read (``?`` markers) and return its rows."""

    @abstractmethod
    def _transaction(self, work: Callable[[Any], int]) -> int:
        """Run ``work(cursor)`` in one write transaction and return its result."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (the store reopens on next use)."""

    def _sql(self, text: str) -> str:
        return text if self.PH == "?" else text.replace("?", self.PH)

    def _marks(self, n: int) -> str:
        return ",".join([self.PH] * n)

    def _insert(self, table: str, tail: str = "") -> str:
        return self._insert_ignore(f"{table} ({EVENT_COLUMNS})", tail)

    def _insert_ignore(self, target: str, tail: str) -> str:
        """An insert into ``target`` ("table (columns)") that skips rows whose key is stored."""
        prefix, suffix = self.INSERT_IGNORE
        return f"{prefix} {target} {tail} {suffix}".strip()

    # -- writes -----------------------------------------------------------------------------------

    def add(self, events: Sequence[tuple[str, Event]], history: Sequence[tuple[str, str, float]] = ()) -> int:
        """Store keyed events (a key seen before is skipped) and history; returns how many events were new."""
        if not events and not history:
            return 0
        insert = self._insert("events", f"VALUES ({self._marks(8)})")
        upsert = self._sql(
            "INSERT INTO history (user_id, article_id, ts) VALUES (?, ?, ?) ON CONFLICT (user_id, article_id) "
            f"DO UPDATE SET ts = {self.LEAST}(history.ts, excluded.ts)"
        )

        claims = attribution_rows(events)
        claim = self._insert_ignore("attributions (event_key, list_id, position, ts)", f"VALUES ({self._marks(4)})")

        def work(cursor: Any) -> int:
            stored = 0
            if events:
                cursor.executemany(insert, [event_values(key, e) for key, e in events])
                stored = max(0, cursor.rowcount)
            if claims:
                cursor.executemany(claim, claims)
            if history:
                cursor.executemany(upsert, history)
            return stored

        return self._transaction(work)

    def add_unindexed(self, events: Sequence[tuple[str, Event]]) -> int:
        """Hold events for ids that are not indexed (yet), up to ``max_unindexed_events`` rows in all;
        returns how many were taken. They are counted once ``promote`` finds their article indexed."""
        insert = self._insert("unindexed_events", f"VALUES ({self._marks(8)})")

        def work(cursor: Any) -> int:
            cursor.execute("SELECT count(*) FROM unindexed_events")
            room = max(0, self.config.max_unindexed_events - int(cursor.fetchone()[0]))
            taken = [event_values(key, e) for key, e in events[:room]]
            if not taken:
                return 0
            cursor.executemany(insert, taken)
            return max(0, cursor.rowcount)

        return self._transaction(work) if events else 0

    def promote(self, article_ids: Sequence[str]) -> int:
        """Move held events of these (now indexed) articles into the counted events; returns how many."""
        ids = list(article_ids)

        def work(cursor: Any) -> int:
            moved = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = self._marks(len(chunk))
                select = f"SELECT {EVENT_COLUMNS} FROM unindexed_events WHERE article_id IN ({marks}) ORDER BY seq"
                cursor.execute(self._insert("events", select), chunk)
                moved += max(0, cursor.rowcount)
                cursor.execute(f"DELETE FROM unindexed_events WHERE article_id IN ({marks})", chunk)
            return moved

        return self._transaction(work) if ids else 0

    def ingest(
        self,
        paths: Iterable[str | Path],
        fmt: str | None = None,
        on_error: str = "skip",
        indexed: Callable[[set[str]], set[str]] | None = None,
    ) -> IngestReport:
        """Read and store event files; with on_error='fail' any bad record stores nothing. ``indexed(ids)`` (which
        of these ids the index holds) lets the report count the events stored for articles not indexed yet."""
        if on_error not in ("skip", "fail"):
            raise RecsysError(f"--on-error must be 'skip' or 'fail', not {on_error!r}")
        paths = list(paths)
        if on_error == "fail":  # a first pass finds the problems, so that a bad file stores nothing
            problems = [p for batch in iter_event_batches(paths, fmt, self.config) for p in batch.problems]
            if problems:
                raise InputError(problems)
        read = stored = history = 0
        problems = []
        unknown: set[str] = set()
        unindexed = 0
        for batch in iter_event_batches(paths, fmt, self.config):  # streamed: one batch, one transaction
            stored += self.add(batch.events, batch.history)
            read, history = read + len(batch.events), history + len(batch.history)
            problems += batch.problems
            if indexed is not None and batch.events:
                ids = {e.article_id for _, e in batch.events}
                missing = ids - indexed(ids)
                unknown |= missing
                unindexed += sum(1 for _, e in batch.events if e.article_id in missing)
        return IngestReport(read, stored, read - stored, history, problems, unindexed, len(unknown))

    # -- reads ------------------------------------------------------------------------------------

    def unindexed_ids(self) -> list[str]:
        if not self.exists():
            return []
        return [a for (a,) in self._rows("SELECT DISTINCT article_id FROM unindexed_events")]

    def since(
        self, seq: int, min_ts: float = -float("inf"), max_ts: float = float("inf"), batch: int = 100_000
    ) -> Iterator[tuple[int, list[tuple[str, str, str, float, int, str]]]]:
        """Events stored after sequence number ``seq`` with min_ts <= ts <= max_ts, in batches, oldest first:
        ``(last sequence number read, [(article, type, reaction, ts, count, reader), ...])``."""
        while True:
            rows = self._rows(
                f"SELECT seq, article_id, type, reaction, ts, count, {READER_SQL} FROM events "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, batch),
            )
            if not rows:
                return
            seq = rows[-1][0]
            yield seq, [tuple(r[1:]) for r in rows if min_ts <= r[4] <= max_ts]

    def for_articles(self, article_ids: Sequence[str], until: float, since: float | None = None) -> list[tuple]:
        """(article, type, reaction, ts, count, reader) of these articles with since <= ts <= until."""
        rows: list[tuple] = []
        for start in range(0, len(article_ids), 500):
            chunk = list(article_ids[start : start + 500])
            rows += self._rows(
                f"SELECT article_id, type, reaction, ts, count, {READER_SQL} FROM events "
                f"WHERE article_id IN ({self._marks(len(chunk))}) AND ts <= ? AND ts >= ?",
                [*chunk, until, -1e18 if since is None else since],
            )
        return rows

    def counts_for(
        self, article_ids: Sequence[str], since: float, until: float, anonymous_cap: int
    ) -> list[tuple[str, str, str, int]]:
        """(article, type, reaction, count) over since <= ts <= until, counted in the database the way
        popularity counts: each reader once per article, type and reaction name; events without a reader
        capped."""
        rows: list[tuple[str, str, str, int]] = []
        for start in range(0, len(article_ids), 500):
            chunk = list(article_ids[start : start + 500])
            rows += [
                (a, t, r, int(n))
                for a, t, r, n in self._rows(
                    "SELECT article_id, type, reaction, "
                    "COUNT(DISTINCT CASE WHEN reader != '' THEN reader END) "
                    f"+ COALESCE(SUM(CASE WHEN reader = '' THEN {self.LEAST}(count, ?) ELSE 0 END), 0) "
                    f"FROM (SELECT article_id, type, reaction, count, {READER_SQL} AS reader FROM events "
                    f"WHERE article_id IN ({self._marks(len(chunk))}) AND ts >= ? AND ts <= ?) AS recent "
                    "GROUP BY article_id, type, reaction",
                    [anonymous_cap, *chunk, since, until],
                )
            ]
        return rows

    def reads_of(self, user_id: str, until: float | None = None) -> list[tuple[str, float]]:
        """What a user read, newest first: views/clicks they made, then their imported history."""
        until = time.time() if until is None else until
        seen: dict[str, float] = {}
        for article_id, ts in self._rows(
            "SELECT article_id, max(ts) FROM events WHERE user_id = ? AND type IN ('view', 'click') AND ts <= ? "
            "GROUP BY article_id",
            (user_id, until),
        ):
            seen[article_id] = ts
        for article_id, ts in self._rows(
            "SELECT article_id, ts FROM history WHERE user_id = ? AND ts <= ?", (user_id, until)
        ):
            seen.setdefault(article_id, ts)
        return sorted(seen.items(), key=lambda item: (-item[1], item[0]))

    def reads_by_reader(self) -> dict[str, list[tuple[float, str]]]:
        """Every reader's reads (imported history, views, clicks) as (time, article), oldest first."""
        reads: dict[str, list[tuple[float, str]]] = {}
        if not self.exists():
            return reads
        for user, article, ts in self._rows(
            "SELECT user_id, article_id, ts FROM history WHERE user_id != '' UNION ALL "
            "SELECT user_id, article_id, ts FROM events WHERE user_id != '' AND type IN ('view', 'click')"
        ):
            reads.setdefault(user, []).append((ts, article))
        for found in reads.values():
            found.sort()
        return reads

    def logged_impressions(self, click_window: float = 1800.0, history_limit: int = 50) -> list[Impression]:
        """The stored impressions as MIND-style rows, for ``recsys train`` without a behaviors file.

        A reader's impression events at one time form one shown list; a later click by that reader on an
        article of the list (within ``click_window`` seconds) labels it clicked. The history is what the
        reader read before (imported history, views, clicks), oldest first. Events without a reader are
        not impressions of anyone and are skipped.
        """
        if not self.exists():
            return []
        reads = self.reads_by_reader()
        found: list[Impression] = []
        rows = self._rows(
            "SELECT user_id, ts, article_id, type FROM events WHERE user_id != '' "
            "AND type IN ('impression', 'click') ORDER BY user_id, ts, seq"
        )
        for user, events in itertools.groupby(rows, key=lambda r: r[0]):
            shown: list[tuple[float, list[str], set[str]]] = []  # (ts, candidates, clicked)
            for _, ts, article, kind in events:
                if kind == "impression":
                    if shown and shown[-1][0] == ts:
                        if article not in shown[-1][1]:
                            shown[-1][1].append(article)
                    else:
                        shown.append((ts, [article], set()))
                    continue
                for when, candidates, clicked in reversed(shown):  # a click: label the showing it answers
                    if ts - when > click_window:
                        break
                    if article in candidates:
                        clicked.add(article)
                        break
            history = reads.get(user, [])  # sorted by reads_by_reader
            times = [t for t, _ in history]
            for number, (ts, candidates, clicked) in enumerate(shown):
                before = [a for _, a in history[: bisect.bisect_left(times, ts)]][-history_limit:]
                found.append(
                    Impression(
                        f"{user}:{number}",
                        user,
                        ts,
                        tuple(before),
                        tuple(candidates),
                        tuple(c in clicked for c in candidates),
                    )
                )
        return sorted(found, key=lambda i: (i.ts, i.impression_id))

    def last_event_time(self, until: float | None = None) -> float | None:
        """The newest event time (at or before ``until``, default: the clock plus the allowed skew)."""
        if not self.exists():
            return None
        until = time.time() + self.config.max_future_seconds if until is None else until
        found = self._rows("SELECT max(ts) FROM events WHERE ts <= ?", (until,))
        return None if not found or found[0][0] is None else float(found[0][0])

    def max_seq(self) -> int:
        if not self.exists():
            return 0
        return int(self._rows("SELECT coalesce(max(seq), 0) FROM events")[0][0])
