"""Related on a non-English site: the shared EB-NeRD news (Danish), a seeded 4,000-article sample, label = the
site's category. Prints the table of evaluate_related (random, TF-IDF, dense, dense + BM25 hybrid, recsys) and
what the language step found (detected languages, the build's warning about the model), and how often page()'s
Related floor leaves the box short. Run it on two commits to compare (same sample, same seed).

python benchmarks/related_languages.py      # prints, writes results/related_languages.json
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from _common import save, shared, table

from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.evaluation.related import evaluate_related, store_labels
from recsys.service import Recommender

COLUMNS = ["system", "precision", "ndcg", "duplicate_rate", "diversity", "coverage", "ms_per_query"]
SAMPLE = 4_000


def main(k: int = 10, seed: int = 0) -> None:
    lines = shared("ebnerd-week", "news.tsv").read_text(encoding="utf-8").splitlines()
    rows = random.Random(seed).sample(lines, min(SAMPLE, len(lines)))
    work = Path(tempfile.mkdtemp(prefix="recsys-da-"))
    try:
        news = work / "news.tsv"
        news.write_text("\n".join(rows) + "\n", encoding="utf-8")
        report = Indexer(work / "index", Settings()).build([news])
        rec = Recommender.open(work / "index", Settings())
        languages = Counter(rec.article(a).language or "?" for a in list(store_labels(rec, "category"))[:1000])
        labels = store_labels(rec, "category")
        scores = evaluate_related(rec, labels, k=k)
        print(f"EB-NeRD news sample: {scores.queries} articles, label = category, k = {k}\n")
        print(table([s.to_dict() for s in scores.scores], COLUMNS))
        warnings = getattr(report, "warnings", [])
        print(f"\nlanguages detected (first 1,000 articles): {dict(languages.most_common(5))}")
        for warning in warnings:
            print(warning)
        save(
            "related_languages",
            {
                "k": k,
                "queries": scores.queries,
                "rows": [s.to_dict() for s in scores.scores],
                "languages": dict(languages),
                "warnings": warnings,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
