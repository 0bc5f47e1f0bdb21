"""``recsys index pull``: a replica serves the source's version, copies only what it lacks, and a pull killed
at any point leaves the replica's previous version serving."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.layout import CRASH_ENV, IndexLayout
from recsys.ranker import RANKER_FILE
from recsys.replica import pull
from recsys.service import Recommender
from tests.conftest import art

REPO = Path(__file__).resolve().parents[1]


def stories(prefix: str, n: int):
    return [art(f"{prefix}{i}", f"storm coast flood {prefix} {i}", f"storm flood homes power {i}") for i in range(n)]


@pytest.fixture
def source(make_indexer, tmp_path):
    make_indexer(tmp_path / "source").add_articles(stories("a", 30))
    return tmp_path / "source"


def test_a_replica_serves_the_sources_version_and_follows_its_next_one(source, make_indexer, tmp_path):
    replica = tmp_path / "replica"
    first = pull(source, replica)
    assert first.changed and first.files_copied > 0 and first.version == IndexLayout(source).current_name()
    with Recommender.open(source) as theirs, Recommender.open(replica) as ours:
        assert ours.version == theirs.version
        assert [h.id for h in ours.related("a1", 5)] == [h.id for h in theirs.related("a1", 5)]
        again = pull(source, replica)
        assert not again.changed and again.files_copied == 0

        make_indexer(source).add_articles(stories("b", 5))
        (source / RANKER_FILE).write_text('{"stand-in": true}')  # what `recsys train` stores at the root
        second = pull(source, replica)
        assert second.changed and second.version != first.version and second.models_updated == [RANKER_FILE]
        assert ours.version == second.version  # a serving process follows the swap by itself
        assert ours.article("b3").id == "b3"
        assert (replica / RANKER_FILE).read_text() == (source / RANKER_FILE).read_text()


def test_files_the_replica_already_has_are_linked_not_copied(source, tmp_path):
    replica = tmp_path / "replica"
    pull(source, replica)
    # A source that publishes a version sharing files with the last (hard links, as rsync --link-dest makes).
    layout = IndexLayout(source)
    old = layout.current()
    new = layout.versions / (old.name[:1] + str(int(old.name[1:7]) + 1).zfill(6) + old.name[7:])
    shutil.copytree(old, new, copy_function=os.link)
    (source / "CURRENT").write_text(new.name + "\n")
    report = pull(source, replica)
    assert report.changed and report.files_copied == 1 and report.files_linked > 3  # only the manifest is copied
    with Recommender.open(replica) as rec:
        assert rec.version == new.name and len(rec) == 30


PULLER = "import sys; from recsys.replica import pull; pull(sys.argv[1], sys.argv[2])"


@pytest.mark.parametrize("stage", ["pull-copying", "before-rename", "before-swap"])
def test_a_pull_killed_at_any_stage_leaves_the_previous_version_serving(source, make_indexer, tmp_path, stage):
    replica = tmp_path / "replica"
    pull(source, replica)
    before = IndexLayout(replica).current_name()
    make_indexer(source).add_articles(stories("b", 5))
    env = {**os.environ, "PYTHONPATH": str(REPO), CRASH_ENV: stage}
    killed = subprocess.run([sys.executable, "-c", PULLER, str(source), str(replica)], env=env, timeout=120)
    assert killed.returncode == -9
    with Recommender.open(replica) as rec:
        assert rec.version == before and len(rec) == 30
    assert pull(source, replica).changed  # the next pull cleans up and completes
    with Recommender.open(replica) as rec:
        assert rec.version == IndexLayout(source).current_name() and len(rec) == 35


def test_pull_from_the_cli_and_its_refusals(source, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["index", "pull", str(source), "--index", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"changed": true' in result.output
    result = runner.invoke(app, ["index", "pull", str(tmp_path / "nothing"), "--index", str(tmp_path / "r")])
    assert result.exit_code == 1 and "recsys index build" in result.output
    result = runner.invoke(app, ["index", "pull", str(source), "--index", str(source)])
    assert result.exit_code == 1 and "pull from another index folder" in result.output
