"""Ranking: what is popular right now, the same for every reader (a "most read" box).

Articles engaged with in the window, ordered by decayed popularity (recsys/signals/popularity.py: distinct
readers, views, reactions, shrunk click-through), each with its counts as the reason; topped up with the
newest articles when there is too little activity, so a new site or a quiet category still gets a box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.archive.version import VersionReader
from recsys.learning.clock import LEARNED_POOL
from recsys.lists import learned
from recsys.lists.base import ListContext, banned_rows, check_k, newest_hits, to_hit, unbanned
from recsys.signals.activity import WindowCounts
from recsys.types import Filters, Hit


class RankingList:
    """The Ranking pipeline; one per service, stateless between calls."""

    def __init__(self, context: ListContext) -> None:
        self.context = context

    def clock(self) -> tuple[float, float, float]:
        """(half-life, window) in hours and the CTR cap: the clock ``recsys train`` stored, else ``[popularity]``'s."""
        stored = self.context.models.clock()
        if stored is not None:
            return stored.half_life_hours, stored.window_hours, stored.ctr_cap
        config = self.context.settings.popularity
        return config.ranking_half_life_hours, config.window_hours, config.ranking_ctr_cap

    def top(
        self, view: VersionReader, k: int | None, filters: Filters, window_hours: float | None, now_s: float
    ) -> list[Hit]:
        settings = self.context.settings
        k = check_k(settings.recommend.k if k is None else k)
        half_life, default_window, ctr_cap = self.clock()
        window = (default_window if window_hours is None else window_hours) * 3600.0
        banned = banned_rows(view, filters)
        activity = self.context.activity
        popularity = activity.view(half_life, ctr_cap)
        picked: list[tuple[int, str, float]] = []  # row, id, score
        if len(popularity) and k:
            active_ids, active_scores = popularity.ranked_active(now_s, window)  # best first
            rows_by_id = view.store.rows_of(active_ids)
            found = [
                (rows_by_id[a], a, score) for a, score in zip(active_ids, active_scores, strict=True) if a in rows_by_id
            ]
            if found:
                rows = np.array([r for r, _, _ in found], dtype=np.int64)
                ok = view.allowed(filters, rows) & unbanned(rows, banned)
                picked = [(int(r), a, float(score)) for (r, a, score), good in zip(found, ok, strict=True) if good]
                picked = self._learned_order(view, picked, now_s, k)[:k]
        counts = activity.window_counts([a for _, a, _ in picked], now_s - window, now_s)
        articles = view.store.get_rows([r for r, _, _ in picked], with_text=False)
        hours = window / 3600.0
        hits = [
            to_hit(articles[row], score, ranking_reason(counts[a], hours), None, counts_metadata(counts[a]))
            for row, a, score in picked
        ]
        if len(hits) < k:
            hits += newest_hits(view, k - len(hits), filters, banned | {r for r, _, _ in picked}, now_s)
        return hits

    def _learned_order(
        self, view: VersionReader, picked: list[tuple[int, str, float]], now_s: float, k: int
    ) -> list[tuple[int, str, float]]:
        """With a trained ranker (recsys/learning/ranker.py), the clock's first ``LEARNED_POOL`` (or ``k``) articles
        are ordered by a model's score with no reader known (recsys/lists/learned.py): the same for every reader,
        from the same counts. Which model, or none, is what ``recsys train`` found caught the most held-back next
        clicks (recsys/learning/clock.py ``choose_order``, stored as the clock's ``order``): the Ranking model,
        the box model, or the clock's own order. A clock.json from before the order was judged, or none: the box
        model's, as before; an order naming a model the serving ranker lacks (a rollback): the clock's."""
        ranker = self.context.models.ranker()
        stored = self.context.models.clock()
        order = "box_model" if stored is None else stored.order
        if ranker is None or len(picked) < 2 or order == "clock":
            return picked
        if order == "ranking_model" and ranker.ranking_text is not None:
            scorer = ranker.score_ranking
        elif order == "box_model" and ranker.box_text is not None:
            scorer = ranker.score_box
        else:
            return picked
        head = picked[: max(LEARNED_POOL, k)]  # the list is cut to k after: nothing below the head is shown
        state = self.context.activity.current_state()
        # A candidate's score does not depend on the others beside it (recsys/learning/features.py), so the
        # scores of this second are shared by every request, whatever each one excludes.
        known: dict[str, tuple[float, float]] = self.context.moments.get(
            view, state.generation, now_s, ("ranking", id(ranker), order), dict
        )  # id -> (time scored for, score); a score from later in the second is scored again
        missing = [(r, a) for r, a, _ in head if a not in known or known[a][0] > now_s]
        scored: dict[str, float] = {a: known[a][1] for _, a, _ in head if a in known and known[a][0] <= now_s}
        if missing:
            rows = np.array([r for r, _ in missing], dtype=np.int64)
            _, fresh = learned.order_for_everyone(scorer, view, rows, [a for _, a in missing], state, now_s)
            for (_, article), score in zip(missing, fresh.tolist(), strict=True):
                scored[article] = score
                known.setdefault(article, (now_s, score))
        scores = np.array([scored[a] for _, a, _ in head])
        ranked = np.argsort(-scores, kind="stable")
        return [(head[i][0], head[i][1], float(scores[i])) for i in ranked.tolist()]  # the model's score is shown


def ranking_reason(counts: WindowCounts, hours: float) -> str:
    """E.g. "1,204 views and 96 reactions in the last 24 h", or clicks out of impressions."""
    span = f"{hours:g} h" if hours < 48 else f"{hours / 24:g} days"
    if not counts.known:
        return f"popular in the last {span}"

    def n(value: int, noun: str) -> str:
        return f"{value:,} {noun}{'s' if value != 1 else ''}"

    parts = []
    if counts.views or not (counts.clicks or counts.impressions):
        parts.append(n(counts.views, "view"))
    if counts.reaction_total:
        parts.append(n(counts.reaction_total, "reaction"))
    if counts.impressions:
        parts.append(f"{n(counts.clicks, 'click')} from {n(counts.impressions, 'impression')}")
    return f"{' and '.join(parts)} in the last {span}"


def counts_metadata(counts: WindowCounts) -> dict[str, Any]:
    if not counts.known:
        return {}
    return {
        "views": counts.views,
        "reactions": counts.reactions,
        "clicks": counts.clicks,
        "impressions": counts.impressions,
    }
