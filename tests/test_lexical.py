"""The lexical half of hybrid Related, and co-reads as a Related signal."""

import numpy as np

from recsys.archive import lexical
from recsys.archive.layout import write_json_atomic
from recsys.service import Recommender
from recsys.signals.coreads import COREADS_FILE, CoReadTable
from tests.conftest import art

NOW = "2026-11-25T12:00:00Z"


def weigh(texts):
    counts = lexical.term_counts(texts)
    df = np.zeros(lexical.BUCKETS, dtype=np.int32)
    lexical.add_frequencies(df, counts)
    return lexical.weigh(counts, df, len(texts))


def test_shared_rare_terms_count_more_than_shared_common_ones():
    texts = [
        "Storm Ciarán floods the harbour town",
        "Harbour town cleans up after Ciarán",
        "Harbour town opens a new market",
        *[f"Harbour town news item {i}" for i in range(20)],
    ]
    ids, weights = weigh(texts)
    sims = lexical.similarity(ids[0], weights[0], ids, weights)
    assert sims[0] == np.max(sims) and abs(sims[0] - 1.0) < 1e-2  # unit length (float16 weights)
    assert sims[1] > sims[2] > 0  # "Ciarán" is rare, "harbour town" is everywhere
    assert lexical.similarity(ids[0], weights[0], ids[:0], weights[:0]).shape == (0,)
    assert lexical.term_id("storm") == lexical.term_id("storm")  # stable across calls and processes (blake2b)


def test_lexical_arrays_follow_rows_through_adds_and_compaction(make_indexer, tmp_path):
    indexer = make_indexer()
    first = [art(f"a{i}", f"Story {w}", f"body about {w}") for i, w in enumerate(["ciaran", "budget", "derby"])]
    indexer.add_articles(first)
    rec = Recommender.open(tmp_path / "index")
    before = {a.id: np.asarray(rec.view.lexical[0][rec.view.store.row_of(a.id)]) for a in first}
    row_before = rec.view.store.row_of("a1")
    indexer.remove(["a0"])  # a dead row ...
    indexer.add_articles([art("a3", "Story ferry", "body about ferry")])
    after = Recommender.open(tmp_path / "index")
    # the takedown compacted (rows renumbered), the add appended: the lexical arrays followed both
    assert after.view.store.row_of("a1") != row_before
    for article_id in ("a1", "a2"):
        row = after.view.store.row_of(article_id)
        np.testing.assert_array_equal(np.asarray(after.view.lexical[0][row]), before[article_id])
    new_row = after.view.store.row_of("a3")
    assert (np.asarray(after.view.lexical[0][new_row]) >= 0).sum() > 0


def test_readers_also_read_joins_related_and_new_articles_stay_relatable(make_indexer, tmp_path):
    articles = [
        art("recipe", "Apple cake recipe", "apple cake oven flour", published_at="2026-11-20"),
        art("match", "Derby match report", "football derby goal striker", published_at="2026-11-20"),
        art("match2", "Derby preview", "football derby preview striker", published_at="2026-11-19"),
        art("other", "Parliament vote", "election ballot vote parliament", published_at="2026-11-18"),
    ]
    make_indexer().add_articles(articles)
    root = tmp_path / "index"
    rec = Recommender.open(root)
    assert "recipe" not in [h.id for h in rec.related("match", 3, now=NOW)]  # nothing in common by content
    write_json_atomic(root / COREADS_FILE, CoReadTable({"match": [("recipe", 0.8)]}, 0.0).to_json())
    rec = Recommender.open(root)
    hits = rec.related("match", 3, now=NOW)
    assert "recipe" in [h.id for h in hits]
    assert next(h for h in hits if h.id == "recipe").reason == "readers of this also read"
    assert hits[0].id == "match2"  # content still leads
    make_indexer().add_articles([art("fresh", "Derby replay tonight", "football derby replay striker")])
    assert "fresh" in [h.id for h in Recommender.open(root).related("match", 3, now=NOW)]  # no reads yet
