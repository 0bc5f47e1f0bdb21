"""Live reader activity for a running Recommender: buffered event writes and up-to-date popularity."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from recsys.config import PopularityConfig
from recsys.signals.logstate import LogState
from recsys.signals.popularity import Popularity
from recsys.signals.records import Event
from recsys.signals.store.base import EventStore, EventsUnavailable

logger = logging.getLogger(__name__)
MAX_PENDING = 100_000  # events a process keeps waiting while the events store is unreachable


class EventBuffer:
    """Collects events from request handlers and writes them in batches.

    Durability: an event is in the store once ``flush_events`` are waiting, ``flush_seconds`` have passed
    since the oldest waiting one (checked on the next record), or ``flush()``/``close()`` is called
    (also at interpreter exit). A crash loses at most the waiting batch. While the store is unreachable
    the batch stays waiting (each event keeps its key, so a retry never doubles it) and is retried on the
    next flush; past MAX_PENDING waiting events ``record`` refuses with ``EventsUnavailable``.
    """

    def __init__(self, store: EventStore, config: PopularityConfig) -> None:
        self.store = store
        self.config = config
        self._pending: list[tuple[str, Event]] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        atexit.register(_flush_at_exit, weakref.ref(self))

    @staticmethod
    def key_of(event: Event) -> str:
        """The stored key: the sender's event_id, scoped to an untrusted sender (so a retried POST counts
        once, and no client can squat another's ids), else a fresh one."""
        return event.fingerprint() if event.event_id else f"api:{uuid.uuid4().hex}"

    def record(self, event: Event) -> None:
        key = self.key_of(event)
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                raise EventsUnavailable(
                    f"{len(self._pending):,} events are waiting for the events store ({self.store.description}), "
                    "which cannot be reached; this one was refused. Check the database and retry"
                )
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append((key, event))
            due = (
                len(self._pending) >= self.config.flush_events
                or time.monotonic() - self._oldest >= self.config.flush_seconds
            )
        if due:
            try:
                self.flush()
            except EventsUnavailable as exc:  # kept waiting; the caller's event is not lost
                logger.warning("%s", exc)

    def flush(self) -> int:
        """Write everything waiting; returns how many new events were stored. Raises ``EventsUnavailable``
        (keeping the events waiting) when the store cannot be reached."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        try:
            return self.store.add(pending)
        except EventsUnavailable:
            with self._lock:
                self._pending[:0] = pending
                self._oldest = time.monotonic()
            raise

    def __len__(self) -> int:
        return len(self._pending)


def _flush_at_exit(ref: weakref.ref[EventBuffer]) -> None:
    buffer = ref()
    if buffer is not None and len(buffer):
        try:
            buffer.flush()
        except EventsUnavailable as exc:
            logger.error("exiting with %d events not stored: %s", len(buffer), exc)


@dataclass(frozen=True)
class WindowCounts:
    """Raw (undecayed) counts of one article over a recent window, for human-readable reasons."""

    views: int
    reactions: dict[str, int]
    clicks: int
    impressions: int
    known: bool = True  # False when the events store could not be reached for the figures

    @property
    def reaction_total(self) -> int:
        return sum(self.reactions.values())


HORIZON_HALF_LIVES = 40
COUNTS_TTL = 10  # seconds a reason's figures may be reused


class PopularityTracker:
    """Keeps the logs' state (popularity at 24 h, 2 h, 15 min and all-time, first sightings, co-reads; features.py)
    folded up to the latest stored event, at most ``refresh_seconds`` stale."""

    def __init__(self, store: EventStore, config: PopularityConfig, as_of: float | None = None) -> None:
        self.store = store
        self.config = config
        self.max_future_seconds = store.config.max_future_seconds
        # A past moment (time travel: a query's ``now`` before the newest event): nothing later is ever folded.
        self.as_of = as_of
        self.state = LogState(config, live_coreads=True)
        self._seq = 0
        self._checked = -float("inf")
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int, int], tuple[float, WindowCounts]] = {}
        self._counts_lock = threading.Lock()
        # other clocks, (half-life in hours, CTR cap): the view and the last sequence number folded into it
        self._views: dict[tuple[float, float], tuple[Popularity, int]] = {}

    @property
    def popularity(self) -> Popularity:
        return self.state.day

    def current(self, force: bool = False) -> Popularity:
        """The 24 h popularity, brought up to date."""
        return self.current_state(force).day

    def current_state(self, force: bool = False) -> LogState:
        """Everything the logs say, brought up to date (the learned ranker's features read it)."""
        now = time.monotonic()
        if (force or now - self._checked >= self.config.refresh_seconds) and self.store.exists():
            try:
                self._fold_new(now)
            except EventsUnavailable as exc:  # lists keep the popularity folded so far
                logger.warning("popularity not refreshed: %s", exc)
                self._checked = now
        return self.state

    def _fold_new(self, now: float) -> None:
        """Fold every event stored since the last fold into the state and into each clock's view."""
        with self._lock:
            latest = self._latest()
            self._seq = self._fold_since(self._seq, self.popularity.half_life, latest, self.state.fold)
            for key, (view, seq) in list(self._views.items()):
                self._views[key] = (view, self._fold_since(seq, view.half_life, latest, view.fold))
            self._checked = now

    def _latest(self) -> float:
        """The newest event time folded: the past moment, or now plus the allowed skew (events stamped later than
        the clock allows, stored before that was refused, never count)."""
        return self.as_of if self.as_of is not None else time.time() + self.max_future_seconds

    def _fold_since(self, seq: int, half_life: float, latest: float, fold: Callable[[list], Any]) -> int:
        """Hand ``fold`` every event stored after ``seq`` (a first fold starts 40 half-lives before the newest
        event: older ones weigh < 1e-12); returns the last sequence number folded."""
        min_ts = -float("inf")
        if seq == 0:
            newest = self.store.last_event_time(latest)
            min_ts = -float("inf") if newest is None else newest - HORIZON_HALF_LIVES * half_life
        for last_seq, rows in self.store.since(seq, min_ts, latest):
            fold(rows)
            seq = last_seq
        return seq

    def view(self, half_life_hours: float, ctr_cap: float | None = None) -> Popularity:
        """Popularity at another clock (the Ranking box's: a half-life, and how far the CTR may move an
        article), brought up to date: the state's own views where they match, else one folded from the store
        on first use and kept current."""
        state = self.current_state()
        cap = self.config.ranking_ctr_cap if ctr_cap is None else ctr_cap
        if cap == self.config.ranking_ctr_cap:
            for popularity in (state.day, state.hours, state.minutes):
                if abs(popularity.half_life - half_life_hours * 3600.0) < 1e-6:
                    return popularity
        key = (half_life_hours, cap)
        found = self._views.get(key)
        if found is None:
            with self._lock:
                found = self._views.get(key)
                if found is None:
                    view = Popularity(replace(self.config, half_life_hours=half_life_hours, ranking_ctr_cap=cap))
                    latest = self._latest()
                    try:
                        seq = self._fold_since(0, view.half_life, latest, view.fold) if self.store.exists() else 0
                    except EventsUnavailable as exc:
                        logger.warning("popularity at %g h not folded: %s", half_life_hours, exc)
                        seq = 0
                    found = self._views[key] = (view, seq)
        return found[0]

    def window_counts(self, article_ids: Sequence[str], since: float, until: float) -> dict[str, WindowCounts]:
        """Views, reactions by name, clicks and impressions per article in [since, until], counted like
        popularity counts them: each reader once per kind (and reaction name), anonymous events capped.

        The figures are display text for reasons, and counting a hot article's day of events takes SQLite
        milliseconds, so each article's figures are kept for COUNTS_TTL seconds per window (a reason may
        lag that far behind the events; the order of the list never does).
        """
        key_window = (round(since), round(until) // COUNTS_TTL)
        now = time.monotonic()
        found: dict[str, WindowCounts] = {}
        missing = []
        with self._counts_lock:
            for article_id in dict.fromkeys(article_ids):
                cached = self._counts.get((article_id, *key_window))
                if cached is not None and now - cached[0] < COUNTS_TTL:
                    found[article_id] = cached[1]
                else:
                    missing.append(article_id)
        if missing:
            try:
                fresh = self._count(missing, since, until)
            except EventsUnavailable as exc:
                logger.warning("reasons without live counts: %s", exc)
                return {a: found.get(a, WindowCounts(0, {}, 0, 0, known=False)) for a in article_ids}
            with self._counts_lock:
                if len(self._counts) > 50_000:
                    self._counts.clear()
                for article_id, counts in fresh.items():
                    self._counts[(article_id, *key_window)] = (now, counts)
            found.update(fresh)
        return {a: found[a] for a in article_ids}

    def forget_counts(self) -> None:
        """Drop cached figures (after this process recorded events itself, so its own reasons are current)."""
        with self._counts_lock:
            self._counts.clear()

    def _count(self, article_ids: Sequence[str], since: float, until: float) -> dict[str, WindowCounts]:
        views: Counter[str] = Counter()
        clicks: Counter[str] = Counter()
        impressions: Counter[str] = Counter()
        reactions: dict[str, Counter[str]] = defaultdict(Counter)
        names = self.config.reaction_weights
        if self.store.exists():
            found = self.store.counts_for(article_ids, since, until, self.config.anonymous_count_cap)
            for article_id, kind, reaction, count in found:
                if kind == "view":
                    views[article_id] += count
                elif kind == "click":
                    clicks[article_id] += count
                elif kind == "reaction":
                    if reaction in names or self.config.unknown_reaction_weight:  # reasons quote what counts
                        reactions[article_id][reaction] += count
                else:
                    impressions[article_id] += count
        return {
            a: WindowCounts(views[a], dict(reactions[a].most_common()), clicks[a], impressions[a]) for a in article_ids
        }
