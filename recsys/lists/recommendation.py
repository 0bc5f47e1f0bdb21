"""Recommendation: articles for this reader, from what they have read.

The reader's reads (newest first) become interests (recsys/signals/profile.py), each searched on its own. With a
ranker stored by ``recsys train`` the candidates from every source are scored by the model
(recsys/lists/learned.py); without one the hand-set blend serves: cosine to the interest + freshness +
popularity, the best of each interest of some weight first, then MMR. Already-read articles never
appear; with no known reads the list is Ranking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter

import numpy as np

from recsys.archive.store import NO_TIME
from recsys.archive.version import VersionReader
from recsys.config import RecommendConfig
from recsys.learning.features import ReaderContext, content_columns, first_sightings
from recsys.learning.pools import POOL_HOT, POOL_HOT_WINDOW, POOL_NEWEST
from recsys.learning.ranker import LearnedRanker
from recsys.lists import learned
from recsys.lists.base import (
    ListContext,
    banned_rows,
    check_k,
    nearest_each,
    newest_rows,
    newness_reason,
    popularity_of_rows,
    repeats_story,
    to_hit,
    unbanned,
)
from recsys.lists.ranking import RankingList
from recsys.lists.scoring import freshness
from recsys.signals.logstate import LogState
from recsys.signals.popularity import CHANNELS
from recsys.signals.profile import Interest, build_interests
from recsys.types import Filters, Hit

_READS, _CLICKS = CHANNELS.index("reads"), CHANNELS.index("clicks")


@dataclasses.dataclass
class _Reader:
    """A reader's known reads in one version: ids newest first, their rows and vectors, their interests."""

    reads: list[str]
    known: list[str]
    read_rows: dict[str, int]
    vectors: np.ndarray
    interests: list[Interest]
    name: str = ""  # who they are as the events name them ("" unknown)


class RecommendationList:
    """The Recommendation pipeline; falls back to ``ranking`` for a reader with no known reads."""

    def __init__(self, context: ListContext, ranking: RankingList) -> None:
        self.context = context
        self.ranking = ranking
        self._live = learned.LiveCatalogue()

    def for_reader(
        self, view: VersionReader, reads: list[str], k: int | None, filters: Filters, now_s: float, reader: str = ""
    ) -> list[Hit]:
        """``reads``: the reader's article ids, newest first, no repeats; ``reader``: who they are as the events
        name them ("" unknown), for what they were shown before (the learned ranker's ``shown_to_reader``)."""
        config = self.context.settings.recommend
        k = check_k(config.k if k is None else k)
        read_rows = view.store.rows_of(reads)
        known = [a for a in reads if a in read_rows][: config.history_limit]
        unread = dataclasses.replace(filters, exclude_ids=(*filters.exclude_ids, *reads))
        if not known or k == 0:
            return self.ranking.top(view, k, unread, None, now_s)
        banned = banned_rows(view, filters, read_rows.values())
        history = np.asarray(view.vectors[[read_rows[a] for a in known]], dtype=np.float32)
        person = _Reader(reads, known, read_rows, history, build_interests(history, config), reader)

        found: dict[int, tuple[float, int]] = {}  # row -> (best cosine, interest)
        queries = np.stack([i.vector for i in person.interests]) if person.interests else np.zeros((0, 1))
        ranker = self.context.models.ranker()
        nearest = None
        if ranker is not None and len(queries):  # the model looks where it was trained to look: the live articles
            state = self.context.activity.current_state()
            want = config.candidates_per_interest
            nearest = self._live.nearest_each(view, state, now_s, queries, filters, banned, want)
        if nearest is None:
            nearest = nearest_each(view, queries, filters, banned, config.candidates_per_interest)
        for number, (rows, sims) in enumerate(nearest):
            for row, sim in zip(rows.tolist(), sims.tolist(), strict=True):
                if sim >= config.min_similarity and sim > found.get(row, (-1.0, 0))[0]:
                    found[row] = (sim, number)
        if ranker is not None:
            return self._learned(view, ranker, person, found, filters, banned, k, now_s)
        if not found:
            return self.ranking.top(view, k, unread, None, now_s)
        return self._blend(view, person, found, k, now_s)

    def _blend(
        self, view: VersionReader, reader: _Reader, found: dict[int, tuple[float, int]], k: int, now_s: float
    ) -> list[Hit]:
        """The hand-set blend (``[recommend]`` weights), used until a ranker is trained."""
        config = self.context.settings.recommend
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        rows = rows[~self._copies_of_reads(view, rows, reader)]
        if not rows.size:
            return []
        sims = np.array([found[r][0] for r in rows.tolist()])
        owner = np.array([found[r][1] for r in rows.tolist()])
        published = np.asarray(view.rows["published"][rows])
        scores = (
            sims
            + config.freshness_weight * freshness(published, now_s, config.half_life_days)
            + config.popularity_weight * popularity_of_rows(self.context, view, rows, now_s)
        )
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
        picked = spread_interests(scores, vectors, owner, reader.interests, k, config)

        articles = view.store.get_rows(rows[picked], with_text=False)
        read_titles = view.store.get_rows([reader.read_rows[a] for a in reader.known], with_text=False)
        similar = learned.similar_floor(self.context.models)
        hits = []
        for pos in picked:
            members = reader.interests[owner[pos]].members
            source_rows = [reader.read_rows[reader.known[m]] for m in members]
            closeness = reader.vectors[list(members)] @ vectors[pos]
            closest = source_rows[int(np.argmax(closeness))]
            reason = "recommended for you"  # a read named only when it is similar by the site's own measure
            if float(closeness.max()) >= similar:
                reason = f'because you read "{read_titles[closest].title}"'
            hits.append(to_hit(articles[int(rows[pos])], float(scores[pos]), reason, float(sims[pos])))
        return hits

    def _hot_rows(self, view: VersionReader, now_s: float, n: int) -> list[int]:
        """Rows of the ``n`` articles the Ranking box's clock puts first now (what is hot this hour on a fast site)."""
        half_life, window, ctr_cap = self.ranking.clock()
        ids, _ = self.context.activity.view(half_life, ctr_cap).ranked_active(now_s, window * 3600.0)
        return learned.indexed_rows(view.store.rows_of, ids, n)

    def _copies_of_reads(
        self, view: VersionReader, rows: np.ndarray, reader: _Reader, vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """True for candidates that tell a story the reader has read (a syndicated copy of an article they read
        is not new): ``repeats_story`` of their reads (``vectors``: the candidates', if gathered already)."""
        read = np.asarray([reader.read_rows[a] for a in reader.known], dtype=np.int64)
        return repeats_story(view, rows, read, self.context.settings.related.duplicate_similarity, vectors)

    @staticmethod
    def _recent_reads(state: LogState, ids: list[str], now_s: float) -> dict[str, float]:
        """Decayed clicks + reads of each id now (a day's half-life): the figure a "popular now" reason shows."""
        sums = state.day.sums_of(ids, now_s)
        return {a: float(sums[i, _CLICKS] + sums[i, _READS]) for i, a in enumerate(ids)}

    @staticmethod
    def _logged_rows(view: VersionReader, state: LogState, now_s: float) -> list[int]:
        """Rows of what was hot in the last hours and what the logs saw last: ``pool_candidates``' sources."""
        hot, _ = state.hours.ranked_active(now_s, POOL_HOT_WINDOW)
        ids = [*hot[: 2 * POOL_HOT], *reversed(state.seen_order[-3 * POOL_NEWEST :])]
        return learned.indexed_rows(view.store.rows_of, ids, len(ids))

    def _learned(
        self,
        view: VersionReader,
        ranker: LearnedRanker,
        reader: _Reader,
        found: dict[int, tuple[float, int]],
        filters: Filters,
        banned: set[int],
        k: int,
        now_s: float,
    ) -> list[Hit]:
        """Recommendation by the learned ranker (recsys/lists/learned.py)."""
        state = self.context.activity.current_state()
        # "Readers also read": folded live from the events as they arrive (as training folds them), the
        # table `recsys train` stored only until the live one knows something.
        live = len(state.coreads) > 0
        coreads = None if live else self.context.models.coreads()
        read_rows, known = reader.read_rows, reader.known
        by_interest: dict[int, list[tuple[float, int]]] = {}
        for row, (sim, owner) in found.items():
            by_interest.setdefault(owner, []).append((sim, row))
        pool: list[int] = [
            row for near in by_interest.values() for _, row in sorted(near, reverse=True)[: learned.PER_INTEREST]
        ]
        coread_from: dict[int, str] = {}
        if live or coreads is not None:
            reads = reader.reads[: learned.COREAD_READS]
            per_read = learned.COREAD_CANDIDATES
            neighbours = [
                (read, other)
                for read in reads
                for other, _ in (state.coreads.neighbours(read, now_s, per_read) if live else coreads.of(read))  # type: ignore[union-attr]
            ]
            neighbours = neighbours[: learned.COREAD_CANDIDATES]
            rows_of = view.store.rows_of([other for _, other in neighbours])
            for read, other in neighbours:
                if other in rows_of:
                    coread_from.setdefault(rows_of[other], read)
        moment = self.context.moments
        popular = moment.get(
            view,
            state.generation,
            now_s,
            "popular",
            lambda: learned.popular_rows(state, view.store.rows_of, now_s, learned.POPULAR_CANDIDATES),
        )
        hot = moment.get(
            view,
            state.generation,
            now_s,
            "hot",  # the Ranking clock's leaders, then the sources training draws its pools from
            lambda: self._hot_rows(view, now_s, learned.HOT_CANDIDATES) + self._logged_rows(view, state, now_s),
        )
        fresh = newest_rows(view, learned.NEWEST_CANDIDATES, filters, banned, now_s)
        rows = np.fromiter(dict.fromkeys([*pool, *coread_from, *hot, *popular, *fresh.tolist()]), dtype=np.int64)
        if rows.size:
            rows = rows[view.allowed(filters, rows) & unbanned(rows, banned)]
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
        fresh_story = ~self._copies_of_reads(view, rows, reader, vectors)
        rows, vectors = rows[fresh_story], vectors[fresh_story]
        if rows.size == 0:
            return []
        listed = rows.tolist()
        ids_by_row = view.store.ids_of(listed)
        ids = list(map(ids_by_row.__getitem__, listed))
        seen = first_sightings(state, ids)
        if state.first_seen:
            # An undated article the logs have never mentioned has no evidence of being live (a bulk import, or
            # in a replay an article of later days); the model learned unseen-and-undated from first sightings
            # of what the site had just put up, so it would take these for fresh front-page news.
            keep = ~((np.asarray(view.rows["published"][rows]) == NO_TIME) & np.isnan(seen))
            if not keep.all():
                rows, seen, vectors = rows[keep], seen[keep], vectors[keep]
                ids = [a for a, kept in zip(ids, keep.tolist(), strict=True) if kept]
            if rows.size == 0:
                return []
        centroids = np.stack([i.vector for i in reader.interests]) if reader.interests else None
        content = content_columns(vectors, centroids, reader.vectors[:5])
        categories, published = learned.row_facts(view, rows)
        names = view.vocab.get("category", [])
        read_codes = np.asarray(view.rows["category"][[read_rows[a] for a in known]]).tolist()
        known_categories = Counter(names[c] for c in read_codes if 0 <= c < len(names))
        shown = state.readers.shown(reader.name, now_s) if reader.name else None
        context = ReaderContext(tuple(reader.reads), dict(known_categories), sum(known_categories.values()), shown)
        # the articles' own columns are every request's of this moment (recsys/lists/learned.py moment_features)
        this_moment = moment.get(view, state.generation, now_s, "article features", dict)
        own = learned.moment_features(this_moment, ids, state, now_s, published, seen)
        scores, features = learned.score(
            ranker, ids, state, now_s, context, content, categories, published, coreads, seen, own
        )
        settings = self.context.settings
        picked = learned.spread(
            scores, vectors, k, settings.recommend.mmr_lambda, settings.related.duplicate_similarity
        )
        born = np.where(np.isfinite(published), published, seen)
        # the draws are seeded by the request (the reads and the minute): the same request gets the same list
        request = f"{reader.reads[:20]}:{int(now_s // 60)}".encode("utf-8", "surrogatepass")
        coin = random.Random(hashlib.sha256(request).digest())
        picked, explored = learned.explore_slot(picked, ids, born, state, now_s, k, settings.explore, coin)

        # Reasons: the read each pick is closest to, the read whose co-readers chose it, or why it is there.
        picked_rows = [int(rows[p]) for p in picked.tolist()]
        sources = {read_rows[a] for a in known} | {read_rows[r] for r in coread_from.values() if r in read_rows}
        articles = view.store.get_rows([*picked_rows, *sources], with_text=False)
        popular_set = set(popular[: max(20, 2 * k)]) | set(hot[: max(20, 2 * k)])
        fresh_set = set(fresh.tolist())
        recent_reads = self._recent_reads(state, [ids[p] for p in picked.tolist()], now_s)
        similar = learned.similar_floor(self.context.models)
        hits = []
        for pos, row in zip(picked.tolist(), picked_rows, strict=True):
            closest = None
            if known:
                closest = articles[read_rows[known[int(np.argmax(reader.vectors @ vectors[pos]))]]].title
            read = coread_from.get(row)
            coread_title = articles[read_rows[read]].title if read in read_rows else None
            popular_reason = None
            if row in popular_set:
                popular_reason = f"{recent_reads[ids[pos]]:,.0f} recent reads"
            fresh_reason = None
            if row in fresh_set:
                fresh_reason = newness_reason(int(view.rows["published"][row]), now_s)
            reason = learned.reason_for(features[pos], coread_title, closest, popular_reason, fresh_reason, similar)
            if explored and pos == int(picked[-1]):
                # a new article, being tried: new since it was published, or (undated) since the logs first saw it
                reason = newness_reason(int(born[pos]) if np.isfinite(born[pos]) else NO_TIME, now_s)
            similarity = content[pos, 0]
            # the explored slot is marked for the served log (a key no input field is named)
            tried = {"recsys_explore": True} if explored and pos == int(picked[-1]) else None
            shown_similarity = float(similarity) if np.isfinite(similarity) else None
            hits.append(to_hit(articles[row], float(scores[pos]), reason, shown_similarity, tried))
        return hits


def spread_interests(
    scores: np.ndarray,
    vectors: np.ndarray,
    owner: np.ndarray,
    interests: list[Interest],
    k: int,
    config: RecommendConfig,
) -> np.ndarray:
    """The best candidate of each interest of at least ``min_interest_share`` first, then MMR."""
    seeds: list[int] = []
    for number, interest in enumerate(interests):
        if interest.share < config.min_interest_share or len(seeds) >= k:
            continue
        own = np.flatnonzero(owner == number)
        if own.size:
            seeds.append(int(own[np.argmax(scores[own])]))
    rest = np.setdiff1d(np.arange(scores.shape[0]), seeds)
    if len(seeds) >= k or rest.size == 0:
        return np.asarray(seeds[:k], dtype=np.int64)
    # MMR over the rest, already penalised by what the seeds cover
    lam = config.mmr_lambda
    picked = list(seeds)
    redundancy = (vectors[rest] @ vectors[seeds].T).max(axis=1) if seeds else np.zeros(rest.size)
    available = np.ones(rest.size, dtype=bool)
    sims_rest = vectors[rest] @ vectors[rest].T
    while len(picked) < k and available.any():
        gain = lam * scores[rest] - (1.0 - lam) * (redundancy if picked else 0.0)
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        available[best] = False
        picked.append(int(rest[best]))
        redundancy = np.maximum(redundancy, sims_rest[best])
    return np.asarray(picked, dtype=np.int64)
