"""Experiments: stable assignment by reader, overrides that take effect, team-draft interleaving, and verdicts
that find a planted difference (A/B by a two-proportion test, interleaving by a sign test, on fewer lists)."""

from __future__ import annotations

import json
import random
import time

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import ConfigError, Settings
from recsys.feedback.experiment import Experiment, experiment_report, sign_test_p, team_draft, two_proportion_p
from recsys.service import Recommender
from recsys.signals.records import Event, ServedList
from recsys.signals.store import open_event_store
from recsys.types import Hit
from tests.test_http import articles

NOW = time.time()


def _experiment(mode: str = "ab", **variants: dict) -> Settings:
    variants = variants or {"control": {"share": 50}, "fresh": {"share": 50}}
    return (
        Settings()
        .replace("popularity", refresh_seconds=0.0)
        .replace("experiment", name="test-exp", mode=mode, variants=variants)
    )


@pytest.fixture
def index(make_indexer, tmp_path):
    make_indexer().add_articles(articles())
    return tmp_path / "index"


def test_readers_keep_their_variant_and_shares_are_kept():
    experiment = Experiment.from_settings(_experiment(control={"share": 30}, bold={"share": 70}))
    assert experiment is not None
    first = [experiment.assign(f"reader-{i}").name for i in range(4000)]
    assert first == [experiment.assign(f"reader-{i}").name for i in range(4000)]  # the same every time
    assert 0.27 < first.count("control") / 4000 < 0.33
    assert experiment.assign("") is None  # no id: outside the experiment
    other = _experiment(control={"share": 30}, bold={"share": 70}).replace("experiment", name="other")
    renamed = Experiment.from_settings(other)
    assert sum(a != renamed.assign(f"reader-{i}").name for i, a in enumerate(first)) > 1000  # a new shuffle


def test_a_misconfigured_experiment_says_how_to_fix_it():
    with pytest.raises(ConfigError, match="interleave"):
        Experiment.from_settings(_experiment(mode="bandit"))
    with pytest.raises(ConfigError, match="two variants"):
        Experiment.from_settings(_experiment(only={"share": 1}))
    with pytest.raises(ConfigError, match=r"related\.freshness_weight"):
        Experiment.from_settings(_experiment(a={"share": 1}, b={"share": 1, "overrides": {"freshness": 2}}))
    with pytest.raises(ConfigError, match="unknown setting"):
        Experiment.from_settings(_experiment(a={"share": 1}, b={"share": 1, "overrides": {"related.nope": 2}}))
    assert Experiment.from_settings(Settings()) is None


def _hits(ids: str) -> list[Hit]:
    return [Hit(a, a, "", None, 0.0, "") for a in ids.split()]


def test_team_draft_takes_turns_keeps_each_order_and_never_repeats():
    rng = random.Random(0)
    for trial in range(200):
        pool = [f"a{i}" for i in range(12)]
        first = " ".join(rng.sample(pool, rng.randint(0, 10)))
        second = " ".join(rng.sample(pool, rng.randint(0, 10)))
        merged, teams = team_draft(_hits(first), _hits(second), 8, seed=str(trial))
        ids = [h.id for h in merged]
        assert len(ids) == len(set(ids)) == len(teams) <= 8
        for team, source in (("a", first.split()), ("b", second.split())):
            mine = [i for i, t in zip(ids, teams, strict=True) if t == team]
            assert mine == [a for a in source if a in mine]  # each team's picks in its own order
        if len(merged) == 8 and first.count(" ") >= 7 and second.count(" ") >= 7:
            assert abs(teams.count("a") - teams.count("b")) <= 1
    assert team_draft(_hits("x y z"), _hits("z y x"), 3, "s") == team_draft(_hits("x y z"), _hits("z y x"), 3, "s")


def test_ab_serves_each_reader_their_variant_with_its_settings_and_records_it(index):
    settings = _experiment(control={"share": 50}, small={"share": 50, "overrides": {"related.mmr_lambda": 0.1}})
    with Recommender.open(index, settings) as rec:
        experiment = Experiment.from_settings(settings)
        served = {}
        for n in range(40):
            reader = f"reader-{n}"
            served[reader] = rec.related("fb1", 4, reader=reader)
        anonymous = rec.related("fb1", 4)
        rec.flush()
        rows = {s.list_id: s for s in open_event_store(index).served_lists(NOW - 60, time.time() + 60)}
    for reader, hits in served.items():
        assert rows[hits[0].list_id].variant == experiment.assign(reader).name
    assert rows[anonymous[0].list_id].variant == ""  # no reader id: outside the experiment
    by_variant = {}
    for reader, hits in served.items():
        by_variant.setdefault(experiment.assign(reader).name, set()).add(tuple(h.id for h in hits))
    assert set(by_variant) == {"control", "small"} and by_variant["control"] != by_variant["small"]


def test_interleaving_merges_both_variants_lists_and_records_who_placed_what(index):
    settings = _experiment("interleave", control={}, other={"overrides": {"related.mmr_lambda": 0.1}})
    with Recommender.open(index, settings) as rec:
        hits = rec.related("fb1", 6, reader="reader-1")
        page = rec.page("el1", ["fb2"], user_id="reader-2", k_related=3, k_recommend=3, k_ranking=3)
        rec.flush()
        rows = {s.list_id: s for s in open_event_store(index).served_lists(NOW - 60, time.time() + 60)}
    row = rows[hits[0].list_id]
    assert row.variant == "interleave" and len(row.teams) == len(hits) and set(row.teams) <= {"a", "b"}
    shown = [h.id for h in page.related + page.recommendation + page.ranking]
    assert len(shown) == len(set(shown)) and "el1" not in shown
    assert all(rows[box[0].list_id].variant == "interleave" for box in (page.related, page.ranking) if box)


def _simulate(store, mode: str, lists: int, better: float, worse: float, seed: int) -> None:
    """Lists with planted click rates: variant "good" (or team "a") clicked at ``better``, the other at ``worse``,
    scaled by how keen the reader is (readers differ a lot: most rarely click, a few click much more; this is
    the variance between readers that interleaving cancels and A/B has to average away)."""
    rng = random.Random(seed)
    served, clicks = [], []
    for n in range(lists):
        ids = tuple(f"x{rng.randrange(1000)}-{n}-{i}" for i in range(6))
        keen = 4.0 * rng.random() ** 3  # mean 1
        if mode == "ab":
            variant = "good" if n % 2 else "bad"
            served.append(ServedList(f"l{n}", NOW - 3600 + n * 0.1, "related", ids, f"r{n}", variant=variant))
            if rng.random() < keen * (better if variant == "good" else worse):
                clicks.append((f"c{n}", Event(ids[0], "click", NOW - 3000, list_id=f"l{n}", position=1)))
        else:
            teams = "".join(rng.choice("ab") for _ in ids)
            ts = NOW - 3600 + n * 0.1
            served.append(ServedList(f"l{n}", ts, "related", ids, f"r{n}", variant="interleave", teams=teams))
            for place, team in enumerate(teams, start=1):
                if rng.random() < keen * (better if team == "a" else worse) / 3:
                    click = Event(ids[place - 1], "click", NOW - 3000, list_id=f"l{n}", position=place)
                    clicks.append((f"c{n}-{place}", click))
    store.add_served(served)
    store.add(clicks)


def test_ab_and_interleaving_both_find_the_planted_better_variant(tmp_path):
    ab_store = open_event_store(tmp_path / "ab")
    _simulate(ab_store, "ab", 6000, 0.20, 0.14, seed=1)
    ab = experiment_report(
        ab_store, Experiment.from_settings(_experiment(good={"share": 1}, bad={"share": 1})), NOW - 7200, NOW
    )
    assert ab["winner"] == "good" and ab["p_value"] < 0.01
    mixed_store = open_event_store(tmp_path / "interleave")
    _simulate(mixed_store, "interleave", 1500, 0.20, 0.14, seed=1)
    mixed = experiment_report(
        mixed_store, Experiment.from_settings(_experiment("interleave", good={}, bad={})), NOW - 7200, NOW
    )
    assert mixed["winner"] == "good" and mixed["p_value"] < 0.01
    figures = {v["variant"]: v for v in mixed["variants"]}
    assert figures["good"]["wins"] == figures["bad"]["losses"] > figures["bad"]["wins"]
    # no difference planted: no winner, and it says how far a decision is
    even_store = open_event_store(tmp_path / "even")
    _simulate(even_store, "ab", 400, 0.25, 0.25, seed=3)
    even = experiment_report(
        even_store, Experiment.from_settings(_experiment(good={"share": 1}, bad={"share": 1})), NOW - 7200, NOW
    )
    assert even["winner"] is None and (even["more_lists_needed"] is None or even["more_lists_needed"] > 0)


def test_the_tests_behind_the_verdicts():
    assert two_proportion_p(300, 1000, 240, 1000) == pytest.approx(0.00251, abs=1e-5)  # z = 3.02
    assert two_proportion_p(5, 10, 5, 10) == 1.0 and two_proportion_p(0, 0, 1, 2) == 1.0
    assert sign_test_p(9, 1) == pytest.approx(0.02148, abs=1e-5)  # 2 * 11 / 1024
    assert sign_test_p(0, 0) == 1.0


def test_report_experiment_gives_the_winner_and_p_value(tmp_path, index):
    _simulate(open_event_store(index), "ab", 4000, 0.35, 0.25, seed=4)
    config = tmp_path / "recsys.toml"
    config.write_text(
        '[experiment]\nname = "test-exp"\nmode = "ab"\n'
        "[experiment.variants.good]\nshare = 50\n[experiment.variants.bad]\nshare = 50\n"
        'overrides = { "related.freshness_weight" = 5.0 }\n'
    )
    runner = CliRunner()
    out = runner.invoke(app, ["--config", str(config), "report", "experiment", "--index", str(index), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["winner"] == "good" and data["p_value"] < 0.01
    table = runner.invoke(app, ["--config", str(config), "report", "experiment", "--index", str(index)])
    assert table.exit_code == 0 and "winner: good" in table.output
    none = runner.invoke(app, ["report", "experiment", "--index", str(index)])
    assert none.exit_code == 1 and "no experiment configured" in none.output


def test_a_variant_can_serve_its_own_ranker_file(index, tmp_path):
    import numpy as np

    from recsys.learning.features import FEATURES
    from recsys.learning.ranker import LearnedRanker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(FEATURES)))
    labels = (x[:, 0] > 1).astype(np.int8)
    model = LearnedRanker.fit((x, labels, np.repeat(np.arange(200), 10)), None, rounds=5)
    folder = tmp_path / "candidate"
    folder.mkdir()
    model.save(folder)
    settings = _experiment(control={"share": 1}, candidate={"share": 1, "ranker": str(folder / "ranker.json")})
    experiment = Experiment.from_settings(settings)
    readers = {
        v: next(f"r{i}" for i in range(1000) if experiment.assign(f"r{i}").name == v) for v in ("control", "candidate")
    }
    with Recommender.open(index, settings) as rec:
        lists = {v: rec.recommend(["fb1"], user_id=reader, k=3) for v, reader in readers.items()}
        rec.flush()
        rows = {s.list_id: s for s in open_event_store(index).served_lists(NOW - 60, time.time() + 60)}
    assert rows[lists["candidate"][0].list_id].model == model.model_id  # the variant's own model served it
    assert rows[lists["control"][0].list_id].model == ""  # the index has none: the hand-set blend
    missing = {"share": 1, "ranker": str(tmp_path / "missing.json")}
    with pytest.raises(ConfigError, match=r"ranker\.json"):
        Experiment.from_settings(_experiment(a={"share": 1}, b=missing))
