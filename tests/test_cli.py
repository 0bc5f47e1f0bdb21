"""The recsys command end to end, with the real packaged model on the bundled sample."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from tests.conftest import SAMPLE

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture
def index(sample_index, tmp_path):
    """A private copy of the session's sample index (tests below modify it)."""
    target = tmp_path / "index"
    shutil.copytree(sample_index, target)
    return str(target)


def invoke(runner, *args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def test_related_json_and_table(runner, index):
    result = invoke(runner, "related", "s-ecb-rates-hold", "--index", index, "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 5
    assert {"id", "title", "url", "published_at", "score", "reason"} <= set(hits[0])
    assert "wire-ecb-rates-hold" not in [h["id"] for h in hits]
    table = invoke(runner, "related", "s-ecb-rates-hold", "--index", index, "-k", "3")
    assert table.exit_code == 0 and "ECB holds interest rates steady" in table.stdout


def test_related_unknown_id_fails_clearly(runner, index):
    result = runner.invoke(app, ["related", "missing-id", "--index", index])
    assert result.exit_code == 1
    assert "error: article 'missing-id' is not in the index" in result.output


def test_add_same_file_embeds_nothing_and_remove_takes_down(runner, index):
    again = invoke(runner, "index", "add", SAMPLE, "--index", index, "--json", "--no-progress")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["embedded"] == 0
    gone = invoke(runner, "index", "remove", "s-storm-ciaran-cleanup", "--index", index)
    assert gone.exit_code == 0
    hits = json.loads(invoke(runner, "related", "s-storm-ciaran-coast", "--index", index, "--json", "-k", "20").stdout)
    assert "s-storm-ciaran-cleanup" not in [h["id"] for h in hits]
    refused = json.loads(invoke(runner, "index", "add", SAMPLE, "--index", index, "--json", "--no-progress").stdout)
    assert refused["blocked"] == 1 and refused["added"] == 0  # the feed cannot bring a takedown back
    restore = invoke(runner, "index", "restore", "s-storm-ciaran-cleanup", "--index", index, "--json")
    restored = json.loads(restore.stdout)
    assert restored["added"] == 1 and restored["embedded"] == 0  # back at once, from its kept text and vector
    hits = json.loads(invoke(runner, "related", "s-storm-ciaran-coast", "--index", index, "--json", "-k", "20").stdout)
    assert "s-storm-ciaran-cleanup" in [h["id"] for h in hits]
    back = json.loads(invoke(runner, "index", "add", SAMPLE, "--index", index, "--json", "--no-progress").stdout)
    assert back["added"] == 0 and back["blocked"] == 0


def test_bad_records_are_reported_with_file_and_line(runner, index, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "fresh-1", "title": "Harbour reopens after storm repairs"}\n{"id": "x"}\n')
    failed = runner.invoke(app, ["index", "add", str(bad), "--index", index, "--on-error", "fail"])
    assert failed.exit_code == 1
    assert f"{bad}:2: article 'x': missing required field 'title'" in failed.output
    info = json.loads(invoke(runner, "index", "info", "--index", index, "--json").stdout)
    assert info["articles"] == 119  # nothing written
    skipped = runner.invoke(app, ["index", "add", str(bad), "--index", index, "--no-progress"])
    assert skipped.exit_code == 3 and "1 bad record(s) skipped" in skipped.output
    info = json.loads(invoke(runner, "index", "info", "--index", index, "--json").stdout)
    assert info["articles"] == 120


def test_optimize_folds_the_segments_of_small_adds_into_one(runner, index, tmp_path):
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text('{"id": "fresh-1", "title": "Harbour reopens after storm repairs", "body": "ferries sail"}\n')
    assert invoke(runner, "index", "add", fresh, "--index", index, "--no-progress").exit_code == 0
    info = json.loads(invoke(runner, "index", "info", "--index", index, "--json").stdout)
    assert (info["segments"], info["articles"]) == (2, 120)  # the add wrote one small segment
    done = json.loads(invoke(runner, "index", "optimize", "--index", index, "--json").stdout)
    assert (done["segments"], done["articles"], done["rows"], done["merged"]) == (1, 120, 120, 2)
    shown = invoke(runner, "index", "info", "--index", index).stdout
    assert "segments: 1" in shown and "(0 deleted rows awaiting a merge)" in shown
    hits = json.loads(invoke(runner, "related", "fresh-1", "--index", index, "--json", "-k", "3").stdout)
    assert len(hits) == 3


def test_info_reports_model_and_layout(runner, index):
    result = invoke(runner, "index", "info", "--index", index)
    assert result.exit_code == 0
    assert "all-MiniLM-L6-v2 (384-d)" in result.stdout and "exact" in result.stdout and "MB" in result.stdout


def test_config_show_reflects_environment(runner):
    result = invoke(runner, "config", "show", env={"RECSYS_RELATED__MMR_LAMBDA": "0.5"})
    assert result.exit_code == 0 and "mmr_lambda = 0.5" in result.stdout
    bad = runner.invoke(app, ["config", "show"], env={"RECSYS_RELATED__NOPE": "1"})
    assert bad.exit_code != 0


def test_demo_shows_dedup_and_follow_up(runner, tmp_path):
    result = invoke(runner, "demo", "--index", tmp_path / "demo", "--json")
    assert result.exit_code == 0, result.output
    lists = json.loads(result.stdout)
    ecb = [h["id"] for h in lists["s-ecb-rates-hold"]]
    assert "wire-ecb-rates-hold" not in ecb and "s-ecb-december-cut" in ecb
    storm = lists["s-storm-ciaran-coast"]
    assert storm[0]["id"] == "s-storm-ciaran-cleanup" and storm[0]["reason"] == "follow-up from 2 days later"
    assert {"related", "ranking", "recommendation"} <= set(lists["page"])


NOW = "2026-11-25T08:00:00Z"


def test_events_ranking_recommend_and_page(runner, index):
    events = SAMPLE.parent / "sample_events.jsonl"
    first = json.loads(invoke(runner, "events", "ingest", events, "--index", index, "--json").stdout)
    again = json.loads(invoke(runner, "events", "ingest", events, "--index", index, "--json").stdout)
    assert first["stored"] == first["read"] > 1000 and again["stored"] == 0

    ranked = json.loads(invoke(runner, "ranking", "--index", index, "--now", NOW, "-k", "3", "--json").stdout)
    assert ranked[0]["id"] == "s-derby-report" and ranked[0]["reason"].endswith("in the last 24 h")

    recommended = json.loads(
        invoke(runner, "recommend", "--user", "u1", "--index", index, "--now", NOW, "--json").stdout
    )
    categories = {h["category"] for h in recommended}
    assert {"sport", "politics"} <= categories  # a football and budget reader gets both
    assert "s-derby-report" not in [h["id"] for h in recommended]  # already read

    by_history = invoke(
        runner, "recommend", "--history", "s-ai-chip-export,s-ai-chip-demand", "--index", index, "--now", NOW, "-k", "3"
    )
    assert by_history.exit_code == 0 and "because you read" in by_history.stdout

    page = json.loads(
        invoke(runner, "page", "s-storm-ciaran-coast", "--user", "u1", "--index", index, "--now", NOW, "--json").stdout
    )
    lists = [[h["id"] for h in page[name]] for name in ("related", "ranking", "recommendation")]
    everything = [i for found in lists for i in found]
    assert all(lists) and len(everything) == len(set(everything)) and "s-storm-ciaran-coast" not in everything


def test_events_ingest_reports_bad_lines(runner, index, tmp_path):
    bad = tmp_path / "events.jsonl"
    bad.write_text('{"article_id": "a", "type": "view", "ts": "2026-11-20T10:00:00Z"}\n{"article_id": "a"}\n')
    result = runner.invoke(app, ["events", "ingest", str(bad), "--index", index])
    assert result.exit_code == 3 and f"{bad}:2: " in result.output
