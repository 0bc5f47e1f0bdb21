"""Related-list topic precision on BBC: plain dense kNN vs Related as configured, same index, same run.

python benchmarks/related_quality.py       # prints the table, writes results/related_quality.json
"""

from __future__ import annotations

from _common import bbc_index, save, table

from recsys.config import Settings
from recsys.evaluation.related import evaluate_related, recsys_system, store_labels
from recsys.service import Recommender


def main(k: int = 10) -> None:
    root = bbc_index()
    settings = Settings()
    rec = Recommender.open(root, settings)
    labels = store_labels(rec, "category")
    report = evaluate_related(rec, labels, k=k)
    rows = [s.to_dict() for s in report.scores]
    variants = {
        "recsys without neighbourhood feedback": settings.replace("related", neighbourhood=0),
        "recsys without MMR": settings.replace("related", mmr_lambda=1.0),
        "recsys without dedup": settings.replace("related", duplicate_similarity=1.01),
    }
    for name, variant in variants.items():
        other = Recommender.open(root, variant)
        score = evaluate_related(other, labels, k=k, systems={name: recsys_system(other, k)}).scores[0]
        rows.append(score.to_dict())
    print(f"BBC, {report.queries} articles, label = topic folder, k = {k}\n")
    print(table(rows, ["system", "precision", "ndcg", "duplicate_rate", "diversity", "coverage", "ms_per_query"]))
    path = save("related_quality", {"queries": report.queries, "k": k, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
