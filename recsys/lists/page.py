"""One arm's page of three boxes (``Recommender.page`` serves it): Related first, held above the site's similarity
floor, then Recommendation, then Ranking, each later box without the articles and stories the earlier ones show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from recsys.archive.version import VersionReader
from recsys.config import Settings
from recsys.learning.trained import StoredModels
from recsys.lists.base import MAX_K, drop_repeated_stories, make_filters, newest_hits
from recsys.types import ConfigError, Filters, Hit, Page

if TYPE_CHECKING:
    from recsys.feedback.experiment import Boxes

PAGE_SPARE = 5  # extra articles each later box of a page asks for, to replace repeats of a story


class PageSizes(NamedTuple):
    related: int
    ranking: int
    recommendation: int


def related_floor(settings: Settings, models: StoredModels, value: float | str | None = None) -> float | None:
    """The cosine below which a Related hit is not shown: ``value`` (a number, "auto" for the floor calibrated on
    this archive at build/optimize, "off"), by default ``[related] floor``. None: no floor."""
    value = settings.related.floor if value is None else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value == "off":
        return None
    if value == "auto":
        calibration = models.calibration()
        return None if calibration is None else calibration.floor
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f'a Related floor is a cosine, "auto" or "off", not {value!r}') from None


def above_floor(hits: Sequence[Hit], floor: float | None) -> list[Hit]:
    """The hits at least ``floor`` similar to the article being read (all of them without a floor)."""
    if floor is None:
        return list(hits)
    return [h for h in hits if h.similarity is not None and h.similarity >= floor]


def compose_page(
    lists: Boxes,
    view: VersionReader,
    article_id: str,
    reads: list[str],
    sizes: PageSizes,
    now_s: float,
    kept_out: dict[str, Filters] | None = None,
    reader: str = "",
) -> Page:
    """One arm's page (see ``Recommender.page``), not yet served. Related slots left empty by the floor go to
    Recommendation (the page keeps its size; the box that has something to say fills it). ``kept_out``: per box,
    the ids and sections the editorial blocks keep out (``Filters``)."""
    out = kept_out or {}
    none = Filters()

    def unshown(box: str, shown: list[str]) -> Filters:
        return out.get(box, none).excluding(tuple(shown))

    settings = lists.related.context.settings
    threshold = settings.related.duplicate_similarity
    recent = make_filters(max_age_days=settings.related.max_age_days, now_s=now_s)
    recent = recent.excluding(out.get("related", none).exclude_ids, out.get("related", none).blocked_categories)
    related = lists.related.for_article(view, article_id, sizes.related, recent, now_s)
    related = above_floor(related, related_floor(settings, lists.models))
    k_rank = sizes.ranking
    k_rec = sizes.recommendation + max(0, sizes.related - len(related))
    shown = [article_id, *(h.id for h in related)]
    spare = PAGE_SPARE  # each later box asks for a few more, to drop what repeats a story already shown
    if not view.store.rows_of(reads) and lists.models.ranker() is None:
        # A first visit without a trained ranker: Ranking keeps the popular articles, and Recommendation
        # shows what is new rather than repeating Ranking's fallback (with a ranker, the article being
        # read is context enough: its co-reads, what is hot around it).
        ranked = lists.ranking.top(view, min(k_rank + spare, MAX_K), unshown("ranking", shown), None, now_s)
        ranked = drop_repeated_stories(view, ranked, shown, threshold, k_rank)
        shown += [h.id for h in ranked]
        banned = set(view.store.rows_of(shown).values())
        fresh = unshown("recommendation", [])
        newest = newest_hits(view, min(k_rec + spare, MAX_K), fresh, banned, now_s) if k_rec else []
        recommended = drop_repeated_stories(view, newest, shown, threshold, k_rec)
        return Page(article_id, related, ranked, recommended)
    # The article being read is the reader's newest read: its co-reads and its subject are context.
    reads = [article_id, *(r for r in reads if r != article_id)]
    found = lists.recommendation.for_reader(
        view, reads, min(k_rec + spare, MAX_K), unshown("recommendation", shown), now_s, reader
    )
    recommended = drop_repeated_stories(view, found, shown, threshold, k_rec)
    shown += [h.id for h in recommended]
    ranked = lists.ranking.top(view, min(k_rank + spare, MAX_K), unshown("ranking", shown), None, now_s)
    ranked = drop_repeated_stories(view, ranked, shown, threshold, k_rank)
    return Page(article_id, related, ranked, recommended)
