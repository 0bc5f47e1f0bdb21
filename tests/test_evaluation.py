"""Evaluation runs end to end on the bundled sample: tables, report folder, sweeps."""

import json

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import Settings
from recsys.evaluation.report import parse_sweep
from recsys.types import ConfigError
from tests.conftest import SAMPLE


def test_parse_sweep_checks_names_and_values():
    sweep = parse_sweep("neighbourhood_weight=0.5, 0.7", Settings())  # only [related] has it
    assert (sweep.name, sweep.values) == ("related.neighbourhood_weight", ("0.5", "0.7"))
    assert [s.related.neighbourhood_weight for _, s in sweep.settings(Settings())] == [0.5, 0.7]
    assert parse_sweep("recommend.k=4", Settings()).settings(Settings())[0][1].recommend.k == 4
    with pytest.raises(ConfigError, match=r"in related, recommend; write it as section\.k"):
        parse_sweep("k=4", Settings())
    with pytest.raises(ConfigError, match="not a valid float"):
        parse_sweep("related.mmr_lambda=high", Settings())
    with pytest.raises(ConfigError, match="NAME=V1,V2"):
        parse_sweep("related.mmr_lambda", Settings())


@pytest.mark.model
def test_eval_related_writes_a_report_with_baselines_and_a_sweep(sample_index, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "related",
            str(SAMPLE),
            "--label",
            "category",
            "-k",
            "5",
            "--index",
            str(sample_index),
            "--sweep",
            "related.mmr_lambda=0.5,1.0",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    for system in ("random", "lexical (TF-IDF)", "dense kNN", "dense + lexical hybrid", "recsys"):
        assert system in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    scores = {s["system"]: s for s in metrics["systems"]}
    assert scores["recsys"]["precision"] > scores["random"]["precision"] + 0.2
    assert scores["recsys"]["duplicate_rate"] <= scores["dense kNN"]["duplicate_rate"]
    assert [row["related.mmr_lambda"] for row in metrics["sweeps"]["related.mmr_lambda"]] == ["0.5", "1.0"]
    assert metrics["seconds"] > 0  # the run's timer starts before the work, not after it
    report = (out / "report.md").read_text()
    assert "## Sweep of related.mmr_lambda" in report and "119 articles read" in report
    assert (out / "precision-distribution.png").stat().st_size > 1000
    assert (out / "sweep-related-mmr_lambda.png").stat().st_size > 1000


@pytest.mark.model  # sample_index embeds the sample with the real model
def test_eval_rejects_an_unknown_label(sample_index, tmp_path):
    result = CliRunner().invoke(
        app, ["eval", "related", str(SAMPLE), "--label", "nope", "--index", str(sample_index), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "no article has a value for 'nope'" in result.output
