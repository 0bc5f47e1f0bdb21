"""Replay MIND impressions in time order and score each one's candidates with what was known before it.

Per impression (the MIND protocol): AUC, MRR, nDCG@5 and nDCG@10 of the scores over its candidates,
then averaged over impressions. Impressions at the same second are scored before any of them is
learned from, so no scorer ever sees the clicks it is asked to predict.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recsys.config import PopularityConfig, RecommendConfig, Settings
from recsys.evaluation.metrics import auc, mrr, ndcg_at_k
from recsys.learning.features import candidate_features
from recsys.learning.pools import ArticleLookup, ContentMatch
from recsys.learning.ranker import LearnedRanker
from recsys.learning.training import learn, reader_at
from recsys.service import Recommender
from recsys.signals.logstate import LogState
from recsys.signals.popularity import Popularity, squash
from recsys.signals.profile import Interest, build_interests
from recsys.signals.records import Impression, impression_events

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
    """recsys's popularity (recsys/signals/popularity.py) as of each impression's time."""

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
    # scorer -> (scores of clicked candidates, scores of the others), a seeded sample for plots
    distributions: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "distributions"}


def replay(impressions: Sequence[Impression], scorers: Sequence[ImpressionScorer]) -> ReplayResult:
    """Score every impression with every scorer, in time order (see module docstring)."""
    ordered = sorted(impressions, key=lambda i: (i.ts, i.impression_id))
    sums = {s.name: np.zeros(len(METRICS)) for s in scorers}
    samples: dict[str, tuple[list[float], list[float]]] = {s.name: ([], []) for s in scorers}
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
                if scored % 10 == 1:  # every tenth impression feeds the score distributions
                    clicked, other = samples[scorer.name]
                    clicked += [float(v) for v, c in zip(scores, impression.clicked, strict=True) if c]
                    other += [float(v) for v, c in zip(scores, impression.clicked, strict=True) if not c]
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
    return ReplayResult(len(ordered), scored, skipped, metrics, {k: round(v, 3) for k, v in seconds.items()}, samples)


def with_text_only(impressions: Sequence[Impression], indexed: Mapping[str, int] | set[str]) -> list[Impression]:
    """The impressions cut down to candidates that have article text (for judging content on its own)."""
    cut = []
    for impression in impressions:
        keep = [i for i, c in enumerate(impression.candidates) if c in indexed]
        if keep:
            cut.append(
                Impression(
                    impression.impression_id,
                    impression.user_id,
                    impression.ts,
                    impression.history,
                    tuple(impression.candidates[i] for i in keep),
                    tuple(impression.clicked[i] for i in keep),
                )
            )
    return cut


class ContentScorer:
    """Content match: each candidate's best cosine to the reader's interests (recsys/signals/profile.py).

    Candidates and history items without article text are scored by what is known: a candidate with no
    vector gets the mean score of the impression's known candidates, so it is neither favoured nor
    buried; a reader with no known history gets the same score for every candidate.
    """

    name = "content match"

    def __init__(self, rec: Recommender, config: RecommendConfig) -> None:
        self.rec = rec
        self.config = config
        self.rows: dict[str, int] = {}
        self._profiles: dict[tuple[str, ...], list[Interest]] = {}

    def prepare(self, impressions: Sequence[Impression]) -> None:
        ids = {c for i in impressions for c in (*i.candidates, *i.history)}
        self.rows = self.rec.view.store.rows_of(ids)

    def _interests(self, history: tuple[str, ...]) -> list[Interest]:
        found = self._profiles.get(history)
        if found is None:
            known = [self.rows[h] for h in reversed(history) if h in self.rows][: self.config.history_limit]
            vectors = np.asarray(self.rec.view.vectors[known], dtype=np.float32) if known else np.zeros((0, 1))
            found = self._profiles[history] = build_interests(vectors, self.config) if known else []
        return found

    def score(self, impression: Impression) -> np.ndarray:
        interests = self._interests(impression.history)
        known = [i for i, c in enumerate(impression.candidates) if c in self.rows]
        scores = np.zeros(len(impression.candidates))
        if interests and known:
            centroids = np.stack([interest.vector for interest in interests])
            vectors = np.asarray(self.rec.view.vectors[[self.rows[impression.candidates[i]] for i in known]])
            scores[known] = (vectors @ centroids.T).max(axis=1)
            unknown = np.setdiff1d(np.arange(len(scores)), known)
            scores[unknown] = scores[known].mean()
        return scores

    def learn(self, impressions: Sequence[Impression]) -> None:
        return None


class BlendScorer:
    """The hand-set Recommendation formula on impressions: content match + popularity_weight * squash(popularity)."""

    name = "hand-set blend"

    def __init__(self, content: ContentScorer, settings: Settings) -> None:
        self.content = content
        self.popularity = PopularityScorer(settings.popularity)
        self.weight = settings.recommend.popularity_weight
        self.scale = settings.popularity.squash_scale

    def score(self, impression: Impression) -> np.ndarray:
        content = self.content.score(impression) if self.content.rows else np.zeros(len(impression.candidates))
        return content + self.weight * squash(self.popularity.score(impression), self.scale)

    def learn(self, impressions: Sequence[Impression]) -> None:
        self.popularity.learn(impressions)


class LearnedScorer:
    """What Recommendation serves when the index holds a ranker: the stored model over ``candidate_features``,
    with the features of each impression computed from the replayed log up to it, exactly as ``recsys train``
    computed them when fitting."""

    name = "recsys"

    def __init__(self, ranker: LearnedRanker, lookup: ArticleLookup, settings: Settings, timed: bool) -> None:
        self.ranker = ranker
        self.lookup = lookup
        self.state = LogState(settings.popularity)
        self.content = ContentMatch(lookup, settings.recommend)
        self.timed = timed

    def score(self, impression: Impression) -> np.ndarray:
        reader = reader_at(self.state, impression, self.lookup)
        candidates = impression.candidates
        published = np.array([self.lookup.published.get(c, np.nan) for c in candidates], dtype=np.float64)
        features = candidate_features(
            candidates,
            self.state,
            impression.ts,
            reader,
            self.content(reader.history, candidates),
            [self.lookup.category(c) for c in candidates],
            published,
            timed=self.timed,
        )
        return self.ranker.score(features)

    def learn(self, impressions: Sequence[Impression]) -> None:
        learn(self.state, impressions)


def text_coverage(impressions: Sequence[Impression], indexed: Mapping[str, int] | set[str]) -> dict[str, int]:
    """How much of the replay has article text: candidates and history entries, with and without."""
    counts: Counter[str] = Counter()
    for impression in impressions:
        with_text = sum(c in indexed for c in impression.candidates)
        history = sum(h in indexed for h in impression.history)
        counts["candidates"] += len(impression.candidates)
        counts["candidates with text"] += with_text
        counts["history entries"] += len(impression.history)
        counts["history entries with text"] += history
        counts["impressions with no known history"] += history == 0
        counts["impressions with no candidate text"] += with_text == 0
    return dict(counts)
