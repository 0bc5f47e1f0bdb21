"""``GET /metrics``: the service's figures in the Prometheus text format.

Requests and latency per endpoint (the route's template, never the raw path, so an article id cannot make a
new time series), lists served and clicks credited per box and variant (from the served-list log,
recsys/feedback/log.py), events stored / duplicate / held / refused / invalid, the index version and age, the
model's age, and errors. One registry per app (several apps in one process, as in tests, do not collide).
Written by ``prometheus_client``, the Prometheus project's own library.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from recsys.ingest.text import parse_timestamp
from recsys.learning.ranker import RANKER_FILE
from recsys.service import Recommender

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
EVENT_OUTCOMES = ("stored", "duplicate", "held", "refused", "invalid")


class _ServiceFigures(Collector):
    """Read at each scrape from the service itself: nothing to keep in step."""

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec

    def collect(self) -> Iterator[Any]:
        log = self.rec.served_log
        served = CounterMetricFamily("recsys_lists_served", "Lists served and recorded", labels=["box", "variant"])
        for (box, variant), n in sorted(log.served.items()):
            served.add_metric([box, variant], n)
        yield served
        clicks = CounterMetricFamily(
            "recsys_clicks", "Clicks credited to a served list holding the article", labels=["box", "variant"]
        )
        unattributed = 0
        for (box, variant), n in sorted(log.clicks.items()):
            if box:
                clicks.add_metric([box, variant], n)
            else:
                unattributed += n
        yield clicks
        yield CounterMetricFamily(
            "recsys_clicks_unattributed",
            "Clicks naming a list not served recently, or an article not in it",
            value=unattributed,
        )
        outcomes = CounterMetricFamily("recsys_served_log", "Served-list log rows by outcome", labels=["outcome"])
        for outcome in ("recorded", "written", "sampled_out", "dropped", "failed"):
            outcomes.add_metric([outcome], log.counts[outcome])
        yield outcomes
        view = self.rec.view
        yield InfoMetricFamily("recsys_index", "The index version being served", value={"version": view.version})
        yield GaugeMetricFamily("recsys_index_articles", "Live articles in the version served", value=view.n_live)
        try:
            created = parse_timestamp(str(view.manifest["created_at"])).timestamp()
            age = time.time() - created
            yield GaugeMetricFamily("recsys_index_age_seconds", "Seconds since the served version was published", age)
        except (KeyError, ValueError):
            pass
        ranker = self.rec.layout.root / RANKER_FILE
        if ranker.is_file() and self.rec.learned_ranker() is not None:
            yield GaugeMetricFamily(
                "recsys_model_age_seconds",
                "Seconds since the learned ranker in use was written by recsys train",
                value=time.time() - ranker.stat().st_mtime,
            )


class Monitor:
    """The app's registry and the figures the HTTP layer counts itself (requests, latency, events)."""

    def __init__(self, rec: Recommender) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "recsys_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter("recsys_errors", "Responses with a 5xx status", ["endpoint"], registry=self.registry)
        self.events = Counter("recsys_events", "Events posted, by outcome", ["outcome"], registry=self.registry)
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)  # every outcome present from the start, at 0
        self.registry.register(_ServiceFigures(rec))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 500:
            self.errors.labels(endpoint).inc()

    def count_events(self, outcome: str, n: int) -> None:
        if n:
            self.events.labels(outcome).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_of(scope: dict[str, Any]) -> str:
    """The matched route's template (``/related/{article_id:path}``), or "other" for paths no route matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "other"
