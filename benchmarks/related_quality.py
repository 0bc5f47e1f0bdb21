"""Related-list topic precision on BBC: plain dense kNN vs Related as configured, same index, same run.

python benchmarks/related_quality.py       # prints the table, writes results/related_quality.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import save, shared, table

from recsys.config import Settings
from recsys.evaluation.related import evaluate_related
from recsys.indexer import Indexer
from recsys.service import Recommender


def main(k: int = 10) -> None:
    corpus = shared("bbc", "bbc")
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        Indexer(root, settings).build([corpus])
        rows = []
        variants = {
            "recsys Related (defaults)": settings,
            "  without neighbourhood feedback": settings.replace("related", neighbourhood=0),
            "  without MMR": settings.replace("related", mmr_lambda=1.0),
        }
        for name, variant in variants.items():
            started = time.perf_counter()
            result = evaluate_related(Recommender.open(root, variant), label="category", k=k)
            if not rows:
                rows.append(
                    {
                        "list": "plain MiniLM kNN (baseline)",
                        "precision@10": result.knn_precision,
                        "intra_list_sim": result.knn_intra_list_similarity,
                    }
                )
            rows.append(
                {
                    "list": name,
                    "precision@10": result.related_precision,
                    "intra_list_sim": result.related_intra_list_similarity,
                    "ms_per_query": result.related_ms_per_query,
                    "seconds": time.perf_counter() - started,
                }
            )
    print(f"BBC, {result.queries} articles, label = topic folder, k = {k}\n")
    print(table(rows, ["list", "precision@10", "intra_list_sim", "ms_per_query"]))
    path = save("related_quality", {"queries": result.queries, "k": k, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
