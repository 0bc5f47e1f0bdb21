"""What a served box could have shown at a logged impression's moment: the candidate pools training learns from.

A box chooses from the whole live catalogue; the site's logged list is only what it happened to show. For each
clicked impression, training adds a pool (``pool_candidates``) built from what was known then: the hottest of the
last hours, what the logs saw last, co-reads of the reader's last reads, the content search's nearest to the
reader's interests (``ContentMatch``), and a uniform draw from everything the logs had seen (``draw_seen``).
Imports features/signals only; recsys/learning/training.py builds datasets from these.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.config import RecommendConfig
from recsys.learning.features import content_columns
from recsys.signals.logstate import LogState
from recsys.signals.profile import build_interests
from recsys.signals.records import Impression


@dataclass
class ArticleLookup:
    """What the index knows of the logged articles: vector rows, categories, publication times."""

    rows: Mapping[str, int]
    vectors: np.ndarray  # the index's unit vectors (memory-mapped is fine)
    categories: Mapping[str, str] = field(default_factory=dict)
    published: Mapping[str, float] = field(default_factory=dict)

    def category(self, article: str) -> str:
        return self.categories.get(article, "")


class ContentMatch:
    """Best and mean cosine of candidates to a reader's reads (interests as in recsys/signals/profile.py),
    per history."""

    def __init__(self, lookup: ArticleLookup, config: RecommendConfig) -> None:
        self.lookup = lookup
        self.config = config
        self._cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray] | None] = {}
        self._nearest: dict[tuple[int, tuple[str, ...]], list[str]] = {}
        self._ids: list[str] = []  # the lookup's articles and their vectors, copied on the first search
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    def profile(self, history: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
        """(interest centroids, last reads' vectors) of a history given newest first, or None if none is known."""
        if history in self._cache:
            return self._cache[history]
        rows = [self.lookup.rows[h] for h in history if h in self.lookup.rows][: self.config.history_limit]
        found = None
        if rows:
            vectors = np.asarray(self.lookup.vectors[rows], dtype=np.float32)
            interests = build_interests(vectors, self.config)
            found = (np.stack([i.vector for i in interests]), vectors[:5])
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[history] = found
        return found

    def nearest(self, history: tuple[str, ...], n: int) -> list[str]:
        """The ``n`` logged articles nearest to the reader's interests (what a served box's content search
        finds), best first; remembered per history (a reader's history repeats across their impressions)."""
        key = (n, history)
        if key in self._nearest:
            return self._nearest[key]
        profile = self.profile(history)
        found: list[str] = []
        if profile is not None:
            if not self._ids:
                rows = np.fromiter(self.lookup.rows.values(), dtype=np.int64, count=len(self.lookup.rows))
                self._ids = list(self.lookup.rows)
                self._matrix = np.asarray(self.lookup.vectors[rows], dtype=np.float32)
            sims = (self._matrix @ profile[0].T).max(axis=1)
            want = min(n + len(history), sims.size)
            best = np.argpartition(-sims, want - 1)[:want] if want < sims.size else np.arange(sims.size)
            best = best[np.argsort(-sims[best], kind="stable")]
            read = set(history)
            found = [a for a in (self._ids[i] for i in best.tolist()) if a not in read][:n]
        if len(self._nearest) > 50_000:
            self._nearest.clear()
        self._nearest[key] = found
        return found

    def __call__(self, history: tuple[str, ...], candidates: Sequence[str]) -> np.ndarray:
        out = np.full((len(candidates), 2), np.nan)
        profile = self.profile(history)
        known = [i for i, c in enumerate(candidates) if c in self.lookup.rows]
        if profile is None or not known:
            return out
        vectors = np.asarray(self.lookup.vectors[[self.lookup.rows[candidates[i]] for i in known]], dtype=np.float32)
        out[known] = content_columns(vectors, *profile)
        return out


# The pool a served box draws from besides the site's own list, as known at the impression's time: what is
# hot now, what the logs saw last, what readers of the reader's last reads read next, what is nearest to the
# reader's interests (old articles nobody is shown any more are most of a content search's finds: a model
# that never saw them as candidates cannot tell them from what the site shows now).
POOL_HOT = 50
POOL_NEWEST = 30
POOL_COREAD = 20
POOL_CONTENT = 25
POOL_RANDOM = 30  # drawn uniformly from everything the logs had seen: yesterday's articles are most of a catalogue
POOL_HOT_WINDOW = 6 * 3600.0


def draw_seen(state: LogState, rng: random.Random, n: int, exclude: set[str]) -> list[str]:
    """Up to ``n`` articles drawn uniformly from every article the logs had seen by now, none of ``exclude``: a
    fair sample of the catalogue (yesterday's articles, last week's), which a served pool holds too (a content
    search finds mostly old articles): a model that never saw them as candidates cannot tell them from news."""
    seen = state.seen_order
    picks = rng.sample(range(len(seen)), min(len(seen), n + len(exclude))) if seen else []
    return [a for a in (seen[i] for i in picks) if a not in exclude][:n]


def pool_candidates(
    state: LogState,
    impression: Impression,
    exclude: set[str],
    nearest: Sequence[str] = (),
    drawn: Sequence[str] = (),
    reads: Sequence[str] | None = None,
) -> list[str]:
    """Articles a served list could show at the impression's time, none of ``exclude``: from the logs up to then
    only (hot, newest, co-reads of the reader's last ``reads``, newest first: by default the row's history), the
    content search's ``nearest``, and ``drawn`` (``draw_seen``) in full."""
    at = impression.ts
    hot, _ = state.hours.ranked_active(at, POOL_HOT_WINDOW)
    newest = list(reversed(state.seen_order[-3 * POOL_NEWEST :]))
    last = list(reversed(impression.history[-3:])) if reads is None else list(reads[:3])
    coread = [o for read in last for o, _ in state.coreads.neighbours(read, at, POOL_COREAD)]
    out: dict[str, None] = {}
    sources = ((hot, POOL_HOT), (newest, POOL_NEWEST), (coread, POOL_COREAD), (nearest, POOL_CONTENT))
    for source, limit in (*sources, (drawn, len(drawn))):
        taken = 0
        for article in source:
            if taken >= limit:
                break
            if article not in exclude and article not in out:
                out[article] = None
                taken += 1
    return list(out)
