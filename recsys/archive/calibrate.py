"""What "similar" means on this site: a cosine calibrated from the archive itself, at build and optimize.

A cosine of 0.45 means "same subject" with one model on one site and nothing at all with another (an English
model gives unrelated Danish headlines 0.66-0.73). So each build samples articles, takes their nearest
neighbours and asks the archive's own sections where similarity stops meaning anything:

- with sections: a logistic fit of "the pair shares a section" on the pair's cosine; the floor is the cosine at
  which a pair is as likely to share a section as not (below it nearest pairs rarely do);
- without (or when the fit says nothing): the ``PERCENTILE``-th percentile of each article's best neighbour.

The floor is what ``page()`` keeps Related above (``[related] floor = "auto"``; a box stays short rather than
filled with whatever happens to be nearest) and what a "because you read X" reason needs. ``calibration.json``
at the index root (beside the versions; copied by ``recsys index pull``) is owned here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive.layout import CALIBRATION_FILE, load_trained, write_json_atomic

SAMPLE = 1_000  # articles whose neighbours are looked at
NEIGHBOURS = 10
PERCENTILE = 5.0
MIN_PAIRS = 200  # fewer labelled pairs than this: no section fit
COPY_COSINE = 0.92  # closer pairs are copies of one story, not evidence about topics


@dataclass(frozen=True)
class Calibration:
    """The site's similarity floor and how it was found."""

    floor: float
    method: str  # "sections" or "percentile"
    pairs: int  # neighbour pairs looked at
    same_section_share: float  # of those pairs (0 without sections)
    version: str  # the version it was measured on

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        floor = float(data["floor"])
        if not np.isfinite(floor):
            raise ValueError("floor is not finite")
        return cls(
            floor, str(data["method"]), int(data["pairs"]), float(data["same_section_share"]), str(data["version"])
        )

    @classmethod
    def load(cls, root: str | Path) -> Calibration | None:
        return load_trained(root, CALIBRATION_FILE, cls.from_json, "re-run `recsys index optimize`")


def _logistic_midpoint(x: np.ndarray, y: np.ndarray) -> float | None:
    """The x at which a 1-D logistic fit of y on x crosses 0.5 (Newton's method), or None when y does not rise
    with x (no evidence) or the crossing lies outside the observed cosines."""
    a, b = 0.0, 0.0
    design = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a + b * x)))
        w = p * (1 - p) + 1e-9
        gradient = design.T @ (y - p)
        hessian = (design * w[:, None]).T @ design + np.eye(2) * 1e-6
        step = np.linalg.solve(hessian, gradient)
        a, b = a + step[0], b + step[1]
        if np.abs(step).max() < 1e-8:
            break
    if not np.isfinite(a) or not np.isfinite(b) or b <= 0:
        return None
    mid = -a / b
    return float(mid) if x.min() <= mid <= x.max() else None


def calibrate(
    vectors: np.ndarray, categories: np.ndarray, live: np.ndarray, search: Any, version: str, seed: int = 0
) -> Calibration | None:
    """The floor for an archive: ``vectors``, ``categories`` (codes, -1 none) and ``live`` (a mask) per row, and
    ``search(queries, k) -> (scores, rows)`` its nearest-neighbour search over the live rows."""
    candidates = np.flatnonzero(live)
    if candidates.size < 2:
        return None
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(candidates, size=min(SAMPLE, candidates.size), replace=False))
    scores, rows = search(np.asarray(vectors[sample], dtype=np.float32), NEIGHBOURS + 1)
    cosines, same, best = [], [], []
    for query, q_scores, q_rows in zip(sample.tolist(), scores, rows, strict=True):
        keep = (q_rows >= 0) & (q_rows != query) & (q_scores < COPY_COSINE)
        q_rows, q_scores = q_rows[keep][:NEIGHBOURS], q_scores[keep][:NEIGHBOURS]
        if not q_rows.size:
            continue
        best.append(float(q_scores[0]))
        if categories[query] >= 0:
            labelled = categories[q_rows] >= 0
            cosines += q_scores[labelled].tolist()
            same += (categories[q_rows[labelled]] == categories[query]).tolist()
    if not best:
        return None
    x, y = np.asarray(cosines, dtype=np.float64), np.asarray(same, dtype=np.float64)
    share = float(y.mean()) if y.size else 0.0
    if y.size >= MIN_PAIRS and 0 < share < 1:
        mid = _logistic_midpoint(x, y)
        if mid is not None:
            return Calibration(round(mid, 4), "sections", int(y.size), round(share, 4), version)
    floor = float(np.percentile(np.asarray(best), PERCENTILE))
    return Calibration(round(floor, 4), "percentile", len(best), round(share, 4), version)


def calibrate_version(view: Any) -> Calibration | None:
    """``calibrate`` over a published version (a ``VersionReader``)."""
    rows = view.rows
    return calibrate(
        view.vectors, np.asarray(rows["category"]), np.asarray(rows["live"]), view.ann.search, view.version
    )


def store_calibration(root: str | Path, calibration: Calibration) -> None:
    """Write ``calibration.json`` atomically."""
    write_json_atomic(Path(root) / CALIBRATION_FILE, calibration.to_json(), indent=1)
