"""Features of (reader, candidate, time) for the learned ranker, from what was known before that time.

One function, ``candidate_features``, computes them for the offline replay, for ``recsys train`` and for
the service, so the score served is the score evaluated. Its inputs are a ``LogState`` (what the logs
said up to the moment: popularity at two half-lives and all-time, first sightings, co-reads) and what
the caller knows of the reader and the candidates (content similarity, categories, publication times).

Every feature is a number or NaN (unknown); NaN is what LightGBM treats as missing, never an error.
Features named ``*_rel`` are the candidate's value minus the mean over the list it is ranked in, so
the model compares candidates of one impression with each other, which is what per-impression AUC
and a served list need.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from recsys.config import PopularityConfig
from recsys.signals.coreads import CoReads
from recsys.signals.popularity import Popularity


class LogState:
    """What the logs said up to now, folded in time order: the one source of behavioural features."""

    def __init__(self, config: PopularityConfig, coreads: CoReads | None = None) -> None:
        self.day = Popularity(config)
        self.hours = Popularity(replace(config, half_life_hours=2.0))
        self.ever = Popularity(replace(config, half_life_hours=1e9))
        self.hours.follow(self.day)  # one reader memory and one row per article for all three views
        self.ever.follow(self.day)
        self.config = config
        self.first_seen: dict[str, float] = {}
        self.coreads = coreads if coreads is not None else CoReads()

    def fold(self, events: Iterable[Sequence]) -> None:
        """Events as (article, type, reaction, ts, count[, reader]), as stored. The three popularity views are
        always folded together, so an article has the same row in each (candidate_features relies on it)."""
        rows = [e for e in events if math.isfinite(e[3])]
        batch = self.day.prepare(rows)
        if batch is None:
            return
        for popularity in (self.day, self.hours, self.ever):
            popularity.add(batch)
        for row in rows:
            seen = self.first_seen.get(row[0])
            if seen is None or row[3] < seen:
                self.first_seen[row[0]] = row[3]

    def saw(self, article_ids: Iterable[str], ts: float) -> None:
        """Articles the logs mention at ``ts`` (shown, or in a history): their first sighting if earlier."""
        if not math.isfinite(ts):
            return
        for article in article_ids:
            if article not in self.first_seen:
                self.first_seen[article] = ts
