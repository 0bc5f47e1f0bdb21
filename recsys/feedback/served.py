"""Training examples from what the engine served: each recorded list becomes an impression (its ids in the
order shown, each with its place, labelled by the clicks credited to it), the reader's history being what
they read before it was served.

This is what ``recsys train`` learns from when no behaviors file is given (with the impressions a site logs
itself, if any): a deployment gets a model from its own boxes. The places go to the ranker, whose
position-debiased LambdaMART (recsys/learning/ranker.py) separates "shown first" from "good".
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from recsys.feedback.report import served_and_credited
from recsys.signals.records import Impression
from recsys.signals.store.base import EventStore


@dataclass(frozen=True)
class ServedExamples:
    impressions: list[Impression]
    lists: int
    clicked_lists: int
    unattributed_clicks: int


def served_impressions(
    store: EventStore, since: float = -1e18, until: float = 1e18, history_limit: int = 50
) -> ServedExamples:
    """The recorded lists served in [since, until] as impressions, oldest first."""
    lists, credited, unattributed = served_and_credited(store, since, until)
    if not lists:
        return ServedExamples([], 0, 0, 0)
    reads = store.reads_by_reader()
    out = []
    for served in lists:
        if not served.ids:
            continue
        history = reads.get(served.reader, []) if served.reader else []
        before = [a for _, a in history[: bisect.bisect_left([t for t, _ in history], served.ts)]][-history_limit:]
        clicked = credited.get(served.list_id, {})
        out.append(
            Impression(
                f"served:{served.list_id}",
                served.reader,
                served.ts,
                tuple(before),
                served.ids,
                tuple(a in clicked for a in served.ids),
                tuple(range(1, len(served.ids) + 1)),
            )
        )
    return ServedExamples(out, len(lists), len(credited), unattributed)
