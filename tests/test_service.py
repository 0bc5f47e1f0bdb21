"""What Related promises, on small hand-made articles with a keyword embedder."""

import time

import pytest

from recsys.config import Settings
from recsys.service import Recommender
from recsys.types import UnknownArticle
from tests.conftest import KeywordEmbedder, art

NOW = "2026-11-25T12:00:00Z"
STORM = "storm winds flood coast homes power lines trees rail"


def articles():
    return [
        art(
            "src",
            "Storm hits coast",
            STORM,
            published_at="2026-11-18T06:00:00Z",
            category="weather",
            canonical_url="https://news.example/storm",
            tags=("storm",),
            language="en",
        ),
        # a syndicated copy: same canonical URL, different wording
        art(
            "wire",
            "Coast storm report",
            STORM + " agency",
            published_at="2026-11-18T09:00:00Z",
            category="weather",
            canonical_url="http://www.news.example/storm/",
            language="en",
        ),
        # a near-identical re-post without canonical URL
        art(
            "repost",
            "Storm hits coast",
            STORM + " update",
            published_at="2026-11-18T07:00:00Z",
            category="weather",
            language="en",
        ),
        art(
            "follow",
            "Storm clean up on coast",
            "storm flood coast power restored clean up homes",
            published_at="2026-11-20T10:00:00Z",
            category="weather",
            tags=("storm",),
            language="en",
            author="desk",
        ),
        art(
            "old",
            "Storm clean up on coast",
            "storm flood coast power restored clean up homes",
            published_at="2024-11-20T10:00:00Z",
            category="weather",
            language="en",
        ),
        art(
            "fr",
            "Tempête sur la côte",
            "storm flood coast tempête vents",
            published_at="2026-11-19T10:00:00Z",
            category="weather",
            language="fr",
        ),
        art(
            "sci",
            "Storm science",
            "storm winds science ocean heat study",
            published_at="2026-11-21T10:00:00Z",
            category="science",
            language="en",
        ),
        art("nodate", "Coast flood defences", "flood coast defences sea wall homes", category="weather", language="en"),
        art(
            "bank",
            "Bank holds rates",
            "central bank interest rates inflation",
            category="business",
            published_at="2026-11-20T10:00:00Z",
            language="en",
        ),
    ]


@pytest.fixture
def rec(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    return Recommender.open(tmp_path / "index", embedder=KeywordEmbedder())


def ids(hits):
    return [h.id for h in hits]


def test_self_and_copies_of_the_story_never_appear(rec):
    found = ids(rec.related("src", 20, now=NOW))
    assert "src" not in found
    assert "wire" not in found  # same canonical URL (scheme, www and slash differ)
    assert "repost" not in found  # near-identical vector
    assert "follow" in found


def test_one_version_per_story_and_the_fresh_one_wins(rec):
    found = ids(rec.related("sci", 20, now=NOW))
    assert found.count("follow") + found.count("old") == 1 and "follow" in found
    # src, wire and repost are one story: only one of them is listed
    assert len({"src", "wire", "repost"} & set(found)) == 1


def test_hits_carry_fields_reason_and_metadata(rec):
    hit = next(h for h in rec.related("src", 10, now=NOW) if h.id == "follow")
    assert hit.reason == "follow-up from 2 days later"
    assert hit.published_at == "2026-11-20T10:00:00Z" and hit.category == "weather"
    assert hit.metadata["author"] == "desk" and hit.metadata["tags"] == ["storm"]
    assert 0 < hit.similarity <= 1 and hit.score >= hit.similarity
    assert set(hit.to_dict()) >= {"id", "title", "url", "published_at", "score", "reason"}


def test_filters(rec):
    assert set(ids(rec.related("src", 20, category="science", now=NOW))) == {"sci"}
    assert set(ids(rec.related("src", 20, language="FR", now=NOW))) == {"fr"}
    window = ids(rec.related("src", 20, published_after="2026-11-20", published_before="2026-11-20T23:00", now=NOW))
    assert set(window) == {"follow"}
    assert "follow" not in ids(rec.related("src", 20, exclude=["follow"], now=NOW))
    recent = ids(rec.related("src", 20, max_age_days=30, now=NOW))
    assert "old" not in recent and "nodate" not in recent and "follow" in recent


def test_freshness_moves_scores_with_time_unless_configured_off(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    later = "2027-06-01T00:00:00Z"
    on = Recommender.open(tmp_path / "index")
    off = Recommender.open(tmp_path / "index", Settings().replace("related", freshness_weight=0.0))
    assert [h.score for h in off.related("sci", 5, now=NOW)] == [h.score for h in off.related("sci", 5, now=later)]
    assert on.related("sci", 1, now=NOW)[0].score > on.related("sci", 1, now=later)[0].score


def test_k_bounds_and_unknown_ids(rec):
    assert rec.related("src", 0) == []
    assert len(rec.related("src", 2, now=NOW)) == 2
    with pytest.raises(UnknownArticle, match="not in the index"):
        rec.related("nope")


def test_related_to_text_for_a_draft(rec):
    hits = rec.related_to_text("Interest rates", "central bank rates inflation decision", k=3)
    assert hits[0].id == "bank"


def test_related_to_text_refuses_another_model(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    rec = Recommender.open(tmp_path / "index", embedder=KeywordEmbedder(name="other"))
    with pytest.raises(Exception, match="built with model 'keyword-test'"):
        rec.related_to_text("x", "y")


def test_mmr_spreads_the_list(make_indexer, tmp_path):
    docs = [art("q", "budget tax spending hospitals schools", "budget tax spending hospitals schools")]
    docs += [art(f"tax{i}", f"budget tax rise {i}", "budget tax tax tax rise") for i in range(4)]
    docs += [art("schools", "budget schools money", "budget schools spending buildings")]
    make_indexer().add_articles(docs)
    no_dedup = Settings().replace("related", duplicate_similarity=1.01)
    plain = Recommender.open(tmp_path / "index", no_dedup.replace("related", mmr_lambda=1.0))
    diverse = Recommender.open(tmp_path / "index", no_dedup.replace("related", mmr_lambda=0.5))
    assert "schools" not in ids(plain.related("q", 2))
    assert "schools" in ids(diverse.related("q", 2))


def test_no_story_is_told_twice_on_a_page(make_indexer, tmp_path):
    from recsys.config import Settings as _Settings
    from tests.conftest import art as _art

    articles = [
        _art(
            "nk1",
            "north korea denies selling artillery shells",
            "north korea artillery shells russia denies",
            canonical_url="https://wire.example/nk",
        ),
        _art(
            "nk2",
            "north korea denies selling artillery shells",
            "north korea artillery shells russia denies",
            canonical_url="https://wire.example/nk",
        ),  # the syndicated copy
        _art("nk3", "north korea denies selling artillery shells to russia", "north korea artillery shells russia"),
        _art("milley", "milley warns on north korea arms", "north korea arms milley warns artillery"),
        *[_art(f"x{i}", f"unrelated story {i} harbour", f"harbour boats {i}") for i in range(12)],
    ]
    make_indexer().add_articles(articles)
    settings = _Settings().replace("popularity", refresh_seconds=0.0)
    with Recommender.open(tmp_path / "index", settings) as rec:
        when = time.time() - 60
        readers = [
            {"article_id": a, "type": "view", "user_id": f"r{i}", "ts": when} for i in range(5) for a in ("nk2", "nk3")
        ]
        rec.record_events(readers, durable=True)
        page = rec.page("milley", ["x1"], k_related=1, k_ranking=5, k_recommend=5)
        shown = [h.id for h in (*page.related, *page.recommendation, *page.ranking)]
        nk = [a for a in shown if a.startswith("nk")]
        assert len(nk) == 1, shown  # one of the three copies, in one box
        assert len(page.ranking) == 5 and len(set(shown)) == len(shown)


def test_recommendation_never_shows_a_copy_of_a_story_the_reader_read(make_indexer, tmp_path):
    from tests.conftest import art as _art

    make_indexer().add_articles(
        [
            _art("ecb", "ecb holds rates steady", "ecb rates inflation steady", canonical_url="https://x/ecb"),
            _art("ecb-wire", "ecb holds rates steady", "ecb rates inflation steady", canonical_url="https://x/ecb"),
            _art("ecb-rewrite", "ecb holds rates steady", "ecb rates inflation steady"),  # same text, no URL
            *[_art(f"b{i}", f"bank rates story {i}", f"rates bank inflation {i}") for i in range(8)],
        ]
    )
    with Recommender.open(tmp_path / "index") as rec:
        ids = [h.id for h in rec.recommend(["ecb"], k=8)]
        assert ids and not {"ecb", "ecb-wire", "ecb-rewrite"} & set(ids), ids
