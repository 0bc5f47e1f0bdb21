"""Ranking, Recommendation and the page, on hand-made articles and events."""

import time

import numpy as np
import pytest

from recsys.config import Settings
from recsys.service import Recommender
from recsys.signals.store import open_event_store
from tests.conftest import art, write_jsonl

NOW = "2026-11-25T12:00:00Z"


def articles():
    football = [
        art(
            f"fb{i}",
            f"football match report {i}",
            f"football goal striker league derby {i}",
            published_at=f"2026-11-{10 + i}T10:00:00Z",
            category="sport",
        )
        for i in range(6)
    ]
    elections = [
        art(
            f"el{i}",
            f"election vote count {i}",
            f"election ballot vote parliament candidate {i}",
            published_at=f"2026-11-{10 + i}T10:00:00Z",
            category="politics",
        )
        for i in range(6)
    ]
    other = [
        art(
            f"ck{i}",
            f"cooking recipe {i}",
            f"recipe oven bake flour sugar {i}",
            published_at=f"2026-11-{10 + i}T10:00:00Z",
            category="food",
        )
        for i in range(4)
    ]
    return football + elections + other


@pytest.fixture
def index(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    return tmp_path / "index"


def views(tmp_path, counts, ts="2026-11-25T09:00:00Z", reaction=None):
    records = []
    for article_id, n in counts.items():
        records.append({"article_id": article_id, "type": "view", "ts": ts, "count": n})
        if reaction:
            records.append({"article_id": article_id, "type": "reaction", "reaction": reaction, "ts": ts})
    return write_jsonl(tmp_path / f"ev-{len(list(tmp_path.glob('ev-*')))}.jsonl", records)


def ids(hits):
    return [h.id for h in hits]


def test_ranking_orders_by_popularity_and_quotes_figures(index, tmp_path):
    open_event_store(index).ingest([views(tmp_path, {"fb1": 1204, "el2": 300, "ck0": 5}, reaction="veryGood")])
    rec = Recommender.open(index)
    hits = rec.ranking(3, now=NOW)
    assert ids(hits) == ["fb1", "el2", "ck0"]
    assert hits[0].reason == "1,204 views and 1 reaction in the last 24 h"
    assert hits[0].metadata["views"] == 1204 and hits[0].metadata["reactions"] == {"veryGood": 1}
    assert ids(rec.ranking(3, category="politics", now=NOW))[0] == "el2"


def test_ranking_window_and_cold_start_fall_back_to_newest(index, tmp_path):
    open_event_store(index).ingest([views(tmp_path, {"fb1": 50}, ts="2026-11-20T09:00:00Z")])
    rec = Recommender.open(index)
    hits = rec.ranking(2, now=NOW)  # fb1's views are five days old: outside the 24 h window
    assert ids(hits) == ["fb5", "el5"] or ids(hits) == ["el5", "fb5"]
    assert hits[0].reason == "latest in the archive: published 10 days ago"  # older than a week: never "new"
    assert ids(rec.ranking(1, window_hours=24 * 7, now=NOW)) == ["fb1"]


def test_record_view_and_reaction_reach_the_lists(index):
    rec = Recommender.open(index, Settings().replace("popularity", refresh_seconds=0.0))
    for _ in range(3):
        rec.record_view("ck2", user_id="u9", ts=NOW)
    rec.record_reaction("ck2", "veryGood", ts=NOW)
    rec.flush()
    assert ids(rec.ranking(1, now=NOW)) == ["ck2"]
    assert rec.reaction_counts("ck2") == {"veryGood": 1}
    assert "ck2" not in ids(rec.recommend(user_id="u9", k=5, now=NOW))  # read articles are excluded
    with pytest.raises(Exception, match="needs a name"):
        rec.record_reaction("ck2", "")


def test_popularity_as_of_a_past_time_ignores_later_events(index, tmp_path):
    open_event_store(index).ingest([views(tmp_path, {"fb1": 10}, ts="2026-11-20T00:00:00Z")])
    open_event_store(index).ingest([views(tmp_path, {"fb1": 1000}, ts="2026-11-24T00:00:00Z")])
    rec = Recommender.open(index)
    before = rec.popularity("fb1", at="2026-11-21T00:00:00Z")
    assert before.reads == pytest.approx(5.0)  # 10 views, one half-life earlier
    assert rec.popularity("fb1", at="2026-11-24T00:00:00Z").reads == pytest.approx(1000 + 10 / 16)


def test_multi_interest_history_gets_both_interests(index):
    rec = Recommender.open(index)
    history = ["fb0", "fb1", "fb2", "fb3", "el0"]  # mostly football, one election read (the newest)
    hits = rec.recommend(history, k=4, now=NOW)
    found = ids(hits)
    assert any(i.startswith("fb") for i in found) and any(i.startswith("el") for i in found)
    assert not set(found) & set(history)
    assert all(h.reason.startswith("because you read") for h in hits)
    election = next(h for h in hits if h.id.startswith("el"))
    assert election.reason == 'because you read "election vote count 0"'


def test_unknown_or_empty_history_gives_ranking(index, tmp_path):
    open_event_store(index).ingest([views(tmp_path, {"el3": 99})])
    rec = Recommender.open(index)
    assert ids(rec.recommend(["not-indexed"], k=1, now=NOW)) == ["el3"]
    assert ids(rec.recommend(None, user_id="nobody", k=1, now=NOW)) == ["el3"]


def test_page_lists_are_disjoint_and_skip_the_current_article(index, tmp_path):
    open_event_store(index).ingest([views(tmp_path, {"fb0": 500, "fb1": 400, "el0": 300, "ck1": 10})])
    rec = Recommender.open(index)
    page = rec.page("fb0", ["el1", "fb2"], k_related=4, k_ranking=4, k_recommend=4, now=NOW)
    lists = [ids(page.related), ids(page.ranking), ids(page.recommendation)]
    everything = [i for found in lists for i in found]
    assert all(len(found) == 4 for found in lists)
    assert "fb0" not in everything
    assert len(everything) == len(set(everything))


def test_takedown_removes_an_article_from_every_list(make_indexer, index, tmp_path):
    open_event_store(index).ingest([views(tmp_path, {"fb1": 5000})])
    rec = Recommender.open(index)
    assert "fb1" in ids(rec.ranking(3, now=NOW))
    make_indexer().remove(["fb1"])
    page = rec.page("fb0", ["fb2"], k_related=10, k_ranking=10, k_recommend=10, now=NOW)
    for found in (page.related, page.ranking, page.recommendation, rec.related("fb2", 20, now=NOW)):
        assert "fb1" not in ids(found)


def test_new_article_is_listed_before_any_view(make_indexer, index):
    rec = Recommender.open(index)
    make_indexer().add_articles(
        [
            art(
                "fresh",
                "football match report 6",
                "football goal striker league derby 6",
                published_at="2026-11-25T11:00:00Z",
                category="sport",
            )
        ]
    )
    assert "fresh" in ids(rec.related("fb0", 3, now=NOW))
    assert "fresh" in ids(rec.recommend(["fb0", "fb1"], k=3, now=NOW))
    assert "fresh" in ids(rec.ranking(3, now=NOW))  # newest fills an empty Ranking


def test_ranking_reason_wording():
    from recsys.lists.ranking import ranking_reason
    from recsys.signals.activity import WindowCounts

    assert ranking_reason(WindowCounts(1204, {"veryGood": 90, "sad": 6}, 0, 0), 24) == (
        "1,204 views and 96 reactions in the last 24 h"
    )
    assert ranking_reason(WindowCounts(0, {}, 35, 900), 24) == "35 clicks from 900 impressions in the last 24 h"
    assert ranking_reason(WindowCounts(1, {}, 0, 0), 72) == "1 view in the last 3 days"


def test_interests_by_hand():

    from recsys.config import RecommendConfig
    from recsys.signals.profile import build_interests

    football, election, other = np.eye(3, dtype=np.float32)
    history = np.stack([election, football, football, football, other])  # newest first
    config = RecommendConfig(history_half_life_reads=1.0, interest_similarity=0.5, max_interests=2)
    interests = build_interests(history, config)
    # weights 1, 1/2, 1/4, 1/8, 1/16: election 1, football 7/8, other 1/16; "other" is the lightest of three
    # interests and, orthogonal to both, merges into the first one found (election)
    assert [i.members for i in interests] == [(0, 4), (1, 2, 3)]
    total = 1 + 1 / 2 + 1 / 4 + 1 / 8 + 1 / 16
    assert [i.share for i in interests] == pytest.approx([(1 + 1 / 16) / total, (7 / 8) / total])
    assert interests[1].vector == pytest.approx(football)
    assert build_interests(np.zeros((0, 3), dtype=np.float32), config) == []


def test_live_popularity_skips_events_too_old_to_matter(tmp_path):
    from recsys.config import PopularityConfig
    from recsys.signals.activity import PopularityTracker
    from recsys.signals.records import Event

    store = open_event_store(tmp_path)
    day = 86_400.0
    newest = float(int(time.time()) - 3600)
    store.add([("old", Event("a", "view", newest - 60 * day)), ("new", Event("b", "view", newest))])
    tracker = PopularityTracker(store, PopularityConfig(half_life_hours=24, refresh_seconds=0))
    popularity = tracker.current()
    assert popularity.ids == ["b"]  # 60 half-lives back: beyond the 40 that are folded at start-up
    store.add([("late", Event("a", "view", newest - 1 * day))])
    assert tracker.current().scores(["a"], newest)[0] > 0  # later events are folded whatever their age


def test_impressions_alone_do_not_make_an_article_popular(index, tmp_path):
    shown = [{"article_id": "ck1", "type": "impression", "ts": "2026-11-25T09:00:00Z", "count": 50}]
    clicked = [
        {"article_id": "el1", "type": "impression", "ts": "2026-11-25T09:00:00Z", "count": 50},
        {"article_id": "el1", "type": "click", "ts": "2026-11-25T09:00:00Z", "count": 5},
    ]
    open_event_store(index).ingest([write_jsonl(tmp_path / "imp.jsonl", shown + clicked)])
    hits = Recommender.open(index).ranking(2, now=NOW)
    assert hits[0].id == "el1" and hits[0].reason == "5 clicks from 50 impressions in the last 24 h"
    assert "ck1" not in [h.id for h in hits]  # shown 50 times, never chosen: not "popular"


def _newest_by_sorting_everything(view, k, filters, banned, now_s):
    """The whole-archive computation ``newest_rows`` replaced: every allowed row's date ranked per request."""

    from recsys.archive.store import NO_TIME

    mask = view.allowed(filters)
    mask[list(banned)] = False
    published = np.asarray(view.rows["published"])
    dated = np.flatnonzero(mask & (published != NO_TIME) & (published <= now_s))
    dated = dated[np.lexsort((dated, -published[dated]))][:k]
    undated = np.flatnonzero(mask & (published == NO_TIME))[::-1][: k - dated.size]
    return np.concatenate([dated, undated]).astype(np.int64)


def test_newest_rows_walk_the_publication_order_as_ranking_every_date_would(make_indexer, tmp_path):
    """Ties, undated articles, future ones, deletions, two segments, filters and banned rows: the walk over the
    version's publication order gives the rows (and order) of ranking every allowed row's date."""
    import random

    from recsys.archive.layout import IndexLayout
    from recsys.archive.version import VersionReader
    from recsys.lists.base import newest_rows
    from recsys.types import Filters

    coin = random.Random(7)
    days = ["2026-11-20T10:00:00Z", "2026-11-21T10:00:00Z", "2026-11-21T10:00:00Z", "2026-11-30T10:00:00Z", None]
    made = [
        art(f"a{i}", f"story {i}", f"words {i}", published_at=coin.choice(days), category=coin.choice(["x", "y"]))
        for i in range(300)
    ]
    indexer = make_indexer()
    indexer.add_articles(made[:200])
    indexer.add_articles(made[200:])
    indexer.remove([f"a{i}" for i in range(0, 300, 17)])
    view = VersionReader(IndexLayout(tmp_path / "index").current())
    assert len(view.segments) >= 2
    now = time.mktime(time.strptime("2026-11-25", "%Y-%m-%d"))
    for k in (0, 1, 5, 40, 400):
        for filters in (Filters(), Filters(categories=("x",))):
            for banned in (set(), set(coin.sample(range(view.rows.shape[0]), 60))):
                got = newest_rows(view, k, filters, banned, now)
                assert got.tolist() == _newest_by_sorting_everything(view, k, filters, banned, now).tolist()
    assert newest_rows(view, 400, Filters(), set(), now).size == view.n_live - int(
        (np.asarray(view.rows["published"])[view.live] > now).sum()
    )
