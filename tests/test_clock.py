"""The Ranking clock: chosen by how many held-back next clicks the box's own order catches, stored as text,
used by the Ranking box, and the configured one when there is too little to choose from."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from recsys.archive.layout import CLOCK_FILE
from recsys.config import PopularityConfig, Settings
from recsys.learning.clock import MIN_HELD_CLICKS, RankingClock, choose_clock, choose_order
from recsys.learning.features import FEATURES
from recsys.learning.pools import ArticleLookup
from recsys.learning.ranker import LearnedRanker
from recsys.service import Recommender
from recsys.signals.records import Impression
from recsys.types import IndexStateError
from tests.conftest import art

HOUR = 3600.0


def hourly_news(hours: int, per_hour: int = 20, seed: int = 0, start: float = 1_790_000_000.0) -> list[Impression]:
    """Each hour a new story is what everyone clicks; yesterday's big story keeps a trickle of clicks."""
    rng = random.Random(seed)
    rows = []
    for h in range(hours):
        hot = f"h{h}"
        for n in range(per_hour):
            ts = start + h * HOUR + n * (HOUR / per_hour)
            shown = [hot, "evergreen", *rng.sample([f"h{j}" for j in range(max(0, h - 30), h)] or ["x"], 1)]
            clicked = (True, rng.random() < 0.3, False)
            rows.append(Impression(f"{h}-{n}", f"u{rng.randrange(500)}", ts, (), tuple(shown), clicked))
    return rows


def test_a_site_that_moves_by_the_hour_gets_a_short_clock():
    rows = hourly_news(72)
    held_from = rows[0].ts + 48 * HOUR
    clock = choose_clock(rows, held_from, PopularityConfig(), k=1)
    assert clock is not None and clock.held_clicks >= MIN_HELD_CLICKS
    assert clock.half_life_hours <= 2
    day = next(r for r in clock.candidates if r["half_life_hours"] == 24 and r["window_hours"] == 24)
    assert clock.hit_rate > day["hit_rate"] + 0.2  # a day's clock keeps listing "evergreen" first
    again = RankingClock.from_json(json.loads(json.dumps(clock.to_json())))
    assert again == clock


def test_too_little_held_back_data_keeps_the_configured_clock():
    rows = hourly_news(10, per_hour=5)
    assert choose_clock(rows, rows[0].ts + 9 * HOUR, PopularityConfig()) is None


def test_the_ranking_box_follows_the_stored_clock(make_indexer, tmp_path):
    make_indexer().add_articles([art("old", "big story yesterday"), art("new", "what happened this hour")])
    root = tmp_path / "index"
    now = time.time()
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    with Recommender.open(root, settings) as rec:
        rec.record_events(
            [{"article_id": "old", "type": "click", "user_id": f"r{i}", "ts": now - 20 * HOUR} for i in range(30)]
            + [{"article_id": "new", "type": "click", "user_id": f"r{i}", "ts": now - 600} for i in range(5)],
            durable=True,
        )
        assert [h.id for h in rec.ranking(2, now=now)] == ["old", "new"]  # a day's clock: 30 readers beat 5
        (root / CLOCK_FILE).write_text(json.dumps(RankingClock(1.0, 6.0).to_json()))
        time.sleep(0.01)
    with Recommender.open(root, settings) as rec:
        assert [h.id for h in rec.ranking(1, now=now)] == ["new"]  # an hour's clock, a 6 h window
        assert "6 h" in rec.ranking(1, now=now)[0].reason


@pytest.mark.parametrize("text", ['{"format": 1, "half_life_hours": -1, "window_hours": 2}', "{broken"])
def test_a_damaged_clock_is_ignored_and_reported(make_indexer, tmp_path, text):
    make_indexer().add_articles([art("a", "story")])
    root = tmp_path / "index"
    (root / CLOCK_FILE).write_text(text)
    with Recommender.open(root, Settings()) as rec:
        rec.ranking(3)
        assert CLOCK_FILE in rec.problems()["ignored_files"]


def _box_model(feature: str, sign: float) -> LearnedRanker:
    """A ranker whose box model learned that readers click what scores high (sign 1) or low (-1) on ``feature``."""
    rng = np.random.default_rng(0)
    known = FEATURES.index("impressions_15m") + 1  # a site that names no readers: what they were shown is unknown
    x = np.full((4000, len(FEATURES)), np.nan)
    x[:, :known] = rng.normal(size=(4000, known))
    groups = np.repeat(np.arange(400), 10)
    labels = (sign * x[:, FEATURES.index(feature)] + rng.normal(0, 0.3, 4000) > 1.0).astype(np.int8)
    half = groups < 200
    part = {"min_data_in_leaf": 20}
    model = LearnedRanker.fit((x[half], labels[half], groups[half]), (x[~half], labels[~half], groups[~half]), part)
    return model.with_box(model.model_text)


def _lookup(rows: list[Impression]) -> ArticleLookup:
    return ArticleLookup({a: n for n, a in enumerate(sorted({c for i in rows for c in i.candidates}))}, np.zeros(0))


def test_the_leaders_are_ordered_by_the_model_that_caught_the_most_held_back_clicks():
    rows = hourly_news(72)
    held_from = rows[0].ts + 48 * HOUR
    day = RankingClock(24.0, 24.0, k=1)  # a day's clock lists "evergreen" first; this hour's story is what is clicked
    rising = choose_order(rows, held_from, day, _box_model("clicks_15m", 1.0), _lookup(rows), PopularityConfig())
    fading = choose_order(rows, held_from, day, _box_model("clicks_15m", -1.0), _lookup(rows), PopularityConfig())
    up, down = rising.clock.order_hit_rates, fading.clock.order_hit_rates
    assert set(up) == set(down) == {"clock", "box_model", "ranking_model"}
    assert up["clock"] == down["clock"]  # the same impressions, the same clock
    assert up["box_model"] > up["clock"] + 0.2 and down["box_model"] < down["clock"]  # each box model judged
    # the Ranking model, fitted on the leaders of the days before, learned this site whatever the box model did
    for found in (rising, fading):
        rates = found.clock.order_hit_rates
        assert found.clock.order == "ranking_model" and rates["ranking_model"] >= max(rates.values())
        assert found.ranking_text is not None and found.rounds >= 1
    again = RankingClock.from_json(json.loads(json.dumps(fading.clock.to_json())))
    assert again == fading.clock


def test_with_too_few_impressions_for_a_ranking_model_the_better_of_the_clock_and_the_box_model_orders():
    rows = hourly_news(72, per_hour=6)  # 288 clicked impressions before the held-back day: no Ranking model
    held_from = rows[0].ts + 48 * HOUR
    day = RankingClock(24.0, 24.0, k=1)
    for sign, order in ((1.0, "box_model"), (-1.0, "clock")):
        found = choose_order(rows, held_from, day, _box_model("clicks_15m", sign), _lookup(rows), PopularityConfig())
        assert found.clock.order == order and set(found.clock.order_hit_rates) == {"clock", "box_model"}
        assert found.ranking_text is None
    assert choose_order(rows, held_from, day, None, _lookup(rows), PopularityConfig()).clock == day  # no ranker


def test_a_clock_from_before_the_order_was_judged_keeps_the_box_models_order_and_a_bad_order_is_refused():
    old = {"format": 1, "half_life_hours": 1, "window_hours": 6}
    assert RankingClock.from_json(old).order == "box_model"
    with pytest.raises(IndexStateError, match="order"):
        RankingClock.from_json({**old, "order": "editor"})
