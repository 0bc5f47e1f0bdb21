"""A reader's interests from what they read: several unit vectors, not one average.

Averaging the vectors of a football reader who also follows elections gives a point between the two
that is near neither; the Recommendation list then drifts to whatever sits in the middle. Instead
reads are grouped greedily: newest first, a read joins the interest whose centroid is at least
``interest_similarity`` close, else starts a new one. Each read weighs ``0.5 ** (reads_since /
history_half_life_reads)``, so recent reads pull harder; past ``max_interests`` the lightest
interest is merged into its nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.config import RecommendConfig


@dataclass(frozen=True)
class Interest:
    """One cluster of reads: its centroid, its share of the reader's weight, and which reads (positions)."""

    vector: np.ndarray
    share: float
    members: tuple[int, ...]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def build_interests(vectors: np.ndarray, config: RecommendConfig) -> list[Interest]:
    """Interests of a history given as unit vectors, newest first; heaviest interest first."""
    n = vectors.shape[0]
    if n == 0:
        return []
    weights = np.exp2(-np.arange(n) / max(config.history_half_life_reads, 1e-9))
    sums: list[np.ndarray] = []
    mass: list[float] = []
    members: list[list[int]] = []
    for i in range(n):
        if sums:
            sims = np.array([float(_unit(s) @ vectors[i]) for s in sums])
            best = int(np.argmax(sims))
            if sims[best] >= config.interest_similarity:
                sums[best] = sums[best] + weights[i] * vectors[i]
                mass[best] += float(weights[i])
                members[best].append(i)
                continue
        sums.append(weights[i] * vectors[i].astype(np.float64))
        mass.append(float(weights[i]))
        members.append([i])
    while len(sums) > max(1, config.max_interests):
        light = int(np.argmin(mass))
        vector, weight, group = sums.pop(light), mass.pop(light), members.pop(light)
        target = int(np.argmax([float(_unit(s) @ _unit(vector)) for s in sums]))
        sums[target] = sums[target] + vector
        mass[target] += weight
        members[target].extend(group)
    total = sum(mass)
    interests = [
        Interest(_unit(s).astype(np.float32), m / total, tuple(sorted(g)))
        for s, m, g in zip(sums, mass, members, strict=True)
    ]
    return sorted(interests, key=lambda interest: -interest.share)
