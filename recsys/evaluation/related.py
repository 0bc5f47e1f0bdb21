"""Related-list quality against a label (topic, subcategory): does the list stay on the article's topic?"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recsys.ann import exact_search
from recsys.evaluation.metrics import intra_list_similarity, precision_at_k
from recsys.service import Recommender
from recsys.types import RecsysError

LABELS = ("category", "subcategory", "language")


@dataclass(frozen=True)
class RelatedEvaluation:
    """Precision@k of same-label hits for plain dense kNN and for Related as configured."""

    k: int
    queries: int
    knn_precision: float
    related_precision: float
    knn_intra_list_similarity: float
    related_intra_list_similarity: float
    related_mean_length: float
    related_ms_per_query: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def evaluate_related(
    rec: Recommender, label: str = "category", k: int = 10, sample: int | None = None, seed: int = 0
) -> RelatedEvaluation:
    """Score every indexed article (or a seeded sample) by the share of its top-k sharing its label."""
    if label not in LABELS:
        raise RecsysError(f"cannot evaluate by {label!r}; use one of {', '.join(LABELS)}")
    view = rec.view
    rows = view.store.labels(label)
    labels = {int(r): lab for r, _, lab in rows}
    if sample is not None and sample < len(rows):
        picked = np.random.default_rng(seed).choice(len(rows), size=sample, replace=False)
        rows = [rows[i] for i in sorted(picked)]
    live = np.flatnonzero(view.live)
    knn_p, rel_p, knn_ils, rel_ils, lengths = [], [], [], [], []
    elapsed = 0.0
    for row, article_id, own in rows:
        _, found = exact_search(view.vectors, view.vectors[row], k + 1, live)
        neighbours = [int(r) for r in found[0] if r >= 0 and r != row][:k]
        knn_p.append(precision_at_k([labels[r] == own for r in neighbours], k))
        knn_ils.append(intra_list_similarity(np.asarray(view.vectors[neighbours])))
        started = time.perf_counter()
        hits = rec.related(article_id, k)
        elapsed += time.perf_counter() - started
        hit_rows = [view.store.row_of(h.id) for h in hits]
        rel_p.append(precision_at_k([labels[r] == own for r in hit_rows], k))
        rel_ils.append(intra_list_similarity(np.asarray(view.vectors[hit_rows])))
        lengths.append(len(hits))
    return RelatedEvaluation(
        k=k,
        queries=len(rows),
        knn_precision=float(np.mean(knn_p)),
        related_precision=float(np.mean(rel_p)),
        knn_intra_list_similarity=float(np.mean(knn_ils)),
        related_intra_list_similarity=float(np.mean(rel_ils)),
        related_mean_length=float(np.mean(lengths)),
        related_ms_per_query=1000 * elapsed / max(1, len(rows)),
    )
