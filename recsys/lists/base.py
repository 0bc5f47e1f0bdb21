"""What every list pipeline shares: the request's time and filters, candidate search over one version,
the newest articles, popularity per row, and turning a stored article into a ``Hit``.

The three pipelines (``related``, ``ranking``, ``recommendation`` beside this module) each take a
``VersionReader`` per call and return ``list[Hit]``; they hold no version themselves, so the facade in
``recsys/service.py`` can move to a new version between calls without telling them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from recsys.archive.ann import exact_search
from recsys.archive.store import NO_TIME, StoredArticle
from recsys.archive.version import VersionReader
from recsys.config import Settings
from recsys.ingest.text import parse_timestamp
from recsys.learning.trained import StoredModels
from recsys.lists.scoring import DAY, days_phrase, freshness
from recsys.signals.activity import PopularityTracker
from recsys.signals.popularity import squash
from recsys.types import Filters, Hit, RecsysError

MAX_K = 1000
SUBSET_EXACT_MAX = 20_000  # a filter leaving fewer rows than this is searched exactly over those rows
TimeLike = datetime | str | float | int | None
NEW_DAYS = 7.0  # an article published longer ago than this is from the archive, never "new"


class MomentCache:
    """Answers that depend only on the version, the events folded so far and the moment (the hot and popular
    candidates, the Ranking's model scores), kept while those stay the same: every request in one second asks
    the same of them. An answer is reused only by a request at or after the time it was computed for, so no
    request sees a count from a later moment than its own."""

    def __init__(self) -> None:
        # ((version, state generation, second), {name: (time computed for, answer)}), replaced whole
        self._entry: tuple[tuple[str, int, int], dict[object, tuple[float, Any]]] | None = None

    def get(self, view: VersionReader, generation: int, at: float, name: object, compute: Callable[[], Any]) -> Any:
        key = (str(view.path), generation, int(at // 1.0))
        entry = self._entry
        if entry is None or entry[0] != key:
            entry = (key, {})
            self._entry = entry
        found = entry[1].get(name)
        if found is not None and found[0] <= at:
            return found[1]
        answer = compute()
        if found is None:
            entry[1][name] = (at, answer)
        return answer


@dataclass(frozen=True)
class ListContext:
    """What the pipelines read besides the version: settings, live popularity and the trained models."""

    settings: Settings
    activity: PopularityTracker
    models: StoredModels
    moments: MomentCache = field(default_factory=MomentCache)


def epoch(value: TimeLike) -> float | None:
    """A time given as datetime, ISO text or epoch number, as epoch seconds (None stays None)."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            return parse_timestamp(value.isoformat()).timestamp()
        return parse_timestamp(value).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise RecsysError(f"bad time {value!r}: {exc}") from None


def now_seconds(now: TimeLike) -> float:
    return time.time() if now is None else float(epoch(now))


def check_k(k: int) -> int:
    k = int(k)
    if k < 0 or k > MAX_K:
        raise RecsysError(f"k must be between 0 and {MAX_K}, got {k}")
    return k


def names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` as a tuple of names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def make_filters(
    category: str | Sequence[str] | None = None,
    language: str | Sequence[str] | None = None,
    published_after: TimeLike = None,
    published_before: TimeLike = None,
    exclude: Iterable[str] = (),
    max_age_days: float | None = None,
    now_s: float = 0.0,
) -> Filters:
    """Filters from a caller's arguments; ``max_age_days`` narrows ``published_after`` to a window before now."""
    after = epoch(published_after)
    if max_age_days is not None:
        window_start = now_s - float(max_age_days) * DAY
        after = window_start if after is None else max(after, window_start)
    return Filters(
        categories=names(category),
        languages=names(language),
        published_after=after,
        published_before=epoch(published_before),
        exclude_ids=tuple(exclude),
    )


def iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def banned_rows(view: VersionReader, filters: Filters, also: Iterable[int] = ()) -> set[int]:
    """Rows a list must not show: the excluded ids' rows plus ``also`` (the source, the reads)."""
    return set(also) | set(view.store.rows_of(filters.exclude_ids).values())


def unbanned(rows: np.ndarray, banned: set[int]) -> np.ndarray:
    """True for each of ``rows`` not in ``banned``: one set look-up per row (``np.isin`` sorts both sides, about 5x
    slower at a list's sizes)."""
    if not banned:
        return np.ones(rows.size, dtype=bool)
    return ~np.fromiter(map(banned.__contains__, rows.tolist()), dtype=bool, count=rows.size)


def candidates(
    view: VersionReader,
    query: np.ndarray,
    filters: Filters,
    banned: set[int],
    want: int,
    source_row: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``want`` allowed rows nearest to the query, with their cosine, best first (``nearest_each`` of one).
    ``source_row``: the query is that indexed article's own vector, whose search the version remembers."""
    return nearest_each(view, np.atleast_2d(query), filters, banned, want, source_row)[0]


def nearest_each(
    view: VersionReader,
    queries: np.ndarray,
    filters: Filters,
    banned: set[int],
    want: int,
    source_row: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: up to ``want`` allowed rows nearest to it, with their cosine, best first.

    All queries go to the index in one call (an exact segment is one pass over its vectors however many
    interests a reader has). A filter that leaves few rows is searched exactly over those rows; otherwise the
    ANN is asked for more until enough pass the filters for every query (or the whole archive was asked).
    With ``source_row`` (one query: that row's vector) the ANN's answers come from the version's memory of
    that article's searches (``SegmentedANN.search_row``): the same answer, asked once per version."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if queries.shape[0] == 0:
        return []
    if filters.restricts_rows:
        mask = view.allowed(filters)
        if banned:
            mask[list(banned)] = False
        allowed = np.flatnonzero(mask)
        if allowed.size <= SUBSET_EXACT_MAX or allowed.size <= want:
            scores, rows = exact_search(view.vectors, queries, want, allowed)
            return [(r[r >= 0], s[r >= 0]) for s, r in zip(scores, rows, strict=True)]
    fetch = want + len(banned)
    while True:
        if source_row is not None and queries.shape[0] == 1:
            found_scores, found_rows = view.ann.search_row(source_row, queries, fetch)
            scores, rows = found_scores[None, :], found_rows[None, :]
        else:
            scores, rows = view.ann.search(queries, fetch)
        out = []
        for q_scores, q_rows in zip(scores, rows, strict=True):
            valid = q_rows >= 0
            q_rows, q_scores = q_rows[valid], q_scores[valid]
            ok = view.allowed(filters, q_rows) if q_rows.size else np.zeros(0, dtype=bool)
            if banned:
                ok &= unbanned(q_rows, banned)
            out.append((q_rows[ok][:want], q_scores[ok][:want], int(ok.sum())))
        if fetch >= view.n_live or all(passed >= want for _, _, passed in out):
            return [(r, s) for r, s, _ in out]
        fetch = min(view.n_live, fetch * 4)


def popularity_of_rows(context: ListContext, view: VersionReader, rows: np.ndarray, now_s: float) -> np.ndarray:
    """squash(popularity) per candidate row, 0 where nothing is known."""
    popularity = context.activity.current()
    if not len(popularity) or rows.size == 0:
        return np.zeros(rows.shape[0])
    listed = rows.tolist()
    ids = view.store.ids_of(listed)
    raw = popularity.scores([ids.get(r, "") for r in listed], now_s)
    return squash(raw, context.settings.popularity.squash_scale)


def newest_rows(view: VersionReader, k: int, filters: Filters, banned: set[int], now_s: float) -> np.ndarray:
    """The k newest allowed rows: dated ones by publication time (not future ones; ties: lower row first), then,
    if the archive has too few dates, undated ones in the order they were indexed (latest first). Walks the
    version's publication order (``VersionReader.by_publication``) until k pass: a request costs what it
    shows, not a pass over the archive."""
    dated, minus_published, undated = view.by_publication()
    start = int(np.searchsorted(minus_published, -float(now_s), side="left"))  # the first not in the future
    rows = _first_allowed(view, dated[start:], k, filters, banned)
    if rows.size < k:
        rows = np.concatenate([rows, _first_allowed(view, undated, k - rows.size, filters, banned)])
    return rows.astype(np.int64)


def _first_allowed(view: VersionReader, ordered: np.ndarray, k: int, filters: Filters, banned: set[int]) -> np.ndarray:
    """The first ``k`` rows of ``ordered`` that pass the filters and are not banned, in chunks that double."""
    found: list[np.ndarray] = []
    have, start, step = 0, 0, max(64, 4 * k)
    while have < k and start < ordered.size:
        chunk = ordered[start : start + step]
        keep = view.allowed(filters, chunk) & unbanned(chunk, banned)
        found.append(chunk[keep][: k - have])
        have += found[-1].size
        start, step = start + step, 2 * step
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def newest_hits(view: VersionReader, k: int, filters: Filters, banned: set[int], now_s: float) -> list[Hit]:
    """The k newest allowed articles as hits (reason: how new)."""
    rows = newest_rows(view, k, filters, banned, now_s)
    published = np.asarray(view.rows["published"])
    articles = view.store.get_rows(rows, with_text=False)
    # the score is the article's recency, 0.5 ** (age / NEW_DAYS) (0 undated): the order it is listed in
    recency = freshness(published[rows], now_s, NEW_DAYS) if rows.size else np.zeros(0)
    return [
        to_hit(articles[int(r)], float(f), newness_reason(int(published[r]), now_s), None)
        for r, f in zip(rows.tolist(), recency.tolist(), strict=True)
    ]


def newness_reason(published: int, now_s: float) -> str:
    """E.g. "new: published 3 hours ago". An article older than ``NEW_DAYS`` or undated (a bulk import of the
    archive) is never called new: "latest in the archive: published 1531 days ago" / "latest in the archive
    (undated)"."""
    if published == NO_TIME:
        return "latest in the archive (undated)"
    age = (now_s - float(published)) / DAY
    if age > NEW_DAYS:
        return f"latest in the archive: published {days_phrase(age)} ago"
    return f"new: published {days_phrase(age)} ago"


def to_hit(
    article: StoredArticle, score: float, reason: str, similarity: float | None, extra: dict[str, Any] | None = None
) -> Hit:
    """A stored article as a list entry; the score is finite by construction, never NaN in a list."""
    metadata: dict[str, Any] = {**article.extra, **(extra or {})}
    for name in ("subcategory", "language", "canonical_url"):
        value = getattr(article, name)
        if value:
            metadata[name] = value
    if article.tags:
        metadata["tags"] = list(article.tags)  # a copy: the stored article may be remembered by the version
    score = float(score) if math.isfinite(score) else 0.0
    return Hit(
        id=article.id,
        title=article.title,
        url=article.url,
        published_at=article.published_at,
        score=round(score, 6),
        reason=reason,
        category=article.category,
        similarity=None if similarity is None else round(similarity, 6),
        metadata=metadata,
    )


def repeats_story(
    view: VersionReader, rows: np.ndarray, told: np.ndarray, threshold: float, vectors: np.ndarray | None = None
) -> np.ndarray:
    """Per row of ``rows``: does it tell a story one of ``told`` tells (the same canonical URL, or a cosine of
    at least ``threshold``: a syndicated copy, a rewrite)? ``vectors``: the rows' float32 vectors, if the caller
    has them already."""
    rows, told = np.asarray(rows, dtype=np.int64), np.asarray(told, dtype=np.int64)
    if not rows.size or not told.size:
        return np.zeros(rows.size, dtype=bool)
    stories = np.asarray(view.rows["story"])
    keys = set(stories[told].tolist()) - {0}
    same = np.isin(stories[rows], list(keys)) if keys else np.zeros(rows.size, dtype=bool)
    if vectors is None:
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
    # few told against many rows: (told @ rows.T) is one small GEMM; (rows @ told.T) was 10x slower in OpenBLAS
    close = (np.asarray(view.vectors[told], dtype=np.float32) @ vectors.T).max(axis=0) >= threshold
    return same | close


def drop_repeated_stories(
    view: VersionReader, hits: Sequence[Hit], shown: Sequence[str], threshold: float, k: int
) -> list[Hit]:
    """The first ``k`` of ``hits`` that tell no story already on the page: none that ``repeats_story`` of an
    article shown so far (``shown``: the earlier boxes), and no canonical URL twice within the box (a box's own
    order, e.g. Ranking's two articles about one subject, is otherwise its own)."""
    rows_by_id = view.store.rows_of([*shown, *(h.id for h in hits)])
    told = [rows_by_id[a] for a in shown if a in rows_by_id]
    rows = np.asarray([rows_by_id.get(h.id, -1) for h in hits], dtype=np.int64)
    indexed = rows >= 0
    repeats = np.zeros(len(hits), dtype=bool)
    repeats[indexed] = repeats_story(view, rows[indexed], np.asarray(told, dtype=np.int64), threshold)
    stories = np.asarray(view.rows["story"])
    kept_keys: set[int] = set()
    out: list[Hit] = []
    for hit, row, repeated in zip(hits, rows.tolist(), repeats.tolist(), strict=True):
        if len(out) == k:
            break
        key = int(stories[row]) if row >= 0 else 0
        if repeated or (key and key in kept_keys):
            continue
        kept_keys.add(key)
        out.append(hit)
    return out


def empty_reason(view: VersionReader, filters: Filters, now_s: float, box: str) -> str:
    """Why a list came back empty: the first filter that alone leaves no article, else what else is missing."""
    rows = view.rows
    live = np.asarray(rows["live"])
    total = int(live.sum())
    if total == 0:
        return "the index holds no live article (add some with `recsys index add ARTICLES`)"
    published = np.asarray(rows["published"])
    undated = int((live & (published == NO_TIME)).sum())
    dated = published[live & (published != NO_TIME)]
    newest = iso(float(dated.max())) if dated.size else None
    checks = [
        (f"category {', '.join(filters.categories)}", Filters(categories=filters.categories)),
        (f"language {', '.join(filters.languages)}", Filters(languages=filters.languages)),
        (
            f"published after {iso(filters.published_after)} (max_age_days / published_after)",
            Filters(published_after=filters.published_after),
        ),
        (f"published before {iso(filters.published_before)}", Filters(published_before=filters.published_before)),
    ]
    for name, alone in checks:
        if alone.restricts_rows and not view.allowed(alone).any():
            dates = f"; the newest article was published {newest[:10]}" if newest else "; no article has a date"
            if "published" in name and undated:
                dates += f", {undated} are undated (an undated article never passes a date window)"
            return f"{name} leaves 0 of {total} articles{dates}"
    passing = int(view.allowed(filters).sum())
    if passing == 0:
        return f"the filters together leave 0 of {total} articles"
    what = {
        "related": "none is similar enough ([related] min_similarity) or all are excluded",
        "ranking": "all are excluded",
        "recommendation": "all are read, excluded or not similar enough",
    }.get(box, "all are excluded")
    return f"{passing} of {total} articles pass the filters, but {what}"
