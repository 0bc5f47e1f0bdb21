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
