"""Learning from readers: features without the future, co-reads, the stored model, and what is served."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import Settings
from recsys.learning.features import FEATURES
from recsys.learning.ranker import RANKER_FILE, LearnedRanker
from recsys.learning.training import MIN_IMPRESSIONS, ArticleLookup, build_dataset, train
from recsys.service import Recommender
from recsys.signals.coreads import CoReadConfig, CoReads, CoReadTable
from recsys.signals.records import Impression
from recsys.signals.store import open_event_store
from tests.conftest import art

DAY = 86_400.0
START = time.time() - 6 * DAY  # a synthetic log of the last days (events may not be in the future)
TOPICS = {"fb": "football goal striker derby league", "el": "election ballot vote parliament", "ck": "recipe oven bake"}


def articles(n: int = 20):
    return [
        art(f"{p}{i}", f"{words.split()[0]} story {i}", f"{words} {i}", category=p)
        for p, words in TOPICS.items()
        for i in range(n)
    ]


def synthetic_log(n: int = 900, seed: int = 0) -> list[Impression]:
    """Readers of one topic each, shown 8 articles; they click what is popular and on their topic.

    Appeal is hidden per article; a reader clicks the shown article of highest appeal + topic match + noise,
    so both popularity (learned from earlier clicks) and content carry signal.
    """
    rng = np.random.default_rng(seed)
    ids = [a.id for a in articles()]
    appeal = {a: rng.normal() for a in ids}
    readers = {f"u{r}": list(TOPICS)[r % 3] for r in range(60)}
    log = []
    for number in range(n):
        user = f"u{rng.integers(60)}"
        topic = readers[user]
        shown = list(rng.choice(ids, 8, replace=False))
        utility = [appeal[a] + 1.5 * a.startswith(topic) + rng.normal(0, 0.7) for a in shown]
        clicked = [i == int(np.argmax(utility)) for i in range(8)]
        history = tuple(a for a in rng.choice(ids, 5, replace=False) if a.startswith(topic)) or (f"{topic}0",)
        ts = START + number * (5 * DAY / n)
        log.append(Impression(str(number), user, ts, history, tuple(shown), tuple(clicked)))
    return log


@pytest.fixture
def index(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    return tmp_path / "index"


def lookup_of(rec: Recommender) -> ArticleLookup:
    store = rec.view.store
    rows = store.rows_of([a.id for a in articles()])
    return ArticleLookup(
        rows, rec.view.vectors, {a.id: a.category for a in store.get_rows(list(rows.values())).values()}
    )


def test_features_use_no_future_information(index):
    rec = Recommender.open(index)
    log = synthetic_log(300)
    settings = Settings()
    early, _ = build_dataset(log[:200], lookup_of(rec), settings.popularity, settings.recommend)
    full, _ = build_dataset(log, lookup_of(rec), settings.popularity, settings.recommend)
    rows = early.labels.size
    # the first 200 impressions' features are identical whether or not the later 100 exist
    np.testing.assert_array_equal(early.features, full.features[:rows])
    # and the clicks an impression is labelled with never feed its own features: the first impression knows nothing
    first = full.features[full.groups == 0]
    assert np.all(first[:, FEATURES.index("clicks_24h")] == 0)


def test_co_reads_are_symmetric_decayed_and_shrunk():
    coreads = CoReads(CoReadConfig(window=5, half_life_days=1.0, shrink=2.0))
    coreads.add_reads("r1", [("a", 0.0), ("b", 10.0), ("c", 20.0)])
    coreads.add_reads("r2", [("a", 30.0), ("b", 40.0)])
    at = 40.0
    assert coreads.association("a", "b", at) == pytest.approx(coreads.association("b", "a", at))
    assert coreads.association("a", "b", at) > coreads.association("a", "c", at) > 0  # two readers beat one
    assert coreads.association("a", "b", at + 1 * DAY) < coreads.association("a", "b", at)  # decays...
    later = CoReads(CoReadConfig(window=5, half_life_days=1.0, shrink=2.0))
    later.add_reads("r1", [("a", 0.0), ("b", 10.0)])
    later.add_reads("r2", [("a", 0.0 + 3 * DAY), ("c", 3 * DAY)])
    assert later.association("a", "c", 3 * DAY) > later.association("a", "b", 3 * DAY)  # ... old pairs count less
    assert coreads.add_reads("r1", [("a", 50.0)]) == 0  # a reader's repeat read adds nothing
    table = CoReadTable(coreads.table(at), at)
    assert [n for n, _ in table.of("a")][:1] == ["b"]
    assert CoReadTable.from_json(json.loads(json.dumps(table.to_json()))).neighbours == {
        a: [(o, round(v, 6)) for o, v in n] for a, n in table.neighbours.items()
    }


def test_a_fitted_model_round_trips_exactly(index, tmp_path):
    rec = Recommender.open(index)
    settings = Settings()
    dataset, _ = build_dataset(synthetic_log(900), lookup_of(rec), settings.popularity, settings.recommend)
    half = dataset.groups < dataset.impressions // 2
    parts = [(dataset.features[m], dataset.labels[m], dataset.groups[m]) for m in (half, ~half)]
    ranker = LearnedRanker.fit(parts[0], parts[1], params={"min_data_in_leaf": 20})
    ranker.save(tmp_path)
    loaded = LearnedRanker.load(tmp_path)
    assert loaded.model_text == ranker.model_text and loaded.features == FEATURES
    np.testing.assert_array_equal(loaded.score(dataset.features), ranker.score(dataset.features))
    assert json.loads((tmp_path / RANKER_FILE).read_text())["format"] == 1  # plain JSON with a text model inside


def test_training_beats_single_signals_on_a_log_where_both_matter(index):
    rec = Recommender.open(index)
    settings = Settings()
    result = train(synthetic_log(1500), lookup_of(rec), settings.popularity, settings.recommend, test_days=1.0)
    assert result.ranker is not None
    held = result.report["held_out"]["auc"]
    assert held["recsys (learned)"] > max(held["popularity"], held["content_max"]) + 0.02
    assert set(result.report["importance"]) == set(FEATURES)


def test_too_few_impressions_keep_the_hand_set_blend(index):
    rec = Recommender.open(index)
    settings = Settings()
    result = train(synthetic_log(MIN_IMPRESSIONS // 2), lookup_of(rec), settings.popularity, settings.recommend)
    assert result.ranker is None and "hand-set blend" in result.report["model"]
    assert rec.learned_ranker() is None
    hits = rec.recommend(["fb1", "fb2"], k=3)
    assert hits and all(h.reason.startswith("because you read") for h in hits)


def behaviors_file(log: list[Impression], path) -> object:
    """The impressions as a MIND behaviors.tsv (times in its format)."""
    stamp = lambda ts: time.strftime("%m/%d/%Y %I:%M:%S %p", time.gmtime(ts))  # noqa: E731
    path.write_text(
        "".join(
            f"{i.impression_id}\t{i.user_id}\t{stamp(i.ts)}\t{' '.join(i.history)}\t"
            + " ".join(f"{c}-{int(k)}" for c, k in zip(i.candidates, i.clicked, strict=True))
            + "\n"
            for i in log
        )
    )
    return path


def test_train_from_ingested_events_then_serve_learned_lists(index, tmp_path):
    log = synthetic_log(1500)
    path = behaviors_file(log, tmp_path / "behaviors.tsv")
    open_event_store(index).ingest([path])
    env = {"RECSYS_EMBEDDER__MODEL": "keyword-test"}
    result = CliRunner().invoke(
        app, ["train", "--index", str(index), "--test-days", "1", "--out", str(tmp_path / "r")], env=env
    )
    assert result.exit_code == 0, result.output
    assert (
        "recsys (learned)" in result.output and (index / RANKER_FILE).is_file() and (index / "coreads.json").is_file()
    )
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())["training"]
    assert report["impressions"] == len(log)  # every stored impression was rebuilt from the events
    clock = json.loads((index / "clock.json").read_text())  # the Ranking's leaders: ordered as judged on day 5
    rates = clock["order_hit_rates"]
    assert {"clock", "box_model"} <= set(rates) and rates[clock["order"]] == max(rates.values())
    assert "(models fitted before those days) caught a next click by the clock" in result.output
    ranking_model = json.loads((index / RANKER_FILE).read_text()).get("ranking_model")
    assert (ranking_model is not None) == (clock["order"] == "ranking_model")  # stored only when it serves
    rec = Recommender.open(index, Settings().replace("popularity", refresh_seconds=0.0))
    assert rec.learned_ranker() is not None
    hits = rec.recommend(["fb1", "fb2", "fb3"], k=5)
    assert len(hits) == 5 and not {"fb1", "fb2", "fb3"} & {h.id for h in hits}
    assert all(math.isfinite(h.score) and h.reason for h in hits)
    page = rec.page("el1", ["fb1", "fb2"], k_related=3, k_ranking=3, k_recommend=3)
    shown = [h.id for h in page.related + page.ranking + page.recommendation]
    assert len(shown) == len(set(shown)) == 9 and "el1" not in shown


def test_eval_impressions_names_the_served_row_and_refuses_an_empty_replay(index, tmp_path):
    news = tmp_path / "news.tsv"
    news.write_text("".join(f"{a.id}\t{a.category}\t\t{a.title}\t{a.body}\t\t[]\t[]\n" for a in articles()))
    behaviors = tmp_path / "behaviors.tsv"
    behaviors.write_text("".join(f"{n}\tu{n % 3}\t\tfb1 fb2\tfb3-1 el4-0 ck5-0\n" for n in range(30)))
    env = {"RECSYS_EMBEDDER__MODEL": "keyword-test"}
    args = ["eval", "impressions", "--news", str(news), "--index", str(index), "--out"]
    ok = CliRunner().invoke(app, [*args, str(tmp_path / "a"), "--behaviors", str(behaviors)], env=env)
    assert ok.exit_code == 0, ok.output
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert "recsys" in metrics["replay"]["metrics"] and "hand-set blend" in metrics["served"]
    assert "file order" in (tmp_path / "a" / "report.md").read_text()
    empty = tmp_path / "none.tsv"
    empty.write_text("1\tu1\t\tfb1\tfb3-0 el4-0\n")
    refused = CliRunner().invoke(app, [*args, str(tmp_path / "b"), "--behaviors", str(empty)], env=env)
    assert refused.exit_code == 1 and "nothing can be scored" in refused.output


def test_a_site_that_logs_only_views_still_gets_readers_also_read(index, tmp_path):
    at = time.time() - DAY
    rows = [
        {"article_id": article, "type": "view", "user_id": f"r{reader}", "ts": at + reader * 60 + step}
        for reader in range(6)
        for step, article in enumerate(("fb1", "ck2"))  # every reader of fb1 went on to a recipe
    ]
    path = tmp_path / "views.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    open_event_store(index).ingest([path])
    env = {"RECSYS_EMBEDDER__MODEL": "keyword-test"}
    result = CliRunner().invoke(app, ["train", "--index", str(index), "--out", str(tmp_path / "r")], env=env)
    assert result.exit_code == 0, result.output
    assert not (index / RANKER_FILE).exists() and (index / "coreads.json").is_file()  # no impressions: no model
    table = CoReadTable.load(index)
    assert [other for other, _ in table.of("fb1")] == ["ck2"] and [o for o, _ in table.of("ck2")] == ["fb1"]
    hits = Recommender.open(index).related("fb1", 30)  # a signal among same-topic articles, not a trump card
    assert next(h for h in hits if h.id == "ck2").reason == "readers of this also read"


def test_pools_are_built_only_from_what_the_logs_knew_before_each_impression():
    from recsys.learning.pools import POOL_NEWEST, POOL_RANDOM, draw_seen, pool_candidates
    from recsys.signals.logstate import LogState

    state = LogState(Settings().popularity)
    t0 = 1_790_000_000.0
    state.fold([("old", "click", "", t0, 1, "r1"), ("old", "impression", "", t0, 1, "r1")])
    impression = Impression("i", "r2", t0 + 60, ("x",), ("shown",), (True,))
    pool = pool_candidates(state, impression, {"shown"})
    assert pool == ["old"]  # what was clicked before; nothing later, nothing shown
    state.fold([("later", "click", "", t0 + 120, 1, "r3")])
    assert "later" in pool_candidates(state, Impression("j", "r2", t0 + 180, (), (), ()), set())
    # the random part draws from what the logs had seen by then (yesterday's quiet articles too)
    state.fold([(f"quiet{n}", "impression", "", t0 - 86_400 + n, 1, "r9") for n in range(200)])
    drawn = draw_seen(state, random.Random(0), POOL_RANDOM, {"quiet7"})
    assert len(drawn) == POOL_RANDOM == len(set(drawn)) and set(drawn) <= set(state.seen_order)
    assert "quiet7" not in drawn and drawn == draw_seen(state, random.Random(0), POOL_RANDOM, {"quiet7"})  # seeded
    pool = pool_candidates(state, Impression("k", "r2", t0 + 240, (), (), ()), set(), drawn=drawn)
    assert set(drawn) <= set(pool) and len(pool) <= len(drawn) + POOL_NEWEST + 2  # a draw is kept whole


def test_live_coreads_follow_events_as_they_arrive_symmetric_and_decaying(tmp_path, make_indexer):
    from recsys.signals.activity import PopularityTracker
    from recsys.signals.records import Event
    from recsys.signals.store import open_event_store

    make_indexer().add_articles([art("a", "storm"), art("b", "flood"), art("c", "vote")])
    store = open_event_store(tmp_path / "index")
    now = time.time() - 3600
    events = [Event("a", "click", now, user_id="r1"), Event("b", "click", now + 60, user_id="r1")]
    events += [Event("a", "click", now, user_id="r2"), Event("b", "view", now + 30, user_id="r2")]
    store.add([(e.fingerprint(), e) for e in events])
    tracker = PopularityTracker(store, Settings().popularity)
    coreads = tracker.current_state(force=True).coreads
    ab, ba = coreads.association("a", "b", now + 120), coreads.association("b", "a", now + 120)
    assert ab > 0 and ab == ba and coreads.association("a", "c", now + 120) == 0
    assert coreads.association("a", "b", now + 30 * 86400) < ab  # decays as the pairs age
    assert [o for o, _ in coreads.neighbours("a", now + 120, 5)] == ["b"]


def test_an_impressions_list_and_its_pool_group_share_a_side_of_every_split():
    rng = np.random.default_rng(3)
    articles = [f"a{i}" for i in range(30)]
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    lookup = ArticleLookup({a: i for i, a in enumerate(articles)}, vectors)
    rows = []
    for n in range(60):
        shown = tuple(rng.choice(articles, 5, replace=False).tolist())
        rows.append(Impression(str(n), f"u{n % 5}", float("nan"), (), shown, (True, False, False, False, False)))
    settings = Settings()
    dataset, _ = build_dataset(rows, lookup, settings.popularity, settings.recommend, pools=True)
    assert dataset.owners is not None and dataset.impressions > len(rows)  # pool groups were added
    side = dataset.by_impression(np.arange(len(rows)) % 2 == 0)
    for group in range(dataset.impressions):
        assert side[group] == (dataset.owners[group] % 2 == 0)
    pooled = dataset.shown is not None and (~dataset.shown).any()
    assert pooled and set(np.unique(dataset.owners)) == set(range(len(rows)))


def test_a_training_run_is_repeatable_whatever_the_process_hash_seed(index, tmp_path):
    """Two `recsys train` runs on the same log in processes with other string hashes store the same models:
    nothing fitted may depend on the order a set of ids happens to iterate in."""
    path = behaviors_file(synthetic_log(1500), tmp_path / "behaviors.tsv")
    stored = []
    for seed in ("1", "2"):
        copy = tmp_path / f"index-{seed}"
        shutil.copytree(index, copy)
        env = {**os.environ, "RECSYS_EMBEDDER__MODEL": "keyword-test", "PYTHONHASHSEED": seed}
        args = ["train", "--index", str(copy), "--behaviors", str(path), "--test-days", "1", "--json"]
        done = subprocess.run([sys.executable, "-m", "recsys.cli", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        ranker = json.loads((copy / RANKER_FILE).read_text())
        stored.append((ranker["model"], ranker.get("box_model"), json.loads((copy / "clock.json").read_text())))
    assert stored[0][1] is not None and stored[0] == stored[1]
