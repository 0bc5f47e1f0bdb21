"""The events store: where reader events and histories live, behind one interface (``base.EventStore``).

One module per backend: ``sqlite`` (``events.sqlite`` in the index folder, the embedded default) and
``postgres`` (one database shared by many hosts). Only this package face chooses between them, so the
base class never imports its own backends. ``tests/test_events_backends.py`` is the suite every backend
passes. May import: ``recsys.types``, ``recsys.config``, ``recsys.sqlite``, ``recsys.ingest``,
``recsys.signals.records``.
"""

from __future__ import annotations

from pathlib import Path

from recsys.config import EventsConfig
from recsys.signals.store.base import EventStore, EventsUnavailable
from recsys.signals.store.postgres import PostgresEventStore
from recsys.signals.store.sqlite import SQLiteEventStore
from recsys.types import RecsysError

__all__ = ["EventStore", "EventsUnavailable", "PostgresEventStore", "SQLiteEventStore", "open_event_store"]


def open_event_store(root: str | Path, config: EventsConfig | None = None) -> EventStore:
    """The events store ``[events] url`` names: empty for ``events.sqlite`` in the index folder ``root``
    (the embedded default), or ``postgresql://user@host:port/db`` for one database shared by many hosts."""
    config = config or EventsConfig()
    url = config.url.strip()
    if not url:
        return SQLiteEventStore(root, config)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(url, config)
    raise RecsysError(
        f"unknown events store {url.split('://')[0]!r} in [events] url; use postgresql://user@host:5432/dbname, "
        "or leave it empty for events.sqlite in the index folder"
    )
