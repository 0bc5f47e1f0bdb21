"""The HTTP service through FastAPI's TestClient: every endpoint, the error cases, and version swaps."""

import pytest
from fastapi.testclient import TestClient

from recsys.config import Settings
from recsys.http import MAX_EVENTS, create_app
from tests.conftest import KeywordEmbedder, art

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def articles():
    topics = {
        "fb": "football goal striker derby league",
        "el": "election ballot vote parliament count",
        "ck": "recipe oven bake flour sugar",
    }
    return [
        art(
            f"{p}{i}",
            f"{words.split()[0]} story {i}",
            f"{words} {i}",
            category=p,
            published_at=f"2026-11-{10 + i}T10:00:00Z",
        )
        for p, words in topics.items()
        for i in range(5)
    ]


@pytest.fixture
def indexer(make_indexer):
    indexer = make_indexer()
    indexer.add_articles(articles())
    return indexer


@pytest.fixture
def client(indexer, tmp_path):
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    with TestClient(create_app(tmp_path / "index", settings)) as client:
        yield client


def test_health_and_article(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["articles"] == 15 and health["last_event_time"] is None
    article = client.get("/articles/fb1").json()
    assert article["title"] == "football story 1" and article["reactions"] == {}
    assert "veryGood" in article["reaction_names"] and "row" not in article


def test_lists_and_page(client):
    related = client.get("/related/fb0", params={"k": 3}).json()
    assert len(related) == 3 and all(h["id"].startswith("fb") for h in related)
    assert client.get("/related/fb0", params={"category": "el", "k": 2}).json()[0]["id"].startswith("el")
    ranking = client.get("/ranking", params={"k": 2}).json()
    assert all(h["reason"].startswith(("new: published", "latest in the archive: published")) for h in ranking)
    recommended = client.get("/recommend", params={"history": "el0,el1", "k": 2}).json()
    assert all(h["id"].startswith("el") and h["id"] not in ("el0", "el1") for h in recommended)
    page = client.get("/page/fb0", params={"history": "el0", "k_related": 3, "k_ranking": 3, "k_recommend": 3})
    ids = [h["id"] for name in ("related", "ranking", "recommendation") for h in page.json()[name]]
    assert len(ids) == 9 and len(set(ids)) == 9 and "fb0" not in ids


def test_events_change_ranking_and_reactions(client):
    events = [{"article_id": "ck3", "type": "view", "user_id": "u1"}] * 5
    events += [{"article_id": "ck3", "type": "reaction", "reaction": "veryGood"}]
    assert client.post("/events", json={"events": events}).json()["accepted"] == 6
    top = client.get("/ranking", params={"k": 1}).json()[0]
    # one client is one reader: its five views count once
    assert top["id"] == "ck3" and top["reason"] == "1 view and 1 reaction in the last 24 h"
    assert client.get("/articles/ck3").json()["reactions"] == {"veryGood": 1}
    assert client.get("/health").json()["last_event_time"] is not None
    assert "ck3" not in [h["id"] for h in client.get("/recommend", params={"user_id": "u1"}).json()]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        ("get", "/related/nope", {}, 404, "not in the index"),
        ("get", "/page/nope", {}, 404, "not in the index"),
        ("get", "/articles/nope", {}, 404, "not in the index"),
        ("get", "/related/fb0", {"params": {"k": 101}}, 422, "less than or equal to 100"),
        ("get", "/ranking", {"params": {"k": -1}}, 422, "greater than or equal to 0"),
        ("get", "/ranking", {"params": {"window_hours": 0}}, 422, "greater than 0"),
        ("get", "/related/fb0", {"params": {"since": "last week"}}, 422, "ISO 8601"),
        ("post", "/events", {"json": {"events": []}}, 422, "at least 1 item"),
        ("post", "/events", {"json": {"events": [{"article_id": "a", "type": "like"}]}}, 422, "pattern"),
        ("post", "/events", {"json": {"events": [{"article_id": "a", "type": "reaction"}]}}, 422, "needs a 'reaction'"),
        ("post", "/events", {"json": {"events": [{"article_id": "a", "type": "view", "ts": "soon"}]}}, 422, "bad ts"),
        ("post", "/events", {"content": b"not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ],
)
def test_bad_requests_get_4xx_with_a_reason(client, method, path, kwargs, status, fragment):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert fragment in response.text


def test_request_size_and_batch_are_bounded(client):
    too_many = {"events": [{"article_id": "a", "type": "view"}] * (MAX_EVENTS + 1)}
    assert client.post("/events", json=too_many).status_code == 422
    huge = b'{"events": [' + b'{"article_id": "a", "type": "view"},' * 40_000 + b"{}]}"
    response = client.post("/events", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.get("/recommend", params={"history": ",".join(f"x{i}" for i in range(201))}).status_code == 422


def test_ids_with_slashes_are_served(make_indexer, tmp_path):
    make_indexer().add_articles(
        [
            art("sport/001", "football derby goal", "football goal"),
            art("sport/002", "football league", "football goal league"),
        ]
    )
    with TestClient(create_app(tmp_path / "index")) as client:
        assert client.get("/related/sport%2F001").json()[0]["id"] == "sport/002"
        assert client.get("/articles/sport/002").json()["id"] == "sport/002"
        assert client.get("/page/sport%2F002").status_code == 200


def test_no_path_reaches_outside_the_index(client):
    for path in ("/static/../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/..%2f..%2fREADME.md"):
        assert client.get(path).status_code == 404
    assert client.get("/related/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_demo_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="related"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/related/{article_id}", "/ranking", "/recommend", "/page/{article_id}", "/events", "/health"} <= set(
        schema["paths"]
    )


def test_service_follows_index_updates_without_restart(client, indexer):
    before = client.get("/health").json()["index_version"]
    indexer.add_articles([art("fb-new", "football derby goal", "football goal striker derby league new")])
    health = client.get("/health").json()
    assert health["index_version"] != before and health["articles"] == 16
    assert "fb-new" in [h["id"] for h in client.get("/related/fb0", params={"k": 5}).json()]
    indexer.remove(["fb-new"])
    assert client.get("/related/fb-new").status_code == 404


def test_missing_index_fails_at_start_with_a_fix(tmp_path):
    with pytest.raises(Exception, match="recsys index build"):
        create_app(tmp_path / "none")


def test_related_to_text_for_a_draft(indexer, tmp_path):
    with TestClient(create_app(tmp_path / "index", embedder=KeywordEmbedder())) as client:
        hits = client.post("/related-to-text", json={"title": "Recipe", "body": "recipe oven bake flour", "k": 2})
        assert hits.status_code == 200 and [h["id"][:2] for h in hits.json()] == ["ck", "ck"]
        assert client.post("/related-to-text", json={"body": "no title"}).status_code == 422
