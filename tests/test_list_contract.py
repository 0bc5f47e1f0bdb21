"""The contract every list pipeline keeps, run against each of them on its own (recsys/lists/).

Related, Ranking and Recommendation (the hand-set blend and the learned ranker) must all: never list
the article being read or one already read, return at most k (and exactly k when the archive allows),
honour the category filter and the excluded ids, list no article twice, and give finite scores with a
reason. A new pipeline joins by adding one entry to ``PIPELINES``.
"""

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.archive.indexer import Indexer
from recsys.archive.version import VersionReader
from recsys.config import Settings
from recsys.learning.ranker import LearnedRanker
from recsys.learning.trained import StoredModels
from recsys.learning.training import build_dataset
from recsys.lists import ListContext, RankingList, RecommendationList, RelatedList
from recsys.service import Recommender
from recsys.signals.activity import PopularityTracker
from recsys.signals.store import open_event_store
from recsys.types import Filters, Hit
from tests.conftest import KeywordEmbedder
from tests.test_learning import articles, lookup_of, synthetic_log

SOURCE = "fb1"
READS = ["fb2", "fb3", "el4"]  # newest first
NOW = time.time()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 articles in three categories, a day of views, and a fitted ranker stored beside the index."""
    root = tmp_path_factory.mktemp("contract") / "index"
    Indexer(root, Settings(), KeywordEmbedder()).add_articles(articles())
    lines = [
        f'{{"article_id": "{a.id}", "type": "view", "ts": {NOW - 3600 - i}, "count": {1 + i % 7}, "user_id": "u{i}"}}'
        for i, a in enumerate(articles())
    ]
    (root.parent / "events.jsonl").write_text("\n".join(lines) + "\n")
    open_event_store(root).ingest([root.parent / "events.jsonl"])
    with Recommender.open(root) as rec:
        settings = Settings()
        dataset, _ = build_dataset(synthetic_log(900), lookup_of(rec), settings.popularity, settings.recommend)
    half = dataset.groups < dataset.impressions // 2
    parts = [(dataset.features[m], dataset.labels[m], dataset.groups[m]) for m in (half, ~half)]
    LearnedRanker.fit(parts[0], parts[1], params={"min_data_in_leaf": 20}).save(root.parent / "with-ranker")
    return root


def context(root: Path, ranker_dir: Path | None) -> ListContext:
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    return ListContext(
        settings,
        PopularityTracker(open_event_store(root, settings.events), settings.popularity),
        StoredModels(ranker_dir or root, 0.0),
    )


Call = Callable[[VersionReader, int, Filters], list[Hit]]


def related(ctx: ListContext) -> Call:
    return lambda view, k, filters: RelatedList(ctx).for_article(view, SOURCE, k, filters, NOW)


def ranking(ctx: ListContext) -> Call:
    return lambda view, k, filters: RankingList(ctx).top(view, k, filters, None, NOW)


def recommendation(ctx: ListContext) -> Call:
    pipeline = RecommendationList(ctx, RankingList(ctx))
    return lambda view, k, filters: pipeline.for_reader(view, READS, k, filters, NOW)


# name -> (pipeline factory, uses the stored ranker, ids the list must never show)
PIPELINES = {
    "related": (related, False, {SOURCE}),
    "ranking": (ranking, False, set()),
    "recommendation-blend": (recommendation, False, set(READS)),
    "recommendation-learned": (recommendation, True, set(READS)),
}


@pytest.fixture(params=list(PIPELINES))
def pipeline(request: pytest.FixtureRequest, built: Path):
    make, learned, forbidden = PIPELINES[request.param]
    ctx = context(built, built.parent / "with-ranker" if learned else None)
    assert (ctx.models.ranker() is not None) == learned
    view = VersionReader(Path(built) / "versions" / (built / "CURRENT").read_text().strip())
    yield make(ctx), view, forbidden
    view.close()


def check_contract(hits: list[Hit], k: int, forbidden: set[str]) -> None:
    ids = [h.id for h in hits]
    assert len(ids) <= k
    assert len(ids) == len(set(ids)), f"duplicates in {ids}"
    assert not forbidden & set(ids), f"{forbidden & set(ids)} listed"
    assert all(math.isfinite(h.score) and h.reason for h in hits)


@pytest.mark.parametrize("k", [0, 1, 5, 12])
def test_k_is_respected_and_nothing_forbidden_or_repeated(pipeline, k):
    call, view, forbidden = pipeline
    hits = call(view, k, Filters())
    check_contract(hits, k, forbidden)
    assert len(hits) == k  # 60 articles: every pipeline can fill 12 places


def test_category_filter_is_honoured(pipeline):
    call, view, forbidden = pipeline
    hits = call(view, 5, Filters(categories=("ck",)))
    check_contract(hits, 5, forbidden)
    assert hits and {h.category for h in hits} == {"ck"}


def test_excluded_ids_never_appear(pipeline):
    call, view, forbidden = pipeline
    first = [h.id for h in call(view, 6, Filters())]
    hits = call(view, 6, Filters(exclude_ids=tuple(first[:3])))
    check_contract(hits, 6, forbidden | set(first[:3]))
    assert len(hits) == 6


def test_a_k_beyond_the_archive_lists_each_article_once(pipeline):
    call, view, forbidden = pipeline
    hits = call(view, 500, Filters())
    check_contract(hits, 500, forbidden)


# -- Editorial rules: every served box obeys them, and the contract above still holds with rules present -------

BOX_CALLS = {
    "related": lambda rec, k, now: rec.related(SOURCE, k, now=now),
    "ranking": lambda rec, k, now: rec.ranking(k, now=now),
    "recommendation": lambda rec, k, now: rec.recommend(READS[::-1], k=k, now=now),
}


@pytest.fixture
def ruled(built: Path, tmp_path: Path):
    """A copy of the contract index whose rules each test writes (rules.json beside the versions)."""
    import shutil

    root = tmp_path / "index"
    shutil.copytree(built, root, symlinks=True)
    settings = Settings().replace("popularity", refresh_seconds=0.0).replace("explore", share=0.0)
    return root, settings


def _rules(root: Path, *records: dict) -> None:
    from recsys.archive.rules import Rule, add_rules

    add_rules(root, [Rule.from_json(r) for r in records])


@pytest.mark.parametrize("box", list(BOX_CALLS))
def test_a_pin_is_at_its_position_in_the_boxes_it_names_and_nowhere_else(ruled, box):
    root, settings = ruled
    with Recommender.open(root, settings) as rec:
        before = {b: [h.id for h in call(rec, 6, NOW)] for b, call in BOX_CALLS.items()}
        pick = next(
            a.id for a in articles() if a.id not in {SOURCE, *READS} and all(a.id not in v for v in before.values())
        )
        _rules(root, {"action": "pin", "article_id": pick, "box": box, "position": 2})
        for other, call in BOX_CALLS.items():
            hits = call(rec, 6, NOW)
            check_contract(hits, 6, PIPELINES["recommendation-blend" if other == "recommendation" else other][2])
            if other == box:
                assert hits[1].id == pick and hits[1].reason == "editor's pick" and len(hits) == 6
            else:
                assert pick not in [h.id for h in hits]


def test_a_pin_never_shows_the_article_being_read(ruled):
    root, settings = ruled
    _rules(root, {"action": "pin", "article_id": SOURCE, "box": "related", "position": 1})
    with Recommender.open(root, settings) as rec:
        assert SOURCE not in [h.id for h in rec.related(SOURCE, 6, now=NOW)]


@pytest.mark.parametrize("box", list(BOX_CALLS))
def test_a_block_removes_its_matches_and_the_list_stays_full(ruled, box):
    root, settings = ruled
    with Recommender.open(root, settings) as rec:
        before = [h for h in BOX_CALLS[box](rec, 6, NOW)]
        section = before[0].category
        _rules(root, {"action": "block", "box": "all", "match": {"section": section}})
        after = BOX_CALLS[box](rec, 6, NOW)
    assert before and all(h.category != section for h in after)
    if box != "related":  # (Related of a football story has few non-football articles above min_similarity)
        assert len(after) == 6  # blocked ones replaced from further down


def test_a_block_under_where_applies_only_on_those_pages(ruled):
    root, settings = ruled
    _rules(root, {"action": "block", "box": "related", "match": {"section": "fb"}, "where": {"section": "el"}})
    with Recommender.open(root, settings) as rec:
        on_football = rec.related(SOURCE, 6, now=NOW)  # fb1 is football: the rule's where does not hold
        on_election = rec.related("el1", 6, now=NOW, category=["fb", "el"])
        assert any(h.category == "fb" for h in on_football)
        assert all(h.category != "fb" for h in on_election)
        assert rec.ranking(6, now=NOW)  # no article is being read: a rule with a where never applies


def test_a_block_wins_over_a_pin(ruled):
    root, settings = ruled
    _rules(
        root,
        {"action": "pin", "article_id": "ck3", "box": "all", "position": 1},
        {"action": "block", "box": "all", "match": {"article_id": "ck3"}},
    )
    with Recommender.open(root, settings) as rec:
        for call in BOX_CALLS.values():
            assert "ck3" not in [h.id for h in call(rec, 6, NOW)]


@pytest.mark.parametrize("box", list(BOX_CALLS))
def test_a_boost_moves_its_matches_up(ruled, box):
    root, settings = ruled
    with Recommender.open(root, settings) as rec:
        before = [h.id for h in BOX_CALLS[box](rec, 10, NOW)]
        target = before[-1]
        _rules(root, {"action": "boost", "box": box, "match": {"article_id": target}, "by": 0.5})
        after = [h.id for h in BOX_CALLS[box](rec, 10, NOW)]
    assert target in after and after.index(target) < before.index(target) - 1  # up by several places


def test_expired_and_future_rules_do_nothing(ruled):
    root, settings = ruled
    with Recommender.open(root, settings) as rec:
        before = [h.id for h in rec.ranking(6, now=NOW)]
        _rules(
            root,
            {"action": "block", "box": "all", "until": NOW - 60},
            {"action": "block", "box": "all", "from": NOW + 3600},
        )
        assert [h.id for h in rec.ranking(6, now=NOW)] == before
        # the same everything-block, active now, empties the box and says why
        _rules(root, {"action": "block", "box": "ranking", "from": NOW - 60, "until": NOW + 60})
        assert rec.ranking(6, now=NOW) == []


def test_rules_reach_a_page_and_its_later_boxes(ruled):
    root, settings = ruled
    _rules(
        root,
        {"action": "pin", "article_id": "ck5", "box": "related", "position": 1},
        {"action": "block", "box": "all", "match": {"section": "el"}},
    )
    with Recommender.open(root, settings) as rec:
        page = rec.page(SOURCE, READS[::-1], now=NOW)
    everything = [*page.related, *page.recommendation, *page.ranking]
    assert page.related[0].id == "ck5" and page.related[0].reason == "editor's pick"
    assert [h.id for h in everything].count("ck5") == 1 and all(h.category != "el" for h in everything)
