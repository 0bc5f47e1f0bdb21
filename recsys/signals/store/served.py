"""The served-list log's tables in the events store: one row per list served, one per click that named a list.

The events store owns every table of its database, so the rows ``recsys.feedback`` records live here beside
the events they are judged against, on every backend (the SQL is written once, in the shared dialect of
``EventStore``). ``attributions`` holds a click's claim (list and position) keyed by the click's own event
key; whether the list exists and holds that article is decided when reading (``recsys.feedback.report``),
because a list is written in a batch a moment after it was served and a click may arrive first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from recsys.signals.records import AttributedClick, Event, ServedList

SERVED_SCHEMA = """
CREATE TABLE IF NOT EXISTS served_lists (
    list_id TEXT PRIMARY KEY,
    ts {real} NOT NULL,
    box TEXT NOT NULL,
    reader TEXT NOT NULL DEFAULT '',
    article_id TEXT NOT NULL DEFAULT '',
    variant TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    ids TEXT NOT NULL,
    teams TEXT NOT NULL DEFAULT '',
    explored {integer} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS served_lists_ts ON served_lists (ts);
CREATE TABLE IF NOT EXISTS attributions (
    event_key TEXT PRIMARY KEY,
    list_id TEXT NOT NULL,
    position {integer} NOT NULL,
    ts {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS attributions_list ON attributions (list_id);
CREATE INDEX IF NOT EXISTS attributions_ts ON attributions (ts);
"""
SERVED_COLUMNS = "list_id, ts, box, reader, article_id, variant, model, ids, teams, explored"


def reader_sql(table: str = "") -> str:
    """Who an event counts for in popularity: the client that sent it when that client is not trusted (an HTTP
    request without the write key), else the reader it names; "" is an anonymous reader. ``table``: the
    events table's alias with its dot, in a join."""
    return f"CASE WHEN {table}source != '' THEN {table}source ELSE {table}user_id END"


def attribution_rows(events: Sequence[tuple[str, Event]]) -> list[tuple[str, str, int, float]]:
    """(event key, list id, position, ts) of the clicks that named a served list."""
    return [(key, e.list_id, e.position, e.ts) for key, e in events if e.list_id and e.type == "click"]


class ServedTables:
    """The served-list methods of ``EventStore`` (mixed in; they use its ``_rows``, ``_transaction`` and SQL
    helpers)."""

    def add_served(self, lists: Sequence[ServedList]) -> int:
        """Store served lists (an id stored before is skipped); returns how many were new."""
        if not lists:
            return 0
        insert = self._insert_ignore(  # type: ignore[attr-defined]
            f"served_lists ({SERVED_COLUMNS})",
            f"VALUES ({self._marks(10)})",  # type: ignore[attr-defined]
        )
        rows = [
            (
                s.list_id,
                s.ts,
                s.box,
                s.reader,
                s.article_id,
                s.variant,
                s.model,
                json.dumps(list(s.ids)),
                s.teams,
                s.explored,
            )
            for s in lists
        ]

        def work(cursor: Any) -> int:
            cursor.executemany(insert, rows)
            return max(0, cursor.rowcount)

        return int(self._transaction(work))  # type: ignore[attr-defined]

    def served_lists(self, since: float, until: float) -> list[ServedList]:
        """Lists served with since <= ts <= until, oldest first."""
        if not self.exists():  # type: ignore[attr-defined]
            return []
        rows = self._rows(  # type: ignore[attr-defined]
            f"SELECT {SERVED_COLUMNS} FROM served_lists WHERE ts >= ? AND ts <= ? ORDER BY ts, list_id",
            (since, until),
        )
        out = []
        for list_id, ts, box, reader, article_id, variant, model, ids, teams, explored in rows:
            try:
                order = tuple(str(a) for a in json.loads(ids))
            except (TypeError, ValueError):
                order = ()  # a damaged row still counts as a list served, with nothing to attribute
            out.append(
                ServedList(list_id, float(ts), box, order, reader, article_id, variant, model, teams, int(explored))
            )
        return out

    def attributed_clicks(self, since: float, until: float) -> list[AttributedClick]:
        """Stored clicks with since <= ts <= until that named a served list, oldest first."""
        if not self.exists():  # type: ignore[attr-defined]
            return []
        rows = self._rows(  # type: ignore[attr-defined]
            f"SELECT a.list_id, a.position, e.article_id, e.ts, {reader_sql('e.')} "
            "FROM attributions a JOIN events e ON e.event_key = a.event_key "
            "WHERE a.ts >= ? AND a.ts <= ? ORDER BY a.ts, a.event_key",
            (since, until),
        )
        return [AttributedClick(r[0], int(r[1]), r[2], float(r[3]), r[4]) for r in rows]

    def count_served(self) -> int:
        if not self.exists():  # type: ignore[attr-defined]
            return 0
        return int(self._rows("SELECT count(*) FROM served_lists")[0][0])  # type: ignore[attr-defined]

    def prune_served(self, before: float, max_rows: int) -> int:
        """Delete lists served before ``before`` (and their clicks' claims), then the oldest beyond ``max_rows``;
        returns how many lists went."""
        sql = self._sql  # type: ignore[attr-defined]

        def work(cursor: Any) -> int:
            cursor.execute(sql("DELETE FROM served_lists WHERE ts < ?"), (before,))
            gone = max(0, cursor.rowcount)
            cursor.execute(sql("DELETE FROM attributions WHERE ts < ?"), (before,))
            cursor.execute("SELECT count(*) FROM served_lists")
            extra = int(cursor.fetchone()[0]) - max_rows
            if extra > 0:
                cursor.execute(
                    sql(
                        "DELETE FROM served_lists WHERE list_id IN "
                        "(SELECT list_id FROM served_lists ORDER BY ts, list_id LIMIT ?)"
                    ),
                    (extra,),
                )
                gone += max(0, cursor.rowcount)
            return gone

        return int(self._transaction(work))  # type: ignore[attr-defined]
