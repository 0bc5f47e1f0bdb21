"""The index job's steps on their own: the plan decides what to keep, embed and delete; the write and merge
steps produce segments the published version lists."""

from __future__ import annotations

import numpy as np

from recsys.archive.layout import IndexLayout
from recsys.archive.merge import MergePolicy, merge_parts
from recsys.archive.plan import carried_parts, plan_job
from recsys.archive.version import VersionReader
from recsys.archive.write import AnnChoice
from recsys.config import IndexConfig
from tests.conftest import art

MODEL = "keyword-test"


def live_version(make_indexer, articles):
    indexer = make_indexer()
    indexer.add_articles(articles)
    return indexer, VersionReader(IndexLayout(indexer.layout.root).current())


def test_plan_keeps_unchanged_rows_embeds_new_text_and_carries_metadata_changes(make_indexer):
    _, prev = live_version(
        make_indexer, [art("a", "Storm hits coast"), art("b", "Election night"), art("c", "Cup final")]
    )
    try:
        incoming = [
            art("a", "Storm hits coast"),  # unchanged
            art("b", "Election night", category="politics"),  # metadata only
            art("c", "Cup final goes to penalties"),  # new text
            art("d", "Budget vote"),  # new article
        ]
        plan = plan_job(prev, incoming, set(), set(), replace_all=False, model=MODEL, max_chars=2000)
        assert set(plan.keep_rows) == {"a", "b"}
        assert [a.id for a in plan.changed_meta] == ["b"]
        assert [a.id for a in plan.to_embed] == ["c", "d"]
        assert (plan.added, plan.updated, plan.gone) == (1, 1, [])
        assert not plan.writes_nothing
        parts = carried_parts(prev, plan, replace_all=False)
        deleted = {prev.store.ids_of([int(r)])[int(r)] for p in parts for r in p.deleted}
        assert deleted == {"b", "c"}  # their old rows go; "a" stays where it is

        same = plan_job(prev, incoming[:1], set(), set(), replace_all=False, model=MODEL, max_chars=2000)
        assert same.writes_nothing and same.keep_rows == {"a": plan.keep_rows["a"]}
        other_model = plan_job(prev, incoming[:1], set(), set(), replace_all=False, model="other", max_chars=2000)
        assert [a.id for a in other_model.to_embed] == ["a"]  # a new model re-embeds unchanged text
    finally:
        prev.close()


def test_plan_parks_a_takedown_and_reuses_its_vector_when_it_comes_back_unchanged(make_indexer):
    indexer, prev = live_version(make_indexer, [art("a", "Storm hits coast"), art("b", "Election night")])
    prev.close()
    indexer.remove(["a"])
    prev = VersionReader(indexer.layout.current())
    try:
        blocked = plan_job(prev, [art("a", "Storm hits coast")], set(), set(), False, MODEL, 2000)
        assert blocked.blocked == 1 and not blocked.to_embed  # taken down: refused
        back = plan_job(prev, [art("a", "Storm hits coast")], set(), {"a"}, False, MODEL, 2000)
        assert [a.id for a in back.to_embed] == ["a"] and set(back.reuse) == {"a"}
        assert "a" not in back.takedowns and "a" not in back.parked
        changed = plan_job(prev, [art("a", "Storm hits the coast hard")], set(), {"a"}, False, MODEL, 2000)
        assert not changed.reuse  # new text: embedded afresh
    finally:
        prev.close()


def test_ann_choice_and_merge_step(make_indexer):
    config = IndexConfig()
    small = AnnChoice(config, archive_rows=100)
    large = AnnChoice(config, archive_rows=config.exact_max + 1)
    assert small.kind_for(100) == "exact"
    assert large.kind_for(config.segment_exact_max) == "exact"
    assert large.kind_for(config.segment_exact_max + 1) == "faiss-ivf"

    indexer = make_indexer()
    for i in range(3):
        indexer.add_articles([art(f"x{i}", f"Story number {i} about topic {i}")])
    prev = VersionReader(indexer.layout.current())
    try:
        parts = carried_parts(prev, plan_job(prev, [], set(), set(), False, MODEL, 2000), replace_all=False)
        assert len(parts) == len(prev.segments) >= 2
        written = []
        merged, after = merge_parts(
            parts, indexer.layout.segments, 256, MergePolicy(), small, everything=True, written=written
        )
        assert merged == len(parts) and len(after) == 1 and after[0].segment is written[0]
        assert after[0].live == prev.n_live
        np.testing.assert_array_equal(np.asarray(after[0].segment.vectors), np.asarray(prev.vectors[np.arange(3)]))
    finally:
        for segment in written:
            segment.close()
        prev.close()
