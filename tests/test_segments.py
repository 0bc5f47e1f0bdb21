"""Segments: the merge policy, gathering rows across segments, jobs that cost what they change, and an index
grown by many small jobs that equals a fresh build of the same articles."""

import itertools
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from recsys.archive.layout import CRASH_ENV, IndexLayout
from recsys.archive.merge import MergePolicy, plan_merge
from recsys.archive.segment import IVFRows
from recsys.archive.segmented import RowConcat
from recsys.config import Settings
from recsys.lists.base import candidates
from recsys.service import Recommender
from recsys.types import ConfigError, Filters
from tests.conftest import REPO, art

NOW = 1_790_000_000.0
WORDS = "storm flood coast rates bank inflation derby goal striker ferry harbour election ballot budget tax".split()


def story(i: int, rng: np.random.Generator, **fields: object):
    picked = rng.choice(WORDS, 6)
    return art(
        f"s{i}",
        f"{picked[0]} {picked[1]} report {i}",
        " ".join(rng.choice(WORDS, 12)),
        category=["news", "sport", "business"][i % 3],
        published_at=f"2026-11-{1 + i % 20:02d}T08:00:00Z",
        **fields,
    )


def test_merge_policy_folds_a_full_level_and_rewrites_a_segment_with_many_deletions():
    policy = MergePolicy(factor=4, floor=100, dead_fraction=0.2)
    assert [policy.level(n) for n in (1, 100, 101, 400, 401, 1600, 1601)] == [0, 0, 1, 1, 2, 2, 3]
    assert plan_merge([(5000, 0), (50, 0), (50, 0), (50, 0)], policy) is None  # three small ones: not yet
    assert plan_merge([(5000, 0), (50, 0), (50, 0), (50, 0), (50, 0)], policy) == (1, 5)
    # the newest full run goes first; runs are adjacent segments on one level
    sizes = [(300, 0), (300, 0), (300, 0), (300, 0), (20, 0), (20, 0), (20, 0), (20, 0)]
    assert plan_merge(sizes, policy) == (4, 8)
    assert plan_merge(sizes[:4], policy) == (0, 4)
    assert plan_merge([(5000, 0), (300, 0), (50, 0)], policy) is None
    assert plan_merge([(5000, 1001), (300, 0)], policy) == (0, 1)  # 20.02% deleted
    assert plan_merge([(5000, 1000), (300, 0)], policy) is None
    with pytest.raises(ConfigError, match="merge_factor must be at least 2"):
        MergePolicy(factor=1)  # would fold one segment into itself forever
    with pytest.raises(ConfigError, match="merge_floor"):
        MergePolicy(floor=0)


def test_row_concat_gathers_like_one_array():
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((23, 3)).astype(np.float32)
    cuts = [0, 5, 5, 17, 23]  # an empty part too
    joined = RowConcat([whole[a:b] for a, b in itertools.pairwise(cuts)], np.asarray(cuts))
    rows = rng.integers(0, 23, 40)
    np.testing.assert_array_equal(joined[rows], whole[rows])
    np.testing.assert_array_equal(joined[rows.tolist()], whole[rows])
    np.testing.assert_array_equal(joined[7], whole[7])
    np.testing.assert_array_equal(joined[-1], whole[-1])
    np.testing.assert_array_equal(joined[3:19:2], whole[3:19:2])
    np.testing.assert_array_equal(np.asarray(joined), whole)
    assert joined.shape == whole.shape and len(joined) == 23
    with pytest.raises(IndexError):
        joined[23]


def test_add_writes_one_segment_and_remove_writes_only_deletions(make_indexer, tmp_path):
    rng = np.random.default_rng(1)
    indexer = make_indexer()
    indexer.add_articles([story(i, rng) for i in range(40)])
    layout = IndexLayout(tmp_path / "index")
    first = json.loads((layout.current() / "manifest.json").read_text())["segments"]
    report = indexer.add_articles([story(i, rng) for i in range(40, 50)])
    second = json.loads((layout.current() / "manifest.json").read_text())["segments"]
    assert report.segments == 2 and second[0] == first[0] and second[1]["rows"] == 10
    before = {p.name for p in layout.segments.iterdir()}
    removed = indexer.remove(["s3", "s41"])
    version = layout.current()
    manifest = json.loads((version / "manifest.json").read_text())
    assert {p.name for p in layout.segments.iterdir()} == before  # no segment written
    assert [(s["name"], s["deleted"]) for s in manifest["segments"]] == [(first[0]["name"], 1), (second[1]["name"], 1)]
    assert sorted(p.name for p in (version / "deletes").iterdir()) == sorted(f"{s['name']}.npy" for s in second)
    assert removed.removed == 2 and manifest["counts"] == {"articles": 48, "rows": 50, "dead_rows": 2}
    with Recommender.open(tmp_path / "index") as rec:
        assert len(rec) == 48 and rec.view.store.get("s3") is None and rec.view.store.get("s41") is None
        with pytest.raises(KeyError, match="s41"):
            rec.related("s41")
        for source in ("s0", "s40", "s42"):
            shown = [h.id for h in rec.related(source, 40, now=NOW)]
            assert "s3" not in shown and "s41" not in shown and source not in shown


def snapshot(root, with_lexical: bool) -> dict[str, tuple]:
    """Everything a version holds per live article, by id (row numbers and vocab codes decoded away)."""
    with Recommender.open(root) as rec:
        view = rec.view
        live = np.flatnonzero(view.live)
        stored = view.store.get_rows(live)
        out = {}
        for row in live.tolist():
            article = stored[row]
            columns = view.rows[row]
            category = view.vocab["category"][columns["category"]] if columns["category"] >= 0 else ""
            entry = (
                np.asarray(view.vectors[row]).tobytes(),
                (article.title, article.body, article.url, article.category, article.published_at, article.tags),
                (category, int(columns["published"]), int(columns["story"])),
            )
            if with_lexical:
                entry += (np.asarray(view.lexical[0][row]).tobytes(), np.asarray(view.lexical[1][row]).tobytes())
            out[article.id] = entry
        return out


def related_lists(root) -> dict[str, list[tuple[str, float, str]]]:
    with Recommender.open(root) as rec:
        ids = [a for _, a, _ in rec.view.store.labels("category")]
        return {a: [(h.id, h.score, h.reason) for h in rec.related(a, 5, now=NOW)] for a in ids}


def test_twenty_small_jobs_merge_and_equal_a_fresh_build(make_indexer, tmp_path):
    settings = Settings().replace("index", merge_factor=3, merge_floor=4, keep_versions=2)
    rng = np.random.default_rng(7)
    indexer = make_indexer(s=settings)
    final: dict[str, object] = {}
    counts, merged = [], 0
    for batch in range(20):
        fresh = [story(batch * 6 + i, rng) for i in range(6)]
        if batch % 5 == 4:  # now and then: a rewritten article, a metadata-only change, a takedown
            fresh.append(story(batch, rng))  # new text for an old id
            old = final[f"s{batch + 1}"]
            fresh.append(art(old.id, old.title, old.body, category="culture", published_at=old.published_at))
        report = indexer.add_articles(fresh)
        final |= {a.id: a for a in fresh}
        if batch % 5 == 4:
            indexer.remove([f"s{batch + 2}"])
            final.pop(f"s{batch + 2}")
        merged += report.merged
        counts.append(IndexLayout(tmp_path / "index").current().joinpath("manifest.json").read_text().count('"name"'))
    assert merged > 0 and max(counts) <= 8  # segments were folded together; their number stayed bounded
    layout = IndexLayout(tmp_path / "index")
    listed = layout.listed_segments()
    assert {p.name for p in layout.segments.iterdir()} == listed  # merged-away segments were deleted

    fresh_root = tmp_path / "fresh"
    make_indexer(root=fresh_root, s=settings).add_articles(list(final.values()))
    grown, built = snapshot(tmp_path / "index", False), snapshot(fresh_root, False)
    assert grown.keys() == built.keys() == final.keys()
    assert grown == built  # same vectors, metadata and filter columns for every article

    report = indexer.optimize()  # one segment, lexical weights counted afresh: the same as the fresh build
    assert report.segments == 1 and report.rows == report.articles == len(final)
    assert snapshot(tmp_path / "index", True) == snapshot(fresh_root, True)
    assert related_lists(tmp_path / "index") == related_lists(fresh_root)


def test_readers_of_an_old_version_keep_answering_after_its_segments_are_merged_away(make_indexer, tmp_path):
    settings = Settings().replace("index", merge_factor=2, merge_floor=1, keep_versions=1)
    rng = np.random.default_rng(3)
    indexer = make_indexer(s=settings)
    indexer.add_articles([story(i, rng) for i in range(10)])
    old = Recommender.open(tmp_path / "index", settings)
    pinned = old.view  # a request in flight holds this version's reader
    query = np.asarray(pinned.vectors[pinned.store.row_of("s1")])
    nearest, _ = candidates(pinned, query, Filters(), set(), 6)
    nearest_ids = [pinned.store.ids_of(nearest)[r] for r in nearest.tolist()]
    report = indexer.add_articles([story(i, rng) for i in range(10, 20)])
    assert report.merged == 2  # both segments folded into one; the old one is no longer listed
    assert pinned.segments[0].path.name not in IndexLayout(tmp_path / "index").listed_segments()
    # the pinned reader still searches its mapped files and reads its (unlinked) SQLite files
    rows, _ = candidates(pinned, query, Filters(), set(), 6)
    assert [pinned.store.ids_of(rows)[r] for r in rows.tolist()] == nearest_ids
    assert len(old.related("s1", 5, now=NOW)) == 5 and old.version != pinned.version  # the follower moved on
    old.close()


def test_a_serving_process_keeps_the_segments_it_has_open_across_versions(make_indexer, tmp_path):
    rng = np.random.default_rng(5)
    indexer = make_indexer()
    indexer.add_articles([story(i, rng) for i in range(30)])
    with Recommender.open(tmp_path / "index") as rec:
        before = rec.view
        indexer.add_articles([story(i, rng) for i in range(30, 40)])
        after = rec.view  # the follower moved to the new version
        assert after.version != before.version and len(after.segments) == 2
        assert after.segments[0] is before.segments[0]  # opened once, its mapped pages stay warm
        assert after.segments[1].name not in {s.name for s in before.segments}
        assert rec.related("s35", 3, now=NOW) and rec.related("s1", 3, now=NOW)


MERGING_WRITER = """
import sys
from recsys.config import Settings
from recsys.archive.indexer import Indexer
from tests.conftest import KeywordEmbedder, art
settings = Settings().replace("index", merge_factor=2, merge_floor=1)
Indexer(sys.argv[1], settings, KeywordEmbedder()).add_articles([art("late", "storm flood coast late", "storm")])
"""


def test_an_add_is_served_before_its_merge_and_a_merge_killed_or_failed_loses_nothing(make_indexer, tmp_path):
    settings = Settings().replace("index", merge_factor=2, merge_floor=1)
    rng = np.random.default_rng(11)
    indexer = make_indexer(s=settings)
    indexer.add_articles([story(i, rng) for i in range(12)])
    root = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO), CRASH_ENV: "before-merge"}
    killed = subprocess.run([sys.executable, "-c", MERGING_WRITER, str(root)], env=env, cwd=tmp_path, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    with Recommender.open(root, settings) as rec:  # killed before merging: the add is already live
        assert len(rec) == 13 and rec.info()["segments"] == 2
        assert rec.related("late", 3, now=NOW)
    layout = IndexLayout(root)
    report = indexer.add_articles([story(12, rng)])  # the next job merges (2 + 1 small segments)
    assert report.merged >= 2 and report.visible_seconds <= report.seconds
    assert {p.name for p in layout.segments.iterdir()} == layout.listed_segments()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    indexer._merge = broken  # a merge that fails: the add stays served, the job reports no merge
    report = indexer.add_articles([story(13, rng)])
    assert report.merged == 0 and report.version == layout.current_name()
    with Recommender.open(root, settings) as rec:
        assert len(rec) == 15 and rec.view.store.get("s13") is not None


def test_in_a_large_archive_only_small_segments_are_searched_exactly(make_indexer, tmp_path):
    settings = Settings().replace("index", exact_max=60, segment_exact_max=10, ivf_nprobe=64)
    rng = np.random.default_rng(9)
    indexer = make_indexer(s=settings)
    indexer.add_articles([story(i, rng) for i in range(40)])  # a small archive: exact
    indexer.add_articles([story(i, rng) for i in range(40, 70)])  # now 70 > exact_max: a 30-row segment gets an IVF
    indexer.add_articles([story(i, rng) for i in range(70, 75)])  # 5 rows: exact
    with Recommender.open(tmp_path / "index", settings) as rec:
        kinds = [(s.rows, s.ann_kind) for s in rec.view.segments]
        assert kinds == [(40, "exact"), (30, "faiss-ivf"), (5, "exact")]
        for source in ("s3", "s50", "s72"):  # every segment answers
            assert len(rec.related(source, 5, now=NOW)) == 5
        # a reader takes the IVF segment's vectors from its lists: the same floats as vectors.npy
        ivf = rec.view.segments[1]
        assert isinstance(ivf.served_vectors, IVFRows)
        stored = np.asarray(ivf.vectors)
        mask = np.arange(30) % 4 == 1
        for key in (3, -1, np.int64(7), slice(2, 20, 3), np.array([29, 0, 11]), [4, 4], mask):
            assert np.array_equal(ivf.served_vectors[key], stored[key])
        assert np.array_equal(np.asarray(rec.view.vectors), np.concatenate([s.vectors for s in rec.view.segments]))
        with pytest.raises(IndexError):
            ivf.served_vectors[np.array([30])]
    indexer.remove(["s5", "s45", "s71"])  # a deleted row in each segment
    with Recommender.open(tmp_path / "index", settings) as rec:
        view = rec.view
        vectors = np.asarray(view.vectors)
        live = np.flatnonzero(view.live)
        queries = vectors[live[::7]]
        for k in (1, 5, 20, 80):  # the IVF has one list and probes it: the merged search must equal exact search
            scores, rows = view.ann.search(queries, k)
            want = min(k, live.size)
            exact = np.sort(queries @ vectors[live].T, axis=1)[:, ::-1][:, :want]
            assert np.allclose(scores[:, :want], exact, atol=1e-5)
            assert np.isin(rows[:, :want], live).all() and (rows[:, want:] == -1).all()
            own = np.einsum("qd,qkd->qk", queries, vectors[rows[:, :want]])
            assert np.allclose(own, scores[:, :want], atol=1e-5)  # each row carries its own score


@pytest.mark.parametrize("copied", [True, False])  # the exact rows as one matrix, or read from each segment
def test_the_fp16_first_pass_over_exact_segments_gives_the_float32_answer(make_indexer, tmp_path, monkeypatch, copied):
    from recsys.archive import segmented

    settings = Settings().replace("index", merge_factor=50, merge_floor=1)  # several exact segments stay
    indexer = make_indexer(s=settings)
    rng = np.random.default_rng(3)
    for batch in range(4):
        indexer.add_articles([story(batch * 10 + i, rng) for i in range(10)])
    indexer.remove(["s3", "s17"])
    view = Recommender.open(tmp_path / "index", settings).view
    queries = np.asarray(view.vectors[[0, 5, 12, 33]], dtype=np.float32)
    plain = view.ann.search(queries, 15)
    monkeypatch.setattr(segmented, "HALF_SCAN_MIN", 1)
    if not copied:
        monkeypatch.setattr(segmented, "EXACT_COPY_MAX", 0)
    halved = Recommender.open(tmp_path / "index", settings).view
    assert len(halved.ann._exact) > 1 and halved.ann._exact_dead.any()
    assert (halved.ann._exact_matrix is not None) == copied
    scores, rows = halved.ann.search(queries, 15)
    np.testing.assert_array_equal(rows, plain[1])
    np.testing.assert_allclose(scores, plain[0], rtol=1e-5)
    assert halved.ann._half is not None  # the first pass was taken
