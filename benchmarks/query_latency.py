"""What the site pays: import, open and Related latency on the BBC index, with no torch loaded.

Baseline in the same run: the bare exact nearest-neighbour search that Related starts from, so the
ratio is the cost of filtering, dedup, MMR, freshness, reasons and the SQLite fetch.

    python benchmarks/query_latency.py         # prints the table, writes results/query_latency.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
from _common import REPO, bbc_index, save, table

from recsys import Recommender
from recsys.archive.ann import exact_search

PROBE = """
import json, sys, time
t0 = time.perf_counter()
from recsys import Recommender
t1 = time.perf_counter()
rec = Recommender.open(sys.argv[1])
t2 = time.perf_counter()
rec.related(sys.argv[2], 10)
t3 = time.perf_counter()
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sentence_transformers', 'transformers'))
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_related_s": t3 - t2, "heavy_modules": heavy}))
"""


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main(n: int = 500) -> None:
    root = bbc_index()
    rec = Recommender.open(root)
    ids = [article_id for _, article_id, _ in rec.view.store.labels("category")]
    first = subprocess.run(
        [sys.executable, "-c", PROBE, str(root), ids[0]], capture_output=True, text=True, check=True, cwd=REPO
    )
    cold = json.loads(first.stdout)
    picks = np.random.default_rng(0).choice(len(ids), n, replace=False)
    view = rec.view
    knn, related = [], []
    for i in picks:
        row = view.store.row_of(ids[i])
        started = time.perf_counter()
        exact_search(view.vectors, view.vectors[row], 100)
        knn.append(time.perf_counter() - started)
        started = time.perf_counter()
        rec.related(ids[i], 10)
        related.append(time.perf_counter() - started)
    rows = [
        {"step": "exact kNN top-100 (baseline)", **percentiles(knn), "ratio_p50": 1.0},
        {
            "step": "rec.related(id, 10)",
            **percentiles(related),
            "ratio_p50": float(np.median(related) / np.median(knn)),
        },
    ]
    print(
        f"cold process: import {cold['import_s'] * 1000:.0f} ms, open {cold['open_s'] * 1000:.1f} ms, "
        f"first related {cold['first_related_s'] * 1000:.1f} ms; "
        f"torch-family modules loaded: {cold['heavy_modules']}\n"
    )
    print(table(rows, ["step", "p50_ms", "p99_ms", "ratio_p50"]))
    path = save("query_latency", {"articles": len(ids), "queries": n, "cold": cold, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
