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
