"""Recommendation with the learned ranker: candidates from every source, scored by the model, then spread.

Used by ``RecommendationList`` when the index holds a ``ranker.json`` (see recsys/learning/ranker.py); without
one the hand-set blend of recsys/lists/recommendation.py serves. The steps, each a plain function over arrays:

1. **Candidates** (``gather``): the nearest articles to each of the reader's interests, the neighbours of
   the last reads in the co-read table ("readers also read"), the most popular articles now (at a day's
   half-life, and at the Ranking box's clock), and the newest, all passing the filters and none already read.
2. **Score** (``score``): ``candidate_features`` (recsys/learning/features.py) as of now, then the box model
   (``LearnedRanker.score_box``: fitted on what a box could have shown at each logged moment; the click model
   when there is none), the same features ``recsys train`` fitted on.
3. **Spread**: one article per story, then maximal marginal relevance over the model's rank, so a list is
   not ten versions of the top story.
4. **Reason** (``reason_for``): the signal that put the article there, in the reader's terms.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.archive.store import NO_TIME
from recsys.archive.version import VersionReader
from recsys.config import ExploreConfig
from recsys.learning.features import FEATURES, NOBODY, ReaderContext, article_features, candidate_features
from recsys.learning.ranker import LearnedRanker
from recsys.learning.trained import StoredModels
from recsys.signals.coreads import CoReadTable
from recsys.signals.logstate import LogState
from recsys.signals.popularity import CHANNELS
from recsys.types import Filters

# How many candidates each source brings; about 150 in all, which the model scores in about a millisecond.
PER_INTEREST = 25
POPULAR_CANDIDATES = 40
HOT_CANDIDATES = 40  # what the Ranking clock puts first now (recsys/learning/clock.py)
NEWEST_CANDIDATES = 20
COREAD_READS = 10
COREAD_CANDIDATES = 40
_CONTENT, _COREAD = FEATURES.index("content_max"), FEATURES.index("coread")
_IMPRESSIONS, _CLICKS = CHANNELS.index("impressions"), CHANNELS.index("clicks")
# The live catalogue a learned Recommendation's content search looks in (``LiveCatalogue``).
LIVE_DAYS = 7.0  # articles the logs mentioned or readers engaged with in the last week...
LIVE_PUBLISHED_DAYS = 2.0  # ... and articles published in the last two days, seen or not
LIVE_MAX_SHARE = 0.5  # a live set above half the catalogue is not worth copying: the whole index is searched


@dataclass(frozen=True)
class Scored:
    """Candidates (index rows and ids) with the model's scores and the features behind them."""

    rows: np.ndarray
    ids: list[str]
    scores: np.ndarray
    features: np.ndarray


class LiveCatalogue:
    """The articles a learned Recommendation looks among for content neighbours: those the logs mentioned or
    readers engaged with in the last ``LIVE_DAYS`` and those published in the last ``LIVE_PUBLISHED_DAYS``.

    Why: the box model was fitted on pools whose content candidates were the logged articles nearest to the
    reader (recsys/learning/pools.py ``ContentMatch``), so the served search looks where training looked; and
    on a news site that set is a fraction of the archive, so one product over a copy of its vectors costs a
    fraction of the whole-archive search. The copy is made at most once a minute per version (an article first
    seen within the minute still comes in through the hot, newest and co-read sources)."""

    def __init__(self) -> None:
        # (version, minute) -> (rows, their vectors), or None when not worth searching alone; replaced whole,
        # so a request on another thread reads one consistent snapshot
        self._snapshot: tuple[tuple[str, int], tuple[np.ndarray, np.ndarray] | None] | None = None

    def _current(self, view: VersionReader, state: LogState, at: float) -> tuple[np.ndarray, np.ndarray] | None:
        key = (str(view.path), int(at // 60.0))
        snapshot = self._snapshot
        if snapshot is not None and snapshot[0] == key:
            return snapshot[1]
        since = at - LIVE_DAYS * 86_400.0
        ids = {a for a, seen in state.first_seen.items() if since <= seen <= at}
        popularity = state.day
        engaged = np.flatnonzero(popularity.last_engaged[: len(popularity)] >= since)
        ids.update(popularity.ids[i] for i in engaged.tolist())
        rows = set(view.store.rows_of(sorted(ids)).values())
        published = np.asarray(view.rows["published"])
        fresh = (published != NO_TIME) & (published >= at - LIVE_PUBLISHED_DAYS * 86_400.0) & (published <= at)
        rows.update(np.flatnonzero(fresh & view.live).tolist())
        found = None
        if 0 < len(rows) <= LIVE_MAX_SHARE * max(1, view.n_live):
            live = np.fromiter(sorted(rows), dtype=np.int64, count=len(rows))
            found = (live, np.ascontiguousarray(view.vectors[live], dtype=np.float32))
        self._snapshot = (key, found)
        return found

    def nearest_each(
        self,
        view: VersionReader,
        state: LogState,
        at: float,
        queries: np.ndarray,
        filters: Filters,
        banned: set[int],
        want: int,
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per query: up to ``want`` live, allowed, unbanned rows nearest to it with their cosine, best first;
        None when the live set is not worth searching on its own (then the caller searches the whole index)."""
        if filters.restricts_rows:
            return None  # a narrowing filter has its own exact path over the rows it leaves
        current = self._current(view, state, at)
        if current is None:
            return None
        rows, matrix = current  # sorted live rows: no filter left to apply but the banned rows
        # (rows x dim) @ (dim x queries), then turned: OpenBLAS takes ~1.5x longer over a few queries the other way
        sims = np.ascontiguousarray((matrix @ np.atleast_2d(np.asarray(queries, dtype=np.float32)).T).T)
        ok = np.ones(rows.size, dtype=bool)
        if banned:
            wanted = np.fromiter(banned, dtype=np.int64, count=len(banned))
            at_rows = np.minimum(np.searchsorted(rows, wanted), rows.size - 1)
            hit = at_rows[rows[at_rows] == wanted]
            ok[hit] = False
            sims[:, hit] = -np.inf
        take = min(want, int(ok.sum()))
        out = []
        for row in sims:
            best = np.argpartition(-row, take - 1)[:take] if 0 < take < row.size else np.flatnonzero(ok)[:take]
            best = best[np.lexsort((rows[best], -row[best]))]  # best first, then the lower row
            out.append((rows[best], row[best]))
        return out


def popular_rows(state: LogState, rows_of: Callable[[Sequence[str]], dict[str, int]], at: float, n: int) -> list[int]:
    """Index rows of the ``n`` indexed articles with the highest click propensity now (engaged in the last
    two days); ``rows_of`` maps ids to rows (ids no longer indexed are skipped)."""
    popularity = state.day
    count = len(popularity)
    if not count:
        return []
    recent = np.flatnonzero(popularity.last_engaged[:count] >= at - 2 * 86_400.0)
    if recent.size == 0:
        return []
    scores = popularity.score_decayed(popularity.decayed(at, recent))
    best = recent[np.argsort(-scores, kind="stable")[: 2 * n]]  # spare ones for ids no longer indexed
    return indexed_rows(rows_of, [popularity.ids[i] for i in best.tolist()], n)


def indexed_rows(rows_of: Callable[[Sequence[str]], dict[str, int]], ids: Sequence[str], n: int) -> list[int]:
    """Index rows of the first ``n`` of ``ids`` that are indexed, in order (2n are looked up: spares for ids
    no longer indexed)."""
    wanted = list(ids[: 2 * n])
    found = rows_of(wanted)
    return [found[a] for a in wanted if a in found][:n]


def score(
    ranker: LearnedRanker,
    ids: Sequence[str],
    state: LogState,
    at: float,
    reader: ReaderContext,
    content: np.ndarray,
    categories: Sequence[str],
    published: np.ndarray,
    coreads: CoReadTable | None,
    seen: np.ndarray | None = None,
    articles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's scores of candidates and their feature rows (``seen``: their first sightings, ``articles``:
    their ``article_features``, if known)."""
    features = candidate_features(
        ids, state, at, reader, content, categories, published, coreads, seen=seen, articles=articles
    )
    return ranker.score_box(features), features


def moment_features(
    known: dict[str, tuple[float, np.ndarray]],
    ids: Sequence[str],
    state: LogState,
    at: float,
    published: np.ndarray,
    seen: np.ndarray,
) -> np.ndarray:
    """``article_features`` of ``ids`` at ``at``, taking the rows ``known`` (id -> (time computed for, row): one
    moment's, recsys/lists/base.py ``MomentCache``) holds for a time no later than ``at`` and adding the rest.
    Most of a Recommendation's candidates (the hot, the popular, what the logs saw last) are every request's
    in a second, and an article's row does not depend on the reader; a row from later than ``at`` is not used
    (no request sees a count from after its own time)."""
    n = len(ids)
    found = [known.get(a) for a in ids]
    missing = [i for i, entry in enumerate(found) if entry is None or entry[0] > at]
    out = np.empty((n, len(FEATURES)))
    if len(missing) < n:
        have = [i for i, entry in enumerate(found) if entry is not None and entry[0] <= at]
        out[have] = np.stack([found[i][1] for i in have])  # type: ignore[index]
    if missing:
        at_rows = np.asarray(missing, dtype=np.int64)
        fresh = article_features([ids[i] for i in missing], state, at, published[at_rows], True, seen[at_rows])
        out[at_rows] = fresh
        for j, i in enumerate(missing):
            known.setdefault(ids[i], (at, fresh[j]))
    return out


def row_facts(view: VersionReader, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Categories (names, "" where unknown) and publication times (epoch seconds, NaN where unknown) of index
    rows: the per-article inputs of ``candidate_features`` that the index holds."""
    names = view.vocab.get("category", [])
    codes = np.asarray(view.rows["category"][rows]).tolist()
    categories = [names[c] if 0 <= c < len(names) else "" for c in codes]
    published = np.asarray(view.rows["published"][rows])
    return categories, np.where(published == NO_TIME, np.nan, published.astype(np.float64))


def order_for_everyone(
    scorer: Callable[[np.ndarray], np.ndarray],
    view: VersionReader,
    rows: np.ndarray,
    ids: Sequence[str],
    state: LogState,
    at: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions of ``rows`` best first, their scores by ``scorer``: a ranker's ``score_box`` or
    ``score_ranking``) with no reader known (the same for every reader): how the Ranking box orders what is
    popular now when ``recsys train`` found a model's order caught more next clicks than the clock's."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    categories, published = row_facts(view, rows)
    content = np.full((len(ids), 2), np.nan)
    scores = scorer(candidate_features(ids, state, at, NOBODY, content, categories, published, None))
    return np.argsort(-scores, kind="stable"), scores


def spread(scores: np.ndarray, vectors: np.ndarray, k: int, lam: float, duplicate: float) -> np.ndarray:
    """Positions of the final list: best first, one per story (cosine >= ``duplicate``), MMR over rank."""
    kept = one_per_story(np.argsort(-scores, kind="stable"), vectors, duplicate, 4 * k)
    if not kept:
        return np.zeros(0, dtype=np.int64)
    relevance = 1.0 - np.arange(len(kept)) / max(1, len(kept))  # rank, not raw margin: scores are log-odds-like
    chosen: list[int] = []
    available = np.ones(len(kept), dtype=bool)
    sims = vectors[kept] @ vectors[kept].T
    redundancy = np.zeros(len(kept))
    while len(chosen) < k and available.any():
        gain = lam * relevance - (1.0 - lam) * (redundancy if chosen else 0.0)
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        available[best] = False
        chosen.append(best)
        redundancy = np.maximum(redundancy, sims[best])
    return np.asarray([kept[i] for i in chosen], dtype=np.int64)


def one_per_story(order: np.ndarray, vectors: np.ndarray, duplicate: float, limit: int) -> list[int]:
    """The first ``limit`` positions of ``order`` whose cosine to every earlier kept one is below ``duplicate``
    (one article per story, the best first), compared a block at a time: one product per block instead of one
    per candidate."""
    kept: list[int] = []
    block = max(8, 2 * limit)
    for start in range(0, order.size, block):
        chunk = order[start : start + block]
        vs = vectors[chunk]
        within = vs @ vs.T
        earlier = (vs @ vectors[kept].T).max(axis=1) if kept else np.full(chunk.size, -np.inf)
        close = within >= duplicate
        blocked = (earlier >= duplicate).tolist()  # a copy of a story kept from an earlier block
        # close to something else in this block (earlier, or later: only a hint to look closer at the kept ones)
        paired = (np.count_nonzero(close, axis=0) > np.diagonal(close)).tolist()
        chosen: list[int] = []  # positions in chunk kept so far
        for i in range(chunk.size):
            if blocked[i] or (paired[i] and chosen and bool(close[i, chosen].any())):
                continue
            chosen.append(i)
            kept.append(int(chunk[i]))
            if len(kept) >= limit:
                return kept
    return kept


DEFAULT_SIMILAR = 0.4  # "similar" for reasons when the archive has no calibration (recsys/archive/calibrate.py)


def similar_floor(models: StoredModels) -> float:
    """The cosine at which a read counts as similar in a reason: the calibrated floor, else ``DEFAULT_SIMILAR``."""
    calibration = models.calibration()
    return DEFAULT_SIMILAR if calibration is None else calibration.floor


def reason_for(
    features: np.ndarray,
    coread_source: str | None,
    content_source: str | None,
    popular_reason: str | None,
    fresh_reason: str | None,
    similar: float = DEFAULT_SIMILAR,
) -> str:
    """The strongest reader-facing reason among the signals that apply, most personal first. "because you read X"
    only when X is at least ``similar`` (the site's calibrated floor) close: otherwise it would name a read the
    pick has nothing to do with."""
    if coread_source and features[_COREAD] > 0:
        return f'readers of "{coread_source}" also read this'
    if content_source and np.isfinite(features[_CONTENT]) and features[_CONTENT] >= similar:
        return f'because you read "{content_source}"'
    if popular_reason:
        return f"popular now: {popular_reason}"
    if fresh_reason:
        return fresh_reason
    return "recommended for you"


def explore_slot(
    picked: np.ndarray,
    ids: Sequence[str],
    first_seen: np.ndarray,
    state: LogState,
    at: float,
    k: int,
    config: ExploreConfig,
    rng: random.Random,
) -> tuple[np.ndarray, bool]:
    """``picked`` with its last slot (or a free one) given to a new candidate with probability ``share`` x k,
    the candidate chosen by Thompson sampling on its clicks and impressions; and whether it was."""
    if config.share <= 0 or k <= 0 or rng.random() >= min(1.0, config.share * k):
        return picked, False
    chosen = set(picked.tolist())
    sums = state.ever.sums_of(ids, at)
    impressions = sums[:, _IMPRESSIONS]
    clicks = np.minimum(sums[:, _CLICKS], impressions)
    young = np.isfinite(first_seen) & (at - first_seen <= config.max_age_hours * 3600.0)
    new = [i for i in np.flatnonzero(young & (impressions < config.max_impressions)).tolist() if i not in chosen]
    if not new:
        return picked, False
    draws = [rng.betavariate(1.0 + clicks[i], 1.0 + impressions[i] - clicks[i]) for i in new]
    pick = new[int(np.argmax(draws))]
    kept = picked.tolist()[: k - 1] if len(picked) >= k else picked.tolist()
    return np.asarray([*kept, pick], dtype=np.int64), True
