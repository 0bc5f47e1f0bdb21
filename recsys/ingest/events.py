"""Readers of event files: JSON Lines, CSV and MIND ``behaviors.tsv`` -> ``Event`` / ``Impression`` records.

Every event has a key: its ``event_id`` when the source gives
one, else a fingerprint of its content and its occurrence number among identical records of the
same file, so ingesting a file twice counts nothing twice while two identical real events in one
file both count.

MIND ``behaviors.tsv`` rows become one ``impression`` per shown candidate and one ``click`` per
clicked candidate, at the row's time, keyed by impression id; the row's history becomes the user's
reading history (reads before that time, exact times unknown, so never counted as views).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.config import EventsConfig
from recsys.ingest.text import (
    bad_text_reason,
    detect_format,
    iter_csv,
    iter_jsonl,
    parse_timestamp,
    record_lines,
)
from recsys.signals.records import EVENT_TYPES, Event, EventBatch, Impression, impression_events
from recsys.types import InputProblem, RecsysError

EVENT_FORMATS = ("jsonl", "csv", "mind")
MAX_POSITION = 1000  # a served list is at most this long (recsys/lists/base.py MAX_K)
MIND_TIME = "%m/%d/%Y %I:%M:%S %p"


def _string(record: dict[str, Any], name: str, limit: int = 512) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and name in ("article_id", "user_id", "event_id"):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, not {type(value).__name__}")
    value = value.strip()
    if "\x00" in value:
        raise ValueError(f"field {name!r} contains a NUL character")
    if len(value) > limit:
        raise ValueError(f"field {name!r} is {len(value):,} characters; at most {limit} are accepted")
    return value


def _count(raw: Any, limit: int, name: str = "count") -> int:
    """A whole number in 1..limit. JSON numbers like 2.9, 1e19 or Infinity and non-numeric text are refused."""
    if raw is None or raw == "":
        return 1
    if isinstance(raw, bool):
        raise ValueError(f"{name} must be a whole number, not {raw!r}")
    if isinstance(raw, float):
        if not math.isfinite(raw) or not raw.is_integer():
            raise ValueError(f"{name} must be a whole number, not {raw!r}")
        raw = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise ValueError(f"{name} must be a whole number from 1 to {limit:,}, not {raw[:24]!r}")
        raw = int(text)
    elif not isinstance(raw, int):
        raise ValueError(f"{name} must be a whole number, not {type(raw).__name__}")
    if not 1 <= raw <= limit:
        raise ValueError(f"{name} must be from 1 to {limit:,}, not {raw}")
    return raw


def event_from_record(
    record: dict[str, Any], config: EventsConfig | None = None, now: float | None = None, source: str = ""
) -> Event:
    """Validate one event record; raise ValueError saying what is wrong.

    Times must lie between ``[events] earliest_year`` and ``now + max_future_seconds``: an event
    from the future would outweigh every real one under exponential decay, and it is never a
    real reading.
    """
    config = config or EventsConfig()
    problem = bad_text_reason(record)
    if problem:
        raise ValueError(problem)
    article_id = _string(record, "article_id")
    if not article_id:
        raise ValueError("missing required field 'article_id'")
    kind = _string(record, "type").lower()
    if kind not in EVENT_TYPES:
        raise ValueError(f"type must be one of {', '.join(EVENT_TYPES)}, not {record.get('type')!r}")
    reaction = _string(record, "reaction", 64)
    if kind == "reaction" and not reaction:
        raise ValueError("a reaction event needs a 'reaction' name (e.g. veryGood)")
    raw_ts = record.get("ts")
    if raw_ts in (None, ""):
        raise ValueError("missing required field 'ts' (ISO 8601 or epoch seconds)")
    try:
        ts = parse_timestamp(raw_ts).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"bad ts: {exc}") from None
    latest = (time.time() if now is None else now) + config.max_future_seconds
    if not math.isfinite(ts) or ts > latest:
        raise ValueError(
            f"ts {raw_ts!r} is in the future (more than {config.max_future_seconds:g} s ahead of the clock); "
            "check the sender's clock and time zone"
        )
    earliest = datetime(config.earliest_year, 1, 1, tzinfo=UTC).timestamp()
    if ts < earliest:
        raise ValueError(f"ts {raw_ts!r} is before {config.earliest_year}; events that old are not counted")
    list_id = _string(record, "list_id", 64)
    position = 0 if record.get("position") in (None, "") else _count(record.get("position"), MAX_POSITION, "position")
    if position and not list_id:
        raise ValueError("'position' needs the 'list_id' of the list it is a position in (from the served hits)")
    if list_id and kind != "click":
        raise ValueError(f"only a click names a served list ('list_id'), not a {kind}")
    return Event(
        article_id=article_id,
        type=kind,
        ts=ts,
        reaction=reaction if kind == "reaction" else "",
        user_id=_string(record, "user_id", 256),
        count=_count(record.get("count"), config.max_count),
        event_id=_string(record, "event_id", 256),
        source=source,
        list_id=list_id,
        position=position,
    )


def detect_event_format(path: Path) -> str:
    """The event reader for a file, from its extension (the same mapping as article files)."""
    fmt = detect_format(path)
    if fmt not in EVENT_FORMATS:
        raise RecsysError(f"{path}: not an event file; pass --format with one of: {', '.join(EVENT_FORMATS)}")
    return fmt


def read_impressions(path: Path, problems: list[InputProblem] | None = None) -> list[Impression]:
    """Parse a MIND behaviors.tsv; bad rows go to ``problems`` (file:line: reason) and are skipped."""
    return list(iter_impressions(path, problems))


def iter_impressions(path: Path, problems: list[InputProblem] | None = None) -> Iterator[Impression]:
    """The rows of a MIND behaviors.tsv one at a time (memory: one row), bad ones to ``problems``."""
    for number, line, unreadable in record_lines(path):
        if unreadable is not None:
            if problems is not None:
                problems.append(InputProblem(str(path), number, unreadable))
            continue
        cells = line.split("\t")
        problem = bad_text_reason(line)
        if problem is None and "\x00" in line:
            problem = "NUL character in this row"
        if problem is not None:
            pass
        elif len(cells) != 5:
            problem = f"MIND behaviors rows have 5 columns, not {len(cells)}"
        else:
            impression_id, user_id, when, history, shown = cells
            ts = float("nan")  # MIND rows without a time (e.g. mind-dev-titles) are kept, unordered
            if when.strip():
                try:
                    ts = datetime.strptime(when.strip(), MIND_TIME).replace(tzinfo=UTC).timestamp()  # MIND: no zone
                except ValueError:
                    problem = f"bad time {when!r} (expected {MIND_TIME}, or empty)"
            pairs = [item.rpartition("-") for item in shown.split()] if problem is None else []
            if problem is None and (not pairs or any(not n or label not in ("0", "1") for n, _, label in pairs)):
                problem = "impressions must look like N123-1 N456-0"
        if problem is not None:
            if problems is not None:
                problems.append(InputProblem(str(path), number, problem))
            continue
        yield Impression(
            impression_id,
            user_id,
            ts,
            tuple(history.split()),
            tuple(n for n, _, _ in pairs),
            tuple(label == "1" for _, _, label in pairs),
        )


def _mind_rows(path: Path, problems: list[InputProblem]) -> Iterator[EventBatch]:
    """One batch per impression row: its impression and click events and the reader's history."""
    for impression in iter_impressions(path, problems):
        if not math.isfinite(impression.ts):
            problems.append(
                InputProblem(str(path), 0, f"impression {impression.impression_id} has no time; not stored as events")
            )
            continue
        # History is oldest first with no times: keep its order by spacing reads a second apart before the
        # row's time.
        n = len(impression.history)
        history = [
            (impression.user_id, news_id, impression.ts - (n - i)) for i, news_id in enumerate(impression.history)
        ]
        yield EventBatch(impression_events(impression), history)


def _record_rows(
    path: Path, kind: str, config: EventsConfig | None, now: float, problems: list[InputProblem]
) -> Iterator[EventBatch]:
    """Keyed events of a JSON Lines or CSV event file, one at a time."""
    # Identical records in one file are distinct events, told apart by their occurrence: the one structure that
    # grows with the file (8-byte keys, about 110 bytes an event without an event_id; nothing for those with one).
    seen: Counter[int] = Counter()
    records = iter_jsonl(path) if kind == "jsonl" else iter_csv(path, ("article_id", "type", "ts"))
    for number, item in records:
        if isinstance(item, str):
            problems.append(InputProblem(str(path), number, item))
            continue
        try:
            event = event_from_record(item, config, now)
        except ValueError as exc:
            problems.append(InputProblem(str(path), number, str(exc)))
            continue
        if event.event_id:
            yield EventBatch([(event.fingerprint(), event)])
            continue
        base = int(event.fingerprint()[3:19], 16)
        yield EventBatch([(event.fingerprint(seen[base]), event)])
        seen[base] += 1


def iter_event_batches(
    paths: Iterable[str | Path], fmt: str | None = None, config: EventsConfig | None = None, size: int = 50_000
) -> Iterator[EventBatch]:
    """Event files read as a stream, in batches of about ``size`` keyed events (with the history entries
    and problems found while reading them): memory is one batch, whatever the size of the files."""
    now = time.time()
    batch = EventBatch()
    problems: list[InputProblem] = []  # the readers report here; each batch takes what was found meanwhile
    for raw in paths:
        path = Path(raw)
        kind = fmt or detect_event_format(path)
        if kind not in EVENT_FORMATS:
            raise RecsysError(f"unknown event format {kind!r}; use one of {', '.join(EVENT_FORMATS)}")
        rows = _mind_rows(path, problems) if kind == "mind" else _record_rows(path, kind, config, now, problems)
        for row in rows:
            batch.events.extend(row.events)
            batch.history.extend(row.history)
            if len(batch.events) >= size:
                batch.problems, problems[:] = list(problems), []
                yield batch
                batch = EventBatch()
    batch.problems = list(problems)
    if batch.events or batch.history or batch.problems:
        yield batch


def read_events(paths: Iterable[str | Path], fmt: str | None = None, config: EventsConfig | None = None) -> EventBatch:
    """Read event files into keyed events (see module docstring for the keys), all at once."""
    whole = EventBatch()
    for batch in iter_event_batches(paths, fmt, config):
        whole.events.extend(batch.events)
        whole.history.extend(batch.history)
        whole.problems.extend(batch.problems)
    return whole
