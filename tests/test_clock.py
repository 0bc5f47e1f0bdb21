"""The Ranking clock: chosen by how many held-back next clicks the box's own order catches, stored as text,
used by the Ranking box, and the configured one when there is too little to choose from."""

from __future__ import annotations

import json
import random
import time

import pytest

from recsys.archive.layout import CLOCK_FILE
from recsys.config import PopularityConfig, Settings
from recsys.learning.clock import MIN_HELD_CLICKS, RankingClock, choose_clock
from recsys.service import Recommender
from recsys.signals.records import Impression
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
