"""What the logs said up to a moment, folded in time order: the one source of behavioural features.

``LogState`` keeps popularity at a day's, two hours' and a quarter hour's half-life and all-time (sharing one
row per article), the time each article was first seen, co-reads, and what each reader was shown and read
(``ReaderMemory``). ``recsys.learning.features`` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from recsys.config import PopularityConfig
from recsys.signals.coreads import CoReads
from recsys.signals.popularity import Popularity
from recsys.signals.readers import READS_PER_READER, ReaderMemory


class LogState:
    """What the logs said up to now, folded in time order: the one source of behavioural features."""

    def __init__(self, config: PopularityConfig, coreads: CoReads | None = None, live_coreads: bool = False) -> None:
        """``live_coreads``: every view or click folded also feeds the co-reads (a serving process, whose
        "readers also read" then follows the events as they arrive; offline training adds reads itself)."""
        self.day = Popularity(config)
        self.hours = Popularity(replace(config, half_life_hours=2.0))
        self.minutes = Popularity(replace(config, half_life_hours=0.25))
        self.ever = Popularity(replace(config, half_life_hours=1e9))
        for view in (self.hours, self.minutes, self.ever):
            view.follow(self.day)  # one reader memory and one row per article for every view
        self.config = config
        self.first_seen: dict[str, float] = {}
        self.seen_order: list[str] = []  # articles in the order the logs first mentioned them (newest last)
        self.coreads = coreads if coreads is not None else CoReads()
        self.live_coreads = live_coreads
        # a serving process takes a reader's reads from the events store (``reads_of``); only a replay needs them here
        self.readers = ReaderMemory(reads_per_reader=0 if live_coreads else READS_PER_READER)
        self.generation = 0  # bumped by every fold or sighting: answers derived from the state key on it

    def fold(self, events: Iterable[Sequence]) -> None:
        """Events as (article, type, reaction, ts, count[, reader]), as stored. The popularity views are
        always folded together, so an article has the same row in each (candidate_features relies on it)."""
        rows = [e for e in events if math.isfinite(e[3])]
        batch = self.day.prepare(rows)
        if batch is None:
            return
        self.generation += 1
        for popularity in (self.day, self.hours, self.minutes, self.ever):
            popularity.add(batch)
        for row in rows:
            seen = self.first_seen.get(row[0])
            if seen is None:
                self.seen_order.append(row[0])
            if seen is None or row[3] < seen:
                self.first_seen[row[0]] = row[3]
            if len(row) > 5 and row[5]:
                self.readers.add(row[5], row[0], row[1], row[3])
                if self.live_coreads and row[1] in ("view", "click"):
                    self.coreads.add_reads(row[5], [(row[0], row[3])])

    def saw(self, article_ids: Iterable[str], ts: float) -> None:
        """Articles the logs mention at ``ts`` (shown, or in a history): their first sighting if earlier."""
        if not math.isfinite(ts):
            return
        for article in article_ids:
            if article not in self.first_seen:
                self.first_seen[article] = ts
                self.seen_order.append(article)
                self.generation += 1
