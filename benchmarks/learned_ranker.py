"""The learned ranker on real logs nobody here wrote, and what serving it costs.

1. EB-NeRD week (a Danish news site): `recsys train` fits on the first five days and reports mean
   per-impression AUC on the last two, next to every single signal (popularity, smoothed CTR, content).
2. mind-dev-titles (English MIND impressions, every title known, no times): 5-fold cross-validation by
   impression against content match and popularity (replayed in file order).
3. Serving: recommend() and page() on the EB-NeRD index holding two weeks of events (~600k: the week, and the
   same week a week earlier under other reader ids, the load of a site that keeps a fortnight), with the
   stored ranker and with the hand-set blend in the same run; the difference is what the model's list costs.
   Readers are asked for as a site asks for a known one: the history it holds and the reader's id.
   Last, as ``recsys serve`` runs (``[http] compute_threads = 1``: FAISS and BLAS on the request's thread).

    python benchmarks/learned_ranker.py       # prints tables, writes results/learned_ranker.json
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from _common import CACHE, save, shared, table

from recsys.archive.ann import limit_compute_threads
from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.ingest.events import read_impressions
from recsys.learning.ranker import RANKER_FILE
from recsys.learning.training import ArticleLookup, train
from recsys.lists import learned
from recsys.service import Recommender
from recsys.signals.store import open_event_store

BASELINES = ("popularity", "ctr_all", "content_max")


def cached_index(name: str, news: Path) -> Path:
    root = CACHE / f"{name}-index"
    Indexer(root, Settings()).build([news])
    return root


def lookup_for(rec: Recommender, impressions: list) -> ArticleLookup:
    store = rec.view.store
    rows = store.rows_of({a for i in impressions for a in (*i.candidates, *i.history)})
    categories = {a.id: a.category for a in store.get_rows(list(rows.values())).values() if a.category}
    return ArticleLookup(rows, rec.view.vectors, categories, {})


def fit(name: str, folder: str) -> tuple[dict, Path, object]:
    news, behaviors = shared(folder, "news.tsv"), shared(folder, "behaviors.tsv")
    root = cached_index(name, news)
    impressions = read_impressions(behaviors)
    settings = Settings()
    with Recommender.open(root, settings) as rec:
        lookup = lookup_for(rec, impressions)
    started = time.perf_counter()
    result = train(impressions, lookup, settings.popularity, settings.recommend, test_days=2.0)
    seconds = time.perf_counter() - started
    held = result.report["held_out"]["auc"]
    singles = {k: v for k, v in held.items() if k != "recsys (learned)"}
    best = max(singles, key=lambda k: singles[k])
    row = {
        "data": folder,
        "split": result.report["split"],
        "impressions": result.report["held_out"]["impressions"],
        "recsys": held["recsys (learned)"],
        "best single": f"{best} {singles[best]:.4f}",
        "margin": held["recsys (learned)"] - singles[best],
        **{b: held[b] for b in BASELINES},
        "train_seconds": seconds,
    }
    return row, root, result


MIND_TIME = "%m/%d/%Y %I:%M:%S %p"


def week_earlier(behaviors: Path, out: Path) -> Path:
    """The impressions of ``behaviors`` a week earlier, under other impression and reader ids."""
    with open(behaviors, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for line in source:
            cells = line.rstrip("\n").split("\t")
            if len(cells) < 5:
                continue
            when = datetime.strptime(cells[2], MIND_TIME) - timedelta(days=7)
            cells[0], cells[1], cells[2] = f"w0-{cells[0]}", f"w0-{cells[1]}", when.strftime(MIND_TIME)
            target.write("\t".join(cells) + "\n")
    return out


def serving_cost(root: Path, result: object, n: int = 600) -> dict:
    """recommend() and page() p50/p99 with the model vs the hand-set blend, on a copy of the index holding
    two weeks of events."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "index"
        shutil.copytree(root, copy)
        week = shared("ebnerd-week", "behaviors.tsv")
        store = open_event_store(copy)
        events = store.ingest([week_earlier(week, Path(tmp) / "earlier.tsv"), week]).stored
        store.close()
        impressions = read_impressions(shared("ebnerd-week", "behaviors.tsv"))
        at = max(i.ts for i in impressions)
        rng = np.random.default_rng(0)
        # readers as a site asks for them: the history it holds and the reader's id (the engine adds what its
        # events say they read and were shown)
        picked = rng.choice(len(impressions), n, replace=False)
        readers = [(impressions[i].history[-10:], impressions[i].user_id) for i in picked]
        pages = [impressions[i].candidates[0] for i in rng.choice(len(impressions), n, replace=False)]
        timings = {}
        scoring: list[float] = []
        original = learned.score

        def timed_score(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            found = original(*args, **kwargs)
            scoring.append(time.perf_counter() - started)
            return found

        learned.score = timed_score  # measure the model step alone: features + LightGBM over the candidates
        frozen = "learned, after warm() + gc.freeze()"
        served = "learned, warm + freeze + one compute thread (as recsys serve runs)"
        for mode in ("hand-set blend", "learned ranker", frozen, served):
            if mode == "hand-set blend":
                (copy / RANKER_FILE).unlink(missing_ok=True)
            else:
                result.ranker.save(copy)
            if mode == served:  # the last mode: the limit stays for the rest of the process
                limit_compute_threads(1)
            rec = Recommender.open(copy)
            rec.warm().recommend(list(readers[0][0]), user_id=readers[0][1], k=8, now=at)  # folds events, loads model
            if mode in (frozen, served):
                gc.freeze()
            samples = []
            for history, user in readers:
                started = time.perf_counter()
                rec.recommend(list(history), user_id=user, k=8, now=at)
                samples.append(time.perf_counter() - started)
            ms = np.asarray(samples) * 1000
            timings[mode] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
            if mode != "hand-set blend":  # the whole page: Related 10 + Recommendation 8 + Ranking 8
                samples = []
                for (history, user), article in zip(readers, pages, strict=True):
                    started = time.perf_counter()
                    rec.page(article, list(history), user_id=user, k_related=10, k_recommend=8, k_ranking=8, now=at)
                    samples.append(time.perf_counter() - started)
                ms = np.asarray(samples) * 1000
                timings[f"page(), {mode}"] = {
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p99_ms": float(np.percentile(ms, 99)),
                }
            gc.unfreeze()
            rec.close()
        learned.score = original
        timings["extra_p50_ms"] = timings["learned ranker"]["p50_ms"] - timings["hand-set blend"]["p50_ms"]
        timings["events"] = events
        ms = np.asarray(scoring[1:]) * 1000
        timings["model scoring (features + LightGBM)"] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
        return timings


def main() -> None:
    rows, results = [], {}
    for name, folder in (("ebnerd", "ebnerd-week"), ("mind-dev-titles", "mind-dev-titles")):
        row, root, result = fit(name, folder)
        rows.append(row)
        results[name] = (root, result)
    columns = ["data", "impressions", "recsys", "best single", "margin", *BASELINES]
    print("Mean per-impression AUC on held-back impressions (recsys = the stored learned ranker)\n")
    print(table(rows, columns))
    for row in rows:
        print(f"  {row['data']}: {row['split']}; fitted in {row['train_seconds']:.1f} s")
    root, result = results["ebnerd"]
    cost = serving_cost(root, result)
    print(f"\nrecommend() of 8 and page(), EB-NeRD index holding {cost['events']:,} events (two weeks), 600 readers\n")
    print(
        table(
            [{"scorer": k, **v} for k, v in cost.items() if isinstance(v, dict)],
            ["scorer", "p50_ms", "p99_ms"],
        )
    )
    print(f"\nextra p50 of the learned list over the blend: {cost['extra_p50_ms']:.2f} ms (more candidate sources")
    print("and reasons); the model step itself is the 'model scoring' row")
    path = save("learned_ranker", {"auc": rows, "serving": cost})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
