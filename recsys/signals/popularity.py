"""Popularity from reader events: time-decayed reads and reactions, and a shrunk click-through rate.

For article a at time t, with every event e of a at or before t decayed by
``d(e) = 0.5 ** ((t - ts_e) / half_life)``::

    reads(a)       = sum of count * d over views (page views)
    reactions(a)   = sum of weight(reaction) * count * d     (weights per reaction name, may be < 0)
    volume(a)      = max(0, reads + reaction_gain * reactions)
    ctr(a)         = (clicks_d + m * p0) / (impressions_d + m)  (Bayesian shrinkage toward prior p0;
                                                                clicks on list items, impressions of them)
    popularity(a)  = log(1 + volume) + ctr_weight * log(ctr / p0)

Why this shape:

- ``log(1 + volume)``: attention has diminishing returns; 600 reads is not 200 times 3 reads.
- The CTR term only moves an article whose impressions are known; with none, ``ctr = p0`` and the
  term is 0. The prior (p0 = 4%, m = 10 pseudo-impressions) pulls 3 clicks out of 3 impressions
  to 26%, so they cannot beat 600 out of 1,000 (59%). ``ctr_weight = 2``: doubling the CTR is worth
  as much as four times the reads.
- Clicks feed the CTR, not the reads: a click on a list item is followed by a page view, so a site
  logging both would count the read twice. A site logging only impressions and clicks (MIND) is
  ranked by its decayed, shrunk CTR, the strongest signal in the MIND replay.
- Reactions add to volume with the site's own weights: "veryGood" counts double, "angry" subtracts.
- Readers, not requests: one reader's views (clicks, impressions, reactions of one name) of one
  article count once per ``distinct_reader_hours``; an event without a reader counts at most
  ``anonymous_count_cap``. A script reloading a page, or a client posting ``count: 1000000``, is
  one reader (the HTTP service counts an untrusted client as one reader whatever ids it sends).
- Every score is finite by construction: decay factors are bounded and the result is clipped, so
  no input time can turn a list's scores into NaN or infinity.
- Exponential decay makes "now" an O(new events) update: each article keeps its sums anchored
  at a fixed time and is rescaled on read, so the same code serves live ranking and an honest
  replay that folds events in time order and scores only with what came before.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.config import PopularityConfig

CHANNELS = ("reads", "reactions", "impressions", "clicks")
_READS, _REACTIONS, _IMPRESSIONS, _CLICKS = range(4)
_REANCHOR = 400.0  # half-lives between anchor moves (2**400 is far from float overflow)
_MAX_EXPONENT = 900.0  # decay factors stay within 2**±900, far from overflow
SCORE_LIMIT = 1e6  # |popularity| never exceeds this (real scores are < 50)


@dataclass(frozen=True)
class PopularityScore:
    """Popularity and the decayed figures behind it, for one article at one time."""

    article_id: str
    score: float
    reads: float
    reactions: float
    impressions: float
    clicks: float
    ctr: float | None  # shrunk CTR, None when no impressions are known


@dataclass(frozen=True)
class FoldBatch:
    """Events made ready to add: article rows, channels, counted amounts (after reader dedup), times."""

    rows: np.ndarray
    channel: np.ndarray
    amount: np.ndarray
    ts: np.ndarray


class Popularity:
    """Decayed per-article sums that events are folded into, readable at any later time."""

    def __init__(self, config: PopularityConfig) -> None:
        self.config = config
        self.half_life = config.half_life_hours * 3600.0
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self._sums = np.zeros((0, len(CHANNELS)), dtype=np.float64)
        # newest engagement (view, click or reaction; impressions alone do not count) per article
        self.last_engaged = np.zeros(0, dtype=np.float64)
        self.anchor: float | None = None
        self.reader_window = config.distinct_reader_hours * 3600.0
        self._counted: dict[tuple[int, int, str, str], float] = {}  # (row, channel, reaction, reader) -> ts
        self._prune_at = 200_000

    def __len__(self) -> int:
        return len(self.ids)

    def reaction_weight(self, name: str) -> float:
        return self.config.reaction_weights.get(name, self.config.unknown_reaction_weight)

    def _rows(self, article_ids: Sequence[str]) -> np.ndarray:
        rows = np.empty(len(article_ids), dtype=np.int64)
        for i, article_id in enumerate(article_ids):
            row = self.index.get(article_id)
            if row is None:
                row = self.index[article_id] = len(self.ids)
                self.ids.append(article_id)
            rows[i] = row
        self._grow()
        return rows

    def _grow(self) -> None:
        if len(self.ids) > self._sums.shape[0]:
            grow = max(len(self.ids), 2 * self._sums.shape[0], 1024)
            self._sums = np.vstack([self._sums, np.zeros((grow - self._sums.shape[0], len(CHANNELS)))])
            self.last_engaged = np.concatenate([self.last_engaged, np.full(grow - self.last_engaged.shape[0], -np.inf)])

    def follow(self, leader: Popularity) -> None:
        """Share ``leader``'s article rows: this view then adds the batches the leader prepares (the same events
        counted the same way, at another half-life) without keeping reader memory of its own."""
        self.index, self.ids = leader.index, leader.ids

    def fold(self, rows: Iterable[Sequence[Any]]) -> int:
        """Add events given as (article_id, type, reaction, ts, count[, reader]); returns how many were folded.

        A reader's repeat of the same kind of event on the same article within ``distinct_reader_hours``
        adds nothing; events without a reader add ``min(count, anonymous_count_cap)``.
        """
        batch = self.prepare(rows)
        if batch is not None:
            self.add(batch)
        return 0 if batch is None else int(batch.ts.size)

    def prepare(self, rows: Iterable[Sequence[Any]]) -> FoldBatch | None:
        """Rows, channels and counted amounts of events (the reader dedup happens here), ready to ``add``."""
        items = [r for r in rows if math.isfinite(r[3])]
        if not items:
            return None
        rows_idx = self._rows([r[0] for r in items])
        ts = np.fromiter((r[3] for r in items), dtype=np.float64, count=len(items))
        channel = np.empty(len(items), dtype=np.int64)
        amount = np.empty(len(items), dtype=np.float64)
        cap = float(self.config.anonymous_count_cap)
        window = self.reader_window
        counted = self._counted
        for i, item in enumerate(items):
            kind, reaction, when = item[1], item[2], item[3]
            reader = item[5] if len(item) > 5 else ""
            if kind == "view":
                channel[i] = _READS
            elif kind == "click":
                channel[i] = _CLICKS
            elif kind == "reaction":
                channel[i] = _REACTIONS
            else:
                channel[i] = _IMPRESSIONS
            if reader:
                key = (int(rows_idx[i]), int(channel[i]), reaction if kind == "reaction" else "", reader)
                last = counted.get(key)
                if last is not None and abs(when - last) < window:
                    amount[i] = 0.0
                    continue
                counted[key] = when
                amount[i] = 1.0
            else:
                amount[i] = min(float(item[4]), cap)
            if kind == "reaction":
                amount[i] *= self.reaction_weight(reaction)
        if len(counted) > self._prune_at:
            horizon = float(ts.max()) - window
            self._counted = {k: v for k, v in counted.items() if v >= horizon}
            self._prune_at = max(200_000, 2 * len(self._counted))
        return FoldBatch(rows_idx, channel, amount, ts)

    def add(self, batch: FoldBatch) -> None:
        """Add prepared events (from this view's ``prepare``, or its leader's: see ``follow``)."""
        self._grow()
        rows_idx, channel, amount, ts = batch.rows, batch.channel, batch.amount, batch.ts
        newest = float(ts.max())
        if self.anchor is None:
            self.anchor = newest
        elif (newest - self.anchor) / self.half_life > _REANCHOR:
            self._sums *= np.exp2(max(-_MAX_EXPONENT, (self.anchor - newest) / self.half_life))
            self.anchor = newest
        weight = np.exp2(np.clip((ts - self.anchor) / self.half_life, -_MAX_EXPONENT, _MAX_EXPONENT))
        np.add.at(self._sums, (rows_idx, channel), amount * weight)
        engaged = (channel != _IMPRESSIONS) & (amount != 0)
        np.maximum.at(self.last_engaged, rows_idx[engaged], ts[engaged])

    def decayed(self, at: float, rows: np.ndarray | None = None) -> np.ndarray:
        """Decayed sums (n, 4) at time ``at``: reads, weighted reactions, impressions, clicks."""
        sums = self._sums[: len(self.ids)] if rows is None else self._sums[rows]
        if self.anchor is None:
            return np.zeros_like(sums)
        exponent = float(np.clip((self.anchor - at) / self.half_life, -_MAX_EXPONENT, _MAX_EXPONENT))
        return sums * np.exp2(exponent)

    def score_decayed(self, sums: np.ndarray) -> np.ndarray:
        """The popularity formula (module docstring) over rows of decayed sums."""
        config = self.config
        volume = np.maximum(0.0, sums[:, _READS] + config.reaction_gain * sums[:, _REACTIONS])
        ctr = shrunk_ctr(sums, config)
        return _finite(np.log1p(volume) + config.ctr_weight * np.log(ctr / config.ctr_prior))

    def ranking_decayed(self, sums: np.ndarray) -> np.ndarray:
        """The Ranking box's order: engagement first (views, clicks, weighted reactions of distinct
        readers), moved by the CTR at most ``ranking_ctr_cap`` either way (see PopularityConfig)."""
        config = self.config
        engagement = np.maximum(0.0, sums[:, _READS] + sums[:, _CLICKS] + config.reaction_gain * sums[:, _REACTIONS])
        ctr = shrunk_ctr(sums, config)
        cap = config.ranking_ctr_cap
        return _finite(np.log1p(engagement) + np.clip(config.ctr_weight * np.log(ctr / config.ctr_prior), -cap, cap))

    def sums_of(self, article_ids: Sequence[str], at: float) -> np.ndarray:
        """Decayed sums (n, 4) at ``at`` of these ids, in CHANNELS order; zeros for an id with no events."""
        rows = np.fromiter(map(self.index.get, article_ids, itertools.repeat(-1)), np.int64, count=len(article_ids))
        out = np.zeros((rows.size, len(CHANNELS)))
        known = rows >= 0
        if known.any():
            out[known] = self.decayed(at, rows[known])
        return out

    def scores(self, article_ids: Sequence[str], at: float, ranking: bool = False) -> np.ndarray:
        """Popularity of each id at ``at`` (0 for ids with no events); ``ranking``: the Ranking box's order."""
        out = np.zeros(len(article_ids), dtype=np.float64)
        found = np.fromiter(map(self.index.get, article_ids, itertools.repeat(-1)), np.int64, count=len(article_ids))
        where = np.flatnonzero(found >= 0)
        if where.size:
            sums = self.decayed(at, found[where])
            out[where] = self.ranking_decayed(sums) if ranking else self.score_decayed(sums)
        return out

    def ranked_active(self, at: float, window: float) -> tuple[list[str], np.ndarray]:
        """The Ranking box's candidates at ``at``: articles engaged within ``window`` seconds before it, with
        their Ranking order's scores, best first (the box filters them; the clock search scores them)."""
        engaged = self.last_engaged[: len(self)]
        active = np.flatnonzero((engaged >= at - window) & (engaged <= at))
        if not active.size:
            return [], np.zeros(0)
        scores = self.ranking_decayed(self.decayed(at, active))
        order = np.argsort(-scores, kind="stable")
        return [self.ids[i] for i in active[order]], scores[order]

    def explain(self, article_id: str, at: float) -> PopularityScore:
        row = self.index.get(article_id)
        sums = np.zeros((1, len(CHANNELS))) if row is None else self.decayed(at, np.array([row]))
        reads, reactions, impressions, clicks = (float(v) for v in sums[0])
        config = self.config
        ctr = None
        if impressions > 0:
            ctr = float(shrunk_ctr(sums, config)[0])
        return PopularityScore(
            article_id, float(self.score_decayed(sums)[0]), reads, reactions, impressions, clicks, ctr
        )


def shrunk_ctr(sums: np.ndarray, config: PopularityConfig) -> np.ndarray:
    """Clicks over impressions per row of decayed sums, shrunk toward ``ctr_prior`` with the weight of
    ``ctr_prior_strength`` impressions (the prior itself where no impression is known)."""
    return (sums[:, _CLICKS] + config.ctr_prior_strength * config.ctr_prior) / (
        sums[:, _IMPRESSIONS] + config.ctr_prior_strength
    )


def _finite(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(scores, nan=0.0, posinf=SCORE_LIMIT, neginf=-SCORE_LIMIT), -SCORE_LIMIT, SCORE_LIMIT)


def squash(scores: np.ndarray, scale: float) -> np.ndarray:
    """Popularity mapped to (-1, 1) as p / (|p| + scale), for blending into list scores.

    Signed on purpose: an article shown often and rarely clicked (p < 0) is nudged down, one with no
    events (p = 0) is left alone.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return scores / (np.abs(scores) + scale)
