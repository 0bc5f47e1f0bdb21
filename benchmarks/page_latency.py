"""Latency of page() (Related + Ranking + Recommendation) on the BBC index with MIND-sample event volume.

Events: synthetic traffic on the 2,224 BBC articles sized like the MIND sample: 189,359 impressions,
7,542 clicks and 159,802 history entries from 4,637 readers over six days, article popularity
Zipf-skewed, readers' histories drawn from one or two topics. Baselines in the same run: related()
alone and ranking() alone, so the ratio shows what the whole page costs over its parts.

    python benchmarks/page_latency.py          # prints the table, writes results/page_latency.json
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import bbc_index, save, table

from recsys.service import Recommender
from recsys.signals.records import Event
from recsys.signals.store import open_event_store

IMPRESSIONS, CLICKS, HISTORY, READERS, DAYS = 189_359, 7_542, 159_802, 4_637, 6
START = float(int(time.time()) - 7 * 86_400)  # a week that has already happened (future events are refused)


def synthetic_events(rec: Recommender, seed: int = 0) -> tuple[list[tuple[str, Event]], list[tuple[str, str, float]]]:
    rng = np.random.default_rng(seed)
    labelled = rec.view.store.labels("category")
    ids = np.array([i for _, i, _ in labelled])
    topics = np.array([c for _, _, c in labelled])
    weights = 1.0 / np.arange(1, len(ids) + 1) ** 0.9
    weights /= weights.sum()
    order = rng.permutation(len(ids))
    shown = ids[order[rng.choice(len(ids), IMPRESSIONS, p=weights)]]
    times = START + rng.random(IMPRESSIONS) * DAYS * 86400
    events = [
        (f"imp{i}", Event(str(a), "impression", float(t))) for i, (a, t) in enumerate(zip(shown, times, strict=True))
    ]
    clicked = rng.choice(IMPRESSIONS, CLICKS, replace=False)
    events += [(f"clk{i}", Event(str(shown[i]), "click", float(times[i]), user_id=f"r{i % READERS}")) for i in clicked]
    history = []
    per_reader = HISTORY // READERS
    topic_names = np.unique(topics)
    for r in range(READERS):
        liked = rng.choice(topic_names, 1 + (r % 2), replace=False)
        pool = ids[np.isin(topics, liked)]
        for j, a in enumerate(rng.choice(pool, per_reader, replace=False)):
            history.append((f"r{r}", str(a), START - (per_reader - j)))
    return events, history


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main(n: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        shutil.copytree(bbc_index(), root)
        rec = Recommender.open(root)
        events, history = synthetic_events(rec)
        started = time.perf_counter()
        stored = open_event_store(root).add(events, history)
        ingest_s = time.perf_counter() - started
        now = START + DAYS * 86400
        started = time.perf_counter()
        rec.ranking(8, now=now)  # first call folds every stored event
        first_fold_s = time.perf_counter() - started
        rng = np.random.default_rng(1)
        ids = [i for _, i, _ in rec.view.store.labels("category")]
        timings: dict[str, list[float]] = {"related": [], "ranking": [], "recommend": [], "page": []}
        for _ in range(n):
            article, reader = ids[rng.integers(len(ids))], f"r{rng.integers(READERS)}"
            for name, call in (
                ("related", lambda a=article: rec.related(a, 10, now=now)),
                ("ranking", lambda: rec.ranking(8, now=now)),
                ("recommend", lambda u=reader: rec.recommend(user_id=u, k=8, now=now)),
                ("page", lambda a=article, u=reader: rec.page(a, user_id=u, now=now)),
            ):
                started = time.perf_counter()
                call()
                timings[name].append(time.perf_counter() - started)
        base = np.median(timings["related"])
        rows = [
            {
                "call": f"{name}()" + (" (baseline)" if name == "related" else ""),
                **percentiles(values),
                "ratio_p50": float(np.median(values) / base),
            }
            for name, values in timings.items()
        ]
    print(
        f"BBC index, {stored:,} events + {len(history):,} history entries stored in {ingest_s:.1f} s; "
        f"first popularity fold {first_fold_s * 1000:.0f} ms; {n} page views\n"
    )
    print(table(rows, ["call", "p50_ms", "p99_ms", "ratio_p50"]))
    path = save(
        "page_latency",
        {
            "events": stored,
            "history": len(history),
            "ingest_s": ingest_s,
            "first_fold_s": first_fold_s,
            "queries": n,
            "rows": rows,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
