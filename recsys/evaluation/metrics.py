"""Ranking-list metrics as plain functions over ids and labels; each is tested on hand-computed cases.

Conventions: a list is best first; ``relevant`` says which of its entries count as hits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Share of the first k entries that are relevant; a list shorter than k counts its gaps as misses."""
    if k <= 0:
        raise ValueError("k must be positive")
    return float(sum(bool(r) for r in list(relevant)[:k])) / k


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant ids found in the first k (0 when nothing is relevant)."""
    if not relevant:
        return 0.0
    return len(set(list(ranked)[:k]) & relevant) / len(relevant)


def intra_list_similarity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine of a list's unit vectors (lower = more diverse); 0 for lists under two."""
    n = vectors.shape[0]
    if n < 2:
        return 0.0
    sims = vectors @ vectors.T
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Probability that a random clicked item outscores a random unclicked one (ties count half).

    None when the impression has only one class (the MIND protocol skips those).
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # average ranks over ties
    start = 0
    for end in range(1, len(s) + 1):
        if end == len(s) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _order(scores: Sequence[float]) -> np.ndarray:
    """Positions best first; ties keep input order (MIND's evaluation uses a stable sort too)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def mrr(labels: Sequence[int], scores: Sequence[float]) -> float:
    """MIND's MRR: the mean over clicked items of 1 / rank."""
    y = np.asarray(labels, dtype=np.float64)[_order(scores)]
    if y.sum() == 0:
        return 0.0
    return float((y / np.arange(1, len(y) + 1)).sum() / y.sum())


def dcg_at_k(labels: Sequence[int], scores: Sequence[float], k: int) -> float:
    y = np.asarray(labels, dtype=np.float64)[_order(scores)][:k]
    return float(((2**y - 1) / np.log2(np.arange(2, len(y) + 2))).sum())


def ndcg_at_k(labels: Sequence[int], scores: Sequence[float], k: int) -> float:
    """Normalised DCG of the first k, with binary gains (MIND's definition)."""
    ideal = dcg_at_k(labels, labels, k)
    return 0.0 if ideal == 0 else dcg_at_k(labels, scores, k) / ideal


def ndcg_binary_at_k(relevant: Sequence[bool], k: int, n_relevant: int) -> float:
    """nDCG@k with 0/1 gains, where ``n_relevant`` relevant items exist in all (the ideal list's size)."""
    gains = np.asarray(list(relevant)[:k], dtype=np.float64)
    dcg = float((gains / np.log2(np.arange(2, gains.size + 2))).sum())
    ideal_n = min(k, n_relevant)
    ideal = float((1.0 / np.log2(np.arange(2, ideal_n + 2))).sum())
    return 0.0 if ideal == 0 else dcg / ideal


def duplicate_rate(vectors: np.ndarray, stories: Sequence[int], threshold: float) -> float:
    """Share of pairs in one list that are the same story (cosine >= threshold or one nonzero story key)."""
    n = vectors.shape[0]
    if n < 2:
        return 0.0
    sims = vectors @ vectors.T
    keys = np.asarray(stories)
    same = (sims >= threshold) | ((keys[:, None] == keys[None, :]) & (keys[:, None] != 0))
    upper = np.triu_indices(n, 1)
    return float(same[upper].mean())


def catalogue_coverage(lists: Sequence[Sequence[str]], catalogue_size: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    if catalogue_size <= 0:
        return 0.0
    return len({item for found in lists for item in found}) / catalogue_size


def mean_auc_by_group(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Per-list AUC averaged over the lists that have a click and a non-click (the MIND protocol), and
    how many lists that was. Rows of one list share a group number and are contiguous."""
    if groups.size == 0:
        return float("nan"), 0
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], groups.size]
    values = [
        value
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
        if (value := auc(labels[start:end].tolist(), scores[start:end].tolist())) is not None
    ]
    return (float(np.mean(values)) if values else float("nan")), len(values)
