"""``recsys index pull``: a replica serves the source's version, copies only what it lacks, and a pull killed
at any point leaves the replica's previous version serving."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.archive.layout import CRASH_ENV, IndexLayout
from recsys.archive.replica import pull
from recsys.cli import app
from recsys.learning.ranker import RANKER_FILE
from recsys.service import Recommender
from recsys.types import IndexStateError
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


def test_a_pull_copies_only_the_segments_the_replica_lacks(source, make_indexer, tmp_path):
    replica = tmp_path / "replica"
    pull(source, replica)
    held = {p.name: p.stat().st_ino for p in IndexLayout(replica).segments.iterdir()}
    make_indexer(source).add_articles(stories("b", 5))  # the source writes one small segment
    new_segment = set(p.name for p in IndexLayout(source).segments.iterdir()) - set(held)
    report = pull(source, replica)
    assert report.changed and (report.segments_copied, report.segments_reused) == (1, 1)
    segment_bytes = sum(p.stat().st_size for p in (IndexLayout(source).segments / new_segment.pop()).rglob("*"))
    version_bytes = sum(p.stat().st_size for p in IndexLayout(source).current().rglob("*") if p.is_file())
    assert report.bytes_copied == segment_bytes + version_bytes
    for name, inode in held.items():  # the segment it had is the same file, untouched
        assert (IndexLayout(replica).segments / name).stat().st_ino == inode
    with Recommender.open(replica) as rec:
        assert rec.version == IndexLayout(source).current_name() and len(rec) == 35


PULLER = "import sys; from recsys.archive.replica import pull; pull(sys.argv[1], sys.argv[2])"


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


def test_a_source_manifest_naming_a_path_outside_segments_is_refused(source, tmp_path):
    replica = tmp_path / "replica"
    pull(source, replica)
    layout = IndexLayout(source)
    version = layout.current()
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["segments"][0]["name"] = "../../escaped"
    forged = layout.versions / (version.name[:1] + str(int(version.name[1:7]) + 1).zfill(6) + version.name[7:])
    forged.mkdir()
    for path in version.iterdir():
        if path.is_file():
            (forged / path.name).write_bytes(path.read_bytes())
    (forged / "deletes").mkdir()
    (forged / "manifest.json").write_text(json.dumps(manifest))
    (source / "CURRENT").write_text(forged.name + "\n")
    with pytest.raises(IndexStateError, match="not a segment name"):
        pull(source, replica)
    assert not (tmp_path / "escaped").exists()
    with Recommender.open(replica) as rec:  # the replica still serves what it had
        assert len(rec) == 30
