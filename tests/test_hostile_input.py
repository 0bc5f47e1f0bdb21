"""Hostile and malformed input: every bad record is one `file:line: reason`, nothing good is lost, no score
goes non-finite, and one client cannot push an article up the Ranking (the hardening issue, item by item)."""

import json
import math
import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recsys.archive.indexer import Indexer
from recsys.cli import app
from recsys.config import Settings
from recsys.guards import BodyLimit, RateLimiter
from recsys.http import create_app
from recsys.ingest.articles import read_articles
from recsys.ingest.events import read_events, read_impressions
from recsys.ingest.text import format_timestamp, parse_timestamp
from recsys.service import Recommender
from recsys.signals.popularity import Popularity
from recsys.signals.records import Event
from recsys.signals.store import open_event_store
from tests.conftest import KeywordEmbedder, art, write_jsonl
from tests.fuzz_corpus import write_corpus

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NOW = "2026-11-25T12:00:00Z"


def lines_of(problems):
    return {(p.path, p.line) for p in problems}


# -- the fuzz corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzz_corpus_no_crash_no_good_record_lost(tmp_path, seed):
    expected = write_corpus(tmp_path / "corpus", seed)
    assert expected.records >= 10_000
    read = read_articles(expected.article_files)
    assert {a.id for a in read.articles} == expected.good_articles  # none lost, none smuggled in
    assert lines_of(read.problems) == expected.bad_article_lines  # each bad one reported at its line
    assert len(read.problems) == len(expected.bad_article_lines)  # ... exactly once

    batch = read_events(expected.event_files)
    assert len(batch.events) == expected.good_events
    assert lines_of(batch.problems) == expected.bad_event_lines

    root = tmp_path / "index"
    report = Indexer(root, Settings(), KeywordEmbedder()).add(expected.article_files)
    assert report.articles == len(expected.good_articles) and len(report.problems) == len(read.problems)
    store = open_event_store(root)
    ingested = store.ingest(expected.event_files)
    # every good event is read; the same event in two files is one event (stored once, by design)
    assert ingested.read == expected.good_events and ingested.stored + ingested.duplicates == ingested.read
    rec = Recommender.open(root, Settings().replace("popularity", refresh_seconds=0.0))
    some = sorted(expected.good_articles)[:: max(1, len(expected.good_articles) // 20)]
    page = rec.page(some[0], some[1:6], now=NOW)
    hits = page.related + page.ranking + page.recommendation
    assert hits and all(math.isfinite(h.score) for h in hits)
    for article_id in some:
        assert all(math.isfinite(h.score) for h in rec.related(article_id, 5, now=NOW))


# -- High 1: times from the future or the distant past -----------------------------------------------


@pytest.fixture
def index(make_indexer, tmp_path):
    football = [
        art(f"fb{i}", f"football match {i}", f"football goal derby {i}", published_at=f"2026-11-2{i}") for i in range(5)
    ]
    undated = [art(f"nd{i}", f"undated recipe {i}", f"recipe oven bake {i}") for i in range(3)]
    make_indexer().add_articles(football + undated)
    return tmp_path / "index"


@pytest.fixture
def client(index):
    settings = Settings().replace("popularity", refresh_seconds=0.0)
    with TestClient(create_app(index, settings)) as client:
        yield client


def test_a_future_event_is_refused_everywhere(client, tmp_path, index):
    future = {"article_id": "fb1", "type": "view", "ts": "2100-01-01T00:00:00Z"}
    response = client.post("/events", json={"events": [future]})
    assert response.status_code == 422 and "in the future" in response.json()["detail"]
    rows = [future, {**future, "ts": "9999-12-31"}, {**future, "ts": -1}, {**future, "ts": "0001-01-01"}]
    batch = read_events([write_jsonl(tmp_path / "e.jsonl", rows)])
    assert batch.events == [] and [p.line for p in batch.problems] == [1, 2, 3, 4]


def test_a_future_event_already_stored_cannot_poison_the_lists(index):
    # An events.sqlite written before times were checked: the event is there, and survives restarts.
    open_event_store(index).add(
        [("x", Event("fb1", "view", 4_102_444_800.0)), ("y", Event("fb2", "view", time.time()))]
    )
    for _ in range(2):  # and again after a "restart"
        rec = Recommender.open(index, Settings().replace("popularity", refresh_seconds=0.0))
        page = rec.page("fb0", ["fb3"])
        hits = page.related + page.ranking + page.recommendation
        assert hits and all(math.isfinite(h.score) for h in hits)
        assert [h.id for h in rec.ranking(1)] == ["fb2"]  # the real view, not the one from 2100


def test_popularity_is_finite_whatever_the_times():
    popularity = Popularity(Settings().popularity)
    popularity.fold([("a", "view", "", 4_102_444_800.0, 1), ("b", "view", "", 1.0, 10**9), ("c", "click", "", 0.0, 1)])
    for at in (0.0, 1.0, 1.7e9, 4.1e9, 1e12):
        assert all(math.isfinite(v) for v in popularity.scores(["a", "b", "c", "d"], at))
        assert all(math.isfinite(v) for v in popularity.scores(["a", "b", "c"], at, ranking=True))


# -- High 2: Ranking counts readers, clients are bounded -----------------------------------------------


def test_one_readers_thousand_views_count_as_one(index, tmp_path):
    rows = [{"article_id": "fb1", "type": "view", "user_id": "bot", "ts": "2026-11-25T09:00:00Z"}] * 1000
    rows += [{"article_id": "fb2", "type": "view", "user_id": f"u{i}", "ts": "2026-11-25T09:00:00Z"} for i in range(3)]
    open_event_store(index).ingest([write_jsonl(tmp_path / "e.jsonl", rows)])
    hits = Recommender.open(index).ranking(2, now=NOW)
    assert [h.id for h in hits] == ["fb2", "fb1"]
    assert hits[1].reason == "1 view in the last 24 h" and hits[0].reason == "3 views in the last 24 h"


def test_one_client_cannot_top_the_ranking(client):
    readers = [{"article_id": "fb2", "type": "view", "user_id": f"r{i}"} for i in range(3)]
    # three real readers from three addresses vs. one client claiming 500 readers and a huge count
    for i, event in enumerate(readers):
        transport_client = TestClient(client.app, client=(f"10.0.0.{i}", 1000))
        assert transport_client.post("/events", json={"events": [event]}).status_code == 200
    fake = [{"article_id": "fb1", "type": "view", "user_id": f"fake{i}"} for i in range(500)]
    assert client.post("/events", json={"events": fake}).status_code == 200
    huge = client.post("/events", json={"events": [{"article_id": "fb1", "type": "view", "count": 1_000_000}]})
    assert huge.status_code == 422 and "count must be at most" in huge.text
    assert [h["id"] for h in client.get("/ranking", params={"k": 2}).json()] == ["fb2", "fb1"]


def test_no_client_can_squat_another_senders_event_ids(client, index, tmp_path):
    squatter = TestClient(client.app, client=("10.9.9.9", 1000))
    taken = [{"article_id": "fb1", "type": "view", "event_id": f"site-evt-{i}"} for i in (1, 2)]
    assert squatter.post("/events", json={"events": taken}).json()["accepted"] == 2
    again = squatter.post("/events", json={"events": taken}).json()  # its own retry counts once
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    other = TestClient(client.app, client=("10.8.8.8", 1000))
    reaction = {"article_id": "fb2", "type": "reaction", "reaction": "good", "event_id": "site-evt-1"}
    assert other.post("/events", json={"events": [reaction]}).json() == {
        "accepted": 1,
        "duplicates": 0,
        "held_unindexed": 0,
        "refused_unindexed": 0,
        "attributed": 0,
    }
    feed = write_jsonl(
        tmp_path / "site.jsonl",
        [{"article_id": "fb3", "type": "view", "event_id": "site-evt-2", "ts": time.time() - 60}],
    )
    result = run("events", "ingest", feed, "--index", index)
    assert result.exit_code == 0 and "stored 1" in result.output, result.output
    store = open_event_store(index)
    stored = {r[0] for r in store.conn.execute("SELECT article_id FROM events WHERE type != 'impression'")}
    assert {"fb1", "fb2", "fb3"} <= stored


def test_invented_reaction_names_cannot_top_the_ranking(client, index, tmp_path):
    for i in range(6):
        reader = TestClient(client.app, client=(f"10.1.0.{i}", 1000))
        reader.post("/events", json={"events": [{"article_id": "fb1", "type": "view"}]})
    spammer = TestClient(client.app, client=("10.6.6.6", 1000))
    invented = [{"article_id": "fb4", "type": "reaction", "reaction": f"r{i}"} for i in range(1000)]
    refused = spammer.post("/events", json={"events": invented})
    assert refused.status_code == 422 and "veryGood" in refused.text and "r0" in refused.text
    assert client.get("/ranking", params={"k": 1}).json()[0]["id"] == "fb1"
    # a trusted source (a file) may use other names; they weigh unknown_reaction_weight, 0 by default
    feed = write_jsonl(
        tmp_path / "r.jsonl",
        [{"article_id": "fb4", "type": "reaction", "reaction": f"x{i}", "ts": time.time() - 60} for i in range(50)],
    )
    assert run("events", "ingest", feed, "--index", index).exit_code == 0
    top = client.get("/ranking", params={"k": 1}).json()[0]
    assert top["id"] == "fb1" and "reaction" not in top["reason"]


def test_events_for_unindexed_ids_are_held_to_a_bound_and_join_when_indexed(make_indexer, index):
    settings = Settings().replace("popularity", refresh_seconds=0.0).replace("events", max_unindexed_events=50)
    with TestClient(create_app(index, settings)) as client:
        junk = [{"article_id": "x" * 500 + str(i), "type": "view"} for i in range(40)]
        assert client.post("/events", json={"events": junk}).json()["held_unindexed"] == 40
        more = [{"article_id": f"new{i % 2}", "type": "view"} for i in range(30)]
        answer = client.post("/events", json={"events": more}).json()
        assert answer == {
            "accepted": 0,
            "duplicates": 0,
            "held_unindexed": 10,
            "refused_unindexed": 20,
            "attributed": 0,
        }
        held = open_event_store(index).conn.execute("SELECT count(*) FROM unindexed_events").fetchone()[0]
        assert held == 50  # the table never grows past the bound
        make_indexer().add_articles([art("new0", "football derby new", "football goal derby new")])
        assert client.get("/health").json()["articles"] == 9  # the service switched versions
        assert [h["id"] for h in client.get("/ranking", params={"k": 1}).json()] == ["new0"]


def test_write_key_and_rate_limit(index):
    keyed = Settings().replace("http", write_key="s3cret")
    with TestClient(create_app(index, keyed)) as client:
        event = {"events": [{"article_id": "fb1", "type": "view"}]}
        assert client.post("/events", json=event).status_code == 401
        assert client.post("/events", json=event, headers={"X-Recsys-Key": "wrong"}).status_code == 401
        assert client.post("/events", json=event, headers={"X-Recsys-Key": "s3cret"}).status_code == 200
        assert client.post("/events", json=event, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    limited = Settings().replace("http", events_per_minute=60, events_burst=10)
    with TestClient(create_app(index, limited)) as client:
        ten = {"events": [{"article_id": "fb1", "type": "view"}] * 10}
        assert client.post("/events", json=ten).status_code == 200
        refused = client.post("/events", json={"events": [{"article_id": "fb1", "type": "view"}]})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        other = TestClient(client.app, client=("10.9.9.9", 1))
        assert other.post("/events", json=ten).status_code == 200  # the limit is per client
        eleven = {"events": [{"article_id": "fb1", "type": "view"}] * 11}
        too_big = TestClient(client.app, client=("10.9.9.8", 1)).post("/events", json=eleven)
        assert too_big.status_code == 429 and "at most 10 events per request" in too_big.text


def test_rate_limiter_refills_and_forgets_old_clients():
    limiter = RateLimiter(per_minute=60, burst=5, max_clients=2)
    assert limiter.take("a", 5, now=0.0) == 0 and limiter.take("a", 1, now=0.0) == pytest.approx(1.0)
    assert limiter.take("a", 2, now=2.0) == 0  # two seconds refilled two events
    limiter.take("b", 1, now=2.0)
    limiter.take("c", 1, now=2.0)
    assert "a" not in limiter._buckets and len(limiter._buckets) == 2


# -- High 3: one record never crashes a job ----------------------------------------------------------


def test_lone_surrogates_and_bad_bytes_cost_one_record(tmp_path, make_indexer):
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'{"id": "s1", "title": "Broken emoji \\ud83d here"}\n'
        b'{"id": "s2\\udc80", "title": "Bad id"}\n'
        b'{"id": "ok", "title": "Fine \\ud83d\\ude00 emoji"}\n'
        b'{"id": "b\xff", "title": "bad byte"}\n'
    )
    report = make_indexer().add([path])
    assert report.articles == 1 and [p.line for p in report.problems] == [1, 2, 4]
    assert "surrogate" in report.problems[0].reason and "UTF-8" in report.problems[2].reason


@pytest.mark.parametrize(
    "count", ["Infinity", "-Infinity", "NaN", "1e19", "99999999999999999999", "2.9", "true", '"\u00b2"']
)
def test_bad_counts_are_bad_records(tmp_path, count):
    path = tmp_path / "e.jsonl"
    good = '{"article_id": "a", "type": "view", "ts": "2026-11-20T10:00:00Z"}'
    path.write_text(good + "\n" + good[:-1] + f', "count": {count}}}\n' + good + "\n")
    batch = read_events([path])
    assert len(batch.events) == 2 and [p.line for p in batch.problems] == [2]
    assert "count must be" in batch.problems[0].reason


def test_behaviors_row_with_a_bad_byte_and_surrogate_ids(tmp_path):
    path = tmp_path / "behaviors.tsv"
    path.write_bytes(
        b"1\tU1\t11/15/2019 8:55:22 AM\tN1\tN2-1 N3-0\n"
        b"2\tU\xff\t11/15/2019 8:56:22 AM\tN1\tN2-1 N3-0\n"
        b"3\tU3\t11/15/2019 8:57:22 AM\t\tN2-0 N3-1\n"
    )
    problems = []
    assert [i.impression_id for i in read_impressions(path, problems)] == ["1", "3"]
    assert [p.line for p in problems] == [2]
    stored = open_event_store(tmp_path).ingest([path])
    assert stored.stored == 6 and len(stored.problems) == 1
    events = tmp_path / "e.jsonl"
    events.write_bytes(b'{"article_id": "a\\ud83d", "type": "view", "ts": 1790000000, "user_id": "u"}\n')
    assert "surrogate" in read_events([events]).problems[0].reason


def test_csv_cells_over_the_default_limit_bom_and_unclosed_quotes(tmp_path):
    path = tmp_path / "a.csv"
    long_body = "word " * 40_000  # 200,000 characters: more than csv's default limit of 131,072
    path.write_text(
        "\ufeffid,title,body\n"
        f"big,Long one,{long_body}\n"
        'broken,"Never closed,body\n'
        "c3,Third,body three\n"
        'c4,"Quoted, title","multi\nline body"\n'
        'c5,Fifth,"a paragraph\nthen another, with, commas"\n'
        "c6,Sixth,body six\n",
        encoding="utf-8",
    )
    read = read_articles([path])
    assert [a.id for a in read.articles] == ["big", "c3", "c4", "c5", "c6"]  # a body line with commas is no row
    assert [(p.line, "never closed" in p.reason) for p in read.problems] == [(3, True)]
    assert read.articles[2].body == "multi\nline body"


# -- Medium -------------------------------------------------------------------------------------------


def test_line_separators_inside_json_strings_are_not_line_breaks(tmp_path):
    path = tmp_path / "a.jsonl"
    records = [{"id": f"a{i}", "title": f"Title\u2028with\u2029odd\u0085breaks {i}"} for i in range(3)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n{bad\n", encoding="utf-8")
    read = read_articles([path], "jsonl")
    assert [a.id for a in read.articles] == ["a0", "a1", "a2"] and [p.line for p in read.problems] == [4]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    assert not Indexer(tmp_path / "i", Settings(), KeywordEmbedder())._run([path], None, "fail", None, False).problems


def test_dates_are_four_digit_and_absurd_years_refused(tmp_path):
    assert format_timestamp(parse_timestamp("0999-01-01")) == "0999-01-01T00:00:00Z"
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "old", "title": "Old", "published_at": "0999-01-01"}])
    assert "outside 1800-2200" in read_articles([path]).problems[0].reason


def test_wrong_types_are_refused_not_stringified(tmp_path):
    rows = [
        {"id": [1, 2], "title": "list id"},
        {"id": True, "title": "bool id"},
        {"id": "t", "title": 5},
        {"id": 42, "title": "whole-number ids are fine"},
    ]
    read = read_articles([write_jsonl(tmp_path / "a.jsonl", rows)])
    assert [a.id for a in read.articles] == ["42"] and [p.line for p in read.problems] == [1, 2, 3]
    events = [{"article_id": "a", "type": "view", "ts": "2026-11-20", "count": 2.9}]
    assert "whole number" in read_events([write_jsonl(tmp_path / "e.jsonl", events)]).problems[0].reason
    tsv = tmp_path / "news.tsv"
    tsv.write_text("N1\tnews\tworld\tTitle\tAbs\turl\t[]\t[]\tx\ty\tz\tw\nN2\tnews\tworld\tOk\tAbs\turl\t[]\t[]\n")
    read = read_articles([tsv])
    assert [a.id for a in read.articles] == ["N2"] and "12" in read.problems[0].reason


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, "json"),
        ({"content": b'{"events": [{"article_id": "a", "type": "view", "count": 1e400}]}'}, "count"),
        ({"content": b'{"events": [{"article_id": "a\\ud83d", "type": "view"}]}'}, "unicode"),
        ({"content": b'{"events": [{"article_id": "\\udcff\\udcfe", "type": "view", "user_id": "\\ud800"}]}'}, "event"),
    ],
)
def test_undecodable_input_gets_422_never_500(client, kwargs, fragment):
    kwargs.setdefault("headers", {"content-type": "application/json"})
    response = client.post("/events", **kwargs)
    assert response.status_code == 422, response.text
    assert fragment in response.text.lower()
    response.json()  # valid JSON


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams():
    import asyncio

    received: list[int] = []

    async def inner(scope, receive, send):
        while True:
            message = await receive()
            received.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = [{"type": "http.request", "body": b"x" * 100_000, "more_body": True} for _ in range(200)]
    sent: list[dict] = []

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": [(b"transfer-encoding", b"chunked")], "method": "POST", "path": "/events"}
    asyncio.run(BodyLimit(inner, 1_000_000)(scope, receive, send))
    assert sent[0]["status"] == 413 and sum(received) <= 1_000_000 and len(chunks) > 150  # stopped early


def test_symlinks_are_not_followed_out_of_a_txt_folder(tmp_path):
    folder = tmp_path / "corpus" / "news"
    folder.mkdir(parents=True)
    (folder / "001.txt").write_text("Real headline\nbody\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    (folder / "002.txt").symlink_to(secret)
    (tmp_path / "corpus" / "linked").symlink_to(tmp_path, target_is_directory=True)
    read = read_articles([tmp_path / "corpus"])
    assert [a.id for a in read.articles] == ["news/001"]
    assert [Path(p.path).name for p in read.problems] == ["002.txt"] and "symbolic link" in read.problems[0].reason


# -- A newcomer's first hour --------------------------------------------------------------------------


def test_undated_articles_in_the_ranking_top_up_say_so(index):
    settings = Settings()
    hits = Recommender.open(index, settings).ranking(8, now=NOW)
    assert len(hits) == 8 and all("published" in h.reason for h in hits[:5])
    assert [h.reason for h in hits[5:]] == ["latest in the archive (undated)"] * 3  # never "new"


def test_first_visit_ranking_keeps_the_popular_and_recommendation_differs(index, tmp_path):
    rows = [
        {"article_id": a, "type": "view", "user_id": f"u{i}", "ts": "2026-11-25T09:00:00Z"}
        for a, n in (("nd0", 5), ("nd1", 4), ("fb4", 3))
        for i in range(n)
    ]
    open_event_store(index).ingest([write_jsonl(tmp_path / "e.jsonl", rows)])
    page = Recommender.open(index).page("fb0", k_related=1, k_ranking=3, k_recommend=3, now=NOW)
    assert [h.id for h in page.ranking] == ["nd0", "nd1", "fb4"]
    assert page.recommendation and not {h.id for h in page.recommendation} & {"nd0", "nd1", "fb4"}
    assert all(h.reason.startswith(("new:", "latest in the archive")) for h in page.recommendation)  # the newest


def test_ranking_order_follows_engagement_not_just_ctr(index, tmp_path):
    at = "2026-11-25T09:00:00Z"
    rows = [{"article_id": "fb1", "type": "view", "user_id": "solo", "ts": at}]
    rows += [{"article_id": "fb2", "type": "view", "user_id": f"v{i}", "ts": at} for i in range(15)]
    rows += [
        {"article_id": "fb2", "type": "reaction", "reaction": "good", "user_id": f"v{i}", "ts": at} for i in range(3)
    ]
    rows += [{"article_id": "fb2", "type": "click", "user_id": f"v{i}", "ts": at} for i in range(2)]
    rows += [{"article_id": "fb2", "type": "impression", "user_id": f"s{i}", "ts": at} for i in range(200)]
    open_event_store(index).ingest([write_jsonl(tmp_path / "e.jsonl", rows)])
    hits = Recommender.open(index).ranking(2, now=NOW)
    assert [h.id for h in hits] == ["fb2", "fb1"]
    assert hits[0].reason == "15 views and 3 reactions and 2 clicks from 200 impressions in the last 24 h"


# -- CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env():
    return {"RECSYS_EMBEDDER__MODEL": "keyword-test"}  # the fixtures' model: no job below embeds


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_cli_exit_codes_and_on_error_values(index, tmp_path, cli_env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"article_id": "fb1", "type": "view", "ts": "2026-11-20T10:00:00Z"}\n{"article_id": "x"}\n')
    assert run("events", "ingest", bad, "--index", index, "--on-error", "fial").exit_code == 2
    assert run("events", "ingest", bad, "--index", index).exit_code == 3  # done, one record skipped
    assert run("events", "ingest", bad, "--index", index, "--on-error", "fail").exit_code == 1
    assert run("related", "missing", "--index", index).exit_code == 1


def test_cli_category_matches_case_insensitively_and_names_unknown_values(index, make_indexer):
    make_indexer().add_articles([art("c1", "football derby", "football goal", category="Sport")])
    found = run("related", "fb0", "--index", index, "--category", "sport", "--json")
    assert found.exit_code == 0 and [h["id"] for h in json.loads(found.stdout)] == ["c1"]
    unknown = run("related", "fb0", "--index", index, "--category", "NOPE")
    assert unknown.exit_code == 1 and "unknown category 'NOPE'" in unknown.output and "Sport" in unknown.output


def test_cli_help_shows_flags_without_values():
    help_text = run("related", "--help").output
    assert "--json " in help_text and "<bool>" not in help_text and "--k" not in help_text
    page_help = run("page", "--help").output
    assert "Related list length" in page_help and "Recommendation list length" in page_help


def test_cli_remove_of_an_unknown_id_writes_nothing(index, cli_env):
    before = Recommender.open(index).version
    result = run("index", "remove", "nope", "--index", index, env=cli_env)
    assert result.exit_code == 1 and "not indexed" in result.output and "--block-unindexed" in result.output
    assert Recommender.open(index).version == before
    blocked = run("index", "remove", "nope", "--index", index, "--block-unindexed", env=cli_env)
    assert blocked.exit_code == 0 and Recommender.open(index).view.store.takedowns() == 1


def test_a_restored_article_with_unchanged_text_is_not_embedded_again(make_indexer, index, tmp_path):
    embedder = KeywordEmbedder()
    indexer = make_indexer(e=embedder)
    indexer.remove(["fb1"])
    restored = indexer.restore(["fb1"])  # back at once, from its kept text and parked vector
    assert restored.added == 1 and restored.embedded == 0 and embedder.embedded == 0
    source = art("fb1", "football match 1", "football goal derby 1", published_at="2026-11-21")
    report = indexer.add_articles([source])
    assert report.added == 0 and report.embedded == 0 and embedder.embedded == 0
    assert "fb1" in [h.id for h in Recommender.open(index).related("fb0", 5, now=NOW)]


def test_serve_logs_every_request(monkeypatch, index):
    import uvicorn

    from recsys.cli.serve import run_server

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: seen.update(k))
    run_server(str(index), None, "127.0.0.1", 8123)
    assert seen["access_log"] is True and seen["log_level"] == "info"
    os.environ.pop("RECSYS_SERVE_INDEX", None)


def test_an_events_database_from_before_sources_is_migrated_in_place(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "events.sqlite")
    old.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_key TEXT NOT NULL UNIQUE, "
        "article_id TEXT NOT NULL, type TEXT NOT NULL, reaction TEXT NOT NULL DEFAULT '', "
        "user_id TEXT NOT NULL DEFAULT '', ts REAL NOT NULL, count INTEGER NOT NULL DEFAULT 1);"
        "INSERT INTO events (event_key, article_id, type, user_id, ts) VALUES ('k', 'a', 'view', 'u1', 1790000000);"
    )
    old.commit()
    old.close()
    store = open_event_store(tmp_path)
    assert next(row[1] for row in store.since(0)) == [("a", "view", "", 1790000000.0, 1, "u1")]
    assert store.add([("k2", Event("a", "view", 1790000001.0, source="ip:x"))]) == 1
    from recsys.signals.records import ServedList
    from recsys.signals.store.sqlite import SCHEMA_VERSION

    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.add_served([ServedList("l1", 1790000002.0, "related", ("a",))]) == 1  # the served-list tables too


def test_undecodable_bodies_and_nan_parameters_are_validation_errors(client):
    bad = client.post("/related-to-text", content=b"\xff", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and "UTF-8" in bad.json()["detail"]
    for path in ("/ranking?window_hours=nan", "/ranking?window_hours=inf", "/related/fb1?max_age_days=nan"):
        answer = client.get(path)
        assert answer.status_code == 422 and "finite" in answer.text, path


def test_drafts_are_rate_limited_per_client_and_the_model_is_shared_fairly(index):
    import threading

    class Slow(KeywordEmbedder):
        def encode(self, texts, progress=None):
            time.sleep(0.3)
            return super().encode(texts, progress)

    settings = Settings().replace("http", drafts_burst=3, drafts_per_minute=1.0, draft_concurrency=1)
    with TestClient(create_app(index, settings, KeywordEmbedder())) as client:
        draft = {"title": "football derby tonight", "body": "football goal"}
        assert [client.post("/related-to-text", json=draft).status_code for _ in range(3)] == [200] * 3
        limited = client.post("/related-to-text", json=draft)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        other = TestClient(client.app, client=("10.2.2.2", 1000))
        assert other.post("/related-to-text", json=draft).status_code == 200  # another client has its own bucket
    keyed = Settings().replace("http", write_key="k", draft_concurrency=1)
    with TestClient(create_app(index, keyed, Slow())) as client:
        codes: list[int] = []
        headers = {"X-Recsys-Key": "k"}

        def post() -> None:
            codes.append(client.post("/related-to-text", json=draft, headers=headers).status_code)

        threads = [threading.Thread(target=post) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(codes)[0] == 200 and 429 in codes  # one model slot: the others are told to retry


def test_input_files_are_streamed_record_by_record(tmp_path):
    import tracemalloc

    from recsys.ingest.articles import iter_records
    from recsys.ingest.events import iter_event_batches

    body = "storm harbour election " * 200  # ~4.6 KB a record
    articles = tmp_path / "big.jsonl"
    with open(articles, "w") as out:
        for i in range(6000):
            out.write(json.dumps({"id": f"a{i}", "title": f"title {i}", "body": body}) + "\n")
    csv_file = tmp_path / "big.csv"
    with open(csv_file, "w") as out:
        out.write("id,title,body\n")
        for i in range(6000):
            out.write(f'a{i},title {i},"{body}"\n')
    events = tmp_path / "events.jsonl"
    with open(events, "w") as out:
        for i in range(60_000):
            out.write(
                json.dumps({"article_id": f"a{i % 50}", "type": "view", "ts": 1.79e9 + i, "user_id": body[:200]}) + "\n"
            )
    for path in (articles, csv_file):
        tracemalloc.start()
        count = sum(1 for _ in iter_records(path))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == 6000 and peak < path.stat().st_size / 10, (path.name, peak)
    tracemalloc.start()
    read = sum(len(b.events) for b in iter_event_batches([events], size=1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # what grows is the occurrence counter of events without an event_id (~110 bytes each); reading whole took 2x
    assert read == 60_000 and peak < events.stat().st_size / 2, peak


def test_utf16_files_duplicate_csv_columns_and_invisible_titles_are_refused_with_the_reason(tmp_path):
    utf16 = tmp_path / "a.jsonl"
    utf16.write_text('{"id": "a", "title": "storm"}\n{"id": "b", "title": "flood"}\n', encoding="utf-16")
    problems = read_articles([utf16]).problems
    assert len(problems) == 1 and problems[0].line == 1 and "UTF-16" in problems[0].reason
    events = tmp_path / "e.csv"
    events.write_text("article_id,type,ts\na,view,1\n", encoding="utf-32")
    assert read_events([events]).problems[0].reason.startswith("the file is UTF-32")
    twice = tmp_path / "b.csv"
    twice.write_text("id,title,id\na,storm,b\n")
    problems = read_articles([twice]).problems
    assert len(problems) == 1 and "'id' more than once" in problems[0].reason
    invisible = write_jsonl(tmp_path / "c.jsonl", [{"id": "z", "title": "\u200b"}, {"id": "y", "title": "storm"}])
    result = read_articles([invisible])
    assert [a.id for a in result.articles] == ["y"] and "no visible character" in result.problems[0].reason
