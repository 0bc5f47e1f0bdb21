"""Closing the loop: every served list has an id and positions, is recorded (sampled, batched, never failing a
request), and clicks that name it are credited to its box in the online report, once, and only when the list
holds the article."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from recsys.cli import app
from recsys.config import FeedbackConfig, Settings
from recsys.feedback.log import ServedLog
from recsys.feedback.report import online_report, wilson
from recsys.http import create_app
from recsys.ingest.events import event_from_record
from recsys.service import Recommender
from recsys.signals.records import ServedList
from recsys.signals.store import open_event_store
from tests.test_http import articles

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NOW = time.time()


@pytest.fixture
def index(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    return tmp_path / "index"


def _settings(**feedback: object) -> Settings:
    return Settings().replace("popularity", refresh_seconds=0.0).replace("feedback", **feedback)


def test_every_served_list_has_its_own_id_and_positions_and_is_recorded(index):
    with Recommender.open(index, _settings()) as rec:
        related = rec.related("fb1", 4)
        ranked = rec.ranking(3)
        mine = rec.recommend(["fb1", "fb2"], k=3, user_id="reader-7")
        page = rec.page("el1", ["fb1"], k_related=2, k_recommend=2, k_ranking=2, user_id="reader-7")
        lists = [related, ranked, mine, page.related, page.recommendation, page.ranking]
        assert all(lists)
        for hits in lists:
            assert [h.position for h in hits] == list(range(1, len(hits) + 1))
            assert len({h.list_id for h in hits}) == 1 and len(hits[0].list_id) == 16
            assert hits[0].to_dict()["list_id"] == hits[0].list_id and hits[0].to_dict()["position"] == 1
        assert len({hits[0].list_id for hits in lists}) == len(lists)
        assert rec.related("fb1", 0) == []  # an empty list is not recorded
        rec.flush()
        stored = {s.list_id: s for s in open_event_store(index).served_lists(NOW - 60, time.time() + 60)}
    assert set(stored) == {hits[0].list_id for hits in lists}
    first = stored[related[0].list_id]
    assert (first.box, first.article_id, first.ids) == ("related", "fb1", tuple(h.id for h in related))
    for_page = stored[page.recommendation[0].list_id]
    assert (for_page.box, for_page.article_id, for_page.reader) == ("recommendation", "el1", "reader-7")
    assert stored[mine[0].list_id].reader == "reader-7" and stored[ranked[0].list_id].box == "ranking"


def test_clicks_that_name_a_list_are_credited_once_and_only_when_the_list_holds_the_article(index):
    settings = _settings()
    with TestClient(create_app(index, settings)) as client:
        shown = client.get("/related/fb1?k=4").json()
        other = client.get("/ranking?k=3").json()
        assert shown and shown[1]["position"] == 2
        list_id, article = shown[1]["list_id"], shown[1]["id"]
        click = {"type": "click", "article_id": article, "list_id": list_id, "position": 2, "user_id": "u1"}
        first = client.post("/events", json={"events": [click]}).json()
        assert first["accepted"] == 1 and first["attributed"] == 1
        again = client.post("/events", json={"events": [{**click, "user_id": "u2"}]}).json()
        assert again["accepted"] == 1 and again["attributed"] == 0  # the same list and article: not a second click
        stranger = {"type": "click", "article_id": "ck4", "list_id": list_id, "position": 1}  # not in that list
        forged = {"type": "click", "article_id": article, "list_id": "0123456789abcdef", "position": 1}
        flood = [{**forged, "user_id": f"x{i}"} for i in range(50)]
        answer = client.post("/events", json={"events": [stranger, *flood]}).json()
        assert answer["accepted"] == 51 and answer["attributed"] == 0  # stored as plain clicks
    report = online_report(open_event_store(index), NOW - 3600, time.time() + 60, ("box",))
    by_box = {r.box: r for r in report.rows}
    assert (by_box["related"].lists, by_box["related"].clicked_lists, by_box["related"].clicks) == (1, 1, 1)
    assert by_box["related"].mean_click_position == 2.0
    assert by_box["ranking"].clicks == 0 and by_box["ranking"].lists == (1 if other else 0)
    assert report.unattributed_clicks == 51
    assert 0 < by_box["related"].ctr_low < by_box["related"].ctr == 1.0 == by_box["related"].ctr_high


def test_sampling_keeps_the_ids_and_records_the_share_asked(index):
    with Recommender.open(index, _settings(log_rate=0.0)) as rec:
        hits = rec.related("fb1", 3)
        assert hits and hits[0].list_id and hits[0].position == 1  # still an id: the click just goes unattributed
        rec.flush()
        assert rec.served_log.counts["sampled_out"] == 1 and open_event_store(index).count_served() == 0
    log = ServedLog(open_event_store(index), FeedbackConfig(log_rate=0.25), seed=1)
    recorded = sum(log.record(ServedList(f"l{i}", NOW, "related", ("a",))) for i in range(4000))
    log.close()
    assert 850 < recorded < 1150 and open_event_store(index).count_served() == recorded


def test_a_log_that_cannot_be_written_never_fails_a_request(index):
    with Recommender.open(index, _settings()) as rec:

        def broken(lists):
            raise OSError("disk full")

        rec.served_log.store.add_served = broken  # type: ignore[method-assign]
        hits = rec.related("fb1", 3)
        assert hits and rec.flush() == 0
        assert rec.served_log.counts["failed"] == 1 and rec.related("fb2", 3)


def test_the_queue_is_bounded_and_flushed_by_the_writer_thread(index):
    store = open_event_store(index)
    log = ServedLog(store, FeedbackConfig(queue_limit=10, flush_seconds=0.05, batch=1000))
    accepted = [log.record(ServedList(f"q{i}", NOW, "ranking", ("a",))) for i in range(25)]
    assert sum(accepted) == 10 and log.counts["dropped"] == 15
    deadline = time.time() + 5
    while store.count_served() < 10 and time.time() < deadline:
        time.sleep(0.02)
    assert store.count_served() == 10  # written without anyone calling flush()
    log.close()


def test_the_wilson_interval_is_the_textbook_one():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson(0, 0) == (0.0, 1.0)


def test_event_records_name_lists_only_for_clicks_and_positions_only_with_a_list():
    click = event_from_record({"article_id": "a", "type": "click", "ts": NOW, "list_id": "abc", "position": "3"})
    assert (click.list_id, click.position) == ("abc", 3)
    with pytest.raises(ValueError, match="list_id"):
        event_from_record({"article_id": "a", "type": "click", "ts": NOW, "position": 2})
    with pytest.raises(ValueError, match="only a click"):
        event_from_record({"article_id": "a", "type": "view", "ts": NOW, "list_id": "abc"})
    with pytest.raises(ValueError, match="position must be from 1"):
        event_from_record({"article_id": "a", "type": "click", "ts": NOW, "list_id": "abc", "position": 0})


def test_report_online_prints_and_gives_json_rows_per_box(index, tmp_path):
    from typer.testing import CliRunner

    with Recommender.open(index, _settings()) as rec:
        hits = rec.recommend(["fb1"], k=3)
        rec.record_events([{"type": "click", "article_id": hits[0].id, "ts": NOW, "list_id": hits[0].list_id}])
        rec.related("el1", 3)
    runner = CliRunner()
    out = runner.invoke(app, ["report", "online", "--index", str(index), "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["box"]: r for r in json.loads(out.output)["rows"]}
    assert set(rows) == {"recommendation", "related"}
    assert rows["recommendation"]["clicks"] == 1 and rows["related"]["clicks"] == 0
    assert {"box", "variant", "lists", "clicks", "ctr", "ctr_low", "ctr_high"} <= set(rows["related"])
    table = runner.invoke(app, ["report", "online", "--index", str(index), "--by", "box", "--by", "day"])
    assert table.exit_code == 0 and "recommendation" in table.output and "unattributed clicks" in table.output
    queried = runner.invoke(app, ["related", "fb1", "--index", str(index)])
    assert queried.exit_code == 0
    assert open_event_store(index).count_served() == 2  # an operator's query is not a reader's list


def test_metrics_parse_as_prometheus_text_and_count_what_happened(index):
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(create_app(index, _settings())) as client:
        shown = client.get("/related/fb1?k=3").json()
        client.get("/related/el2?k=3")
        client.get("/related/no-such-article")
        client.get("/ranking?k=2")
        click = {"type": "click", "article_id": shown[0]["id"], "list_id": shown[0]["list_id"], "position": 1}
        client.post("/events", json={"events": [click, {"type": "view", "article_id": "nope-not-indexed"}]})
        client.post("/events", json={"events": [{"type": "nonsense", "article_id": "fb1"}]})
        answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    related = "/related/{article_id:path}"
    assert samples[("recsys_requests_total", (("endpoint", related), ("status", "200")))] == 2
    assert samples[("recsys_requests_total", (("endpoint", related), ("status", "404")))] == 1
    assert samples[("recsys_request_seconds_count", (("endpoint", related),))] == 3
    assert samples[("recsys_lists_served_total", (("box", "related"), ("variant", "")))] == 2
    assert samples[("recsys_lists_served_total", (("box", "ranking"), ("variant", "")))] == 1
    assert samples[("recsys_clicks_total", (("box", "related"), ("variant", "")))] == 1
    assert samples[("recsys_events_total", (("outcome", "stored"),))] == 1
    assert samples[("recsys_events_total", (("outcome", "held"),))] == 1
    assert ("recsys_index_info", (("version", client.app.state.recommender.version),)) in samples
    assert samples[("recsys_index_articles", ())] == len(articles())
    assert not any(k[0] == "recsys_errors_total" and v for k, v in samples.items())


def test_train_without_behaviors_learns_from_the_served_lists_and_their_clicks(make_indexer, tmp_path):
    """A site that never logged impressions itself: its readers' clicks on the boxes it served are enough."""
    import numpy as np
    from typer.testing import CliRunner

    from recsys.learning.ranker import RANKER_FILE
    from recsys.signals.records import Event
    from tests.test_learning import articles as topic_articles

    make_indexer().add_articles(topic_articles())
    index = tmp_path / "index"
    ids = [a.id for a in topic_articles()]
    topics = sorted({a[:2] for a in ids})
    rng = np.random.default_rng(5)
    store = open_event_store(index)
    start = NOW - 4 * 86_400.0
    lists, events = [], []
    for n in range(2400):
        ts = start + n * 140.0
        reader = f"r{n % 80}"
        liked = topics[n % 80 % len(topics)]
        shown = tuple(rng.choice(ids, 8, replace=False))
        list_id = f"list{n:05d}"
        lists.append(ServedList(list_id, ts, "recommendation", shown, reader))
        for place, article in enumerate(shown, start=1):  # looked at less further down; clicked if on topic
            if rng.random() < place**-0.7 * (0.6 if article.startswith(liked) else 0.05):
                click = Event(article, "click", ts + 5, user_id=reader, list_id=list_id, position=place)
                events.append((f"c{n}:{place}", click))
                events.append((f"v{n}:{place}", Event(article, "view", ts + 6, user_id=reader)))
    store.add_served(lists)
    store.add(events)
    env = {"RECSYS_EMBEDDER__MODEL": "keyword-test"}
    args = ["train", "--index", str(index), "--test-days", "1", "--out", str(tmp_path / "r")]
    out = CliRunner().invoke(app, args, env=env)
    assert out.exit_code == 0, out.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "2,400 lists the service served" in metrics["source"] and "positions known" in metrics["source"]
    assert metrics["training"]["model"] == "fitted" and (index / RANKER_FILE).is_file()
    auc = metrics["training"]["held_out"]["auc"]
    assert auc["recsys (learned)"] > 0.65  # the readers' topics, learned from nothing but the served boxes


def test_positions_let_the_ranker_tell_where_a_row_was_shown_from_what_it_is():
    """Clicks fall off with the place shown; a feature that only tracks the place (as a served model's own
    score would) looks like quality to a ranker without positions, much less so with them."""
    import numpy as np

    from recsys.learning.features import FEATURES
    from recsys.learning.ranker import LearnedRanker

    rng = np.random.default_rng(0)
    groups, size = 1500, 8
    place = np.tile(np.arange(1, size + 1), groups)
    x = rng.normal(size=(groups * size, len(FEATURES)))
    quality, tracks_place = FEATURES.index("content_max"), FEATURES.index("popularity")
    x[:, tracks_place] = -place + rng.normal(0, 0.5, place.size)
    clicked = (rng.random(place.size) < (1.0 / place) / (1 + np.exp(-2 * x[:, quality]))).astype(np.int8)
    group_ids = np.repeat(np.arange(groups), size)
    share = {}
    for name, positions in (("without", None), ("with", place)):
        model = LearnedRanker.fit((x, clicked, group_ids, positions), None, rounds=60)
        share[name] = model.importance()["popularity"] / model.importance()["content_max"]
    assert share["with"] < 0.8 * share["without"], share


def test_the_retraining_guard_keeps_the_better_model_on_days_neither_saw():
    import numpy as np

    from recsys.learning.features import FEATURES
    from recsys.learning.history import better_or_equal
    from recsys.learning.ranker import LearnedRanker

    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, len(FEATURES)))
    groups = np.repeat(np.arange(400), 10)
    labels = (x[:, 0] + rng.normal(0, 0.5, 4000) > 1.0).astype(np.int8)
    times = np.repeat(np.arange(400, dtype=float), 10)
    good = LearnedRanker.fit((x[:2000], labels[:2000], groups[:2000]), None, rounds=30)
    noise = LearnedRanker.fit((x[:2000], rng.permutation(labels[:2000]), groups[:2000]), None, rounds=30)
    held = (x[2000:], labels[2000:], groups[2000:], times[2000:])
    keep, figures = better_or_equal(noise, good, held)
    assert not keep and figures["current"] > figures["new"]  # a worse new model does not replace a good one
    promote, _ = better_or_equal(good, noise, held)
    assert promote
    good.meta["trained_until"] = 390.0  # it has seen nearly all of the held-back days: no fair comparison
    promote, figures = better_or_equal(noise, good, held)
    assert promote and figures == {}


def test_replaced_models_are_kept_and_one_command_rolls_back(make_indexer, tmp_path):
    from typer.testing import CliRunner

    from recsys.learning.ranker import RANKER_FILE, LearnedRanker
    from tests.test_learning import articles as topic_articles
    from tests.test_learning import behaviors_file, synthetic_log

    make_indexer().add_articles(topic_articles())
    index = tmp_path / "index"
    runner = CliRunner()
    env = {"RECSYS_EMBEDDER__MODEL": "keyword-test"}
    ids = []
    for seed in (0, 1):
        path = behaviors_file(synthetic_log(1500, seed=seed), tmp_path / f"b{seed}.tsv")
        args = [
            "train",
            "--index",
            str(index),
            "--behaviors",
            str(path),
            "--test-days",
            "1",
            "--out",
            str(tmp_path / f"r{seed}"),
        ]
        out = runner.invoke(app, args, env=env)
        assert out.exit_code == 0, out.output
        ids.append(LearnedRanker.load(index).model_id)
    listed = runner.invoke(app, ["model", "list", "--index", str(index), "--json"])
    models = json.loads(listed.output)
    assert models[0]["current"] and models[0]["model_id"] == ids[-1]
    # the second log's held-back days are no later than what the first model learned from: no fair comparison,
    # so the new model replaced it, and the first is kept
    assert ids[0] != ids[1] and [m["model_id"] for m in models[1:]] == [ids[0]]
    back = runner.invoke(app, ["model", "rollback", "--index", str(index)])
    assert back.exit_code == 0 and ids[0] in back.output
    assert LearnedRanker.load(index).model_id == ids[0] and (index / RANKER_FILE).is_file()
    again = json.loads(runner.invoke(app, ["model", "list", "--index", str(index), "--json"]).output)
    assert again[0]["model_id"] == ids[0] and ids[1] in {m["model_id"] for m in again[1:]}
    missing = runner.invoke(app, ["model", "rollback", "nope", "--index", str(index)])
    assert missing.exit_code == 1 and "recsys model list" in missing.output


def test_kill_9_of_serve_loses_at_most_the_lists_waiting_for_their_batch(index, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RECSYS_FEEDBACK__FLUSH_SECONDS": "0.2"}
    command = [sys.executable, "-m", "recsys.cli", "serve", "--index", str(index), "--port", str(port)]
    server = subprocess.Popen([*command, "--no-access-log"], env=env, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        early = [client.get("/related/fb1?k=3").json()[0]["list_id"] for _ in range(30)]
        time.sleep(1.0)  # several flush intervals: these are written
        late = [client.get("/related/el1?k=3").json()[0]["list_id"] for _ in range(5)]
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    stored = {s.list_id for s in open_event_store(index).served_lists(NOW - 3600, time.time() + 60)}
    assert set(early) <= stored  # everything older than a batch survived the kill
    assert stored <= set(early) | set(late)  # and nothing half-written or invented


def test_train_every_hours_retrains_until_stopped(make_indexer, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import recsys.cli.train as train_cli
    from recsys.learning.ranker import RANKER_FILE
    from tests.test_learning import articles as topic_articles
    from tests.test_learning import behaviors_file, synthetic_log

    make_indexer().add_articles(topic_articles())
    index = tmp_path / "index"
    open_event_store(index).ingest([behaviors_file(synthetic_log(1500), tmp_path / "b.tsv")])
    naps = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt  # the operator stops it after the second run

    monkeypatch.setattr(train_cli.time, "sleep", nap)
    monkeypatch.chdir(tmp_path)  # the run folders land here
    env = {"RECSYS_EMBEDDER__MODEL": "keyword-test"}
    out = CliRunner().invoke(app, ["train", "--index", str(index), "--test-days", "1", "--every", "0.5"], env=env)
    assert naps == [1800.0, 1800.0] and out.exit_code == 130  # stopped by the interrupt, after two runs
    assert (index / RANKER_FILE).is_file() and out.output.count("next training in 0.5 h") == 2
