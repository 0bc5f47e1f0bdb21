"""Related: articles about the same story or topic as the one being read (the formula is in recsys/lists/scoring.py).

Steps over one version: nearest candidates by the article's vector (plus its "readers also read"
neighbours when ``recsys train`` stored a co-read table), copies of the story dropped, topic expansion
from the nearest neighbourhood, the score (dense + lexical + freshness [+ popularity] [+ co-reads]),
one article per story, then MMR for variety, each with a reason a reader can check.
"""

from __future__ import annotations

import numpy as np

from recsys.archive.store import NO_TIME, StoredArticle, story_key
from recsys.archive.version import VersionReader
from recsys.lists.base import ListContext, banned_rows, candidates, check_k, epoch, popularity_of_rows, to_hit
from recsys.lists.scoring import (
    DAY,
    dedupe_stories,
    expand_query,
    freshness,
    mmr,
    related_reason,
    related_scores,
    terms_shared_with,
)
from recsys.types import Filters, Hit, UnknownArticle

Lexical = tuple[np.ndarray, np.ndarray]


class RelatedList:
    """The Related pipeline; one per service, stateless between calls."""

    def __init__(self, context: ListContext) -> None:
        self.context = context

    def for_article(
        self, view: VersionReader, article_id: str, k: int | None, filters: Filters, now_s: float
    ) -> list[Hit]:
        """Related to an indexed article (never the article itself)."""
        row = view.store.row_of(article_id)
        if row is None:
            raise UnknownArticle(article_id)
        query = np.asarray(view.vectors[row], dtype=np.float32)
        source_lexical = None
        if view.lexical is not None:
            source_lexical = (np.asarray(view.lexical[0][row]), np.asarray(view.lexical[1][row]))
        return self.for_vector(view, query, row, k, filters, now_s, source_lexical, article_id)

    def for_vector(
        self,
        view: VersionReader,
        query: np.ndarray,
        source: StoredArticle | int,
        k: int | None,
        filters: Filters,
        now_s: float,
        source_lexical: Lexical | None = None,
        source_id: str = "",
    ) -> list[Hit]:
        """Related to a source given by its vector: an indexed article (``source`` is its row, and its id is
        ``source_id``; its stored fields are read with the hits, in one query) or a draft embedded by the caller
        (``source`` is the article itself)."""
        config = self.context.settings.related
        k = check_k(config.k if k is None else k)
        source_row = source if isinstance(source, int) else None
        if isinstance(source, StoredArticle):
            source_id = source.id
        banned = banned_rows(view, filters, () if source_row is None else (source_row,))
        want = max(config.candidates, k * config.overfetch)
        rows, sims = candidates(view, query, filters, banned, want, source_row)
        keep = sims >= config.min_similarity
        rows, sims = rows[keep], sims[keep]
        rows, sims, coread = self._with_coreads(view, source_id, query, rows, sims, filters, banned)

        # Copies of the story being read: near-identical vectors or the same canonical URL.
        if source_row is not None:
            source_story = int(view.rows["story"][source_row])
        else:
            source_story = story_key(source.canonical_url)
        stories = np.asarray(view.rows["story"][rows]) if rows.size else np.empty(0, dtype=np.int64)
        copy = sims >= config.duplicate_similarity
        if source_story:
            copy |= stories == source_story
        rows, sims, stories, coread = rows[~copy], sims[~copy], stories[~copy], coread[~copy]
        if rows.size == 0 or k == 0:
            return []

        published = np.asarray(view.rows["published"][rows])
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
        lexical_match = view.lexical_similarity(source_lexical, rows)
        # pseudo-relevance feedback from the nearest by dense and lexical evidence together
        nearest = np.argsort(-(sims + config.lexical_weight * lexical_match), kind="stable")[: config.neighbourhood]
        topic = expand_query(query, vectors[nearest], config.neighbourhood_weight) @ vectors.T
        scores = related_scores(topic, freshness(published, now_s, config.half_life_days), config, lexical_match)
        if config.popularity_weight:
            scores = scores + config.popularity_weight * popularity_of_rows(self.context, view, rows, now_s)
        if config.coread_weight:
            scores = scores + config.coread_weight * coread
        order = np.argsort(-scores, kind="stable")
        pairwise = vectors @ vectors.T  # once, for story dedupe and MMR (the costliest product of the list)
        leaders = dedupe_stories(order, pairwise, stories, config.duplicate_similarity)
        picked = leaders[mmr(scores[leaders], pairwise[np.ix_(leaders, leaders)], k, config.mmr_lambda)]

        wanted = [int(r) for r in rows[picked]]
        articles = view.store.get_rows(wanted if source_row is None else [*wanted, source_row], with_text=False)
        if source_row is not None:
            source = articles[source_row]
        source_time = epoch(source.published_at) if source.published_at else None
        shared_terms = terms_shared_with(source.title, source.tags, view.is_common)
        hits = []
        for pos in picked:
            article = articles[int(rows[pos])]
            gap = None
            if source_time is not None and published[pos] != NO_TIME:
                gap = (float(published[pos]) - source_time) / DAY
            terms = shared_terms(article.title, article.tags)
            same_category = article.category if article.category == source.category else ""
            reason = related_reason(float(sims[pos]), gap, terms, same_category, config, bool(coread[pos] > 0))
            hits.append(to_hit(article, float(scores[pos]), reason, float(sims[pos])))
        return hits

    def _with_coreads(
        self,
        view: VersionReader,
        source_id: str,
        query: np.ndarray,
        rows: np.ndarray,
        sims: np.ndarray,
        filters: Filters,
        banned: set[int],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adds the source's "readers also read" neighbours (the co-read table ``recsys train`` stores) to the
        candidates, and returns each candidate's co-read association (0 for most; always 0 without a table)."""
        table = self.context.models.coreads() if source_id else None
        neighbours = table.of(source_id) if table is not None else []
        if not neighbours:
            return rows, sims, np.zeros(rows.shape[0])
        found = view.store.rows_of([other for other, _ in neighbours])
        strength = {found[other]: value for other, value in neighbours if other in found}
        present = set(rows.tolist()) | banned
        extra = np.array([r for r in strength if r not in present], dtype=np.int64)
        if extra.size:
            extra = extra[view.allowed(filters, extra)]
            rows = np.concatenate([rows, extra])
            sims = np.concatenate([sims, np.asarray(view.vectors[extra], dtype=np.float32) @ query])
        return rows, sims, np.array([strength.get(int(r), 0.0) for r in rows])
