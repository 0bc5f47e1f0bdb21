"""Trained as it serves: features independent of the pool, the box model, the refit on
every day, the learned Ranking, the page's context, and the lookups that make the served path fast."""

import dataclasses
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

from recsys.archive.ann import exact_search
from recsys.archive.layout import CLOCK_FILE, write_json_atomic
from recsys.config import Settings
from recsys.feedback.report import online_report
from recsys.learning.clock import RankingClock
from recsys.learning.features import FEATURES, READER_COLUMNS, ReaderContext, candidate_features, first_sightings
from recsys.learning.pools import POOL_CONTENT, ContentMatch
from recsys.learning.ranker import RANKER_FILE, LearnedRanker
from recsys.learning.training import train
from recsys.lists import learned
from recsys.lists.base import MomentCache
from recsys.service import Recommender
from recsys.signals.coreads import CoReads
from recsys.signals.logstate import LogState
from recsys.signals.records import Event
from recsys.signals.store import open_event_store
from recsys.types import Filters, IndexStateError
from tests.conftest import art
from tests.test_learning import index, lookup_of, synthetic_log  # noqa: F401  (the fixture too)


def _state(t0: float) -> LogState:
    state = LogState(Settings().popularity)
    rng = random.Random(4)
    events = []
    for n in range(300):
        article = f"a{rng.randrange(12)}"
        ts = t0 + n * 20.0
        events.append((article, "impression", "", ts, 1, f"r{n % 40}"))
        if rng.random() < 0.3:
            events.append((article, "click", "", ts, 1, f"r{n % 40}"))
    state.fold(events)
    return state


def test_a_candidates_features_do_not_depend_on_the_candidates_beside_it():
    t0 = 1_790_000_000.0
    state = _state(t0)
    at = t0 + 300 * 20.0
    reader = ReaderContext(("a1",), {"x": 1}, 1)

    def row_of(ids: list[str]) -> np.ndarray:
        content = np.tile([0.5, 0.4], (len(ids), 1))
        published = np.full(len(ids), t0)
        return candidate_features(ids, state, at, reader, content, ["x"] * len(ids), published)[0]

    alone = row_of(["a3"])
    in_a_pool = row_of(["a3", *(f"a{i}" for i in range(12) if i != 3), "never-seen"])
    np.testing.assert_array_equal(alone, in_a_pool)  # the site's list of ten or a served pool of hundreds
    assert alone[FEATURES.index("impressions_15m")] > 0 and alone[FEATURES.index("impressions_2h")] > 0


def test_the_articles_own_columns_are_computed_once_a_moment_and_never_from_a_later_time():
    """``moment_features`` answers what ``candidate_features`` computes afresh, reuses a row only for a time at or
    after the one it was computed for, and the reader's columns are the only ones left to fill."""
    t0 = 1_790_000_000.0
    state = _state(t0)
    at = t0 + 300 * 20.0
    ids = [f"a{i}" for i in range(12)] + ["never-seen"]
    published = np.full(len(ids), np.nan)
    published[:4] = t0
    seen = first_sightings(state, ids)
    reader = ReaderContext(("a1", "a2"), {"x": 2}, 2)
    content = np.tile([0.5, 0.4], (len(ids), 1))

    def fresh(when: float) -> np.ndarray:
        return candidate_features(ids, state, when, reader, content, ["x"] * len(ids), published)

    known: dict = {}
    first = learned.moment_features(known, ids[:5], state, at, published[:5], seen[:5])
    assert set(known) == set(ids[:5])
    rows = learned.moment_features(known, ids, state, at, published, seen)
    served = candidate_features(ids, state, at, reader, content, ["x"] * len(ids), published, articles=rows)
    np.testing.assert_array_equal(served, fresh(at))
    np.testing.assert_array_equal(first, rows[:5])
    assert np.isnan(rows[:, list(READER_COLUMNS)]).all() and not np.isnan(np.delete(rows, READER_COLUMNS, 1)).all()
    # half a second later the rows of ``at`` are reused (the same moment); ten minutes earlier they are not
    later = learned.moment_features(known, ids, state, at + 0.5, published, seen)
    np.testing.assert_array_equal(later, rows)
    earlier = learned.moment_features(known, ids, state, at - 600.0, published, seen)
    assert not np.array_equal(earlier, rows)  # ten minutes earlier: other counts, computed afresh
    np.testing.assert_array_equal(
        np.delete(earlier, READER_COLUMNS, 1), np.delete(fresh(at - 600.0), READER_COLUMNS, 1)
    )


def test_the_box_score_is_the_box_models_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, len(FEATURES)))
    groups = np.repeat(np.arange(300), 10)
    lists = (x[:, FEATURES.index("clicks_2h")] + rng.normal(0, 0.5, 3000) > 1.0).astype(np.int8)
    pools = (x[:, FEATURES.index("impressions_15m")] + rng.normal(0, 0.5, 3000) > 1.0).astype(np.int8)
    half = groups < 150
    small = {"min_data_in_leaf": 20}
    click = LearnedRanker.fit((x[half], lists[half], groups[half]), (x[~half], lists[~half], groups[~half]), small)
    box = LearnedRanker.fit((x[half], pools[half], groups[half]), (x[~half], pools[~half], groups[~half]), small)
    ranker = click.with_box(box.model_text)
    np.testing.assert_array_equal(ranker.score(x), click.score(x))  # re-ordering a list: the click model
    np.testing.assert_array_equal(ranker.score_box(x), box.score(x))  # a box from the catalogue: the box model
    np.testing.assert_array_equal(click.score_box(x), click.score(x))  # no box model: the click model
    ranker.save(tmp_path)
    loaded = LearnedRanker.load(tmp_path)
    assert loaded is not None and loaded.box_text == box.model_text
    np.testing.assert_array_equal(loaded.score_box(x), ranker.score_box(x))
    np.testing.assert_array_equal(ranker.score_ranking(x), ranker.score_box(x))  # no Ranking model: the box's
    ranking = ranker.with_ranking(click.model_text)
    np.testing.assert_array_equal(ranking.score_ranking(x), click.score(x))
    assert ranking.model_id != ranker.model_id and ranking.with_box(box.model_text).ranking_text == click.model_text
    ranking.save(tmp_path)
    assert LearnedRanker.load(tmp_path) == ranking
    data = json.loads((tmp_path / RANKER_FILE).read_text())
    for name in ("box_model", "ranking_model"):
        with pytest.raises(IndexStateError, match=name):
            LearnedRanker.from_json({**data, name: 7})


def test_a_timed_log_trains_a_box_model_then_refits_on_every_day(index):  # noqa: F811
    rec = Recommender.open(index)
    settings = Settings()
    log = synthetic_log(1500)
    result = train(log, lookup_of(rec), settings.popularity, settings.recommend, test_days=1.0)
    ranker = result.ranker
    assert ranker is not None and ranker.box_text is not None and result.report["box_model"]["rounds"] >= 1
    held = result.report["held_out"]
    assert 0 <= held["pool_hit@10 (click model)"] <= 1 and 0 <= held["pool_hit@10"] <= 1
    assert "refitted on all" in result.report["refit"] and ranker.meta["held_out"] == held
    validated = train(log, lookup_of(rec), settings.popularity, settings.recommend, test_days=1.0, refit=False)
    assert validated.ranker is not None and "refit" not in validated.report
    # the same recipe on more days: the same rounds, other models (the held-back day now teaches them too)
    assert validated.ranker.meta["rounds"] == ranker.meta["rounds"]
    assert validated.ranker.model_text != ranker.model_text
    assert validated.report["held_out"] == held  # the figures are the validated fit's


def test_content_neighbours_of_a_history_are_what_training_pools_add(index):  # noqa: F811
    rec = Recommender.open(index)
    match = ContentMatch(lookup_of(rec), Settings().recommend)
    near = match.nearest(("fb1", "fb2"), POOL_CONTENT)
    assert near and "fb1" not in near and "fb2" not in near
    assert sum(a.startswith("fb") for a in near[:10]) >= 8  # nearest to a football reader: football
    assert match.nearest((), POOL_CONTENT) == []  # no known reads, no content search


def _served(index_path) -> Recommender:
    """The index with models trained on the synthetic log, and that log's events ingested."""
    rec = Recommender.open(index_path)
    settings = Settings()
    result = train(synthetic_log(1500), lookup_of(rec), settings.popularity, settings.recommend, test_days=1.0)
    assert result.ranker is not None and result.ranker.box_text is not None
    result.ranker.save(index_path)
    store = open_event_store(index_path)
    events = []
    for i in synthetic_log(1500):
        for article, clicked in zip(i.candidates, i.clicked, strict=True):
            events.append(Event(article, "impression", i.ts, user_id=i.user_id))
            if clicked:
                events.append(Event(article, "click", i.ts, user_id=i.user_id))
    store.add([(e.fingerprint(), e) for e in events])
    return Recommender.open(index_path, Settings().replace("popularity", refresh_seconds=0.0))


def test_ranking_with_a_trained_box_model_is_one_list_for_everyone_in_score_order(index):  # noqa: F811
    now = max(i.ts for i in synthetic_log(1500)) + 60
    rec = _served(index)
    first = rec.ranking(8, now=now)
    assert len(first) == 8 and [h.id for h in first] == [h.id for h in rec.ranking(8, now=now)]
    scores = [h.score for h in first]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    assert all(" in the last " in h.reason for h in first)  # the counts behind it, as before
    # the clock alone orders the same active articles otherwise
    ranker = rec.learned_ranker()
    assert ranker is not None
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    config = settings.popularity
    judged = RankingClock(config.ranking_half_life_hours, config.window_hours, config.ranking_ctr_cap, order="clock")
    write_json_atomic(index / CLOCK_FILE, judged.to_json())  # `recsys train` found the clock's order caught more
    by_clock = [(h.id, h.score) for h in Recommender.open(index, settings).ranking(8, now=now)]

    def served(order: str, model: LearnedRanker) -> list[tuple[str, float]]:
        model.save(index)
        write_json_atomic(index / CLOCK_FILE, dataclasses.replace(judged, order=order).to_json())
        return [(h.id, h.score) for h in Recommender.open(index, settings).ranking(8, now=now)]

    # the Ranking model's order where it was judged best: here the click model's text as the Ranking model,
    # which must order the leaders as that same text does as the box model
    own = served("ranking_model", ranker.with_ranking(ranker.model_text))
    assert own == served("box_model", ranker.with_box(ranker.model_text)) and [s for _, s in own] != scores
    assert served("ranking_model", ranker) == by_clock  # the serving ranker has none (a rollback): the clock's
    ranker.with_box(None).save(index)  # the click model alone
    clock = Recommender.open(index, settings).ranking(8, now=now)
    assert {h.id for h in clock} & {h.id for h in first}
    assert [h.score for h in clock] != scores
    assert by_clock == [(h.id, h.score) for h in clock]  # a box model judged worse does not re-order the leaders


def test_the_page_hands_the_article_being_read_to_recommendation(make_indexer, tmp_path):
    topics = {"fb": "football goal striker derby", "el": "election ballot vote parliament"}
    make_indexer().add_articles(
        [
            art(f"{p}{i}", f"{w.split()[0]} story {i}", f"{w} {i}", category=p)
            for p, w in topics.items()
            for i in range(8)
        ]
    )
    rec = Recommender.open(tmp_path / "index")
    reads = ["fb1", "fb2", "fb3", "fb4"]  # a football reader, oldest first
    alone = rec.recommend(reads, k=3)
    assert not any(h.id.startswith("el") for h in alone)
    page = rec.page("el1", reads, k_related=1, k_recommend=3, k_ranking=2)
    assert any(h.id.startswith("el") for h in page.recommendation)  # the election story they are reading counts
    shown = [h.id for h in page.related + page.recommendation + page.ranking]
    assert "el1" not in shown and len(shown) == len(set(shown))


def test_coread_neighbours_are_the_pairwise_associations_best_first():
    coreads = CoReads()
    rng = random.Random(1)
    for r in range(300):
        coreads.add_reads(f"u{r}", [(f"a{rng.randrange(40)}", 1000.0 + r * 10 + j) for j in range(rng.randrange(1, 7))])
    at = 5000.0
    for article in coreads.pairs:
        for k in (1, 3, 50):
            expected = sorted(
                ((o, coreads.association(article, o, at)) for o in coreads.pairs[article]), key=lambda x: (-x[1], x[0])
            )
            assert coreads.neighbours(article, at, k) == [(o, s) for o, s in expected[:k] if s > 0]


def test_id_lookups_are_remembered_per_version_and_a_removed_article_is_gone(make_indexer, tmp_path):
    indexer = make_indexer()
    indexer.add_articles([art("a", "storm over the coast"), art("b", "vote count"), art("c", "derby")])
    old = Recommender.open(tmp_path / "index").view
    rows = old.store.rows_of(["a", "b", "nope"])
    assert set(rows) == {"a", "b"} and old.store.rows_of(["a", "b", "nope"]) == rows  # asked twice, same answer
    assert old.store.ids_of([rows["a"]]) == {rows["a"]: "a"}
    indexer.remove(["a"])
    new = Recommender.open(tmp_path / "index").view
    assert "a" not in new.store.rows_of(["a", "b"]) and "b" in new.store.rows_of(["a", "b"])
    assert old.store.rows_of(["a"]) == {"a": rows["a"]}  # a version never changes: the old one still has it


def test_a_full_lookup_cache_forgets_and_still_answers_every_id(make_indexer, tmp_path, monkeypatch):
    """When a lookup would overflow a version's caches they are emptied: what they remembered must be looked up
    again, not reported missing (a live article once came back unknown, its text dropped from a list)."""
    from recsys.archive import segmented

    make_indexer().add_articles([art(x, f"story {x} about the {x} coast") for x in "abcd"])
    store = Recommender.open(tmp_path / "index").view.store
    monkeypatch.setattr(segmented, "LOOKUP_CACHE", 3)
    monkeypatch.setattr(segmented, "ARTICLE_CACHE", 3)
    first = store.rows_of(["a", "b"])
    rows = store.rows_of(["a", "b", "c", "d"])  # a and b remembered, c and d do not fit beside them
    assert set(rows) == set("abcd") and {x: rows[x] for x in "ab"} == first
    assert store.row_of("a") == rows["a"]
    assert set(store.ids_of(list(rows.values()))) == set(rows.values())
    assert store.ids_of([rows["a"]]) == {rows["a"]: "a"}
    store.get_rows([rows["a"], rows["b"]], with_text=False)
    found = store.get_rows(list(rows.values()), with_text=False)
    assert {found[r].id for r in rows.values()} == set("abcd")


def test_an_articles_neighbour_search_is_asked_once_per_version_and_answers_as_a_fresh_search(
    make_indexer, tmp_path, monkeypatch
):
    from recsys.archive import segmented

    make_indexer().add_articles([art(f"s{i}", f"storm coast flood {i}", f"storm coast {i} rain") for i in range(12)])
    rec = Recommender.open(tmp_path / "index")
    ann = rec.view.ann
    searches = []
    search = ann.search
    monkeypatch.setattr(ann, "search", lambda q, k: searches.append(k) or search(q, k))
    first = [(h.id, h.score) for h in rec.related("s1", 5)]
    again = [(h.id, h.score) for h in rec.related("s1", 5)]
    rec.related("s1", 3)  # fewer hits: the same candidates
    assert first == again and len(searches) == 1
    rec.related("s2", 5)  # another article: asked
    assert len(searches) == 2
    monkeypatch.setattr(segmented, "ROW_SEARCHES", 1)  # a full memory is emptied, never wrong
    row = rec.view.store.row_of("s1")
    scores, rows = ann.search_row(row, rec.view.vectors[row], 7)
    fresh_scores, fresh_rows = search(rec.view.vectors[row], 7)
    np.testing.assert_array_equal(rows, fresh_rows[0]) and np.testing.assert_array_equal(scores, fresh_scores[0])
    assert not rows.flags.writeable  # shared between requests
    make_indexer().add_articles([art("s99", "storm coast flood", "storm coast rain")])
    newer = Recommender.open(tmp_path / "index")
    assert newer.view.ann is not ann and "s99" in {h.id for h in newer.related("s1", 12)}  # a new version: afresh


def test_learned_recommendation_leaves_out_undated_articles_the_logs_never_mentioned(index, make_indexer):  # noqa: F811
    rec = _served(index)
    now = max(i.ts for i in synthetic_log(1500)) + 60
    make_indexer().add_articles([art("fb-unseen", "football goal striker derby league", "football goal striker")])
    rec = Recommender.open(index, Settings().replace("popularity", refresh_seconds=0.0))
    assert rec.view.store.row_of("fb-unseen") is not None
    hits = rec.recommend(["fb1", "fb2", "fb3"], k=20, now=now)
    assert hits and "fb-unseen" not in {h.id for h in hits}
    assert "fb-unseen" in {h.id for h in rec.related("fb1", 5)}  # still indexed, still related


def test_the_live_content_search_is_the_exact_search_over_the_live_articles(make_indexer, tmp_path):
    day = 86_400.0
    at = 1_790_000_000.0
    topics = {"fb": "football goal striker derby", "el": "election ballot vote parliament"}
    old = [art(f"{p}{i}", f"{w.split()[0]} story {i}", f"{w} {i}") for p, w in topics.items() for i in range(10)]
    fresh = [art("fresh", "football goal striker derby final", "football goal", published_at=at - 3600)]
    stale = [art("stale", "football goal striker derby cup", "football goal", published_at=at - 30 * day)]
    make_indexer().add_articles([*old, *fresh, *stale, *(art(f"x{i}", f"weather {i}", "rain") for i in range(20))])
    view = Recommender.open(tmp_path / "index").view
    state = LogState(Settings().popularity)
    seen = ["fb1", "fb2", "fb3", "el1", "el2"]
    state.fold([(a, "impression", "", at - 2 * day, 1, "r") for a in seen])
    state.fold([("fb9", "click", "", at - 9 * day, 1, "r")])  # engaged, but too long ago
    state.fold([("stale", "view", "", at - day, 1, "r")])  # an old article readers still open
    live = learned.LiveCatalogue()
    query = np.asarray(view.vectors[[view.store.row_of("fb0")]], dtype=np.float32)
    banned = {view.store.row_of("fb2")}
    found = live.nearest_each(view, state, at, query, Filters(), banned, 4)
    assert found is not None
    rows, sims = found[0]
    wanted = view.store.rows_of(["fb1", "fb3", "el1", "el2", "stale", "fresh"])  # seen, engaged or new; fb2 banned
    expected_scores, expected_rows = exact_search(view.vectors, query, 4, np.array(sorted(wanted.values())))
    np.testing.assert_array_equal(rows, expected_rows[0])
    np.testing.assert_allclose(sims, expected_scores[0], rtol=1e-6)
    assert {view.store.ids_of(rows.tolist())[r] for r in rows.tolist()} <= set(wanted)
    assert live.nearest_each(view, state, at, query, Filters(categories=("fb",)), banned, 4) is None  # own path
    state.fold([(f"x{i}", "view", "", at - 60, 1, "r") for i in range(20)])  # most of the catalogue is live
    assert live.nearest_each(view, state, at + 60, query, Filters(), banned, 4) is None  # searched whole instead


def test_a_moment_answer_is_reused_only_in_its_second_without_new_events_and_never_for_an_earlier_time():
    cache, calls = MomentCache(), []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    version = SimpleNamespace(path="versions/v1")
    assert cache.get(version, 0, 100.2, "hot", compute) == 1
    assert cache.get(version, 0, 100.7, "hot", compute) == 1  # same second, same events: the same answer
    assert cache.get(version, 0, 100.1, "hot", compute) == 2  # earlier than it was computed for: computed again
    assert cache.get(version, 0, 100.9, "hot", compute) == 1  # ... without replacing the first
    assert cache.get(version, 1, 100.9, "hot", compute) == 3  # events folded since
    assert cache.get(version, 1, 101.0, "hot", compute) == 4  # the next second
    assert cache.get(SimpleNamespace(path="versions/v2"), 1, 101.0, "hot", compute) == 5  # another version


def _one_by_one(order, vectors, duplicate, limit):
    """``learned.one_per_story`` as it was written first: one comparison per candidate (the reference)."""
    kept: list[int] = []
    for pos in order.tolist():
        if kept and float(np.max(vectors[kept] @ vectors[pos])) >= duplicate:
            continue
        kept.append(pos)
        if len(kept) >= limit:
            break
    return kept


def test_story_dedupe_in_blocks_keeps_what_one_comparison_per_candidate_keeps():
    rng = np.random.default_rng(3)
    for trial in range(30):
        base = rng.normal(size=(rng.integers(5, 40), 16))
        copies = base[rng.integers(0, base.shape[0], size=rng.integers(0, 200))] + rng.normal(0, 0.05, (1, 16))
        vectors = np.concatenate([base, copies])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        order = np.argsort(-rng.normal(size=vectors.shape[0]).round(1), kind="stable")  # ties, by position
        for limit in (1, 4, 12, 32):
            got = learned.one_per_story(order, vectors, 0.9, limit)
            assert got == _one_by_one(order, vectors, 0.9, limit), trial
    scores = rng.normal(size=vectors.shape[0])
    stories = learned.one_per_story(np.argsort(-scores, kind="stable"), vectors, 0.9, 32)
    picked = learned.spread(scores, vectors, 8, 0.7, 0.9)  # MMR then picks among one article per story
    assert set(picked.tolist()) <= set(stories) and len(picked) == min(8, len(stories))


def test_coread_scores_sum_the_associations_with_the_last_reads():
    coreads = CoReads()
    rng = random.Random(2)
    for r in range(200):
        coreads.add_reads(f"u{r}", [(f"a{rng.randrange(30)}", 1000.0 + r * 10 + j) for j in range(rng.randrange(1, 6))])
    at = 4000.0
    history = ("a1", "a2", "a3", "gone")
    candidates = [f"a{i}" for i in range(30)] + ["a4", "never"]  # a repeat and an unknown one
    expected = [sum(coreads.association(h, c, at) for h in history if h in coreads.pairs) for c in candidates]
    np.testing.assert_allclose(coreads.score(history, candidates, at), expected, rtol=1e-12)
    assert coreads.score(history, candidates, at)[-1] == 0.0


def test_exploration_gives_a_bounded_share_of_slots_to_new_articles(index, make_indexer):  # noqa: F811
    _served(index)  # a trained model and the log's events
    now = max(i.ts for i in synthetic_log(1500)) + 60
    make_indexer().add_articles([art("fresh-1", "football goal derby tonight", "football goal striker")])
    store = open_event_store(index)
    store.add([("seen-fresh", Event("fresh-1", "impression", now - 600, user_id="r1"))])  # first seen 10 min ago
    readers = [("fb1", f"fb{i}", f"el{i % 5}") for i in range(2, 20)] + [("el1", f"el{i}") for i in range(2, 20)]
    for share, low, high in ((0.0, 0, 0), (0.1, 0.2, 0.65)):  # k = 5: a slot in half the lists, expected
        settings = Settings().replace("popularity", refresh_seconds=0.0).replace("explore", share=share)
        served = Recommender.open(index, settings)
        lists = [served.recommend(list(reads), k=5, now=now) for reads in readers]
        tried = [hits for hits in lists if hits and hits[-1].id == "fresh-1" and hits[-1].reason.startswith("new")]
        assert low <= len(tried) / len(lists) <= high, (share, len(tried))
        assert all(sum(h.id == "fresh-1" for h in hits) <= 1 and len(hits) == 5 for hits in lists)
        again = [served.recommend(list(reads), k=5, now=now) for reads in readers]
        assert [[h.id for h in x] for x in again] == [[h.id for h in x] for x in lists]  # same request, same list
        served.flush()
        rows = {r.list_id: r for r in open_event_store(index).served_lists(now - 60, now + 60)}
        assert sum(rows[hits[0].list_id].explored == 5 for hits in lists) == len(tried)  # the log knows the slot
        report = online_report(open_event_store(index), now - 60, now + 60, ("box",))
        assert report.rows[0].explored_lists == 2 * len(tried)  # asked twice
        store.prune_served(now + 3600, 10**9)  # the next share starts from an empty log
