"""Index build throughput against bare SentenceTransformer.encode, and what the faster path costs in quality.

Two real corpora: BBC (2,225 long articles, every text past the model's 256 word pieces) and MIND-sample news
(2,000 headlines + abstracts, AG-News-like short texts). For each, in one run and in this order:

1. bare fp32 ``SentenceTransformer.encode`` on the very texts recsys embeds (the baseline, batch 32),
2. ``recsys index build`` with the defaults (``[embedder] precision = "auto"``: bf16 where the CPU computes it
   natively; texts embedded longest first over the whole job),
3. ``recsys index build`` forced to fp32, then bare encode again (the baseline is the mean of both runs, so
   drift on a noisy machine is shared),
4. ``recsys index add`` of the same files (nothing to embed).

Quality: cosine of every default-build vector to its fp32-build vector, and Related precision@10 / nDCG@10 of
both builds (label: BBC topic folder, MIND subcategory).

    python benchmarks/build_throughput.py      # prints the tables, writes results/build_throughput.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _common import save, shared, table

from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.embedder import _load_sentence_transformer, make_embedder, text_of
from recsys.evaluation.related import evaluate_related, store_labels
from recsys.ingest.articles import read_articles
from recsys.service import Recommender

CORPORA = [
    ("BBC (long articles)", ("bbc", "bbc"), "category"),
    ("MIND-sample (short)", ("mind-sample", "news.tsv"), "subcategory"),
]


def vectors_by_id(root: Path) -> dict[str, np.ndarray]:
    with Recommender.open(root) as rec:
        view = rec.view
        rows = view.store.rows_of([i for _, i, _ in view.store.labels("category")])
        return {article: np.asarray(view.vectors[row]) for article, row in rows.items()}


def related_precision(root: Path, label: str) -> tuple[float, float]:
    with Recommender.open(root) as rec:
        report = evaluate_related(rec, store_labels(rec, label), k=10)
        ours = report.score("recsys")
        return ours.precision, ours.ndcg


def run_corpus(name: str, source: Path, label: str, tmp: Path) -> tuple[list[dict], dict]:
    settings = Settings()
    fp32 = settings.replace("embedder", precision="fp32")
    texts = [text_of(a, settings.embedder.max_chars) for a in read_articles([source]).articles]
    bare = _load_sentence_transformer(str(make_embedder(fp32.embedder).path.resolve()), "cpu", "fp32")
    fast = make_embedder(settings.embedder)
    slow = make_embedder(fp32.embedder)
    for embedder in (fast, slow):
        embedder.encode(texts[:64])  # load and warm each model outside the timings
    bare.encode(texts[:64], batch_size=32)

    def encode_bare() -> float:
        started = time.perf_counter()
        bare.encode(texts, batch_size=settings.embedder.batch_size, normalize_embeddings=True)
        return time.perf_counter() - started

    def build(s: Settings, embedder: object, folder: str) -> tuple[float, Path, object]:
        root = tmp / folder
        started = time.perf_counter()
        report = Indexer(root, s, embedder).build([source])
        return time.perf_counter() - started, root, report

    first = encode_bare()
    fast_seconds, fast_root, fast_report = build(settings, fast, "default")
    slow_seconds, slow_root, _ = build(fp32, slow, "fp32")
    second = encode_bare()
    started = time.perf_counter()
    Indexer(fast_root, settings, fast).add([source])
    again_seconds = time.perf_counter() - started
    baseline = (first + second) / 2

    ours, theirs = vectors_by_id(fast_root), vectors_by_id(slow_root)
    cosines = np.array([float(ours[a] @ theirs[a]) for a in ours])
    fast_p, fast_ndcg = related_precision(fast_root, label)
    slow_p, slow_ndcg = related_precision(slow_root, label)
    n = len(texts)
    rows = [
        {
            "corpus": name,
            "run": "bare SentenceTransformer.encode, fp32 (baseline)",
            "docs_per_s": n / baseline,
            "x_baseline": 1.0,
        },
        {
            "corpus": name,
            "run": f"recsys index build, default ({fast.precision})",
            "docs_per_s": n / fast_seconds,
            "x_baseline": baseline / fast_seconds,
        },
        {
            "corpus": name,
            "run": "recsys index build, fp32",
            "docs_per_s": n / slow_seconds,
            "x_baseline": baseline / slow_seconds,
        },
        {
            "corpus": name,
            "run": "recsys index add (same files, nothing embedded)",
            "docs_per_s": None,
            "x_baseline": baseline / again_seconds,
        },
    ]
    quality = {
        "corpus": name,
        "docs": n,
        "embedded": fast_report.embedded,
        "precision_default": fast.precision,
        "cosine_min": float(cosines.min()),
        "cosine_mean": float(cosines.mean()),
        "related_p10_default": fast_p,
        "related_p10_fp32": slow_p,
        "related_p10_difference": fast_p - slow_p,
        "related_ndcg10_default": fast_ndcg,
        "related_ndcg10_fp32": slow_ndcg,
        "baseline_seconds": [first, second],
    }
    return rows, quality


def main() -> None:
    rows: list[dict] = []
    qualities: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, parts, label) in enumerate(CORPORA):
            folder = Path(tmp) / str(number)
            folder.mkdir()
            found, quality = run_corpus(name, shared(*parts), label, folder)
            rows += found
            qualities.append(quality)
    print(table(rows, ["corpus", "run", "docs_per_s", "x_baseline"]))
    print()
    columns = [
        "corpus",
        "precision_default",
        "cosine_min",
        "cosine_mean",
        "related_p10_default",
        "related_p10_fp32",
        "related_p10_difference",
    ]
    print(table(qualities, columns))
    path = save("build_throughput", {"rows": rows, "quality": qualities})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
