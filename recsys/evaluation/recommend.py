"""Hold out each reader's last read(s): does Recommendation find them, and how varied is the list?

Reading sequences come from MIND behaviors (history, then clicks in time order) or from an index's
own stored events. Only indexed articles count. Systems in the same run: random, a single averaged
profile (plain kNN around the mean of the reads: what multi-interest profiles improve on), and
``Recommender.recommend`` as configured.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.archive.ann import exact_search
from recsys.evaluation.metrics import catalogue_coverage, intra_list_similarity, ndcg_binary_at_k, recall_at_k
from recsys.service import Recommender
from recsys.signals.records import Impression

RecommendFn = Callable[[list[str], float], list[str]]  # (history oldest first, time) -> ids


@dataclass(frozen=True)
class Reader:
    user_id: str
    history: tuple[str, ...]  # oldest first
    held_out: tuple[str, ...]
    ts: float  # when the first held-out read happened (the query time)


def reading_sequences(impressions: Sequence[Impression]) -> dict[str, list[tuple[str, float]]]:
    """user -> [(article, time)] oldest first: their MIND history, then what they clicked, in time order."""
    reads: dict[str, dict[str, float]] = defaultdict(dict)
    for impression in sorted(impressions, key=lambda i: i.ts):
        seen = reads[impression.user_id]
        n = len(impression.history)
        for i, article in enumerate(impression.history):
            seen.setdefault(article, impression.ts - (n - i))
        for article, clicked in zip(impression.candidates, impression.clicked, strict=True):
            if clicked:
                seen.setdefault(article, impression.ts)
    return {user: sorted(items.items(), key=lambda item: item[1]) for user, items in reads.items()}


def make_readers(
    sequences: Mapping[str, list[tuple[str, float]]],
    indexed: Mapping[str, int] | set[str],
    holdout: int = 1,
    min_history: int = 2,
    limit: int | None = None,
    seed: int = 0,
) -> list[Reader]:
    """Readers with at least ``min_history`` indexed reads before their last ``holdout`` indexed ones."""
    readers = []
    for user, items in sorted(sequences.items()):
        known = [(a, t) for a, t in items if a in indexed]
        if len(known) < min_history + holdout:
            continue
        history, held = known[:-holdout], known[-holdout:]
        readers.append(Reader(user, tuple(a for a, _ in history), tuple(a for a, _ in held), held[0][1]))
    if limit is not None and limit < len(readers):
        picks = np.random.default_rng(seed).choice(len(readers), limit, replace=False)
        readers = [readers[i] for i in sorted(picks)]
    return readers


def random_recommender(rec: Recommender, k: int, seed: int = 0) -> RecommendFn:
    rng = np.random.default_rng(seed)
    ids = [a for _, a, _ in rec.view.store.labels("category")]

    def answer(history: list[str], _: float) -> list[str]:
        picks = rng.choice(len(ids), min(len(ids), k + len(history)), replace=False)
        read = set(history)
        return [ids[i] for i in picks if ids[i] not in read][:k]

    return answer


def mean_profile_recommender(rec: Recommender, k: int) -> RecommendFn:
    view = rec.view
    live = np.flatnonzero(view.live)

    def answer(history: list[str], _: float) -> list[str]:
        rows = view.store.rows_of(history)
        if not rows:
            return []
        profile = np.asarray(view.vectors[list(rows.values())], dtype=np.float32).mean(axis=0)
        _, found = exact_search(view.vectors, profile, k + len(rows), live)
        banned = set(rows.values())
        picked = [int(r) for r in found[0] if r >= 0 and int(r) not in banned][:k]
        names = view.store.ids_of(picked)
        return [names[r] for r in picked]

    return answer


def recsys_recommender(rec: Recommender, k: int) -> RecommendFn:
    def answer(history: list[str], ts: float) -> list[str]:
        return [h.id for h in rec.recommend(history, k=k, now=ts)]

    return answer


def evaluate_recommend(
    rec: Recommender, readers: Sequence[Reader], k: int, systems: Mapping[str, RecommendFn]
) -> list[dict[str, float | str]]:
    """recall@k, nDCG@k of the held-out reads, diversity and coverage, per system."""
    view = rec.view
    results = []
    for name, answer in systems.items():
        recalls, ndcgs, diversity, lists = [], [], [], []
        elapsed = 0.0
        for reader in readers:
            started = time.perf_counter()
            found = answer(list(reader.history), reader.ts)
            elapsed += time.perf_counter() - started
            held = set(reader.held_out)
            recalls.append(recall_at_k(found, held, k))
            ndcgs.append(ndcg_binary_at_k([f in held for f in found], k, len(held)))
            rows = list(view.store.rows_of(found).values())
            vectors = np.asarray(view.vectors[rows], dtype=np.float32) if rows else np.zeros((0, 1), np.float32)
            diversity.append(1.0 - intra_list_similarity(vectors))
            lists.append(found)
        results.append(
            {
                "system": name,
                f"recall@{k}": float(np.mean(recalls)) if recalls else 0.0,
                f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else 0.0,
                "diversity": float(np.mean(diversity)) if diversity else 0.0,
                "coverage": catalogue_coverage(lists, view.n_live),
                "ms_per_query": 1000 * elapsed / max(1, len(readers)),
            }
        )
    return results
