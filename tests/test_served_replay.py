"""`recsys eval served`: the replay asks the served boxes with only earlier events known, and scores them and
the naive baselines on the same clicks."""

from __future__ import annotations

import random

import pytest

from recsys.config import Settings
from recsys.evaluation.served import ClickLog, Scores, replay_served, served_boxes
from recsys.service import Recommender
from recsys.signals.records import Impression
from tests.conftest import art

START = 1_795_000_000.0  # 2026-11-18, in the past of the events store's clock


@pytest.fixture
def rec(make_indexer, tmp_path):
    make_indexer().add_articles([art(f"a{i}", f"story {i} topic{i % 4}", f"words topic{i % 4} {i}") for i in range(20)])
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    with Recommender.open(tmp_path / "index", settings) as opened:
        yield opened


def impressions(n: int, hot: str = "a3", seed: int = 1) -> list[Impression]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        others = [f"a{j}" for j in range(20) if f"a{j}" != hot]
        shown = [*rng.sample(others, 4), hot]
        clicked = tuple(a == hot or rng.random() < 0.1 for a in shown)
        history = tuple(rng.sample(others, 2))  # the hot story is nobody's earlier read
        rows.append(Impression(f"i{i}", f"u{i % 7}", START + i * 600.0, history, tuple(shown), clicked))
    return rows


def test_no_later_event_reaches_a_replayed_query(rec):
    seen: list[tuple[float, float | None, list[str]]] = []

    def watching(rec, impression, page, now, k):
        boxes = served_boxes(rec, impression, page, now, k)
        reasons = [h.reason for h in rec.ranking(k, now=now)]
        seen.append((now, rec.last_event_time(), reasons))
        return boxes

    rows = impressions(40)
    report = replay_served(rec, rows[:10], rows[10:], {"i20": "a1"}, sample=None, k=5, boxes=watching)
    assert report.sampled == 30 and len(seen) == 30
    for now, newest, _ in seen:
        assert newest is not None and newest < now  # the store holds only earlier impressions' events
    # every earlier impression's events are in: the newest stored event is the previous impression's
    assert all(abs(newest - (now - 600.0)) < 1e-6 for now, newest, _ in seen)
    assert "page" in report.boxes and report.score("page", "recsys Related").n == 1
    systems = {r["system"] for r in report.table("recommendation")}
    # asked as a site asks for a known reader, and with the history alone; and the reader-aware naive peer
    assert systems >= {"recsys", "recsys, history only (no reader id)"}
    assert "most clicked in the last 1 h, unseen by the reader" in systems
    assert "most clicked in the last 1 h, unseen by the reader" not in {r["system"] for r in report.table("ranking")}


def test_the_baselines_and_the_ranking_catch_a_story_every_reader_clicks(rec):
    rows = impressions(60)
    report = replay_served(rec, rows[:20], rows[20:], {}, sample=25, k=3, seed=0)
    assert report.sampled == 25
    table = {r["system"]: r for r in report.table("ranking")}
    assert table["most clicked in the last 1 h"]["hit@3"] == 1.0  # a3 is clicked in every impression
    assert table["recsys"]["hit@3"] >= 0.8  # the Ranking box sees the same clicks (counted once per reader a day)
    assert table["random clicked (24 h)"]["impressions"] == 25


def test_click_log_windows_forget_old_clicks():
    log = ClickLog()
    log.add(Impression("x", "u", START, (), ("a", "b"), (True, False)))
    log.add(Impression("y", "v", START + 3 * 3600, (), ("b",), (True,)))
    log.advance(START + 3 * 3600 + 1)
    assert log.most_clicked("1 h", 5, set()) == ["b"]
    assert log.most_clicked("6 h", 5, set()) == ["a", "b"] or log.most_clicked("6 h", 5, set()) == ["b", "a"]
    assert log.co_read("a", 5, set()) == []  # different readers: no co-read
    log.add(Impression("z", "u", START + 4 * 3600, (), ("c",), (True,)))
    assert log.co_read("a", 5, set()) == ["c"]
    assert log.seen_by["u"] == {"a", "b", "c"} and log.seen_by["v"] == {"b"}  # what each reader was shown


def test_the_reader_aware_peer_leaves_out_what_that_reader_was_shown_before(rec):
    rows = impressions(30)
    # the hot story is shown to everyone: the reader-aware list leaves it out for readers who were shown it
    report = replay_served(rec, rows[:10], rows[10:], {}, sample=None, k=3, seed=0)
    table = {r["system"]: r for r in report.table("recommendation")}
    assert table["most clicked in the last 1 h"]["hit@3"] == 1.0
    assert table["most clicked in the last 1 h, unseen by the reader"]["hit@3"] < 0.5


def test_scores_count_hits_reciprocal_ranks_and_ndcg():
    scores = Scores()
    scores.add(["x", "y", "z"], {"y"}, 3)
    scores.add(["x", "y", "z"], {"q"}, 3)
    row = scores.row("s", 3)
    assert row["hit@3"] == 0.5 and row["mrr"] == 0.25 and row["impressions"] == 2
    assert 0.3 < row["ndcg@3"] < 0.32  # (1 / log2(3)) / 2
