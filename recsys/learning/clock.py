"""The Ranking box's clock: how fast "popular now" forgets, chosen by how many next clicks it catches.

A site that moves by the hour needs a Ranking that counts the last hours, not a day. ``choose_clock``
replays logged impressions in time order through the Ranking box's own order (``Popularity.ranked_active``:
articles engaged within the window, by popularity at the half-life), folding each impression's events only
after its list was scored, and counts how often the box's top k held a clicked article on the held-back days.
The best half-life and window are stored as ``clock.json`` in the index (text, no pickle) with the figures of
every candidate; the Ranking box uses it, and the configured ``[popularity] ranking_half_life_hours`` /
``window_hours`` when there is none or too little data to choose.

With a trained ranker the Ranking box may re-order the clock's first ``LEARNED_POOL`` leaders by a model's score
for a reader nobody knows: the box model's (Recommendation's), or the Ranking model's, fitted on the Ranking's own
task (which of the leaders at a logged moment readers clicked). Which order serves is judged the same way
(``choose_order``): the held-back days replayed through each, every model fitted before them; the order that
caught the most next clicks is stored in ``clock.json`` as ``order`` (a tie keeps the simpler: the clock's lists
are steadier and its reason is its counts), a chosen Ranking model in ``ranker.json`` beside the others.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive.layout import CLOCK_FILE, load_trained
from recsys.config import PopularityConfig
from recsys.learning.features import FEATURES, NOBODY, candidate_features
from recsys.learning.pools import ArticleLookup
from recsys.learning.ranker import LearnedRanker
from recsys.learning.training import MIN_IMPRESSIONS, VALID_SHARE
from recsys.signals.logstate import LogState
from recsys.signals.popularity import Popularity
from recsys.signals.records import Impression
from recsys.types import IndexStateError

CLOCK_FORMAT = 1
HALF_LIVES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 24.0)  # hours
WINDOWS = (1.0, 2.0, 6.0, 24.0)  # hours
CTR_CAPS = (0.0, 0.5)  # how far the click-through rate may move an article (0: engagement alone)
MIN_HELD_CLICKS = 200  # fewer clicked impressions on the held-back days: keep the configured clock
MAX_SCORED = 3000  # clicked impressions scored per candidate (a seeded sample beyond)
LEARNED_POOL = 60  # the clock's leaders a trained box model may re-order (the hot set a box competes within)
MAX_FITTED = 20_000  # clicked impressions before the held-back days the Ranking model learns from (a seeded sample)
# How the Ranking box orders its leaders: the clock's popularity, the box model (Recommendation's), or the Ranking
# model (fitted on the leaders themselves); a tie goes to the earlier, simpler one.
ORDERS = ("clock", "box_model", "ranking_model")


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
    # which of ORDERS orders the leaders; a clock.json written before the order was judged has none and keeps
    # what the box did then ("box_model": re-ordered by a trained box model)
    order: str = "box_model"
    order_hit_rates: dict[str, float] = field(default_factory=dict)  # per order, on the held-back days

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
        order = data.get("order", "box_model")
        if order not in ORDERS:
            raise IndexStateError(f"clock order {order!r} is not one of {', '.join(ORDERS)}; re-run `recsys train`")
        rates = data.get("order_hit_rates", {})
        if not isinstance(rates, dict):
            raise IndexStateError("clock order_hit_rates must be an object; re-run `recsys train`")
        return cls(half_life, window, cap, float(data.get("hit_rate", 0.0)), int(data.get("k", 10)),
                   int(data.get("held_clicks", 0)), list(data.get("candidates", [])), order,
                   {str(k): float(v) for k, v in rates.items()})  # fmt: skip

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
    timed, held = _held_back(impressions, held_from, seed)
    if len(held) < MIN_HELD_CLICKS:
        return None
    scored = set(held)
    views = {
        (h, c): Popularity(dataclasses.replace(config, half_life_hours=h, ranking_ctr_cap=c))
        for h in half_lives
        for c in ctr_caps
    }
    hits = {(h, c, w): 0 for h, c in views for w in windows}
    for _, impression, ready in _moments(timed, scored):
        rows = [e for p in ready for e in _events(p)]
        clicked = {a for a, c in zip(impression.candidates, impression.clicked, strict=True) if c}
        for (h, c), view in views.items():
            view.fold(rows)
            for w in windows:
                ids, _ = view.ranked_active(impression.ts, w * 3600.0)
                hits[(h, c, w)] += bool(clicked.intersection(ids[:k]))
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


def _moments(timed: Sequence[Impression], wanted: set[int]) -> Iterator[tuple[int, Impression, list[Impression]]]:
    """Each wanted position of ``timed`` with its impression and the impressions to fold in before it is scored:
    every earlier one not folded yet (those of its own second wait: no list sees its own second's clicks)."""
    pending: list[Impression] = []
    for n, impression in enumerate(timed):
        if n in wanted:
            ready = [p for p in pending if p.ts < impression.ts]
            pending = [p for p in pending if p.ts >= impression.ts]
            yield n, impression, ready
        pending.append(impression)


def _held_back(impressions: Sequence[Impression], held_from: float, seed: int) -> tuple[list[Impression], list[int]]:
    """The timed impressions in time order, and the positions of the clicked ones at or after ``held_from`` that
    are scored (all of them, or a seeded sample of MAX_SCORED): the same ones for every order judged."""
    timed = sorted((i for i in impressions if math.isfinite(i.ts)), key=lambda i: (i.ts, i.impression_id))
    held = [n for n, i in enumerate(timed) if i.ts >= held_from and any(i.clicked)]
    if len(held) > MAX_SCORED:
        held = sorted(random.Random(seed).sample(held, MAX_SCORED))
    return timed, held


def _leaders(
    timed: Sequence[Impression], wanted: set[int], clock: RankingClock, lookup: ArticleLookup, config: PopularityConfig
) -> dict[int, Leaders]:
    """Per wanted position of ``timed``: the Ranking box's leaders at that impression's moment (the clock's first
    ``LEARNED_POOL`` among the indexed articles, best first), their features with no reader known (what the
    served box scores) and which of them the reader clicked; every impression before it folded in first."""
    state = LogState(config)  # what the features read, folded as the Ranking's view is
    view = Popularity(dataclasses.replace(config, half_life_hours=clock.half_life_hours, ranking_ctr_cap=clock.ctr_cap))
    found: dict[int, Leaders] = {}
    for n, impression, ready in _moments(timed, wanted):
        rows = [e for p in ready for e in _events(p)]
        view.fold(rows)
        state.fold(rows)
        for p in ready:
            state.saw(p.candidates, p.ts)
            state.saw(p.history, p.ts)
        ids, _ = view.ranked_active(impression.ts, clock.window_hours * 3600.0)
        head = [a for a in ids if a in lookup.rows][: max(LEARNED_POOL, clock.k)]
        clicked = {a for a, c in zip(impression.candidates, impression.clicked, strict=True) if c}
        published = np.array([lookup.published.get(a, np.nan) for a in head], dtype=np.float64)
        features = candidate_features(
            head, state, impression.ts, NOBODY, np.full((len(head), 2), np.nan),
            [lookup.category(a) for a in head], published,
        )  # fmt: skip
        found[n] = Leaders(features, np.array([a in clicked for a in head], dtype=np.int8))
    return found


@dataclass(frozen=True)
class Leaders:
    """The Ranking box's leaders at one logged moment, best first by the clock: features and clicks."""

    features: np.ndarray
    clicked: np.ndarray  # int8, 1 where the reader clicked it


@dataclass(frozen=True)
class OrderChoice:
    """What ``choose_order`` found: the clock with its ``order``, and the Ranking model to store (when chosen)."""

    clock: RankingClock
    ranking_text: str | None = None  # refitted on every day with the validated rounds
    rounds: int = 0


def _hit_rate(moments: Sequence[Leaders], k: int, scorer: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """Share of the moments whose top ``k`` (the clock's, or ``scorer``'s order of the leaders) held a click."""
    hits = 0
    for leaders in moments:
        top = np.arange(min(k, leaders.clicked.size))
        if scorer is not None and leaders.clicked.size > 1:
            top = np.argsort(-scorer(leaders.features), kind="stable")[:k]
        hits += bool(leaders.clicked[top].any())
    return round(hits / max(1, len(moments)), 4)


def _part(moments: Sequence[Leaders]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The moments with a click and a non-click among the leaders, as a LambdaRank training part."""
    useful = [m for m in moments if 0 < int(m.clicked.sum()) < m.clicked.size]
    if not useful:
        return np.zeros((0, len(FEATURES))), np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int64)
    groups = np.repeat(np.arange(len(useful)), [m.clicked.size for m in useful])
    return np.vstack([m.features for m in useful]), np.concatenate([m.clicked for m in useful]), groups


def choose_order(
    impressions: Sequence[Impression],
    held_from: float,
    clock: RankingClock,
    ranker: LearnedRanker | None,
    lookup: ArticleLookup,
    config: PopularityConfig,
    seed: int = 0,
) -> OrderChoice:
    """How the Ranking box orders the clock's leaders, chosen by the held-back clicked impressions (the ones
    ``choose_clock`` scored) replayed in time order: the clock's order, ``ranker``'s box model's, or the Ranking
    model's: LambdaRank fitted on the same task at up to ``MAX_FITTED`` clicked impressions before ``held_from``
    (the leaders then, no reader known, labelled by the clicks), early-stopped on the latest ``VALID_SHARE`` of
    them. ``ranker`` must be fitted before ``held_from`` too (the validated fit, not the refit), so every figure
    is a held-back one. The best hit rate wins, a tie the simpler order (the clock, then the box model); a
    chosen Ranking model is refitted on every day with the validated rounds. Without a ranker the clock's
    order serves whatever is stored: ``clock`` comes back unchanged."""
    if ranker is None:
        return OrderChoice(clock)
    timed, held = _held_back(impressions, held_from, seed)
    before = [n for n, i in enumerate(timed) if i.ts < held_from and any(i.clicked)]
    if len(before) > MAX_FITTED:
        before = sorted(random.Random(seed).sample(before, MAX_FITTED))
    moments = _leaders(timed, {*held, *before}, clock, lookup, config)
    fitted, judged = [moments[n] for n in before], [moments[n] for n in held]
    rates = {"clock": _hit_rate(judged, clock.k)}
    if ranker.box_text is not None:
        rates["box_model"] = _hit_rate(judged, clock.k, ranker.score_box)
    cut = int(len(fitted) * (1.0 - VALID_SHARE))
    train_part, valid_part = _part(fitted[:cut]), _part(fitted[cut:])
    model = None
    if np.unique(train_part[2]).size >= MIN_IMPRESSIONS and np.unique(valid_part[2]).size >= MIN_HELD_CLICKS // 4:
        model = LearnedRanker.fit(train_part, valid_part)
        rates["ranking_model"] = _hit_rate(judged, clock.k, model.score)
    order = max(rates, key=lambda o: (rates[o], -ORDERS.index(o)))
    chosen = dataclasses.replace(clock, order=order, order_hit_rates=rates)
    if order != "ranking_model" or model is None:
        return OrderChoice(chosen)
    rounds = int(model.meta["rounds"])
    return OrderChoice(chosen, LearnedRanker.fit(_part([*fitted, *judged]), None, rounds=rounds).model_text, rounds)
