"""One suite every events store passes: SQLite (embedded) and PostgreSQL (shared by many hosts).

The PostgreSQL half needs a server: ``scripts/test.sh`` starts a throwaway cluster and sets
RECSYS_TEST_POSTGRES_URL; each test gets its own schema in it. Without one, that half skips saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.config import EventsConfig, Settings
from recsys.service import Recommender
from recsys.signals.activity import EventBuffer, PopularityTracker
from recsys.signals.records import Event, ServedList
from recsys.signals.store import open_event_store
from recsys.signals.store.base import EventStore, EventsUnavailable
from recsys.signals.store.postgres import DOWN_SECONDS
from tests.conftest import art

POSTGRES_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "")
REPO = Path(__file__).resolve().parents[1]
NOW = time.time()


def postgres_schema_url() -> Iterator[str]:
    """A fresh schema in the test server, as a URL whose search_path points at it; dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not available: set RECSYS_TEST_POSTGRES_URL (scripts/test.sh starts a server)")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def events_config(request: pytest.FixtureRequest) -> Iterator[EventsConfig]:
    if request.param == "sqlite":
        yield EventsConfig()
    else:
        yield from (EventsConfig(url=url) for url in postgres_schema_url())


@pytest.fixture
def store(events_config: EventsConfig, tmp_path: Path) -> Iterator[EventStore]:
    opened = open_event_store(tmp_path / "index", events_config)
    yield opened
    opened.close()


def view(article: str, ts: float, user: str = "", count: int = 1, source: str = "") -> Event:
    return Event(article, "view", ts, user_id=user, count=count, source=source)


def test_ingest_is_idempotent_and_identical_records_of_one_file_both_count(store, tmp_path):
    records = [
        {"article_id": "a", "type": "view", "ts": NOW - 60, "user_id": "u1"},
        {"article_id": "a", "type": "view", "ts": NOW - 60, "user_id": "u1"},  # a second, identical real view
        {"article_id": "b", "type": "reaction", "reaction": "veryGood", "ts": NOW - 30, "event_id": "e9"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first = store.ingest([path])
    again = store.ingest([path])
    assert (first.read, first.stored, first.duplicates) == (3, 3, 0)
    assert (again.stored, again.duplicates) == (0, 3)
    assert store.add([("id:e9", Event("b", "reaction", NOW, reaction="veryGood"))]) == 0  # same event id
    folded = [row for _, rows in store.since(0) for row in rows]
    assert sorted((r[0], r[1]) for r in folded) == [("a", "view"), ("a", "view"), ("b", "reaction")]


def test_tailing_by_sequence_returns_each_event_once_in_order(store):
    store.add([(f"k{i}", view(f"a{i}", NOW - 100 + i)) for i in range(5)])
    seq, first = next(iter(store.since(0)))
    assert [r[0] for r in first] == [f"a{i}" for i in range(5)] and seq == store.max_seq()
    store.add([("k5", view("a5", NOW)), ("k0", view("a0", NOW - 100))])  # one new, one already stored
    later = [r for _, rows in store.since(seq) for r in rows]
    assert [r[0] for r in later] == ["a5"]
    assert list(store.since(store.max_seq())) == []
    batches = list(store.since(0, batch=2))
    assert [len(rows) for _, rows in batches] == [2, 2, 2]


def test_reads_counts_and_times_are_as_of_the_time_asked(store):
    store.add(
        [
            ("v1", view("a", NOW - 3000, "u1")),
            ("v2", view("a", NOW - 2000, "u1")),  # the same reader again: counted once
            ("v3", view("a", NOW - 1000, "u2")),
            ("v4", view("a", NOW - 500, "", count=50)),  # anonymous, capped at 10
            ("v5", view("b", NOW - 100, "u1")),
            ("v6", view("a", NOW - 400, "u3", source="ip:abc")),  # untrusted sender: counts as its source
            ("v7", view("a", NOW - 300, "u4", source="ip:abc")),
        ],
        history=[("u1", "old1", NOW - 90_000), ("u1", "old2", NOW - 80_000)],
    )
    counts = {(a, t): n for a, t, _, n in store.counts_for(["a", "b"], NOW - 10_000, NOW, anonymous_cap=10)}
    assert counts == {("a", "view"): 2 + 10 + 1, ("b", "view"): 1}
    assert store.counts_for(["a"], NOW - 10_000, NOW - 2500, anonymous_cap=10) == [("a", "view", "", 1)]
    assert [a for a, _ in store.reads_of("u1", NOW)] == ["b", "a", "old2", "old1"]
    assert [a for a, _ in store.reads_of("u1", NOW - 1500)] == ["a", "old2", "old1"]
    assert store.last_event_time(NOW - 450) == pytest.approx(NOW - 500)
    past = store.for_articles(["a"], until=NOW - 1500)
    assert sorted(r[3] for r in past) == pytest.approx([NOW - 3000, NOW - 2000])
    assert [r[:2] for r in store.reads_by_reader()["u1"]] == [
        (pytest.approx(NOW - 90_000), "old1"),
        (pytest.approx(NOW - 80_000), "old2"),
        (pytest.approx(NOW - 3000), "a"),
        (pytest.approx(NOW - 2000), "a"),
        (pytest.approx(NOW - 100), "b"),
    ]


def test_history_keeps_the_earliest_time_of_a_read(store):
    store.add([], history=[("u1", "x", NOW - 50)])
    store.add([], history=[("u1", "x", NOW - 500), ("u1", "y", NOW - 10)])
    store.add([], history=[("u1", "x", NOW - 5)])
    assert dict(store.reads_of("u1", NOW)) == {"x": pytest.approx(NOW - 500), "y": pytest.approx(NOW - 10)}


def test_logged_impressions_are_rebuilt_with_clicks_and_prior_history(store):
    shown = [(f"i{n}", Event(n, "impression", NOW - 600, user_id="u1")) for n in ("n1", "n2", "n3")]
    store.add([*shown, ("c", Event("n2", "click", NOW - 590, user_id="u1"))], history=[("u1", "h1", NOW - 9000)])
    [impression] = store.logged_impressions()
    assert impression.candidates == ("n1", "n2", "n3") and impression.clicked == (False, True, False)
    assert impression.history == ("h1",)


def test_unindexed_events_are_held_bounded_then_promoted(store):
    store.config = EventsConfig(url=store.config.url, max_unindexed_events=3)
    taken = store.add_unindexed([(f"h{i}", view("future-article", NOW - i)) for i in range(5)])
    assert taken == 3 and store.unindexed_ids() == ["future-article"]
    assert store.promote(["future-article"]) == 3
    assert store.unindexed_ids() == [] and store.counts_for(["future-article"], NOW - 99, NOW, 10)[0][3] == 3
    assert store.promote(["future-article"]) == 0


def test_served_lists_and_the_clicks_that_name_them_round_trip_and_expire(store):
    lists = [ServedList(f"l{i}", NOW - 100 + i, "related", (f"a{i}", "b", "c"), "u1", "src", "", "m") for i in range(5)]
    assert store.add_served(lists) == 5 and store.add_served(lists[:2]) == 0  # an id stored before is skipped
    got = store.served_lists(NOW - 1000, NOW)
    assert got == lists and store.count_served() == 5
    click = Event("b", "click", NOW - 50, user_id="u1", list_id="l3", position=2)
    plain = Event("c", "click", NOW - 49, user_id="u2")
    assert store.add([("k1", click), ("k2", plain)]) == 2
    assert store.add([("k1", click)]) == 0  # a retried click: no second claim
    claims = store.attributed_clicks(NOW - 1000, NOW)
    assert [(c.list_id, c.position, c.article_id, c.reader) for c in claims] == [("l3", 2, "b", "u1")]
    assert store.served_lists(NOW - 98.5, NOW - 97.5) == [lists[2]]  # as of a time
    assert store.prune_served(NOW - 97.5, 10) == 3  # lists served before the cut go
    assert store.prune_served(NOW - 1000, 1) == 1  # then the oldest beyond the cap
    assert [s.list_id for s in store.served_lists(NOW - 1000, NOW)] == ["l4"]


def test_concurrent_writers_never_make_a_tailer_skip_an_event(store):
    """Four writers add while a tailer folds by sequence; the tailer ends with every event exactly once."""
    seen: list[str] = []
    last = 0
    done = threading.Event()

    failures: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for batch in range(15):
                store.add([(f"w{worker}-{batch}-{i}", view(f"w{worker}-{batch}-{i}", NOW)) for i in range(7)])
        except BaseException as exc:  # a writer that dies must fail the test, not shrink the total
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    while not done.is_set():
        done.set() if not any(t.is_alive() for t in writers) else None
        for seq, rows in store.since(last):
            seen += [r[0] for r in rows]
            last = seq
    for thread in writers:
        thread.join()
    assert not failures
    assert len(seen) == len(set(seen)) == 4 * 15 * 7


def test_the_service_ranks_from_the_configured_store(events_config, make_indexer, tmp_path):
    make_indexer().add_articles([art(f"a{i}", f"story {i}", f"words {i}") for i in range(6)])
    settings = Settings().replace("events", url=events_config.url).replace("popularity", refresh_seconds=0.0)
    with Recommender.open(tmp_path / "index", settings) as writer:
        accepted = writer.record_events(
            [{"article_id": "a4", "type": "view", "ts": NOW - 10, "user_id": f"u{i}"} for i in range(5)], durable=True
        )
        assert accepted.accepted == 5
    with Recommender.open(tmp_path / "index", settings) as reader:  # another process, the same store
        top = reader.ranking(1, now=NOW)
        assert top[0].id == "a4" and top[0].metadata["views"] == 5


def test_an_unknown_store_url_says_what_is_accepted(tmp_path):
    with pytest.raises(Exception, match="postgresql://"):
        open_event_store(tmp_path, EventsConfig(url="mysql://x/y"))


def _cluster(action: str, folder: Path, port: int) -> str:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "postgres.sh"), action, str(folder), str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot run a PostgreSQL server here: {result.stderr.strip()[-300:]}")
    return result.stdout.strip()


def test_a_postgresql_outage_refuses_writes_loudly_keeps_lists_and_recovers(make_indexer, tmp_path):
    """Its own server, stopped mid-run: writes fail with EventsUnavailable (nothing silently lost), the
    buffer keeps what it holds, Ranking answers from what was folded, and everything resumes after."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not available: set RECSYS_TEST_POSTGRES_URL (scripts/test.sh starts a server)")
    folder = Path(tempfile.mkdtemp(prefix="recsys-pg-")) / "data"  # the server's user must reach it
    folder.parent.chmod(0o755)
    url = _cluster("start", folder, 55499)
    try:
        make_indexer().add_articles([art(f"a{i}", f"story {i}", f"words {i}") for i in range(6)])
        config = EventsConfig(url=url, retries=1, retry_seconds=0.05, connect_timeout=1.0)
        settings = Settings().replace("popularity", refresh_seconds=0.0)
        settings = settings.replace("events", **{k: getattr(config, k) for k in ("url", "retries", "connect_timeout")})
        rec = Recommender.open(tmp_path / "index", settings)
        rec.record_events([{"article_id": "a2", "type": "view", "ts": NOW - 5, "user_id": "u1"}], durable=True)
        assert rec.ranking(1, now=NOW)[0].id == "a2"

        _cluster("stop", folder, 55499)
        with pytest.raises(EventsUnavailable, match="cannot be reached"):
            rec.record_events([{"article_id": "a3", "type": "view", "ts": NOW, "user_id": "u2"}], durable=True)
        store = open_event_store(tmp_path, config)
        buffer = EventBuffer(store, settings.popularity)
        buffer.record(view("a5", NOW - 1, "u9"))
        with pytest.raises(EventsUnavailable):
            buffer.flush()
        assert len(buffer) == 1  # kept, to be retried
        assert rec.ranking(1, now=NOW)[0].id == "a2"  # answered from the popularity already folded
        with Recommender.open(tmp_path / "index", settings) as cold:  # a process starting while it is down
            assert len(cold.ranking(3, now=NOW)) == 3 and cold.related("a1", 2)
        uncached = rec.ranking(1, window_hours=30, now=NOW)[0]  # figures not cached for this window: none shown
        assert (
            uncached.id == "a2" and uncached.reason == "popular in the last 30 h" and "views" not in uncached.metadata
        )

        _cluster("start", folder, 55499)
        time.sleep(DOWN_SECONDS)  # a store that just failed answers at once for this long before trying again
        assert buffer.flush() == 1 and len(buffer) == 0
        rec.record_events([{"article_id": "a3", "type": "view", "ts": NOW, "user_id": u} for u in "xyz"], durable=True)
        tracker = PopularityTracker(store, settings.popularity)
        assert set(tracker.current(force=True).ids) == {"a2", "a3", "a5"}
        assert rec.ranking(1, now=NOW)[0].id == "a3"
        rec.close()
        store.close()
    finally:
        _cluster("stop", folder, 55499)
        shutil.rmtree(folder.parent, ignore_errors=True)


def test_every_command_takes_the_store_from_events_option(events_config, make_indexer, tmp_path):
    from typer.testing import CliRunner

    from recsys.cli import app

    make_indexer().add_articles([art(f"a{i}", f"story {i}", f"words {i}") for i in range(6)])
    index = str(tmp_path / "index")
    path = tmp_path / "views.jsonl"
    path.write_text(
        "".join(
            json.dumps({"article_id": "a5", "type": "view", "ts": NOW - 60, "user_id": f"u{i}"}) + "\n"
            for i in range(3)
        )
    )
    runner = CliRunner()
    events = ["--events", events_config.url]
    ingested = runner.invoke(app, ["events", "ingest", str(path), "--index", index, *events])
    assert ingested.exit_code == 0, ingested.output
    ranked = runner.invoke(app, ["ranking", "--index", index, "-k", "1", "--json", *events])
    assert ranked.exit_code == 0, ranked.output
    assert json.loads(ranked.output)[0]["id"] == "a5"
    if events_config.url:  # the index folder's own events.sqlite was never written
        assert not (tmp_path / "index" / "events.sqlite").exists()
        elsewhere = runner.invoke(app, ["ranking", "--index", index, "-k", "1", "--json"])
        assert json.loads(elsewhere.output)[0]["id"] != "a5" or "view" not in json.loads(elsewhere.output)[0]["reason"]
