"""Index build throughput on BBC (2,225 real articles), and the cost of re-adding unchanged files.

Baseline in the same run: SentenceTransformer.encode on the very texts recsys embeds, so the ratio
shows what recsys adds on top of the model (reading, hashing, SQLite, vectors, manifest, fsync).

    python benchmarks/build_throughput.py      # prints the table, writes results/build_throughput.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import save, shared, table

from recsys.config import Settings
from recsys.embedder import make_embedder, text_of
from recsys.indexer import Indexer
from recsys.io import read_articles


def main() -> None:
    corpus = shared("bbc", "bbc")
    settings = Settings()
    embedder = make_embedder(settings.embedder)
    texts = [text_of(a, settings.embedder.max_chars) for a in read_articles([corpus]).articles]
    embedder.encode(texts[:64])  # load and warm the model outside both timings

    started = time.perf_counter()
    embedder.model.encode(texts, batch_size=settings.embedder.batch_size, normalize_embeddings=True)
    model_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        indexer = Indexer(Path(tmp) / "index", settings, embedder)
        started = time.perf_counter()
        build = indexer.build([corpus])
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = indexer.add([corpus])
        again_seconds = time.perf_counter() - started

    rows = [
        {
            "run": "model.encode only (baseline)",
            "docs": len(texts),
            "seconds": model_seconds,
            "docs_per_s": len(texts) / model_seconds,
            "ratio": 1.0,
        },
        {
            "run": "recsys index build",
            "docs": build.embedded,
            "seconds": build_seconds,
            "docs_per_s": build.embedded / build_seconds,
            "ratio": build_seconds / model_seconds,
        },
        {
            "run": "recsys index add (same files)",
            "docs": again.embedded,
            "seconds": again_seconds,
            "docs_per_s": None,
            "ratio": again_seconds / model_seconds,
        },
    ]
    print(table(rows, ["run", "docs", "seconds", "docs_per_s", "ratio"]))
    path = save("build_throughput", {"articles": build.articles, "skipped": len(build.problems), "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
