"""The boxes as readers meet them: logged impressions replayed in time order through the served API.

At each sampled impression's time, with every earlier impression's events ingested through
``Recommender.record_events`` and nothing later, the served boxes are asked from the whole live catalogue:
Recommendation (the reader's history from the row and their id, as a site asks for a known reader; and, in a
row of its own, the history alone), Ranking, and, where the article being read is known (``pages.tsv``), the
whole page. A hit is a clicked article in the list. Naive lists of the same size are built from exactly the
same events at the same moment: the most clicked in the last 15 min / 1 h / 6 h / 24 h (the reader's history
left out; the last hour's also less everything the reader was shown or clicked before), the newest of the
recently clicked, co-reads of the article being read and of the reader's last read, and a random recently
clicked article. The impression's own clicks are
ingested only after its lists were asked for, so no query sees its own future.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.service import Recommender
from recsys.signals.records import Impression

HOUR = 3600.0
WINDOWS = {"15 min": 0.25 * HOUR, "1 h": HOUR, "6 h": 6 * HOUR, "24 h": 24 * HOUR}
RECENT = 24 * HOUR  # what "recently clicked" means for the newest / random baselines
CO_READ_MEMORY = 20  # a reader's last clicks paired with each new one
HISTORY_BUCKETS = ((0, 0, "0"), (1, 4, "1-4"), (5, 19, "5-19"), (20, 10**9, "20+"))
HOUR_BUCKETS = ((0, 5, "00-05"), (6, 11, "06-11"), (12, 17, "12-17"), (18, 23, "18-23"))


def read_pages(path: str | Path) -> dict[str, str]:
    """``pages.tsv`` (impression_id, article being read, session): impression -> article, where there is one."""
    pages: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            cells = line.rstrip("\n").split("\t")
            if len(cells) >= 2 and cells[0].strip() and cells[1].strip():
                pages[cells[0].strip()] = cells[1].strip()
    return pages


def event_records(impression: Impression) -> list[dict[str, Any]]:
    """An impression's events as the event-file schema: one impression per shown article, one click per clicked
    one, at the row's time; keyed by impression id, so ingesting twice counts once."""
    records = []
    for article, clicked in zip(impression.candidates, impression.clicked, strict=True):
        base = {"article_id": article, "ts": impression.ts, "user_id": impression.user_id}
        records.append({**base, "type": "impression", "event_id": f"served:{impression.impression_id}:{article}:i"})
        if clicked:
            records.append({**base, "type": "click", "event_id": f"served:{impression.impression_id}:{article}:c"})
    return records


class ClickLog:
    """What the baselines know: the clicks ingested so far, in time order (the same events the engine got)."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, str]] = deque()  # clicks of the last 24 h
        self.windows = {name: (seconds, Counter[str](), deque()) for name, seconds in WINDOWS.items()}
        self.first_seen: dict[str, float] = {}
        self.co_reads: dict[str, Counter[str]] = defaultdict(Counter)
        self.last_clicks: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=CO_READ_MEMORY))
        self.seen_by: dict[str, set[str]] = defaultdict(set)  # per reader: what they were shown or clicked

    def add(self, impression: Impression) -> None:
        ts = impression.ts
        for article in impression.candidates:
            self.first_seen.setdefault(article, ts)
        self.seen_by[impression.user_id].update(impression.candidates)
        for article, clicked in zip(impression.candidates, impression.clicked, strict=True):
            if not clicked:
                continue
            self.recent.append((ts, article))
            for _, counts, queue in self.windows.values():
                counts[article] += 1
                queue.append((ts, article))
            earlier = self.last_clicks[impression.user_id]
            for other in earlier:
                if other != article:
                    self.co_reads[other][article] += 1
                    self.co_reads[article][other] += 1
            earlier.append(article)

    def advance(self, now: float) -> None:
        """Forget clicks that left their windows by ``now``."""
        for seconds, counts, queue in self.windows.values():
            while queue and queue[0][0] < now - seconds:
                _, article = queue.popleft()
                counts[article] -= 1
                if counts[article] <= 0:
                    del counts[article]
        while self.recent and self.recent[0][0] < now - RECENT:
            self.recent.popleft()

    def most_clicked(self, window: str, k: int, skip: set[str]) -> list[str]:
        counts = self.windows[window][1]
        ranked = sorted(counts.items(), key=lambda item: (-item[1], -self.first_seen.get(item[0], 0.0), item[0]))
        return [a for a, _ in ranked if a not in skip][:k]

    def newest_clicked(self, k: int, skip: set[str]) -> list[str]:
        clicked = {a for _, a in self.recent if a not in skip}
        return sorted(clicked, key=lambda a: (-self.first_seen.get(a, 0.0), a))[:k]

    def co_read(self, article: str | None, k: int, skip: set[str]) -> list[str]:
        if article is None or article not in self.co_reads:
            return []
        return [a for a, _ in self.co_reads[article].most_common(k + len(skip)) if a not in skip][:k]

    def random_clicked(self, k: int, skip: set[str], rng: random.Random) -> list[str]:
        clicked = sorted({a for _, a in self.recent if a not in skip})
        return rng.sample(clicked, min(k, len(clicked)))


@dataclass
class Scores:
    """Hit@k, MRR and nDCG@k of one system over the impressions it was asked for."""

    hits: float = 0.0
    reciprocal: float = 0.0
    ndcg: float = 0.0
    n: int = 0

    def add(self, ranked: Sequence[str], clicked: set[str], k: int) -> None:
        ranked = list(ranked)[:k]
        positions = [i for i, a in enumerate(ranked) if a in clicked]
        self.n += 1
        if positions:
            self.hits += 1
            self.reciprocal += 1.0 / (positions[0] + 1)
            ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(clicked), k)))
            self.ndcg += sum(1.0 / math.log2(p + 2) for p in positions) / ideal

    def row(self, name: str, k: int) -> dict[str, Any]:
        n = max(self.n, 1)
        return {
            "system": name,
            f"hit@{k}": round(self.hits / n, 4),
            "mrr": round(self.reciprocal / n, 4),
            f"ndcg@{k}": round(self.ndcg / n, 4),
            "impressions": self.n,
        }


@dataclass
class ServedReport:
    """What a served replay measured: per box (recommendation, ranking, page) a table of systems."""

    k: int
    boxes: dict[str, dict[str, Scores]] = field(default_factory=dict)
    by_hour: dict[str, dict[str, Scores]] = field(default_factory=dict)  # "system @ hours" -> scores
    by_history: dict[str, dict[str, Scores]] = field(default_factory=dict)
    ingested: int = 0
    sampled: int = 0
    seconds: float = 0.0
    query_ms: list[float] = field(default_factory=list)

    def score(self, box: str, system: str) -> Scores:
        return self.boxes.setdefault(box, {}).setdefault(system, Scores())

    def table(self, box: str) -> list[dict[str, Any]]:
        rows = [scores.row(name, self.k) for name, scores in self.boxes.get(box, {}).items()]
        return sorted(rows, key=lambda r: (r["system"] != "recsys", -r[f"hit@{self.k}"]))

    def breakdown(self, which: str) -> list[dict[str, Any]]:
        source = self.by_hour if which == "hour" else self.by_history
        rows = []
        for bucket, systems in source.items():
            for name, scores in systems.items():
                rows.append({which: bucket, **scores.row(name, self.k)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        ms = sorted(self.query_ms)
        return {
            "k": self.k,
            "ingested_impressions": self.ingested,
            "sampled_impressions": self.sampled,
            "seconds": round(self.seconds, 1),
            "query_ms_p50": round(ms[len(ms) // 2], 2) if ms else None,
            "query_ms_p99": round(ms[int(len(ms) * 0.99)], 2) if ms else None,
            "boxes": {box: self.table(box) for box in self.boxes},
            "by_hour": self.breakdown("hour"),
            "by_history": self.breakdown("history"),
        }


def _bucket(value: int, buckets: Sequence[tuple[int, int, str]]) -> str:
    return next(name for low, high, name in buckets if low <= value <= high)


def _ingest(rec: Recommender, log: ClickLog, impressions: Iterable[Impression], chunk: int = 5_000) -> int:
    """Record impressions' events with the engine (trusted, durable) and in the baselines' log."""
    batch: list[dict[str, Any]] = []
    count = 0
    for impression in impressions:
        batch += event_records(impression)
        log.add(impression)
        count += 1
        if len(batch) >= chunk:
            rec.record_events(batch, durable=True)
            batch = []
    if batch:
        rec.record_events(batch, durable=True)
    return count


BoxFn = Callable[[Recommender, Impression, str | None, float, int], dict[str, list[str]]]


def served_boxes(
    rec: Recommender, impression: Impression, page: str | None, now: float, k: int
) -> dict[str, list[str]]:
    """What recsys serves at ``now``: Recommendation and Ranking of k, and the page where one is known, asked
    as a site asks for a known reader (the row's history and its reader id, so the engine adds what its events
    say the reader read and was shown); and Recommendation asked with the history alone, for a caller that
    does not pass the reader's id."""
    history, reader = list(impression.history), impression.user_id or None
    boxes = {
        "recommendation": [h.id for h in rec.recommend(history, user_id=reader, k=k, now=now)],
        "recommendation, history only": [h.id for h in rec.recommend(history, k=k, now=now)],
        "ranking": [h.id for h in rec.ranking(k, now=now)],
    }
    if page is not None and rec.view.store.row_of(page) is not None:
        found = rec.page(page, history, user_id=reader, k_related=k, k_ranking=8, k_recommend=8, now=now)
        boxes["related"] = [h.id for h in found.related]
        boxes["page"] = [h.id for h in (*found.related, *found.recommendation, *found.ranking)]
        boxes["page, boxes beside Related"] = [h.id for h in (*found.recommendation, *found.ranking)]
    return boxes


def replay_served(
    rec: Recommender,
    prelude: Sequence[Impression],
    impressions: Sequence[Impression],
    pages: Mapping[str, str],
    sample: int | None,
    k: int = 10,
    seed: int = 0,
    boxes: BoxFn = served_boxes,
) -> ServedReport:
    """Ingest ``prelude`` (earlier days), then walk ``impressions`` in time order: before each sampled one,
    ingest everything earlier, ask the boxes and the baselines, score them against its clicks."""
    started = time.perf_counter()
    report = ServedReport(k)
    log = ClickLog()
    timed = sorted((i for i in impressions if math.isfinite(i.ts)), key=lambda i: (i.ts, i.impression_id))
    report.ingested = _ingest(rec, log, sorted(prelude, key=lambda i: (i.ts, i.impression_id)))
    clicked_rows = [i for i in timed if any(i.clicked)]
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(clicked_rows)), sample)) if sample and sample < len(clicked_rows) else None
    sampled = {id(row) for n, row in enumerate(clicked_rows) if chosen is None or n in chosen}
    waiting: list[Impression] = []
    for impression in timed:
        if id(impression) in sampled:
            now = impression.ts
            earlier = [w for w in waiting if w.ts < now]
            report.ingested += _ingest(rec, log, earlier)
            waiting = [w for w in waiting if w.ts >= now]
            log.advance(now)
            _score(rec, log, impression, pages.get(impression.impression_id), report, boxes, rng)
            report.sampled += 1
        waiting.append(impression)
    report.seconds = time.perf_counter() - started
    return report


def _score(
    rec: Recommender,
    log: ClickLog,
    impression: Impression,
    page: str | None,
    report: ServedReport,
    boxes: BoxFn,
    rng: random.Random,
) -> None:
    k = report.k
    now = impression.ts
    clicked = {a for a, c in zip(impression.candidates, impression.clicked, strict=True) if c}
    read = set(impression.history)
    queried = time.perf_counter()
    served = boxes(rec, impression, page, now, k)
    report.query_ms.append((time.perf_counter() - queried) * 1000.0)
    clicks = log.last_clicks.get(impression.user_id)
    last = clicks[-1] if clicks else impression.history[-1] if impression.history else None  # their latest read
    baselines = {f"most clicked in the last {w}": log.most_clicked(w, k, read) for w in WINDOWS}
    baselines["newest of the clicked (24 h)"] = log.newest_clicked(k, read)
    baselines["co-reads of the last read"] = log.co_read(last, k, read)
    baselines["random clicked (24 h)"] = log.random_clicked(k, read, rng)
    hour = _bucket(time.gmtime(now).tm_hour, HOUR_BUCKETS)
    history = _bucket(len(impression.history), HISTORY_BUCKETS)
    # Recommendation's own naive peer: the last hour's list less what the reader was shown or clicked before
    # (what knowing the reader buys a naive list; Ranking is one list for everyone, so it has no such peer)
    seen = read | log.seen_by.get(impression.user_id, set())
    unseen = log.most_clicked("1 h", k, seen)
    report.score("recommendation", "most clicked in the last 1 h, unseen by the reader").add(unseen, clicked, k)
    if "recommendation, history only" in served:
        alone = served["recommendation, history only"]
        report.score("recommendation", "recsys, history only (no reader id)").add(alone, clicked, k)
    for box in ("recommendation", "ranking"):
        report.score(box, "recsys").add(served[box], clicked, k)
        for name, ranked in baselines.items():
            report.score(box, name).add(ranked, clicked, k)
    best = baselines["most clicked in the last 1 h"]
    for bucket, target in ((hour, report.by_hour), (history, report.by_history)):
        for name, ranked in (
            ("recsys recommendation", served["recommendation"]),
            ("recsys ranking", served["ranking"]),
            ("most clicked in the last 1 h", best),
        ):
            target.setdefault(bucket, {}).setdefault(name, Scores()).add(ranked, clicked, k)
    if "page" in served:
        size = len(served["page"])
        beside = len(served["page, boxes beside Related"])
        skip = read | ({page} if page else set())
        page_systems = {
            "recsys page (Related + Recommendation + Ranking)": served["page"],
            "recsys Recommendation + Ranking": served["page, boxes beside Related"],
            "recsys Related": served["related"],
            "most clicked in the last 1 h, as many as Recommendation + Ranking": log.most_clicked("1 h", beside, skip),
            "most clicked in the last 1 h, as many as the whole page": log.most_clicked("1 h", size, skip),
            "co-reads of the article being read": log.co_read(page, k, skip),
        }
        for name, ranked in page_systems.items():
            report.score("page", name).add(ranked, clicked, max(size, k))
