"""The Ranking box's clock: how fast "popular now" forgets, chosen by how many next clicks it catches.

A site that moves by the hour needs a Ranking that counts the last hours, not a day. ``choose_clock``
replays logged impressions in time order through the Ranking box's own order (``Popularity.ranked_active``:
articles engaged within the window, by popularity at the half-life), folding each impression's events only
after its list was scored, and counts how often the box's top k held a clicked article on the held-back days.
The best half-life and window are stored as ``clock.json`` in the index (text, no pickle) with the figures of
every candidate; the Ranking box uses it, and the configured ``[popularity] ranking_half_life_hours`` /
``window_hours`` when there is none or too little data to choose.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.archive.layout import CLOCK_FILE, load_trained
from recsys.config import PopularityConfig
from recsys.signals.popularity import Popularity
from recsys.signals.records import Impression
from recsys.types import IndexStateError

CLOCK_FORMAT = 1
HALF_LIVES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 24.0)  # hours
WINDOWS = (1.0, 2.0, 6.0, 24.0)  # hours
CTR_CAPS = (0.0, 0.5)  # how far the click-through rate may move an article (0: engagement alone)
MIN_HELD_CLICKS = 200  # fewer clicked impressions on the held-back days: keep the configured clock
MAX_SCORED = 3000  # clicked impressions scored per candidate (a seeded sample beyond)


@dataclass(frozen=True)
class RankingClock:
    """The Ranking box's half-life and window (hours), and the replay figures that chose them."""

    half_life_hours: float
    window_hours: float
    ctr_cap: float = 0.5
    hit_rate: float = 0.0
    k: int = 10
    held_clicks: int = 0
    candidates: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": CLOCK_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RankingClock:
        if data.get("format") != CLOCK_FORMAT:
            raise IndexStateError(f"clock format {data.get('format')}; re-run `recsys train`")
        half_life, window = float(data["half_life_hours"]), float(data["window_hours"])
        if not (math.isfinite(half_life) and math.isfinite(window) and half_life > 0 and window > 0):
            raise IndexStateError(
                f"clock half-life {half_life} / window {window} must be positive; re-run `recsys train`"
            )
        cap = float(data.get("ctr_cap", 0.5))
        if not (math.isfinite(cap) and cap >= 0):
            raise IndexStateError(f"clock ctr_cap {cap} must be >= 0; re-run `recsys train`")
        return cls(half_life, window, cap, float(data.get("hit_rate", 0.0)), int(data.get("k", 10)),
                   int(data.get("held_clicks", 0)), list(data.get("candidates", [])))  # fmt: skip

    @classmethod
    def load(cls, root: str | Path) -> RankingClock | None:
        return load_trained(root, CLOCK_FILE, cls.from_json)


def _events(impression: Impression) -> list[tuple[str, str, str, float, int, str]]:
    """An impression's events as the store hands them to popularity: (article, type, reaction, ts, count, reader)."""
    rows = []
    for article, clicked in zip(impression.candidates, impression.clicked, strict=True):
        rows.append((article, "impression", "", impression.ts, 1, impression.user_id))
        if clicked:
            rows.append((article, "click", "", impression.ts, 1, impression.user_id))
    return rows


def choose_clock(
    impressions: Sequence[Impression],
    held_from: float,
    config: PopularityConfig,
    k: int = 10,
    seed: int = 0,
    half_lives: Sequence[float] = HALF_LIVES,
    windows: Sequence[float] = WINDOWS,
    ctr_caps: Sequence[float] = CTR_CAPS,
) -> RankingClock | None:
    """The (half-life, window) whose Ranking top ``k`` held a clicked article most often among the clicked
    impressions at or after ``held_from`` (every impression before each one folded in first). None when the
    held-back days have fewer than MIN_HELD_CLICKS clicked impressions (too little to choose)."""
    timed = sorted((i for i in impressions if math.isfinite(i.ts)), key=lambda i: (i.ts, i.impression_id))
    held = [n for n, i in enumerate(timed) if i.ts >= held_from and any(i.clicked)]
    if len(held) < MIN_HELD_CLICKS:
        return None
    if len(held) > MAX_SCORED:
        held = sorted(random.Random(seed).sample(held, MAX_SCORED))
    scored = set(held)
    views = {
        (h, c): Popularity(dataclasses.replace(config, half_life_hours=h, ranking_ctr_cap=c))
        for h in half_lives
        for c in ctr_caps
    }
    hits = {(h, c, w): 0 for h, c in views for w in windows}
    pending: list[Impression] = []
    for n, impression in enumerate(timed):
        if n in scored:
            ready = [p for p in pending if p.ts < impression.ts]
            pending = [p for p in pending if p.ts >= impression.ts]
            rows = [e for p in ready for e in _events(p)]
            clicked = {a for a, c in zip(impression.candidates, impression.clicked, strict=True) if c}
            for (h, c), view in views.items():
                view.fold(rows)
                for w in windows:
                    ids, _ = view.ranked_active(impression.ts, w * 3600.0)
                    hits[(h, c, w)] += bool(clicked.intersection(ids[:k]))
        pending.append(impression)
    table = [
        {"half_life_hours": h, "window_hours": w, "ctr_cap": c, "hit_rate": round(count / len(held), 4)}
        for (h, c, w), count in hits.items()
    ]
    # best hit rate; on a tie the slower clock (steadier lists), then the configured CTR cap
    best = max(
        table,
        key=lambda r: (r["hit_rate"], r["half_life_hours"], r["window_hours"], r["ctr_cap"] == config.ranking_ctr_cap),
    )
    return RankingClock(
        best["half_life_hours"], best["window_hours"], best["ctr_cap"], best["hit_rate"], k, len(held), table
    )
