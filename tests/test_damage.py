"""Damaged files are never served or copied: a serving process refuses a damaged new version and keeps the
old one (0 non-200 answers), ``index pull`` refuses a damaged source, the CLI says which file and how to fix
it (exit 1, no traceback), and damaged trained files or events are skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recsys.archive.indexer import Indexer
from recsys.archive.layout import COREADS_FILE, RANKER_FILE, IndexLayout
from recsys.archive.replica import pull
from recsys.archive.verify import verify_index
from recsys.cli import app
from recsys.config import Settings
from recsys.http import create_app
from recsys.service import Recommender
from tests.conftest import KeywordEmbedder, art

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SEGMENT_FILES = ["vectors.npy", "rows.npy", "lex_terms.npy", "lex_weights.npy", "articles.sqlite", "segment.json"]
VERSION_FILES = ["manifest.json", "vocab.json", "state.json", "lex_df.npy", "deletes"]
ANN_FILE = "ann"


def stories(prefix: str, n: int, start: int = 0):
    return [
        art(f"{prefix}{i}", f"storm coast flood {prefix} {i}", f"storm flood homes power {prefix} {i}", category="uk")
        for i in range(start, start + n)
    ]


def damage(path: Path, where: str) -> None:
    """Change bytes without changing the size: the header (first 16 bytes) or one byte in the middle."""
    data = bytearray(path.read_bytes())
    if where == "header":
        data[:16] = bytes(b ^ 0x5A for b in data[:16])
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def file_of(root: Path, kind: str) -> Path:
    """The file of that kind in the live version (or its newest segment)."""
    layout = IndexLayout(root)
    version = layout.current()
    if kind in VERSION_FILES:
        if kind == "deletes":
            return next((version / "deletes").iterdir())
        return version / kind
    newest = json.loads((version / "manifest.json").read_text())["segments"][-1]["name"]
    if kind == ANN_FILE:
        return next((layout.segments / newest / "ann").iterdir())
    return layout.segments / newest / kind


@pytest.fixture
def settings() -> Settings:
    # faiss-flat: every segment has ANN files too; refresh 0: the service looks at the pointer on every call
    return Settings().replace("index", backend="faiss-flat").replace("popularity", refresh_seconds=0.0)


@pytest.fixture
def index(tmp_path, settings):
    root = tmp_path / "index"
    Indexer(root, settings, KeywordEmbedder()).add_articles(stories("a", 20))
    return root


def publish_next(root: Path, settings: Settings) -> str:
    """A new version with a new segment and a deletion in the old one (a1 rewritten)."""
    Indexer(root, settings, KeywordEmbedder()).add_articles(
        [*stories("b", 5), art("a1", "storm coast flood a 1 rewritten", "storm flood rewritten", category="uk")]
    )
    return IndexLayout(root).current_name() or ""


def every_endpoint(client: TestClient) -> list[tuple[str, int]]:
    paths = ["/health", "/related/a2", "/ranking", "/recommend?history=a2,a3", "/page/a2", "/articles/a2"]
    return [(p, client.get(p).status_code) for p in paths]


@pytest.mark.parametrize("where", ["header", "middle"])
@pytest.mark.parametrize("kind", SEGMENT_FILES + VERSION_FILES + [ANN_FILE])
def test_a_damaged_new_version_is_refused_and_the_old_one_keeps_serving(index, settings, kind, where):
    with TestClient(create_app(index, settings)) as client:
        old = client.get("/health").json()["index_version"]
        new = publish_next(index, settings)
        damage(file_of(index, kind), where)
        answers = every_endpoint(client) + every_endpoint(client)
        assert [a for a in answers if a[1] != 200] == []
        health = client.get("/health").json()
        assert health["index_version"] == old and health["status"] == "degraded"
        assert health["refused_version"] == new and health["reason"]
        assert client.get("/articles/b1").status_code == 404  # the new version's articles are not served
    report = verify_index(index, deep=True)
    assert not report.ok and report.problems


def test_a_good_version_after_a_refused_one_is_served(index, settings):
    with TestClient(create_app(index, settings)) as client:
        old = client.get("/health").json()["index_version"]
        publish_next(index, settings)
        damage(file_of(index, "rows.npy"), "header")
        assert client.get("/health").json()["status"] == "degraded"
        IndexLayout(index).pointer.write_text(old + "\n")  # the fix the message names: CURRENT back to the old one
        Indexer(index, settings, KeywordEmbedder()).add_articles(stories("c", 3))  # and the next job publishes
        health = client.get("/health").json()
        assert health["status"] == "ok" and "refused_version" not in health
        assert client.get("/related/c1").status_code == 200


@pytest.mark.parametrize("kind", ["vectors.npy", "articles.sqlite", "lex_terms.npy", "manifest.json"])
def test_index_pull_refuses_a_damaged_source_and_the_replica_keeps_its_version(index, settings, tmp_path, kind):
    replica = tmp_path / "replica"
    pull(index, replica)
    kept = IndexLayout(replica).current_name()
    publish_next(index, settings)
    damage(file_of(index, kind), "middle")
    result = CliRunner().invoke(app, ["index", "pull", str(index), "--index", str(replica)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert "recsys index verify" in result.output
    assert IndexLayout(replica).current_name() == kept
    assert not list(IndexLayout(replica).segments.glob(".staging-*"))  # nothing half-copied left behind
    with Recommender.open(replica, settings) as rec:
        assert [h.id for h in rec.related("a2", 3)]


def test_pull_refuses_nan_vectors_and_a_damaged_trained_file(index, settings, tmp_path):
    replica = tmp_path / "replica"
    pull(index, replica)
    publish_next(index, settings)
    vectors = file_of(index, "vectors.npy")
    data = bytearray(vectors.read_bytes())
    data[-8:] = np.array([np.nan, np.nan], dtype=np.float32).tobytes()  # NaN bytes, same size
    vectors.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["index", "pull", str(index), "--index", str(replica)])
    assert result.exit_code == 1 and "vectors.npy" in result.output
    (index / COREADS_FILE).write_text('{"format": 1, "neigh')  # truncated: refused before any segment is copied
    result = CliRunner().invoke(app, ["index", "pull", str(index), "--index", str(replica)])
    assert result.exit_code == 1 and COREADS_FILE in result.output
    assert not (replica / COREADS_FILE).exists()


@pytest.mark.parametrize("kind", ["vectors.npy", "rows.npy", "lex_terms.npy", "lex_weights.npy", "articles.sqlite"])
@pytest.mark.parametrize("where", ["header", "middle"])
def test_the_cli_names_the_damaged_file_and_the_fix(index, kind, where):
    damage(file_of(index, kind), where)
    for command in (["related", "a2"], ["ranking"], ["index", "info"]):
        result = CliRunner().invoke(app, [*command, "--index", str(index)])
        assert result.exit_code == 1, (command, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
        assert kind in result.output and "recsys index verify" in result.output
    verify = CliRunner().invoke(app, ["index", "verify", "--index", str(index)])
    assert verify.exit_code == 1 and kind in verify.output


def test_verify_passes_a_sound_index_and_deep_checks_values(index, settings):
    result = CliRunner().invoke(app, ["index", "verify", "--deep", "--index", str(index)])
    assert result.exit_code == 0 and ": ok" in result.output
    assert verify_index(index).files > 0


def test_a_damaged_current_pointer_is_an_error_with_the_fix(index):
    IndexLayout(index).pointer.write_bytes(b"\xff\xfe\x00garbage\x81")
    result = CliRunner().invoke(app, ["related", "a2", "--index", str(index)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "CURRENT" in result.output
    assert "Traceback" not in result.output


def test_damaged_trained_files_are_skipped_and_reported(index, settings):
    (index / COREADS_FILE).write_text('{"format": 1, "built_at": 0, "neighbours": {"a1": [["a2", 0.')  # truncated
    (index / RANKER_FILE).write_text("{not json")
    result = CliRunner().invoke(app, ["related", "a2", "--index", str(index)])
    assert result.exit_code == 0 and "a" in result.output
    with TestClient(create_app(index, settings)) as client:
        assert [a for a in every_endpoint(client) if a[1] != 200] == []
        health = client.get("/health").json()
        assert health["status"] == "degraded" and set(health["ignored_files"]) == {COREADS_FILE, RANKER_FILE}


def test_a_garbage_events_database_does_not_stop_related(index, settings):
    (index / "events.sqlite").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(app, ["related", "a2", "--index", str(index)])
    assert result.exit_code == 0, result.output
    with TestClient(create_app(index, settings)) as client:
        assert client.get("/related/a2").status_code == 200
        assert client.get("/ranking").status_code == 200
        assert client.get("/health").json()["events"] == "unavailable"
        posted = client.post("/events", json={"events": [{"article_id": "a2", "type": "view"}]})
        assert posted.status_code == 503 and "move it aside" in posted.json()["detail"]


def test_writers_never_seal_non_finite_vectors(tmp_path, settings):
    class NaNEmbedder(KeywordEmbedder):
        def encode(self, texts, progress=None):
            out = super().encode(texts, progress)
            out[-1, 0] = np.nan
            return out

    root = tmp_path / "nan"
    with pytest.raises(Exception, match="not finite"):
        Indexer(root, settings, NaNEmbedder()).add_articles(stories("a", 3))
    assert not IndexLayout(root).exists()
