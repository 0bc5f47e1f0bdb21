"""Reader events (views, clicks, impressions, reactions) and reading histories, stored in SQLite.

Events live in ``<index>/events.sqlite`` beside the versions: they accumulate continuously and
are not rebuilt with the articles. Every event has a key: its ``event_id`` when the source gives
one, else a fingerprint of its content and its occurrence number among identical records of the
same file, so ingesting a file twice counts nothing twice while two identical real events in one
file both count.

MIND ``behaviors.tsv`` rows become one ``impression`` per shown candidate and one ``click`` per
clicked candidate, at the row's time, keyed by impression id; the row's history becomes the user's
reading history (reads before that time, exact times unknown, so never counted as views).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.io import detect_format, has_bad_bytes, iter_csv, iter_jsonl, parse_timestamp
from recsys.sqlite import PerThreadConnection
from recsys.types import InputError, InputProblem, RecsysError

EVENTS_FILE = "events.sqlite"
EVENT_TYPES = ("view", "click", "impression", "reaction")
EVENT_FORMATS = ("jsonl", "csv", "mind")
MIND_TIME = "%m/%d/%Y %I:%M:%S %p"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_key TEXT NOT NULL UNIQUE,
    article_id TEXT NOT NULL,
    type TEXT NOT NULL,
    reaction TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS events_article_ts ON events (article_id, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts);
CREATE TABLE IF NOT EXISTS history (
    user_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (user_id, article_id)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Event:
    """One counted thing a reader did (or was shown), ``count`` times, at ``ts`` (epoch seconds)."""

    article_id: str
    type: str
    ts: float
    reaction: str = ""
    user_id: str = ""
    count: int = 1
    event_id: str = ""

    def fingerprint(self, occurrence: int = 0) -> str:
        if self.event_id:
            return f"id:{self.event_id}"
        raw = json.dumps(
            [self.article_id, self.type, self.reaction, self.user_id, self.ts, self.count, occurrence],
            ensure_ascii=False,
        )
        return "fp:" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class EventBatch:
    """What one ingest read: keyed events, history entries and located problems."""

    events: list[tuple[str, Event]] = field(default_factory=list)
    history: list[tuple[str, str, float]] = field(default_factory=list)  # user, article, before-ts
    problems: list[InputProblem] = field(default_factory=list)


def event_from_record(record: dict[str, Any]) -> Event:
    """Validate one event record; raise ValueError saying what is wrong."""
    article_id = str(record.get("article_id") or "").strip()
    if not article_id:
        raise ValueError("missing required field 'article_id'")
    kind = str(record.get("type") or "").strip().lower()
    if kind not in EVENT_TYPES:
        raise ValueError(f"type must be one of {', '.join(EVENT_TYPES)}, not {record.get('type')!r}")
    reaction = str(record.get("reaction") or "").strip()
    if kind == "reaction" and not reaction:
        raise ValueError("a reaction event needs a 'reaction' name (e.g. veryGood)")
    raw_ts = record.get("ts")
    if raw_ts in (None, ""):
        raise ValueError("missing required field 'ts' (ISO 8601 or epoch seconds)")
    try:
        ts = parse_timestamp(raw_ts).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"bad ts: {exc}") from None
    raw_count = record.get("count")
    try:
        count = 1 if raw_count in (None, "") else int(raw_count)
    except (TypeError, ValueError):
        raise ValueError(f"count must be a whole number, not {raw_count!r}") from None
    if count < 1:
        raise ValueError(f"count must be >= 1, not {count}")
    return Event(
        article_id=article_id,
        type=kind,
        ts=ts,
        reaction=reaction if kind == "reaction" else "",
        user_id=str(record.get("user_id") or "").strip(),
        count=count,
        event_id=str(record.get("event_id") or "").strip(),
    )


def detect_event_format(path: Path) -> str:
    """The event reader for a file, from its extension (the same mapping as article files)."""
    fmt = detect_format(path)
    if fmt not in EVENT_FORMATS:
        raise RecsysError(f"{path}: not an event file; pass --format with one of: {', '.join(EVENT_FORMATS)}")
    return fmt


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise RecsysError(f"{path}: no such file")
    return path.read_bytes().decode("utf-8", errors="surrogateescape").splitlines()


@dataclass(frozen=True)
class Impression:
    """One MIND behaviors row: what a user was shown at a time, what they clicked, what they had read."""

    impression_id: str
    user_id: str
    ts: float
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    clicked: tuple[bool, ...]


def read_impressions(path: Path, problems: list[InputProblem] | None = None) -> list[Impression]:
    """Parse a MIND behaviors.tsv; bad rows go to ``problems`` (file:line: reason) and are skipped."""
    found: list[Impression] = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        cells = line.split("\t")
        problem = None
        if len(cells) != 5:
            problem = f"MIND behaviors rows have 5 columns, not {len(cells)}"
        else:
            impression_id, user_id, when, history, shown = cells
            try:
                ts = datetime.strptime(when.strip(), MIND_TIME).replace(tzinfo=UTC).timestamp()  # MIND gives no zone
            except ValueError:
                problem = f"bad time {when!r} (expected {MIND_TIME})"
            pairs = [item.rpartition("-") for item in shown.split()] if problem is None else []
            if problem is None and (not pairs or any(not n or label not in ("0", "1") for n, _, label in pairs)):
                problem = "impressions must look like N123-1 N456-0"
        if problem is not None:
            if problems is not None:
                problems.append(InputProblem(str(path), number, problem))
            continue
        found.append(
            Impression(
                impression_id,
                user_id,
                ts,
                tuple(history.split()),
                tuple(n for n, _, _ in pairs),
                tuple(label == "1" for _, _, label in pairs),
            )
        )
    return found


def impression_events(impression: Impression) -> list[tuple[str, Event]]:
    """The keyed impression and click events of one behaviors row."""
    events = []
    for news_id, clicked in zip(impression.candidates, impression.clicked, strict=True):
        key = f"mind:{impression.impression_id}:{news_id}"
        events.append((key + ":imp", Event(news_id, "impression", impression.ts, user_id=impression.user_id)))
        if clicked:
            events.append((key + ":click", Event(news_id, "click", impression.ts, user_id=impression.user_id)))
    return events


def _mind_rows(path: Path, batch: EventBatch) -> None:
    for impression in read_impressions(path, batch.problems):
        batch.events.extend(impression_events(impression))
        # History is oldest first with no times: keep its order by spacing reads a second apart before the row's time.
        n = len(impression.history)
        batch.history.extend(
            (impression.user_id, news_id, impression.ts - (n - i)) for i, news_id in enumerate(impression.history)
        )


def read_events(paths: Iterable[str | Path], fmt: str | None = None) -> EventBatch:
    """Read event files into keyed events (see module docstring for the keys)."""
    batch = EventBatch()
    for raw in paths:
        path = Path(raw)
        kind = fmt or detect_event_format(path)
        if kind not in EVENT_FORMATS:
            raise RecsysError(f"unknown event format {kind!r}; use one of {', '.join(EVENT_FORMATS)}")
        if kind == "mind":
            _mind_rows(path, batch)
            continue
        seen: Counter[str] = Counter()
        records = iter_jsonl(path) if kind == "jsonl" else iter_csv(path, ("article_id", "type", "ts"))
        for number, item in records:
            if isinstance(item, str) or has_bad_bytes(item):
                reason = item if isinstance(item, str) else "invalid UTF-8 in this record; re-save the file as UTF-8"
                batch.problems.append(InputProblem(str(path), number, reason))
                continue
            try:
                event = event_from_record(item)
            except ValueError as exc:
                batch.problems.append(InputProblem(str(path), number, str(exc)))
                continue
            base = event.fingerprint()
            batch.events.append((event.fingerprint(seen[base]), event))
            seen[base] += 1
    return batch


@dataclass(frozen=True)
class IngestReport:
    read: int
    stored: int
    duplicates: int
    history: int
    problems: list[InputProblem]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "problems": [str(p) for p in self.problems]}


class EventStore:
    """The events database of one index directory. Writers and readers may run at once (WAL)."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / EVENTS_FILE
        self._connections = PerThreadConnection(self._open)
        self._write_lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def exists(self) -> bool:
        return self.path.is_file()

    def add(self, events: Sequence[tuple[str, Event]], history: Sequence[tuple[str, str, float]] = ()) -> int:
        """Store keyed events (a key seen before is skipped) and history; returns how many were new."""
        with self._write_lock:
            conn = self.conn
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO events (event_key, article_id, type, reaction, user_id, ts, count) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(key, e.article_id, e.type, e.reaction, e.user_id, e.ts, e.count) for key, e in events],
                )
                stored = conn.total_changes - before
                conn.executemany(
                    "INSERT INTO history (user_id, article_id, ts) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id, article_id) DO UPDATE SET ts = min(ts, excluded.ts)",
                    history,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return stored

    def ingest(self, paths: Iterable[str | Path], fmt: str | None = None, on_error: str = "skip") -> IngestReport:
        """Read and store event files; with on_error='fail' any bad record stores nothing."""
        batch = read_events(paths, fmt)
        if batch.problems and on_error == "fail":
            raise InputError(batch.problems)
        stored = self.add(batch.events, batch.history)
        return IngestReport(len(batch.events), stored, len(batch.events) - stored, len(batch.history), batch.problems)

    def since(
        self, seq: int, min_ts: float = -float("inf"), batch: int = 100_000
    ) -> Iterator[list[tuple[int, str, str, str, float, int]]]:
        """Events stored after sequence number ``seq`` (and at or after ``min_ts``), in batches, oldest first:
        (seq, article, type, reaction, ts, count)."""
        while True:
            rows = self.conn.execute(
                "SELECT seq, article_id, type, reaction, ts, count FROM events WHERE seq > ? AND ts >= ? "
                "ORDER BY seq LIMIT ?",
                (seq, min_ts, batch),
            ).fetchall()
            if not rows:
                return
            yield rows
            seq = rows[-1][0]

    def for_articles(self, article_ids: Sequence[str], until: float, since: float | None = None) -> list[tuple]:
        """(article, type, reaction, ts, count) of these articles with since <= ts <= until."""
        rows: list[tuple] = []
        for start in range(0, len(article_ids), 500):
            chunk = list(article_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows += self.conn.execute(
                f"SELECT article_id, type, reaction, ts, count FROM events WHERE article_id IN ({marks}) "
                "AND ts <= ? AND ts >= ?",
                [*chunk, until, -1e18 if since is None else since],
            ).fetchall()
        return rows

    def reads_of(self, user_id: str, until: float | None = None) -> list[tuple[str, float]]:
        """What a user read, newest first: views/clicks they made, then their imported history."""
        until = time.time() if until is None else until
        seen: dict[str, float] = {}
        for article_id, ts in self.conn.execute(
            "SELECT article_id, max(ts) FROM events WHERE user_id = ? AND type IN ('view', 'click') AND ts <= ? "
            "GROUP BY article_id",
            (user_id, until),
        ):
            seen[article_id] = ts
        for article_id, ts in self.conn.execute(
            "SELECT article_id, ts FROM history WHERE user_id = ? AND ts <= ?", (user_id, until)
        ):
            seen.setdefault(article_id, ts)
        return sorted(seen.items(), key=lambda item: -item[1])

    def last_event_time(self) -> float | None:
        if not self.exists():
            return None
        found = self.conn.execute("SELECT max(ts) FROM events").fetchone()
        return None if found is None or found[0] is None else float(found[0])

    def max_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def close(self) -> None:
        self._connections.close()
