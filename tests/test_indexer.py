"""Index jobs: build, incremental add by content hash, takedown, bad input, manifest checks."""

import json

import numpy as np
import pytest

from recsys.archive.layout import FORMAT_VERSION, IndexLayout
from recsys.config import Settings
from recsys.service import Recommender
from recsys.types import IndexStateError, InputError
from tests.conftest import KeywordEmbedder, art, write_jsonl

ARTICLES = [
    {"id": "storm-1", "title": "Storm floods coast", "body": "storm winds flood coast homes power cut"},
    {"id": "storm-2", "title": "Storm clean up", "body": "storm flood coast clean up power restored"},
    {"id": "rates-1", "title": "Bank holds rates", "body": "central bank interest rates inflation hold"},
    {"id": "rates-2", "title": "Rate cut expected", "body": "central bank interest rates cut inflation"},
    {"id": "match-1", "title": "United win derby", "body": "football derby goal united city win"},
]


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "a.jsonl", ARTICLES)


def test_build_reports_and_serves(make_indexer, files, tmp_path, embedder):
    report = make_indexer().build([files])
    assert (report.added, report.embedded, report.articles, report.problems) == (5, 5, 5, [])
    rec = Recommender.open(tmp_path / "index")
    assert len(rec) == 5
    assert rec.related("storm-1", 1)[0].id == "storm-2"
    info = rec.info()
    assert info["model"] == {"name": "keyword-test", "dimension": 256}
    assert info["ann"]["kind"] == "exact" and info["size_bytes"] > 0


def test_second_add_of_same_files_embeds_nothing_and_keeps_version(make_indexer, files, embedder):
    indexer = make_indexer()
    first = indexer.build([files])
    again = indexer.add([files])
    assert (again.embedded, again.unchanged, again.added) == (0, 5, 0)
    assert again.version == first.version  # nothing changed: no new version written
    rebuilt = indexer.build([files])
    assert rebuilt.embedded == 0 and rebuilt.unchanged == 5  # a full build re-uses vectors too
    assert rebuilt.version == first.version  # ... and writes nothing when nothing changed
    assert embedder.embedded == 5
    exact = indexer.build([files])
    flat = make_indexer(s=Settings().replace("index", backend="faiss-flat")).build([files])
    assert flat.version != exact.version and flat.embedded == 0  # a new ANN choice is a new version


def test_changed_text_is_re_embedded_metadata_change_is_not(make_indexer, files, tmp_path, embedder):
    indexer = make_indexer()
    indexer.build([files])
    changed = [dict(ARTICLES[0], body="storm now over, sunshine returns"), dict(ARTICLES[1], url="https://x/2")]
    report = indexer.add([write_jsonl(tmp_path / "b.jsonl", changed)])
    assert (report.updated, report.embedded, report.unchanged) == (1, 1, 1)
    rec = Recommender.open(tmp_path / "index")
    assert rec.article("storm-2").url == "https://x/2"
    assert "sunshine" in rec.article("storm-1").body
    assert len(rec) == 5


def test_new_article_is_relatable_at_once_and_takedown_is_immediate(make_indexer, files, tmp_path):
    indexer = make_indexer()
    indexer.build([files])
    rec = Recommender.open(tmp_path / "index")
    assert "storm-3" not in [h.id for h in rec.related("storm-1")]
    indexer.add_articles([art("storm-3", "Storm flood coast", "storm flood coast winds power")])
    assert "storm-3" in [h.id for h in rec.related("storm-1")]  # same Recommender, next query
    indexer.remove(["storm-3", "no-such-id"])
    assert "storm-3" not in [h.id for h in rec.related("storm-1")]
    assert "storm-3" not in [h.id for h in rec.related("storm-2", 50)]
    with pytest.raises(KeyError, match="storm-3"):
        rec.related("storm-3")


def test_build_replaces_content(make_indexer, files, tmp_path):
    indexer = make_indexer()
    indexer.build([files])
    report = indexer.build([write_jsonl(tmp_path / "b.jsonl", ARTICLES[:2])])
    assert (report.removed, report.articles, report.embedded) == (3, 2, 0)
    rec = Recommender.open(tmp_path / "index")
    assert len(rec) == 2 and rec.view.manifest["counts"]["rows"] == 2  # a build compacts


def test_removals_compact_when_dead_rows_pile_up(make_indexer, files, tmp_path):
    indexer = make_indexer()
    indexer.build([files])
    first = indexer.remove(["match-1"])  # 1 dead of 5 rows = 20%: not yet
    assert not first.compacted
    second = indexer.remove(["rates-2"])
    assert second.compacted
    rec = Recommender.open(tmp_path / "index")
    assert rec.view.manifest["counts"] == {"articles": 3, "rows": 3, "dead_rows": 0}
    assert [h.id for h in rec.related("storm-1", 1)] == ["storm-2"]


def test_on_error_fail_writes_nothing_and_skip_keeps_good_records(make_indexer, files, tmp_path):
    indexer = make_indexer()
    before = indexer.build([files]).version
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "n1", "title": "New one", "body": "fresh"}\n{broken\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: malformed JSON"):
        indexer.add([bad], on_error="fail")
    assert IndexLayout(tmp_path / "index").current_name() == before
    report = indexer.add([bad], on_error="skip")
    assert report.added == 1
    assert [str(p).split(": ")[0] for p in report.problems] == [f"{bad}:2"]
    assert report.problems[0].reason.startswith("malformed JSON")
    assert len(Recommender.open(tmp_path / "index")) == 6


def test_model_mismatch_is_refused_with_a_fix(make_indexer, files, tmp_path):
    make_indexer().build([files])
    other = make_indexer(e=KeywordEmbedder(name="other-model"))
    with pytest.raises(IndexStateError, match=r"built with model 'keyword-test'.*recsys index build"):
        other.add([files])
    assert other.build([files]).embedded == 5  # a full build with the new model is allowed


def test_open_checks_the_manifest(make_indexer, files, tmp_path):
    make_indexer().build([files])
    layout = IndexLayout(tmp_path / "index")
    version = layout.current()
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] = 99
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexStateError, match=r"format 99.*rebuild"):
        Recommender.open(tmp_path / "index")
    with pytest.raises(IndexStateError, match=r"format 99.*recsys index build"):
        make_indexer().add([files])  # an add cannot extend an index of another format ...
    assert make_indexer().build([files]).embedded == 5  # ... and the build the message names starts afresh
    assert len(Recommender.open(tmp_path / "index")) == 5
    version = layout.current()
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION
    (version / "manifest.json").write_text(json.dumps(manifest))
    segment = layout.segments / manifest["segments"][0]["name"]
    with open(segment / "vectors.npy", "ab") as handle:
        handle.write(b"\0" * 8)
    with pytest.raises(IndexStateError, match=r"vectors\.npy is missing or has the wrong size"):
        Recommender.open(tmp_path / "index")


def test_missing_index_says_how_to_build(tmp_path):
    with pytest.raises(IndexStateError, match="recsys index build"):
        Recommender.open(tmp_path / "nothing")


def test_versions_are_immutable_and_old_ones_collected(make_indexer, files, tmp_path):
    settings = Settings().replace("index", keep_versions=2)
    indexer = make_indexer(s=settings)
    names = [indexer.build([files]).version]
    for i in range(3):
        names.append(indexer.add_articles([art(f"x{i}", f"extra story {i}", "words")]).version)
    kept = sorted(p.name for p in (tmp_path / "index" / "versions").iterdir())
    assert kept == sorted(names[-2:])
    layout = IndexLayout(tmp_path / "index")
    # each add wrote one small segment beside the first; segments no kept version lists were deleted
    listed = [json.loads((layout.versions / n / "manifest.json").read_text())["segments"] for n in names[-2:]]
    assert [len(s) for s in listed] == [3, 4]
    assert sorted(p.name for p in layout.segments.iterdir()) == sorted(s["name"] for s in listed[-1])
    vectors = np.concatenate([np.load(layout.segments / s["name"] / "vectors.npy") for s in listed[-1]])
    assert vectors.shape == (8, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_large_archive_uses_ivf_and_incremental_adds(make_indexer, tmp_path):
    settings = Settings().replace("index", exact_max=50, ivf_nprobe=64)
    indexer = make_indexer(s=settings)
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(400)]
    docs = [art(f"d{i}", " ".join(rng.choice(words, 6)), " ".join(rng.choice(words, 30))) for i in range(300)]
    indexer.add_articles(docs)
    rec = Recommender.open(tmp_path / "index", settings)
    assert rec.info()["ann"]["kind"] == "faiss-ivf"
    half = " ".join(docs[0].body.split()[:12])
    indexer.add_articles([art("new", docs[0].title, half)])
    assert rec.related("d0", 3)[0].id == "new"
    assert rec.info()["ann"]["size"] == 301


def test_ivf_build_tunes_nprobe_to_the_target_recall(make_indexer, tmp_path, monkeypatch):
    monkeypatch.setattr("recsys.archive.segment_writer.COPY_CHUNK", 16)  # vectors reach the index in batches of 64
    settings = Settings().replace("index", exact_max=50, ivf_tune_queries=100)
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(300)]
    docs = [art(f"d{i}", " ".join(rng.choice(words, 5)), " ".join(rng.choice(words, 25))) for i in range(400)]
    make_indexer(s=settings).add_articles(docs)
    ann = Recommender.open(tmp_path / "index", settings).info()["ann"]
    assert ann["kind"] == "faiss-ivf" and ann["measured_recall_at_10"] >= 0.95
    assert ann["nlist"] == min(int(4 * 400**0.5), 400 // 39)  # sized for all 400, not the first batch of 64
    assert ann["nprobe"] & (ann["nprobe"] - 1) == 0 or ann["nprobe"] == ann["nlist"]


def test_takedowns_stick_until_restored(make_indexer, files, tmp_path):
    indexer = make_indexer()
    indexer.build([files])
    indexer.remove(["storm-2", "not-yet-published"])
    again = indexer.add([files])  # the feed still carries storm-2
    assert (again.blocked, again.embedded) == (1, 0)
    rebuilt = indexer.build([files])
    assert rebuilt.blocked == 1 and rebuilt.articles == 4
    late = indexer.add_articles([art("not-yet-published", "Storm flood coast", "storm flood")])
    assert late.blocked == 1
    rec = Recommender.open(tmp_path / "index")
    assert "storm-2" not in [h.id for h in rec.related("storm-1", 10)]
    assert rec.info()["takedowns"] == 2
    indexer.restore(["storm-2"])
    assert indexer.add([files]).added == 1
    assert "storm-2" in [h.id for h in rec.related("storm-1", 10)]
    assert rec.info()["takedowns"] == 1
