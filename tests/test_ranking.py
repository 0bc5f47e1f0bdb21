"""The scoring pieces, checked against values worked out by hand."""

import numpy as np
import pytest

from recsys.archive.store import NO_TIME, story_key
from recsys.config import RelatedConfig
from recsys.lists.scoring import (
    DAY,
    dedupe_stories,
    expand_query,
    freshness,
    keywords,
    mmr,
    related_reason,
    related_scores,
    shared_terms,
)

NOW = 1_800_000_000.0


def test_freshness_halves_every_half_life_and_ignores_undated():
    published = np.array([NOW, NOW - 14 * DAY, NOW - 28 * DAY, NO_TIME, NOW + DAY])
    assert freshness(published, NOW, 14.0).tolist() == pytest.approx([1.0, 0.5, 0.25, 0.0, 1.0])


def test_related_score_adds_weighted_freshness():
    config = RelatedConfig(freshness_weight=0.1)
    assert related_scores(np.array([0.7, 0.8]), np.array([0.5, 0.0]), config).tolist() == pytest.approx([0.75, 0.8])


def test_year_old_article_needs_clearly_more_similarity_than_last_weeks():
    config = RelatedConfig()
    fresh = freshness(np.array([NOW - 7 * DAY, NOW - 365 * DAY]), NOW, config.half_life_days)
    bonus = config.freshness_weight * (fresh[0] - fresh[1])
    assert 0.05 < bonus < 0.1
    scores = related_scores(np.array([0.60, 0.64]), fresh, config)
    assert scores[0] > scores[1]  # 0.04 more similar is not enough
    scores = related_scores(np.array([0.60, 0.70]), fresh, config)
    assert scores[1] > scores[0]  # 0.10 more similar is


def test_mmr_skips_a_rewrite_of_the_first_pick():
    vectors = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = np.array([0.9, 0.89, 0.7])
    sims = vectors @ vectors.T
    assert mmr(scores, sims, 2, 1.0).tolist() == [0, 1]
    # lambda 0.5: item 1 gains 0.445 - 0.5*0.99 < 0; item 2 gains 0.35 - 0 -> item 2
    assert mmr(scores, sims, 2, 0.5).tolist() == [0, 2]
    assert mmr(scores, sims, 5, 0.5).tolist() == [0, 2, 1]
    assert mmr(scores[:0], sims[:0, :0], 3, 0.5).size == 0


def test_dedupe_keeps_the_first_of_each_story():
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    stories = np.array([0, 0, 7, 7])
    # 0 leads; 1 is a copy of 0 by vector; 2 leads story 7; 3 shares story 7's canonical URL
    sims = vectors @ vectors.T
    assert dedupe_stories(np.array([0, 1, 2, 3]), sims, stories, 0.92).tolist() == [0, 2]
    assert dedupe_stories(np.array([1, 0, 3, 2]), sims, np.zeros(4, dtype=int), 0.92).tolist() == [1, 3, 2]


def test_expand_query_moves_towards_neighbours():
    query = np.array([1.0, 0.0], dtype=np.float32)
    neighbours = np.array([[0.0, 1.0]], dtype=np.float32)
    assert expand_query(query, neighbours, 1.0) == pytest.approx([2**-0.5, 2**-0.5])
    assert expand_query(query, neighbours, 0.0) is query
    assert expand_query(query, neighbours[:0], 1.0) is query


def test_story_key_ignores_scheme_www_query_and_slash():
    assert story_key("https://www.Example.com/a/b/?utm=1") == story_key("http://example.com/a/b")
    assert story_key("https://example.com/a") != story_key("https://example.com/b")
    assert story_key("") == 0


def test_reasons():
    config = RelatedConfig()
    assert related_reason(0.7, 2.2, ["storm"], "", config) == "follow-up from 2 days later"
    assert related_reason(0.7, -0.25, [], "", config) == "earlier coverage, 6 hours before"
    assert related_reason(0.7, 90, ["Storm"], "", config) == "same topic: Storm"
    assert related_reason(0.4, 2, [], "weather", config) == "same topic: weather"
    assert related_reason(0.4, None, [], "", config) == "similar content"  # no raw cosine beside another score


def test_shared_terms_prefer_tags_then_headline_words():
    assert shared_terms("x", ["ECB", "rates"], "y", ["ecb", "bonds"]) == ["ecb"]
    assert shared_terms("Storm floods the coast", [], "Coast clean-up after storm", []) == ["Coast", "storm"]
    assert keywords("The storm and the STORM were about coast") == ["storm", "coast"]


def test_shared_terms_skip_generic_and_archive_common_words():
    # the examples: stray capitalised words are not a topic
    assert shared_terms("People Came Back To Work", [], "People Came Back To Work In Paris", []) == []
    common = {"trump"}.__contains__
    found = shared_terms("Trump visits Ciarán storm site", [], "Trump on storm Ciarán", [], common)
    assert found == ["Ciarán", "storm"]  # the name first, then the shared word
    assert keywords("Vejret: storm over København") == ["Vejret", "storm", "København"]


def test_story_dedupe_matches_the_greedy_definition_on_random_clusters():
    """The one-matrix version keeps exactly what the pairwise greedy definition keeps."""

    def greedy(order, vectors, stories, threshold):
        kept, keys = [], set()
        for pos in order:
            key = int(stories[pos])
            if (key and key in keys) or (kept and float(np.max(vectors[kept] @ vectors[pos])) >= threshold):
                continue
            kept.append(int(pos))
            if key:
                keys.add(key)
        return kept

    rng = np.random.default_rng(7)
    for _ in range(20):
        centres = rng.standard_normal((6, 16))
        vectors = centres[rng.integers(0, 6, 80)] + 0.15 * rng.standard_normal((80, 16))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        stories = rng.integers(0, 12, 80) * (rng.random(80) < 0.3)
        order = rng.permutation(80)
        expected = greedy(order, vectors, stories, 0.9)
        assert dedupe_stories(order, vectors @ vectors.T, stories, 0.9).tolist() == expected
        assert 6 <= len(expected) < 80  # the case is not trivial: stories were actually merged
