"""Related-list topic precision on real labelled corpora: every baseline and Related as configured, same index,
same run: BBC (2,224 long articles, label = topic folder) and MIND-sample news (2,000 headlines + abstracts,
label = subcategory). Baselines: random, TF-IDF, plain dense kNN, and the dense + lexical hybrid (reciprocal
rank fusion of dense kNN and BM25). Ablations show what each step of Related adds or costs.

python benchmarks/related_quality.py       # prints the tables, writes results/related_quality.json
"""

from __future__ import annotations

from pathlib import Path

from _common import CACHE, save, shared, table

from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.evaluation.related import evaluate_related, recsys_system, store_labels
from recsys.service import Recommender

COLUMNS = ["system", "precision", "ndcg", "duplicate_rate", "diversity", "coverage", "ms_per_query"]


def index_of(name: str, source: Path) -> Path:
    """The corpus indexed with the defaults, kept under .cache (re-running embeds nothing new)."""
    root = CACHE / f"{name}-index"
    Indexer(root, Settings()).build([source])
    return root


def corpus(name: str, source: Path, label: str, k: int) -> dict:
    root = index_of(name, source)
    settings = Settings()
    rec = Recommender.open(root, settings)
    labels = store_labels(rec, label)
    report = evaluate_related(rec, labels, k=k)
    rows = [s.to_dict() for s in report.scores]
    variants = {
        "recsys without lexical": settings.replace("related", lexical_weight=0.0),
        "recsys without neighbourhood feedback": settings.replace("related", neighbourhood=0),
        "recsys without MMR": settings.replace("related", mmr_lambda=1.0),
        "recsys without dedup": settings.replace("related", duplicate_similarity=1.01),
    }
    for system, variant in variants.items():
        other = Recommender.open(root, variant)
        score = evaluate_related(other, labels, k=k, systems={system: recsys_system(other, k)}).scores[0]
        rows.append(score.to_dict())
    print(f"{name}, {report.queries} articles, label = {label}, k = {k}\n")
    print(table(rows, COLUMNS))
    print()
    return {"queries": report.queries, "label": label, "rows": rows}


def main(k: int = 10) -> None:
    results = {
        "bbc": corpus("bbc", shared("bbc", "bbc"), "category", k),
        "mind-sample": corpus("mind-sample", shared("mind-sample", "news.tsv"), "subcategory", k),
    }
    path = save("related_quality", {"k": k, "corpora": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
