"""The query functions a site calls in-process: ``Recommender.open(dir).related(id)``.

Opening an index maps its arrays and opens SQLite; it reads no article text and imports neither
torch nor sentence-transformers (only ``related_to_text`` loads a model, on first use). Each call
checks the index's ``CURRENT`` pointer (one ``stat``) and moves to a newly published version
before answering, so a takedown or an ``index add`` is visible from the next query on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.ann import ANNIndex, exact_search
from recsys.config import DEFAULT_INDEX_DIR, EmbedderConfig, Settings, load_settings
from recsys.embedder import Embedder, article_text, make_embedder
from recsys.io import parse_timestamp
from recsys.layout import IndexLayout, read_manifest
from recsys.ranking import (
    DAY,
    dedupe_stories,
    expand_query,
    freshness,
    mmr,
    related_reason,
    related_scores,
    shared_terms,
)
from recsys.store import DB_FILE, NO_TIME, ROWS_FILE, VOCAB_FILE, ArticleStore, StoredArticle, story_key
from recsys.types import Hit, IndexStateError, RecsysError, UnknownArticle

VECTORS_FILE = "vectors.npy"
ANN_DIR = "ann"
SUBSET_EXACT_MAX = 20_000  # a filter leaving fewer rows than this is searched exactly over those rows
TimeLike = datetime | str | float | int | None


@dataclass(frozen=True)
class Filters:
    """Restrictions on which articles may appear in a list."""

    categories: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    published_after: float | None = None  # epoch seconds; undated articles fail a window
    published_before: float | None = None
    exclude_ids: tuple[str, ...] = ()

    @property
    def restricts_rows(self) -> bool:
        return bool(
            self.categories or self.languages or self.published_after is not None or self.published_before is not None
        )


def _epoch(value: TimeLike) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return parse_timestamp(value.isoformat()).timestamp()
    return parse_timestamp(value).timestamp()


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


class IndexView:
    """One published version, opened read-only: manifest, arrays, SQLite, ANN."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        self.vectors = np.load(path / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        self.rows = np.load(path / ROWS_FILE, mmap_mode="r", allow_pickle=False)
        self.vocab: dict[str, list[str]] = json.loads((path / VOCAB_FILE).read_text())
        self.store = ArticleStore(path / DB_FILE)
        self.ann = ANNIndex.load(path / ANN_DIR)
        dimension = int(self.manifest["model"]["dimension"])
        counts = self.manifest["counts"]
        if self.vectors.ndim != 2 or self.vectors.shape[1] != dimension or self.vectors.shape[0] != counts["rows"]:
            raise IndexStateError(
                f"{path}: vectors.npy is {self.vectors.shape} but the manifest says {counts['rows']} x {dimension}; "
                "rebuild with `recsys index build`"
            )
        if self.rows.shape[0] != counts["rows"] or int(self.rows["live"].sum()) != counts["articles"]:
            raise IndexStateError(f"{path}: rows.npy does not match the manifest; rebuild with `recsys index build`")
        self.live = np.asarray(self.rows["live"])
        self.n_live = int(counts["articles"])

    @property
    def version(self) -> str:
        return self.path.name

    def codes(self, column: str, names: Iterable[str]) -> list[int]:
        """Codes of the given names in rows.npy's column (languages match case-insensitively)."""
        vocab = {n: i for i, n in enumerate(self.vocab.get(column, []))}
        wanted = [n.lower() for n in names] if column == "language" else list(names)
        return [vocab[n] for n in wanted if n in vocab]

    def allowed(self, filters: Filters, positions: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of rows that pass the filters (over ``positions`` if given, else all rows)."""
        rows = self.rows if positions is None else self.rows[positions]
        mask = np.asarray(rows["live"]).copy()
        if filters.categories:
            mask &= np.isin(rows["category"], self.codes("category", filters.categories))
        if filters.languages:
            mask &= np.isin(rows["language"], self.codes("language", filters.languages))
        published = rows["published"]
        if filters.published_after is not None:
            mask &= (published != NO_TIME) & (published >= filters.published_after)
        if filters.published_before is not None:
            mask &= (published != NO_TIME) & (published <= filters.published_before)
        return mask

    def close(self) -> None:
        self.store.close()


class Recommender:
    """Related lists from a built index. Thread-safe; cheap to open."""

    def __init__(self, root: str | Path, settings: Settings | None = None, embedder: Embedder | None = None) -> None:
        self.layout = IndexLayout(root)
        self.settings = settings if settings is not None else load_settings()
        self._lock = threading.Lock()
        self._stamp = self.layout.pointer_stamp()
        self._view = IndexView(self.layout.current())
        self._embedder = embedder

    @classmethod
    def open(
        cls, root: str | Path = DEFAULT_INDEX_DIR, settings: Settings | None = None, embedder: Embedder | None = None
    ) -> Recommender:
        """Open the live version of an index directory (fails with a how-to-fix message).

        ``embedder`` is only for ``related_to_text``; by default the index's own model is loaded
        from local disk on first use.
        """
        return cls(root, settings, embedder)

    # -- version tracking ----------------------------------------------------------------------

    @property
    def view(self) -> IndexView:
        """The current version, switching to a newly published one if the pointer moved."""
        stamp = self.layout.pointer_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    fresh = self.layout.current()
                    if fresh.name != self._view.version:
                        self._view = IndexView(fresh)  # old view stays valid for calls already using it
                    self._stamp = stamp
        return self._view

    @property
    def version(self) -> str:
        return self.view.version

    def __len__(self) -> int:
        return self.view.n_live

    def info(self) -> dict[str, Any]:
        view = self.view
        size = sum(p.stat().st_size for p in view.path.rglob("*") if p.is_file())
        return {
            "index": str(self.layout.root),
            "version": view.version,
            "model": view.manifest["model"],
            "articles": view.n_live,
            "rows": view.manifest["counts"]["rows"],
            "ann": view.manifest["ann"],
            "created_at": view.manifest["created_at"],
            "build_seconds": view.manifest["build_seconds"],
            "size_bytes": size,
            "library_versions": view.manifest["library_versions"],
        }

    def article(self, article_id: str) -> StoredArticle:
        found = self.view.store.get(article_id)
        if found is None:
            raise UnknownArticle(article_id)
        return found

    # -- Related -------------------------------------------------------------------------------

    def related(
        self,
        article_id: str,
        k: int | None = None,
        *,
        category: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        published_after: TimeLike = None,
        published_before: TimeLike = None,
        exclude: Iterable[str] = (),
        max_age_days: float | None = None,
        now: TimeLike = None,
    ) -> list[Hit]:
        """Articles about the same story or topic as an indexed one (see recsys/ranking.py)."""
        view = self.view
        row = view.store.row_of(article_id)
        if row is None:
            raise UnknownArticle(article_id)
        source = view.store.get_rows([row])[row]
        query = np.asarray(view.vectors[row], dtype=np.float32)
        return self._related(
            view,
            query,
            source,
            k,
            category,
            language,
            published_after,
            published_before,
            exclude,
            max_age_days,
            now,
            self_rows=(row,),
        )

    def related_to_text(
        self,
        title: str,
        body: str = "",
        k: int | None = None,
        *,
        abstract: str = "",
        published_at: TimeLike = None,
        **filters: Any,
    ) -> list[Hit]:
        """Related for a draft that is not indexed: embeds it with the index's own model (loads it once)."""
        view = self.view
        query = self._embed_text(view, article_text(title, abstract, body, self.settings.embedder.max_chars))
        published = None if published_at is None else _iso(_epoch(published_at))
        draft = StoredArticle(-1, "", title, body, abstract, "", "", published, "", "", "", [], {}, "")
        return self._related(view, query, draft, k, self_rows=(), **filters)

    def _embed_text(self, view: IndexView, text: str) -> np.ndarray:
        model = view.manifest["model"]
        if self._embedder is None:
            config = EmbedderConfig(**{**self.settings.embedder.__dict__, "model": model["name"]})
            self._embedder = make_embedder(config)
        if self._embedder.name != model["name"]:
            raise IndexStateError(
                f"the index was built with model {model['name']!r}, not {self._embedder.name!r}; "
                "vectors of different models are not comparable - use the index's model or rebuild the index"
            )
        vector = self._embedder.encode([text])[0]
        if vector.shape[0] != int(model["dimension"]):
            raise IndexStateError(
                f"model {model['name']} gives {vector.shape[0]}-d vectors but the index holds "
                f"{model['dimension']}-d ones; rebuild the index with this model"
            )
        return vector

    def _related(
        self,
        view: IndexView,
        query: np.ndarray,
        source: StoredArticle,
        k: int | None,
        category: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        published_after: TimeLike = None,
        published_before: TimeLike = None,
        exclude: Iterable[str] = (),
        max_age_days: float | None = None,
        now: TimeLike = None,
        self_rows: Sequence[int] = (),
    ) -> list[Hit]:
        config = self.settings.related
        k = config.k if k is None else int(k)
        if k < 0:
            raise RecsysError(f"k must be >= 0, got {k}")
        now_s = time.time() if now is None else float(_epoch(now))
        max_age = config.max_age_days if max_age_days is None else max_age_days
        after = _epoch(published_after)
        if max_age is not None:
            window_start = now_s - float(max_age) * DAY
            after = window_start if after is None else max(after, window_start)
        filters = Filters(
            categories=_names(category),
            languages=_names(language),
            published_after=after,
            published_before=_epoch(published_before),
            exclude_ids=tuple(exclude),
        )
        banned = set(self_rows) | set(view.store.rows_of(filters.exclude_ids).values())
        want = max(config.candidates, k * config.overfetch)
        rows, sims = self._candidates(view, query, filters, banned, want)
        keep = sims >= config.min_similarity
        rows, sims = rows[keep], sims[keep]

        # Copies of the story being read: near-identical vectors or the same canonical URL.
        source_story = story_key(source.canonical_url)
        stories = np.asarray(view.rows["story"][rows]) if rows.size else np.empty(0, dtype=np.int64)
        copy = sims >= config.duplicate_similarity
        if source_story:
            copy |= stories == source_story
        rows, sims, stories = rows[~copy], sims[~copy], stories[~copy]
        if rows.size == 0 or k == 0:
            return []

        published = np.asarray(view.rows["published"][rows])
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
        topic = expand_query(query, vectors[: config.neighbourhood], config.neighbourhood_weight) @ vectors.T
        scores = related_scores(topic, freshness(published, now_s, config.half_life_days), config)
        order = np.argsort(-scores, kind="stable")
        leaders = dedupe_stories(order, vectors, stories, config.duplicate_similarity)
        picked = leaders[mmr(scores[leaders], vectors[leaders], k, config.mmr_lambda)]

        articles = view.store.get_rows(rows[picked])
        source_time = _epoch(source.published_at) if source.published_at else None
        hits = []
        for pos in picked:
            article = articles[int(rows[pos])]
            gap = None
            if source_time is not None and published[pos] != NO_TIME:
                gap = (float(published[pos]) - source_time) / DAY
            terms = shared_terms(source.title, source.tags, article.title, article.tags)
            same_category = article.category if article.category == source.category else ""
            reason = related_reason(float(sims[pos]), gap, terms, same_category, config)
            hits.append(_hit(article, float(scores[pos]), reason, float(sims[pos])))
        return hits

    def _candidates(
        self, view: IndexView, query: np.ndarray, filters: Filters, banned: set[int], want: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``want`` allowed rows nearest to the query, with their cosine, best first."""
        if filters.restricts_rows:
            mask = view.allowed(filters)
            if banned:
                mask[list(banned)] = False
            allowed = np.flatnonzero(mask)
            if allowed.size <= SUBSET_EXACT_MAX or allowed.size <= want:
                scores, rows = exact_search(view.vectors, query, want, allowed)
                valid = rows[0] >= 0
                return rows[0][valid], scores[0][valid]
        fetch = want + len(banned)
        while True:
            scores, rows = view.ann.search(query, fetch)
            rows, scores = rows[0], scores[0]
            valid = rows >= 0
            rows, scores = rows[valid], scores[valid]
            ok = view.allowed(filters, rows) if rows.size else np.zeros(0, dtype=bool)
            if banned:
                ok &= ~np.isin(rows, list(banned))
            if ok.sum() >= want or fetch >= view.n_live:
                return rows[ok][:want], scores[ok][:want]
            fetch = min(view.n_live, fetch * 4)

    def close(self) -> None:
        self._view.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _hit(article: StoredArticle, score: float, reason: str, similarity: float | None) -> Hit:
    metadata: dict[str, Any] = dict(article.extra)
    for name in ("subcategory", "language", "canonical_url"):
        value = getattr(article, name)
        if value:
            metadata[name] = value
    if article.tags:
        metadata["tags"] = article.tags
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
