"""Popularity values worked out by hand, decay, shrinkage and as-of-time replay."""

import math

import numpy as np
import pytest

from recsys.config import PopularityConfig
from recsys.signals.popularity import Popularity, squash

T0 = 1_800_000_000.0
HOUR = 3600.0


def pop(**overrides):
    return Popularity(PopularityConfig(**overrides))


def test_views_and_reactions_by_hand():
    p = pop()  # half-life 24 h, veryGood weighs 2
    p.fold([("a", "view", "", T0, 2), ("a", "view", "", T0 - 24 * HOUR, 1)])
    assert p.scores(["a"], T0)[0] == pytest.approx(math.log(1 + 2.5))
    p.fold([("a", "reaction", "veryGood", T0, 1)])
    assert p.scores(["a"], T0)[0] == pytest.approx(math.log(1 + 4.5))
    p.fold([("a", "reaction", "angry", T0, 2)])  # -0.5 each
    assert p.scores(["a"], T0)[0] == pytest.approx(math.log(1 + 3.5))
    assert p.scores(["unknown"], T0)[0] == 0.0


def test_ctr_term_by_hand():
    p = pop()  # prior 4% with the weight of 10 impressions, ctr_weight 2
    p.fold([("a", "impression", "", T0, 10), ("a", "click", "", T0, 2), ("a", "view", "", T0, 3)])
    ctr = (2 + 10 * 0.04) / (10 + 10)
    assert p.scores(["a"], T0)[0] == pytest.approx(math.log(1 + 3) + 2 * math.log(ctr / 0.04))
    explained = p.explain("a", T0)
    assert (explained.reads, explained.impressions, explained.clicks) == (3, 10, 2)  # clicks are not reads
    assert explained.ctr == pytest.approx(ctr)


def test_decay_halves_every_half_life():
    p = pop(half_life_hours=6, ctr_weight=0)
    p.fold([("a", "view", "", T0, 8)])
    reads = [p.decayed(T0 + h * HOUR)[0, 0] for h in (0, 6, 12)]
    assert reads == pytest.approx([8, 4, 2])
    assert p.scores(["a"], T0 + 12 * HOUR)[0] == pytest.approx(math.log(3))


def test_shrinkage_three_of_three_does_not_beat_six_hundred_of_a_thousand():
    p = pop()
    p.fold([("small", "impression", "", T0, 3), ("small", "click", "", T0, 3)])
    p.fold([("big", "impression", "", T0, 1000), ("big", "click", "", T0, 600)])
    p.fold([("small-r", "view", "", T0, 3), ("small-r", "reaction", "good", T0, 3)])
    p.fold([("big-r", "view", "", T0, 1000), ("big-r", "reaction", "good", T0, 600)])
    small, big, small_r, big_r = p.scores(["small", "big", "small-r", "big-r"], T0)
    assert big > small and big_r > small_r
    # and clicks on few impressions are pulled toward the prior
    assert p.explain("small", T0).ctr == pytest.approx((3 + 0.4) / 13)


def test_many_impressions_without_clicks_rank_below_unseen():
    p = pop()
    p.fold([("ignored", "impression", "", T0, 500)])
    assert p.scores(["ignored", "new"], T0).tolist()[0] < 0 == p.scores(["new"], T0)[0]


def test_order_of_folding_does_not_matter_and_anchor_moves_safely():
    events = [("a", "view", "", T0 + i * 1000 * HOUR, 1) for i in range(30)]  # spans > 400 half-lives
    forward, backward = pop(), pop()
    forward.fold(events)
    for event in reversed(events):
        backward.fold([event])
    at = T0 + 29 * 1000 * HOUR
    assert forward.scores(["a"], at) == pytest.approx(backward.scores(["a"], at))
    assert np.isfinite(forward.decayed(at)).all()
    assert forward.decayed(at)[0, 0] == pytest.approx(1.0)


def test_squash():
    assert squash(np.array([-10.0, 0.0, 10.0, 30.0]), 10.0).tolist() == [-0.5, 0.0, 0.5, 0.75]
