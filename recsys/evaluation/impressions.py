"""Replay MIND impressions in time order and score each one's candidates with what was known before it.

Per impression (the MIND protocol): AUC, MRR, nDCG@5 and nDCG@10 of the scores over its candidates,
then averaged over impressions. Impressions at the same second are scored before any of them is
learned from, so no scorer ever sees the clicks it is asked to predict.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recsys.config import PopularityConfig
from recsys.evaluation.metrics import auc, mrr, ndcg_at_k
from recsys.events import Impression, impression_events
from recsys.popularity import Popularity

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


class ImpressionScorer(Protocol):
    """Scores candidates from past impressions only; ``learn`` is called after each time step."""

    name: str

    def score(self, impression: Impression) -> np.ndarray: ...

    def learn(self, impressions: Sequence[Impression]) -> None: ...


class RandomScorer:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, impression: Impression) -> np.ndarray:
        return self.rng.random(len(impression.candidates))

    def learn(self, impressions: Sequence[Impression]) -> None:
        return None


class SmoothedCTRScorer:
    """The baseline: all-time clicks / impressions so far, smoothed toward a prior CTR, no decay."""

    name = "smoothed CTR"

    def __init__(self, prior: float = 0.04, strength: float = 10.0) -> None:
        self.prior, self.strength = prior, strength
        self.shown: Counter[str] = Counter()
        self.clicks: Counter[str] = Counter()

    def score(self, impression: Impression) -> np.ndarray:
        return np.array(
            [
                (self.clicks[c] + self.strength * self.prior) / (self.shown[c] + self.strength)
                for c in impression.candidates
            ]
        )

    def learn(self, impressions: Sequence[Impression]) -> None:
        for impression in impressions:
            self.shown.update(impression.candidates)
            self.clicks.update(
                c for c, clicked in zip(impression.candidates, impression.clicked, strict=True) if clicked
            )


class PopularityScorer:
    """recsys's popularity (recsys/popularity.py) as of each impression's time."""

    name = "recsys popularity"

    def __init__(self, config: PopularityConfig) -> None:
        self.popularity = Popularity(config)

    def score(self, impression: Impression) -> np.ndarray:
        return self.popularity.scores(list(impression.candidates), impression.ts)

    def learn(self, impressions: Sequence[Impression]) -> None:
        self.popularity.fold(
            (e.article_id, e.type, e.reaction, e.ts, e.count) for i in impressions for _, e in impression_events(i)
        )


@dataclass(frozen=True)
class ReplayResult:
    """Mean metrics per scorer over the impressions that have both a click and a non-click."""

    impressions: int
    scored: int
    skipped_one_class: int
    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def replay(impressions: Sequence[Impression], scorers: Sequence[ImpressionScorer]) -> ReplayResult:
    """Score every impression with every scorer, in time order (see module docstring)."""
    ordered = sorted(impressions, key=lambda i: (i.ts, i.impression_id))
    sums = {s.name: np.zeros(len(METRICS)) for s in scorers}
    seconds = dict.fromkeys(sums, 0.0)
    scored = skipped = 0
    for _, group in itertools.groupby(ordered, key=lambda i: i.ts):
        batch = list(group)
        for impression in batch:
            if all(impression.clicked) or not any(impression.clicked):
                skipped += 1
                continue
            scored += 1
            labels = [int(c) for c in impression.clicked]
            for scorer in scorers:
                started = time.perf_counter()
                scores = scorer.score(impression)
                seconds[scorer.name] += time.perf_counter() - started
                sums[scorer.name] += (
                    auc(labels, scores),
                    mrr(labels, scores),
                    ndcg_at_k(labels, scores, 5),
                    ndcg_at_k(labels, scores, 10),
                )
        for scorer in scorers:
            started = time.perf_counter()
            scorer.learn(batch)
            seconds[scorer.name] += time.perf_counter() - started
    metrics = {
        name: {m: float(v) / max(1, scored) for m, v in zip(METRICS, total, strict=True)}
        for name, total in sums.items()
    }
    return ReplayResult(len(ordered), scored, skipped, metrics, {k: round(v, 3) for k, v in seconds.items()})
