"""txtai side by side with recsys on the same corpora, same model, same machine, one run.

txtai (an embeddings database built on sentence-transformers and FAISS) indexes the very texts recsys embeds
with the same packaged all-MiniLM-L6-v2, loaded from local disk. For BBC (2,225 long articles, label = topic
folder) and MIND-sample (2,000 headlines + abstracts, label = subcategory):

- **build docs/s**: ``txtai.Embeddings.index`` vs ``recsys index build`` (defaults);
- **Related precision@10**: txtai's "more like this" is a search with the article's own text (the article
  itself dropped); recsys is ``related(id)``. Same labelled articles for both;
- **Related latency**: p50/p99 over the same 200 articles, one query at a time. txtai's search embeds the query
  text first (its API takes text); recsys looks the article's vector up, so the rows say what each includes.

    python benchmarks/peer_txtai.py          # prints the table, writes results/peer_txtai.json
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import save, shared, table

from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.embedder import make_embedder, text_of
from recsys.evaluation.related import evaluate_related, store_labels
from recsys.ingest.articles import read_articles
from recsys.service import Recommender

CORPORA = [
    ("BBC (long articles)", ("bbc", "bbc"), "category"),
    ("MIND-sample (short)", ("mind-sample", "news.tsv"), "subcategory"),
]
LATENCY_QUERIES = 200


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def run_corpus(name: str, source: Path, label: str, tmp: Path) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from txtai import Embeddings

    settings = Settings()
    articles = read_articles([source]).articles
    ids = [a.id for a in articles]
    texts = [text_of(a, settings.embedder.max_chars) for a in articles]
    model_path = str(make_embedder(settings.embedder).path.resolve())

    txtai = Embeddings(path=model_path, content=False, batch=32, encodebatch=32)
    txtai.index([(ids[0], texts[0], None)])  # load the model outside the timing
    started = time.perf_counter()
    txtai = Embeddings(path=model_path, content=False, batch=32, encodebatch=32)
    txtai.index([(i, t, None) for i, t in zip(ids, texts, strict=True)])
    txtai_build = time.perf_counter() - started

    embedder = make_embedder(settings.embedder)
    embedder.encode(texts[:64])  # load and warm outside the timing
    started = time.perf_counter()
    Indexer(tmp / "index", settings, embedder).build([source])
    recsys_build = time.perf_counter() - started

    rec = Recommender.open(tmp / "index", settings)
    labels = store_labels(rec, label)
    report = evaluate_related(rec, labels, k=10)
    recsys_p, recsys_ndcg = report.score("recsys").precision, report.score("recsys").ndcg
    dense_p = report.score("dense kNN").precision

    text_of_id = dict(zip(ids, texts, strict=True))
    labelled = [a for a in ids if labels.get(a)]
    found = txtai.batchsearch([text_of_id[a] for a in labelled], 11)
    hits = []
    for article, results in zip(labelled, found, strict=True):
        others = [uid for uid, _ in results if uid != article][:10]
        hits.append(np.mean([labels.get(o) == labels[article] for o in others]) if others else 0.0)
    txtai_p = float(np.mean(hits))

    sample = np.random.default_rng(0).choice(labelled, min(LATENCY_QUERIES, len(labelled)), replace=False)
    # One system at a time: torch's worker threads keep spinning for a while after each txtai search and
    # would slow whatever runs next, so interleaving the two would charge txtai's cost to recsys.
    txtai_times, recsys_times = [], []
    for article in sample:
        started = time.perf_counter()
        rec.related(article, 10)
        recsys_times.append(time.perf_counter() - started)
    for article in sample:
        started = time.perf_counter()
        txtai.search(text_of_id[article], 10)
        txtai_times.append(time.perf_counter() - started)
    rec.close()
    n = len(texts)
    tp50, tp99 = percentiles(txtai_times)
    rp50, rp99 = percentiles(recsys_times)
    return [
        {
            "corpus": name,
            "system": "txtai Embeddings (search by the article's text)",
            "build_docs_per_s": n / txtai_build,
            "related_p10": txtai_p,
            "related_p50_ms": tp50,
            "related_p99_ms": tp99,
        },
        {
            "corpus": name,
            "system": "recsys (related by id)",
            "build_docs_per_s": n / recsys_build,
            "related_p10": recsys_p,
            "related_p50_ms": rp50,
            "related_p99_ms": rp99,
            "related_ndcg10": recsys_ndcg,
            "dense_knn_p10_same_index": dense_p,
        },
    ]


def main() -> None:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, parts, label) in enumerate(CORPORA):
            folder = Path(tmp) / str(number)
            folder.mkdir()
            rows += run_corpus(name, shared(*parts), label, folder)
    print(table(rows, ["corpus", "system", "build_docs_per_s", "related_p10", "related_p50_ms", "related_p99_ms"]))
    print(f"\nwrote {save('peer_txtai', {'rows': rows})}")


if __name__ == "__main__":
    main()
