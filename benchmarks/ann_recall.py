"""Recall@10 of the FAISS IVF backend against exact search, on real MiniLM embeddings.

Vectors: every BBC article, every BBC paragraph of 40+ characters, and every MIND-sample title+abstract
(about 20k real news embeddings). Queries: 1,000 of them, seeded. For each IVF setting: recall@10
against exact search, and query throughput as a ratio to exact search in the same run.

    python benchmarks/ann_recall.py            # prints the table, writes results/ann_recall.json
"""

from __future__ import annotations

import time

import numpy as np
from _common import embed_cached, save, shared, table

from recsys.archive.ann import ExactIndex, FaissIVFIndex
from recsys.ingest.articles import read_articles


def corpus_texts() -> list[str]:
    bbc = read_articles([shared("bbc", "bbc")]).articles
    texts = [f"{a.title}\n{a.body}"[:2000] for a in bbc]
    texts += [p.strip() for a in bbc for p in a.body.split("\n") if len(p.strip()) >= 40]
    mind = read_articles([shared("mind-sample", "news.tsv")]).articles
    texts += [f"{a.title}\n{a.abstract}" for a in mind]
    return texts


def qps(index, queries: np.ndarray, k: int) -> float:
    started = time.perf_counter()
    for q in queries:
        index.search(q, k)
    return len(queries) / (time.perf_counter() - started)


def main(k: int = 10, n_queries: int = 1000) -> None:
    vectors = embed_cached(corpus_texts())
    ids = np.arange(len(vectors), dtype=np.int64)
    queries = vectors[np.random.default_rng(0).choice(len(vectors), n_queries, replace=False)]
    exact = ExactIndex(vectors.shape[1])
    exact.add(vectors, ids)
    _, truth = exact.search(queries, k)
    exact_qps = qps(exact, queries, k)
    rows = [{"index": "exact", "lists": "", "nprobe": "", "recall@10": 1.0, "qps_vs_exact": 1.0}]
    for per_sqrt in (1.0, 2.0, 4.0):  # 4 * sqrt(n) is capped at n / 39 lists (FAISS's training minimum) here
        ivf = FaissIVFIndex(vectors.shape[1], lists_per_sqrt_n=per_sqrt)
        ivf.add(vectors, ids)
        for nprobe in (1, 2, 4, 8, 16, 32, 64):
            ivf.nprobe = nprobe
            _, found = ivf.search(queries, k)
            recall = float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))
            rows.append(
                {
                    "index": "faiss-ivf",
                    "lists": ivf.nlist,
                    "lists_per_sqrt_n": per_sqrt,
                    "nprobe": nprobe,
                    "recall@10": recall,
                    "qps_vs_exact": qps(ivf, queries, k) / exact_qps,
                }
            )
    print(f"{len(vectors):,} real MiniLM vectors, {n_queries} queries, exact: {exact_qps:,.0f} queries/s\n")
    print(table(rows, ["index", "lists", "nprobe", "recall@10", "qps_vs_exact"]))
    path = save("ann_recall", {"vectors": len(vectors), "queries": n_queries, "exact_qps": exact_qps, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
