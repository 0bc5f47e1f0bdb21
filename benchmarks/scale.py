"""What the index machinery costs at archive scale, with the model taken out of the picture.

Articles are synthetic (short random texts, 384-d vectors from a seeded hash of the text), so the
figures are recsys's own: the first build (one segment, IVF trained and tuned), an add (one small segment)
and a remove (deletions only) and what they write, open, memory, and Related latency on a large index:
the first 300 lists of a fresh process (pages of the arrays mapped in on first touch, read from disk if the
page cache lost them) and 300 lists of a process that has answered WARM_LISTS others (the main figure).
Baseline in the same run: the bare FAISS search of the big segment that Related starts from.

    python benchmarks/scale.py --articles 200000    # prints the table, writes results/scale.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _common import save, table

from recsys.archive.ann import top_k
from recsys.archive.indexer import Indexer
from recsys.archive.version import VersionReader
from recsys.config import Settings
from recsys.service import Recommender
from recsys.types import Article

WORDS = [f"w{i}" for i in range(5000)]


class HashEmbedder:
    """Clustered unit vectors from a hash of the text: same text, same vector; no model (benchmark only).

    Real embeddings of news cluster by story and topic; uniformly random 384-d vectors do not (every
    point is about equally far from every other), which no ANN index can search faster than exact
    search. So each text gets one of 2,000 seeded topic centres (by its first headline word) plus noise.
    """

    name = "hash-384"
    dimension = 384
    topics = 2000

    def __init__(self) -> None:
        self.centres = np.random.default_rng(0).standard_normal((self.topics, self.dimension)).astype(np.float32)

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            topic = int(text.split()[0][1:]) % self.topics
            out[i] = self.centres[topic] + 1.2 * np.random.default_rng(seed).standard_normal(self.dimension)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        if progress:
            progress(len(texts))
        return out


def articles(n: int, start: int = 0, seed: int = 0) -> list[Article]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(WORDS), size=(n, 12))
    categories = ["news", "sport", "business", "culture", "tech"]
    return [
        Article(
            id=f"a{start + i}",
            title=" ".join(WORDS[j] for j in row[:6]),
            body=" ".join(WORDS[j] for j in row[6:]),
            category=categories[(start + i) % 5],
            published_at=f"2026-{1 + (start + i) % 12:02d}-{1 + (start + i) % 28:02d}T10:00:00Z",
        )
        for i, row in enumerate(picks)
    ]


def current_files(root: Path) -> dict[tuple[int, int], int]:
    """The live version's files, its own and its segments', by (device, inode) -> size."""
    version = root / "versions" / (root / "CURRENT").read_text().strip()
    listed = json.loads((version / "manifest.json").read_text())["segments"]
    folders = [version, *(root / "segments" / entry["name"] for entry in listed)]
    return {
        (p.stat().st_dev, p.stat().st_ino): p.stat().st_size
        for folder in folders
        for p in folder.rglob("*")
        if p.is_file()
    }


def exact_top(view: VersionReader, query: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k live rows for a query, segment by segment (the ground truth for recall)."""
    scores = np.concatenate([np.asarray(segment.vectors) @ query for segment in view.segments])
    scores[~view.live] = -np.inf
    return top_k(scores, k)


PROBE = """
import json, sys
import numpy as np
from recsys.service import Recommender
root, n, counts = sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3:]]
rec = Recommender.open(root)
ids = [f"a{i}" for i in np.random.default_rng(2).integers(10, n, max(counts))]
done, out = 0, {}
for count in counts:
    for article_id in ids[done:count]:
        rec.related(article_id, 10)
    done = count
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmHWM", "RssAnon")))
    out[count] = {k: int(v.split()[0]) * 1024 for k, v in status.items()}
print(json.dumps(out))
"""
PROBE_LISTS = (300, 5000)  # a fresh serving process, then one that has answered for a while
WARM_LISTS = 10_000  # lists a serving process has answered before its latency is measured


def serving_memory(root: Path, n: int) -> dict[str, dict[str, int]]:
    """A fresh process that opens the index and answers Related for random articles (a serving process):
    after each of ``PROBE_LISTS`` lists, its peak RSS (``VmHWM``: private memory plus the pages of mapped
    files it touched, which are page cache shared with every other process) and its private memory
    (``RssAnon``). RSS grows with use towards the size of the files the query path reads."""
    env = {**os.environ, "RECSYS_INDEX__EXACT_MAX": "50000"}
    command = [sys.executable, "-c", PROBE, str(root), str(n), *map(str, PROBE_LISTS)]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}


def timed(call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=200_000)
    parser.add_argument("--publishes", type=int, default=40, help="adds of 100 after the measured one (merges)")
    args = parser.parse_args()
    n = args.articles
    settings = Settings().replace("index", exact_max=50_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        indexer = Indexer(root, settings, HashEmbedder())
        seconds, _ = timed(lambda: indexer.add_articles(articles(n)))
        rows.append({"step": f"first build, {n:,} articles (IVF trained and tuned)", "seconds": seconds})
        archive = current_files(root)
        add_seconds, _ = timed(lambda: indexer.add_articles(articles(100, start=n, seed=1)))
        rows.append({"step": "index add of 100 new articles", "seconds": add_seconds})
        add_bytes = sum(size for key, size in current_files(root).items() if key not in archive)
        remove_seconds, _ = timed(lambda: indexer.remove([f"a{i}" for i in range(10)]))
        rows.append({"step": "index remove of 10 articles", "seconds": remove_seconds})
        # A site publishing every few minutes: many small adds, and the merges they trigger.
        publishes = []
        for i in range(args.publishes):
            report = indexer.add_articles(articles(100, start=n + 100 * (i + 1), seed=10 + i))
            publishes.append(report)
        if publishes:
            seconds = [r.seconds for r in publishes]
            rows.append({"step": f"{len(publishes)} more adds of 100: median", "seconds": float(np.median(seconds))})
            rows.append({"step": f"{len(publishes)} more adds of 100: slowest (with merges)", "seconds": max(seconds)})
            rows.append(
                {
                    "step": "  of which until the add was live, slowest",
                    "seconds": max(r.visible_seconds for r in publishes),
                }
            )
        segments_after = publishes[-1].segments if publishes else None
        merged_total = sum(r.merged for r in publishes)
        open_seconds, rec = timed(lambda: Recommender.open(root, settings))
        rows.append({"step": "Recommender.open", "seconds": open_seconds})
        size = sum(current_files(root).values())
        disk = sum(
            {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in root.rglob("*") if p.is_file()}.values()
        )
        ids = [f"a{i}" for i in np.random.default_rng(2).integers(10, n, 300)]
        view = rec.view
        bare, related, recalls = [], [], []
        for article_id in ids:  # recall first, in its own loop: an exact scan of the archive evicts the caches
            row = view.store.row_of(article_id)
            _, found = view.ann.search(view.vectors[row], 10)
            exact = exact_top(view, np.asarray(view.vectors[row]), 10)
            recalls.append(len(set(found[0].tolist()) & set(exact.tolist())) / 10)
        # The first lists of a fresh process map the pages of the arrays they read (and read them from disk
        # if the page cache lost them); a serving process that has answered a while has most of them mapped.
        fresh = []
        for article_id in [f"a{i}" for i in np.random.default_rng(3).integers(10, n, 300)]:
            started = time.perf_counter()
            rec.related(article_id, 10)
            fresh.append(time.perf_counter() - started)
        for article_id in [f"a{i}" for i in np.random.default_rng(4).integers(10, n, WARM_LISTS)]:
            rec.related(article_id, 10)
        largest = max(view.segments, key=lambda segment: segment.rows).ann  # the IVF of the big segment
        for article_id in ids:
            row = view.store.row_of(article_id)
            started = time.perf_counter()
            largest.search(view.vectors[row], 100)
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            rec.related(article_id, 10)
            related.append(time.perf_counter() - started)
        ann = rec.info()["ann"]
        memory = serving_memory(root, n)
        first, later = (memory.get(str(count), {}) for count in PROBE_LISTS)
    latency = [
        {
            "call": "rec.related(id, 10), the first 300 lists of a fresh process",
            "p50_ms": 1000 * float(np.median(fresh)),
            "p99_ms": 1000 * float(np.percentile(fresh, 99)),
            "ratio_p50": float(np.median(fresh) / np.median(bare)),
        },
        {
            "call": "IVF search top-100 (baseline)",
            "p50_ms": 1000 * float(np.median(bare)),
            "p99_ms": 1000 * float(np.percentile(bare, 99)),
            "ratio_p50": 1.0,
        },
        {
            "call": f"rec.related(id, 10), after {WARM_LISTS:,} lists",
            "p50_ms": 1000 * float(np.median(related)),
            "p99_ms": 1000 * float(np.percentile(related, 99)),
            "ratio_p50": float(np.median(related) / np.median(bare)),
        },
    ]
    print(f"{n:,} synthetic articles; version on disk {size / 1e6:,.0f} MB; ann {ann}\n")
    print(table(rows, ["step", "seconds"]))
    print()
    print(table(latency, ["call", "p50_ms", "p99_ms", "ratio_p50"]))
    summary = {
        "add_seconds": add_seconds,
        "add_bytes_written": add_bytes,
        "add_share_of_archive": add_bytes / size,
        "remove_seconds": remove_seconds,
        "related_p50_ms": latency[2]["p50_ms"],
        "related_p99_ms": latency[2]["p99_ms"],
        "related_fresh_p50_ms": latency[0]["p50_ms"],
        "related_fresh_p99_ms": latency[0]["p99_ms"],
        "recall_at_10": float(np.mean(recalls)),
        "open_seconds": open_seconds,
        "disk_bytes": disk,
        "disk_over_one_copy": disk / size,
        "keep_versions": settings.index.keep_versions,
        "publishes": args.publishes,
        "publish_seconds_median": float(np.median([r.seconds for r in publishes])) if publishes else None,
        "publish_seconds_max": max((r.seconds for r in publishes), default=None),
        "publish_visible_seconds_max": max((r.visible_seconds for r in publishes), default=None),
        "segments_merged": merged_total,
        "segments_after_publishes": segments_after,
        "serving_rss_bytes": first.get("VmHWM", -1),
        "serving_private_bytes": first.get("RssAnon", -1),
        f"serving_rss_after_{PROBE_LISTS[1]}_lists_bytes": later.get("VmHWM", -1),
        f"serving_private_after_{PROBE_LISTS[1]}_lists_bytes": later.get("RssAnon", -1),
    }
    print(json.dumps(summary, indent=2))
    path = save(
        "scale", {"articles": n, "version_bytes": size, "ann": ann, "jobs": rows, "latency": latency, **summary}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
