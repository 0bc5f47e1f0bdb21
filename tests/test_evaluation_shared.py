"""Seeded smoke runs of every evaluation on the shared data (CI has it; skipped without it)."""

import json

import pytest
from typer.testing import CliRunner

from recsys.archive.indexer import Indexer
from recsys.cli import app
from recsys.config import Settings
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.shared_data, pytest.mark.model]
MIND = SHARED_DATA / "mind-sample"


@pytest.fixture(scope="module")
def mind_index(tmp_path_factory):
    if not (MIND / "news.tsv").is_file():
        pytest.skip(f"shared MIND sample not found at {MIND} (present in CI)")
    root = tmp_path_factory.mktemp("mind") / "index"
    Indexer(root, Settings()).build([MIND / "news.tsv"])
    return root


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_eval_related_on_mind_subcategories(mind_index, tmp_path):
    run(
        "eval",
        "related",
        MIND / "news.tsv",
        "--label",
        "subcategory",
        "--sample",
        "200",
        "--index",
        mind_index,
        "--out",
        tmp_path,
    )
    scores = {s["system"]: s for s in json.loads((tmp_path / "metrics.json").read_text())["systems"]}
    assert scores["recsys"]["precision"] > 3 * scores["random"]["precision"]


def test_eval_impressions_on_a_sample(mind_index, tmp_path):
    run(
        "eval",
        "impressions",
        "--news",
        MIND / "news.tsv",
        "--behaviors",
        MIND / "behaviors.tsv",
        "--limit",
        "1000",
        "--index",
        mind_index,
        "--sweep",
        "recommend.popularity_weight=0,0.5",
        "--out",
        tmp_path,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    replay = metrics["replay"]["metrics"]
    assert replay["recsys popularity"]["auc"] > replay["random"]["auc"] and "recsys" in replay
    assert metrics["text_coverage"]["candidates with text"] < metrics["text_coverage"]["candidates"]
    assert (tmp_path / "recsys-score-distribution.png").is_file()


def test_eval_recommend_holdout(mind_index, tmp_path):
    run(
        "eval",
        "recommend",
        "--news",
        MIND / "news.tsv",
        "--behaviors",
        MIND / "behaviors.tsv",
        "--limit",
        "150",
        "--index",
        mind_index,
        "--out",
        tmp_path,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    systems = {s["system"]: s for s in metrics["systems"]}
    assert metrics["readers"] == 150
    assert systems["recsys"]["recall@10"] >= systems["random"]["recall@10"]
