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
    sums = np.zeros((n, vectors.shape[1]), dtype=np.float64)  # at most one interest per read
    mass = np.zeros(n)
    norms = np.ones(n)  # of each interest's sum, kept as it changes (one norm per read, not one per interest)
    members: list[list[int]] = []
    for i in range(n):
        m = len(members)
        if m:
            sims = (sums[:m] @ vectors[i]) / norms[:m]
            best = int(np.argmax(sims))
            if sims[best] >= config.interest_similarity:
                sums[best] += weights[i] * vectors[i]
                norms[best] = max(float(np.linalg.norm(sums[best])), 1e-30)
                mass[best] += weights[i]
                members[best].append(i)
                continue
        sums[m] = weights[i] * vectors[i]
        norms[m] = max(float(np.linalg.norm(sums[m])), 1e-30)
        mass[m] = weights[i]
        members.append([i])
    m = len(members)
    sums, mass = sums[:m], mass[:m]
    while m > max(1, config.max_interests):
        light = int(np.argmin(mass))
        keep = np.arange(m) != light
        centroids = sums[keep] / np.linalg.norm(sums[keep], axis=1, keepdims=True)
        target = int(np.argmax(centroids @ _unit(sums[light])))
        sums[np.flatnonzero(keep)[target]] += sums[light]
        mass[np.flatnonzero(keep)[target]] += mass[light]
        members[int(np.flatnonzero(keep)[target])].extend(members[light])
        sums, mass = sums[keep], mass[keep]
        members.pop(light)
        m -= 1
    total = float(mass.sum())
    interests = [
        Interest(_unit(sums[j]).astype(np.float32), float(mass[j]) / total, tuple(sorted(members[j]))) for j in range(m)
    ]
    return sorted(interests, key=lambda interest: -interest.share)
