"""The query functions a site calls in-process: Related, Ranking, Recommendation and a whole page.

Opening an index maps its arrays and opens SQLite; it reads no article text and imports neither
torch nor sentence-transformers (only ``related_to_text`` loads a model, on first use). Each call
checks the index's ``CURRENT`` pointer (one ``stat``) and moves to a newly published version
before answering, so a takedown or an ``index add`` is visible from the next query on.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys import lexical
from recsys import recommendation as learned
from recsys.activity import EventBuffer, PopularityTracker, WindowCounts
from recsys.ann import ANNIndex, exact_search, top_k
from recsys.config import DEFAULT_INDEX_DIR, EmbedderConfig, RecommendConfig, Settings, load_settings
from recsys.coreads import COREADS_FILE, CoReadTable
from recsys.embedder import Embedder, article_text, make_embedder
from recsys.events import Event, EventStore, event_from_record
from recsys.features import ReaderContext, content_columns
from recsys.io import parse_timestamp
from recsys.layout import IndexLayout, read_manifest
from recsys.popularity import Popularity, PopularityScore, squash
from recsys.profile import Interest, build_interests
from recsys.ranker import RANKER_FILE, LearnedRanker
from recsys.ranking import (
    DAY,
    days_phrase,
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

logger = logging.getLogger(__name__)
VECTORS_FILE = "vectors.npy"
ANN_DIR = "ann"
MAX_K = 1000
COMMON_DOC_SHARE = 0.1  # a word in more than 10% of the articles' texts is generic (people, back, work, came)
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
    try:
        if isinstance(value, datetime):
            return parse_timestamp(value.isoformat()).timestamp()
        return parse_timestamp(value).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise RecsysError(f"bad time {value!r}: {exc}") from None


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


class StoredModels:
    """What ``recsys train`` stored in the index root (ranker.json, coreads.json), loaded on first use and
    reloaded when the file changes (checked at most every ``refresh_seconds``)."""

    def __init__(self, root: Path, refresh_seconds: float) -> None:
        self.root = root
        self.refresh = refresh_seconds
        self._loaded: dict[str, tuple[tuple[int, int] | None, Any]] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()

    def _get(self, name: str, load: Any) -> Any:
        now = time.monotonic()
        if name in self._loaded and now - self._checked.get(name, -1e18) < self.refresh:
            return self._loaded[name][1]
        with self._lock:
            try:
                st = (self.root / name).stat()
                stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
            except FileNotFoundError:
                stamp = None
            if name not in self._loaded or self._loaded[name][0] != stamp:
                try:
                    value = load(self.root) if stamp is not None else None
                except RecsysError as exc:
                    logger.warning("ignoring %s: %s", name, exc)
                    value = None
                self._loaded[name] = (stamp, value)
            self._checked[name] = now
            return self._loaded[name][1]

    def ranker(self) -> LearnedRanker | None:
        return self._get(RANKER_FILE, LearnedRanker.load)

    def coreads(self) -> CoReadTable | None:
        return self._get(COREADS_FILE, CoReadTable.load)


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
        self._df: np.ndarray | None = None
        # The lexical arrays (recsys/lexical.py); absent in versions written before them.
        self.lexical: tuple[np.ndarray, np.ndarray] | None = None
        if (path / lexical.TERMS_FILE).is_file():
            self.lexical = (
                np.load(path / lexical.TERMS_FILE, mmap_mode="r", allow_pickle=False),
                np.load(path / lexical.WEIGHTS_FILE, mmap_mode="r", allow_pickle=False),
            )

    def _frequencies(self) -> np.ndarray:
        if self._df is None:
            self._df = np.load(self.path / lexical.DF_FILE, mmap_mode="r", allow_pickle=False)
        return self._df

    def lexical_of_text(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The lexical terms of a text that is not indexed (a draft), weighed by this version's frequencies."""
        if self.lexical is None:
            return None
        documents = int(self.manifest["lexical"]["documents"])
        ids, weights = lexical.weigh(lexical.term_counts([text]), self._frequencies(), documents)
        return ids[0], weights[0]

    def lexical_similarity(self, source: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> np.ndarray:
        """Lexical cosine of the source to each row (zeros when the version has no lexical arrays)."""
        if self.lexical is None or source is None or rows.size == 0:
            return np.zeros(rows.shape[0])
        ids, weights = self.lexical
        return lexical.similarity(source[0], source[1], np.asarray(ids[rows]), np.asarray(weights[rows]))

    def is_common(self, word: str) -> bool:
        """True for a (lower-case) word in more than COMMON_DOC_SHARE of this archive's articles (the lexical
        document frequencies): too common to explain why two articles go together. A version written before
        the lexical arrays judges no word common (the reasons' stop list still applies) until its next job."""
        if self.lexical is None:
            return False
        documents = max(1, int(self.manifest["lexical"]["documents"]))
        return bool(self._frequencies()[lexical.term_id(word)] > max(3.0, COMMON_DOC_SHARE * documents))

    @property
    def version(self) -> str:
        return self.path.name

    def codes(self, column: str, names: Iterable[str]) -> list[int]:
        """Codes of the given names in rows.npy's column, matched case-insensitively.

        A name no article has is an error that lists the known ones, so a typo is not an empty list."""
        known = self.vocab.get(column, [])
        vocab: dict[str, list[int]] = {}
        for code, name in enumerate(known):
            vocab.setdefault(name.lower(), []).append(code)
        codes: list[int] = []
        for name in names:
            found = vocab.get(name.strip().lower())
            if found is None:
                shown = ", ".join(sorted({n for n in known if n})[:30]) or "(none)"
                raise RecsysError(f"unknown {column} {name!r}; this index has: {shown}")
            codes += found
        return codes

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
        self._retry_at = 0.0
        self._stamp = self.layout.pointer_stamp()
        self._view = IndexView(self.layout.current())
        self._embedder = embedder
        self._events = EventStore(self.layout.root, self.settings.events)
        self._buffer = EventBuffer(self._events, self.settings.popularity)
        self._activity = PopularityTracker(self._events, self.settings.popularity)
        self._models = StoredModels(self.layout.root, self.settings.popularity.refresh_seconds)
        self._promote_held_events(self._view)

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
        if stamp != self._stamp and time.monotonic() >= self._retry_at and self._lock.acquire(blocking=False):
            # One caller loads the new version; everyone else keeps answering from the old one meanwhile.
            try:
                fresh = self.layout.current()
                if fresh.name != self._view.version:
                    self._view = IndexView(fresh)  # calls already holding the old view finish with it
                    self._promote_held_events(self._view)
                self._stamp = stamp
            except RecsysError as exc:
                logger.warning("staying on index version %s: %s", self._view.version, exc)
                self._retry_at = time.monotonic() + 1.0
            finally:
                self._lock.release()
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
            "takedowns": view.store.takedowns(),
            "ann": view.manifest["ann"],
            "created_at": view.manifest["created_at"],
            "build_seconds": view.manifest["build_seconds"],
            "size_bytes": size,
            "library_versions": view.manifest["library_versions"],
        }

    def learned_ranker(self) -> LearnedRanker | None:
        """The ranker ``recsys train`` stored in this index, or None (Recommendation then uses the hand-set blend)."""
        return self._models.ranker()

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
        now_s = _now(now)
        filters = _filters(
            category,
            language,
            published_after,
            published_before,
            exclude,
            self.settings.related.max_age_days if max_age_days is None else max_age_days,
            now_s,
        )
        source_lexical = None
        if view.lexical is not None:
            source_lexical = (np.asarray(view.lexical[0][row]), np.asarray(view.lexical[1][row]))
        return self._related(view, query, source, k, filters, now_s, self_rows=(row,), source_lexical=source_lexical)

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
        now_s = _now(filters.pop("now", None))
        max_age = filters.pop("max_age_days", None)
        conditions = _filters(
            filters.pop("category", None),
            filters.pop("language", None),
            filters.pop("published_after", None),
            filters.pop("published_before", None),
            filters.pop("exclude", ()),
            self.settings.related.max_age_days if max_age is None else max_age,
            now_s,
        )
        if filters:
            raise TypeError(f"unknown filter(s): {', '.join(filters)}")
        text = article_text(title, abstract, body, self.settings.embedder.max_chars)
        return self._related(
            view, query, draft, k, conditions, now_s, self_rows=(), source_lexical=view.lexical_of_text(text)
        )

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
        filters: Filters,
        now_s: float,
        self_rows: Sequence[int] = (),
        source_lexical: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[Hit]:
        config = self.settings.related
        k = _check_k(config.k if k is None else k)
        banned = set(self_rows) | set(view.store.rows_of(filters.exclude_ids).values())
        want = max(config.candidates, k * config.overfetch)
        rows, sims = self._candidates(view, query, filters, banned, want)
        keep = sims >= config.min_similarity
        rows, sims = rows[keep], sims[keep]
        rows, sims, coread = self._with_coreads(view, source.id, query, rows, sims, filters, banned)

        # Copies of the story being read: near-identical vectors or the same canonical URL.
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
            scores = scores + config.popularity_weight * self._popularity_of_rows(view, rows, now_s)
        if config.coread_weight:
            scores = scores + config.coread_weight * coread
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
            terms = shared_terms(source.title, source.tags, article.title, article.tags, view.is_common)
            same_category = article.category if article.category == source.category else ""
            reason = related_reason(float(sims[pos]), gap, terms, same_category, config, bool(coread[pos] > 0))
            hits.append(_hit(article, float(scores[pos]), reason, float(sims[pos])))
        return hits

    def _with_coreads(
        self,
        view: IndexView,
        source_id: str,
        query: np.ndarray,
        rows: np.ndarray,
        sims: np.ndarray,
        filters: Filters,
        banned: set[int],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adds the source's "readers also read" neighbours (the co-read table ``recsys train`` stores) to the
        candidates, and returns each candidate's co-read association (0 for most; always 0 without a table)."""
        table = self._models.coreads() if source_id else None
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

    # -- popularity and events -----------------------------------------------------------------

    def _popularity_of_rows(self, view: IndexView, rows: np.ndarray, now_s: float) -> np.ndarray:
        """squash(popularity) per candidate row, 0 where nothing is known."""
        popularity = self._activity.current()
        if not len(popularity) or rows.size == 0:
            return np.zeros(rows.shape[0])
        ids = view.store.ids_of(rows)
        raw = popularity.scores([ids.get(int(r), "") for r in rows], now_s)
        return squash(raw, self.settings.popularity.squash_scale)

    def popularity(self, article_id: str, at: TimeLike = None) -> PopularityScore:
        """Popularity of one article now, or as of a past time from the stored events (for replay)."""
        if at is None:
            return self._activity.current(force=True).explain(article_id, time.time())
        at_s = float(_epoch(at))
        past = Popularity(self.settings.popularity)
        past.fold(self._events.for_articles([article_id], until=at_s) if self._events.exists() else [])
        return past.explain(article_id, at_s)

    def record_view(self, article_id: str, user_id: str | None = None, ts: TimeLike = None) -> None:
        """Count one page view (cheap: buffered; see ``EventBuffer`` for when it is durable)."""
        self._buffer.record(Event(article_id, "view", _now(ts), user_id=user_id or ""))

    def record_reaction(self, article_id: str, reaction: str, user_id: str | None = None, ts: TimeLike = None) -> None:
        """Count one reader reaction such as "veryGood" (weights in ``[popularity] reaction_weights``)."""
        if not reaction:
            raise RecsysError("a reaction needs a name, e.g. 'veryGood'")
        self._buffer.record(Event(article_id, "reaction", _now(ts), reaction=reaction, user_id=user_id or ""))

    def record_events(
        self, records: Iterable[dict[str, Any]], *, source: str = "", hold_unindexed: bool = False
    ) -> EventsAccepted:
        """Validate and record a batch of event records (the events file schema); all or nothing.

        ``source`` marks events from an untrusted sender (popularity then counts that sender as one
        reader). With ``hold_unindexed`` (the HTTP service), events for ids that are not indexed are
        held in a bounded table until the article is indexed, and refused once it is full.
        Raises ValueError naming the first bad record.
        """
        now = time.time()
        events = []
        for number, record in enumerate(records):
            try:
                events.append(event_from_record(record, self.settings.events, now, source))
            except ValueError as exc:
                raise ValueError(f"event {number}: {exc}") from None
        unknown: list[Event] = []
        if hold_unindexed:
            known = self.view.store.rows_of({e.article_id for e in events})
            unknown = [e for e in events if e.article_id not in known]
            events = [e for e in events if e.article_id in known]
        for event in events:
            self._buffer.record(event)
        held = self._events.add_unindexed([(self._buffer.key_of(e), e) for e in unknown]) if unknown else 0
        return EventsAccepted(len(events), held, len(unknown) - held)

    def _promote_held_events(self, view: IndexView) -> None:
        """Events held for ids that were not indexed join the counted ones once a version has the article."""
        try:
            waiting = self._events.unindexed_ids()
            if waiting:
                self._events.promote(list(view.store.rows_of(waiting)))
        except sqlite3.Error as exc:  # never let bookkeeping stop a version switch
            logger.warning("could not promote held events: %s", exc)

    def flush(self) -> int:
        """Write buffered events now; returns how many new ones were stored."""
        stored = self._buffer.flush()
        if stored:
            self._activity.forget_counts()
        return stored

    def reaction_counts(self, article_id: str) -> dict[str, int]:
        """All-time reaction counts of an article, e.g. {"veryGood": 682} (for the reaction bar)."""
        self.flush()
        if not self._events.exists():
            return {}
        counts = self._activity.window_counts([article_id], -1e18, 1e18)[article_id]
        return counts.reactions

    # -- Ranking -------------------------------------------------------------------------------

    def ranking(
        self,
        k: int | None = None,
        *,
        category: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        window_hours: float | None = None,
        exclude: Iterable[str] = (),
        now: TimeLike = None,
    ) -> list[Hit]:
        """Most popular now: articles read, clicked or reacted to in the window, by decayed popularity.

        With too little activity the list is topped up with the newest articles, so a new site or a
        quiet category still gets a full box.
        """
        k = _check_k(self.settings.recommend.k if k is None else k)
        view = self.view
        now_s = _now(now)
        window = (self.settings.popularity.window_hours if window_hours is None else window_hours) * 3600.0
        filters = _filters(category, language, None, None, exclude, None, now_s)
        banned = set(view.store.rows_of(filters.exclude_ids).values())
        popularity = self._activity.current()
        picked: list[tuple[int, str, float]] = []  # row, id, score
        if len(popularity) and k:
            active = np.flatnonzero(popularity.last_engaged[: len(popularity)] >= now_s - window)
            active_ids = [popularity.ids[i] for i in active]
            rows_by_id = view.store.rows_of(active_ids)
            candidates = [(rows_by_id[a], a) for a in active_ids if a in rows_by_id]
            if candidates:
                rows = np.array([r for r, _ in candidates], dtype=np.int64)
                ok = view.allowed(filters, rows) & ~np.isin(rows, list(banned))
                ids = [a for (_, a), good in zip(candidates, ok, strict=True) if good]
                scores = popularity.scores(ids, now_s, ranking=True)
                rows = rows[ok]
                for pos in np.argsort(-scores, kind="stable")[:k]:
                    picked.append((int(rows[pos]), ids[pos], float(scores[pos])))
        counts = self._activity.window_counts([a for _, a, _ in picked], now_s - window, now_s)
        articles = view.store.get_rows([r for r, _, _ in picked])
        hours = window / 3600.0
        hits = [
            _hit(articles[row], score, ranking_reason(counts[a], hours), None, _counts_metadata(counts[a]))
            for row, a, score in picked
        ]
        if len(hits) < k:
            hits += self._newest(view, k - len(hits), filters, banned | {r for r, _, _ in picked}, now_s)
        return hits

    def _newest(self, view: IndexView, k: int, filters: Filters, banned: set[int], now_s: float) -> list[Hit]:
        """The k newest allowed articles as hits (reason: how new)."""
        rows = self._newest_rows(view, k, filters, banned, now_s)
        published = np.asarray(view.rows["published"])
        articles = view.store.get_rows(rows)
        hits = []
        for row in rows.tolist():
            hits.append(_hit(articles[int(row)], 0.0, newness_reason(int(published[row]), now_s), None))
        return hits

    @staticmethod
    def _newest_rows(view: IndexView, k: int, filters: Filters, banned: set[int], now_s: float) -> np.ndarray:
        """The k newest allowed rows: dated ones by publication time (not future ones), then, if the
        archive has too few dates, undated ones in the order they were indexed (latest first)."""
        mask = view.allowed(filters)
        if banned:
            mask[list(banned)] = False
        published = np.asarray(view.rows["published"])
        undated = published == NO_TIME
        dated_rows = np.flatnonzero(mask & ~undated & (published <= now_s))
        rows = dated_rows[top_k(published[dated_rows].astype(np.float64), k)] if dated_rows.size else dated_rows
        if rows.size < k:
            rest = np.flatnonzero(mask & undated)[::-1][: k - rows.size]
            rows = np.concatenate([rows, rest])
        return rows.astype(np.int64)

    # -- Recommendation ------------------------------------------------------------------------

    def recommend(
        self,
        history: Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        k: int | None = None,
        category: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        exclude: Iterable[str] = (),
        now: TimeLike = None,
    ) -> list[Hit]:
        """Articles for a reader from what they read (``history`` oldest first, or a ``user_id``'s events).

        Several interests are kept apart (recsys/profile.py); each is searched on its own and every
        interest of some weight gets a place. Already-read articles never appear. With no known reads
        the list is Ranking.
        """
        config = self.settings.recommend
        k = _check_k(config.k if k is None else k)
        view = self.view
        now_s = _now(now)
        reads = self._reads(history, user_id, now_s)
        read_rows = view.store.rows_of(reads)
        known = [a for a in reads if a in read_rows][: config.history_limit]
        if not known or k == 0:
            return self.ranking(k, category=category, language=language, exclude=[*exclude, *reads], now=now_s)
        filters = _filters(category, language, None, None, exclude, None, now_s)
        banned = set(read_rows.values()) | set(view.store.rows_of(filters.exclude_ids).values())
        history_vectors = np.asarray(view.vectors[[read_rows[a] for a in known]], dtype=np.float32)
        interests = build_interests(history_vectors, config)

        found: dict[int, tuple[float, int]] = {}  # row -> (best cosine, interest)
        for number, interest in enumerate(interests):
            rows, sims = self._candidates(view, interest.vector, filters, banned, config.candidates_per_interest)
            for row, sim in zip(rows.tolist(), sims.tolist(), strict=True):
                if sim >= config.min_similarity and sim > found.get(row, (-1.0, 0))[0]:
                    found[row] = (sim, number)
        ranker = self._models.ranker()
        if ranker is not None:
            return self._recommend_learned(
                view, ranker, reads, known, read_rows, history_vectors, interests, found, filters, banned, k, now_s
            )
        if not found:
            return self.ranking(k, category=category, language=language, exclude=[*exclude, *reads], now=now_s)
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        sims = np.array([found[r][0] for r in rows.tolist()])
        owner = np.array([found[r][1] for r in rows.tolist()])
        published = np.asarray(view.rows["published"][rows])
        scores = (
            sims
            + config.freshness_weight * freshness(published, now_s, config.half_life_days)
            + config.popularity_weight * self._popularity_of_rows(view, rows, now_s)
        )
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
        picked = self._spread(scores, vectors, owner, interests, k, config)

        articles = view.store.get_rows(rows[picked])
        read_titles = {r: a for r, a in view.store.get_rows([read_rows[a] for a in known]).items()}
        hits = []
        for pos in picked:
            members = interests[owner[pos]].members
            source_rows = [read_rows[known[m]] for m in members]
            closest = source_rows[int(np.argmax(history_vectors[list(members)] @ vectors[pos]))]
            reason = f'because you read "{read_titles[closest].title}"'
            hits.append(_hit(articles[int(rows[pos])], float(scores[pos]), reason, float(sims[pos])))
        return hits

    def _recommend_learned(
        self,
        view: IndexView,
        ranker: LearnedRanker,
        reads: list[str],
        known: list[str],
        read_rows: dict[str, int],
        history_vectors: np.ndarray,
        interests: list[Interest],
        found: dict[int, tuple[float, int]],
        filters: Filters,
        banned: set[int],
        k: int,
        now_s: float,
    ) -> list[Hit]:
        """Recommendation by the learned ranker (recsys/recommendation.py)."""
        state = self._activity.current_state()
        coreads = self._models.coreads()
        by_interest: dict[int, list[tuple[float, int]]] = {}
        for row, (sim, owner) in found.items():
            by_interest.setdefault(owner, []).append((sim, row))
        pool: list[int] = [
            row for near in by_interest.values() for _, row in sorted(near, reverse=True)[: learned.PER_INTEREST]
        ]
        coread_from: dict[int, str] = {}
        if coreads is not None:
            neighbours = [(read, other) for read in reads[: learned.COREAD_READS] for other, _ in coreads.of(read)]
            neighbours = neighbours[: learned.COREAD_CANDIDATES]
            rows_of = view.store.rows_of([other for _, other in neighbours])
            for read, other in neighbours:
                if other in rows_of:
                    coread_from.setdefault(rows_of[other], read)
        popular = learned.popular_rows(state, view.store.rows_of, now_s, learned.POPULAR_CANDIDATES)
        fresh = self._newest_rows(view, learned.NEWEST_CANDIDATES, filters, banned, now_s)
        rows = np.fromiter(dict.fromkeys([*pool, *coread_from, *popular, *fresh.tolist()]), dtype=np.int64)
        if rows.size:
            rows = rows[view.allowed(filters, rows) & ~np.isin(rows, list(banned))]
        if rows.size == 0:
            return []
        ids_by_row = view.store.ids_of(rows)
        ids = [ids_by_row[int(r)] for r in rows]
        vectors = np.asarray(view.vectors[rows], dtype=np.float32)
        centroids = np.stack([i.vector for i in interests]) if interests else None
        content = content_columns(vectors, centroids, history_vectors[:5])
        names = view.vocab.get("category", [])
        categories = [names[c] if 0 <= c < len(names) else "" for c in np.asarray(view.rows["category"][rows]).tolist()]
        published = np.asarray(view.rows["published"][rows])
        published = np.where(published == NO_TIME, np.nan, published.astype(np.float64))
        read_codes = np.asarray(view.rows["category"][[read_rows[a] for a in known]]).tolist()
        known_categories = Counter(names[c] for c in read_codes if 0 <= c < len(names))
        reader = ReaderContext(tuple(reads), dict(known_categories), sum(known_categories.values()))
        scores, features = learned.score(ranker, ids, state, now_s, reader, content, categories, published, coreads)
        config = self.settings.recommend
        picked = learned.spread(scores, vectors, k, config.mmr_lambda, self.settings.related.duplicate_similarity)

        # Reasons: the read each pick is closest to, the read whose co-readers chose it, or why it is there.
        picked_rows = [int(rows[p]) for p in picked.tolist()]
        sources = {read_rows[a] for a in known} | {read_rows[r] for r in coread_from.values() if r in read_rows}
        articles = view.store.get_rows([*picked_rows, *sources])
        popular_set = set(popular[: max(20, 2 * k)])
        fresh_set = set(fresh.tolist())
        hits = []
        for pos, row in zip(picked.tolist(), picked_rows, strict=True):
            closest = None
            if known:
                closest = articles[read_rows[known[int(np.argmax(history_vectors @ vectors[pos]))]]].title
            read = coread_from.get(row)
            coread_title = articles[read_rows[read]].title if read in read_rows else None
            popular_reason = None
            if row in popular_set:
                figures = state.day.explain(ids[pos], now_s)
                popular_reason = f"{figures.clicks + figures.reads:,.0f} recent reads"
            fresh_reason = None
            if row in fresh_set:
                fresh_reason = newness_reason(int(view.rows["published"][row]), now_s)
            reason = learned.reason_for(features[pos], coread_title, closest, popular_reason, fresh_reason)
            similarity = content[pos, 0]
            hits.append(
                _hit(articles[row], float(scores[pos]), reason, float(similarity) if np.isfinite(similarity) else None)
            )
        return hits

    @staticmethod
    def _spread(
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

    def _reads(self, history: Sequence[str] | None, user_id: str | None, now_s: float) -> list[str]:
        """Read article ids, newest first, from an explicit history (oldest first) and/or a user's events."""
        reads: list[str] = []
        if history:
            reads.extend(reversed([h for h in history if h]))
        if user_id:
            self._buffer.flush()
            if self._events.exists():
                reads.extend(a for a, _ in self._events.reads_of(user_id, now_s))
        return list(dict.fromkeys(reads))

    # -- one page ------------------------------------------------------------------------------

    def page(
        self,
        article_id: str,
        history: Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        k_related: int | None = None,
        k_ranking: int | None = None,
        k_recommend: int | None = None,
        now: TimeLike = None,
    ) -> Page:
        """The three lists for one page view: the current article in none, no article in two.

        Filled most specific first: Related, then Recommendation, then Ranking. Ranking stays the
        same for every reader (a "most read" box), less what the other two lists already show.
        """
        now_s = _now(now)
        related = self.related(article_id, k_related, now=now_s)
        shown = [article_id, *(h.id for h in related)]
        reads = self._reads(history, user_id, now_s)
        if not self.view.store.rows_of(reads):
            # A first visit: Ranking keeps the popular articles, and Recommendation shows what is new
            # rather than repeating Ranking's fallback.
            ranked = self.ranking(k_ranking, exclude=shown, now=now_s)
            shown += [h.id for h in ranked]
            k = _check_k(self.settings.recommend.k if k_recommend is None else k_recommend)
            view = self.view
            banned = set(view.store.rows_of(shown).values())
            recommended = self._newest(view, k, Filters(), banned, now_s) if k else []
            return Page(article_id=article_id, related=related, ranking=ranked, recommendation=recommended)
        recommended = self.recommend(history, user_id=user_id, k=k_recommend, exclude=shown, now=now_s)
        shown += [h.id for h in recommended]
        ranked = self.ranking(k_ranking, exclude=shown, now=now_s)
        return Page(article_id=article_id, related=related, ranking=ranked, recommendation=recommended)

    def close(self) -> None:
        """Write buffered events and release files."""
        self._buffer.flush()
        self._view.close()
        self._events.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class EventsAccepted:
    """What ``record_events`` did: counted (indexed ids), held (ids not indexed yet), refused (hold full)."""

    accepted: int
    held: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Page:
    """The three lists of one article page."""

    article_id: str
    related: list[Hit]
    ranking: list[Hit]
    recommendation: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {
            "article_id": self.article_id,
            "related": [h.to_dict() for h in self.related],
            "ranking": [h.to_dict() for h in self.ranking],
            "recommendation": [h.to_dict() for h in self.recommendation],
        }


def ranking_reason(counts: WindowCounts, hours: float) -> str:
    """E.g. "1,204 views and 96 reactions in the last 24 h", or clicks out of impressions."""
    span = f"{hours:g} h" if hours < 48 else f"{hours / 24:g} days"

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


def newness_reason(published: int, now_s: float) -> str:
    """E.g. "new: published 3 hours ago", or "new: recently added" for an undated article."""
    if published == NO_TIME:
        return "new: recently added"
    return f"new: published {days_phrase((now_s - float(published)) / DAY)} ago"


def _counts_metadata(counts: WindowCounts) -> dict[str, Any]:
    return {
        "views": counts.views,
        "reactions": counts.reactions,
        "clicks": counts.clicks,
        "impressions": counts.impressions,
    }


def _now(now: TimeLike) -> float:
    return time.time() if now is None else float(_epoch(now))


def _check_k(k: int) -> int:
    k = int(k)
    if k < 0 or k > MAX_K:
        raise RecsysError(f"k must be between 0 and {MAX_K}, got {k}")
    return k


def _filters(
    category: str | Sequence[str] | None,
    language: str | Sequence[str] | None,
    published_after: TimeLike,
    published_before: TimeLike,
    exclude: Iterable[str],
    max_age_days: float | None,
    now_s: float,
) -> Filters:
    after = _epoch(published_after)
    if max_age_days is not None:
        window_start = now_s - float(max_age_days) * DAY
        after = window_start if after is None else max(after, window_start)
    return Filters(
        categories=_names(category),
        languages=_names(language),
        published_after=after,
        published_before=_epoch(published_before),
        exclude_ids=tuple(exclude),
    )


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _hit(
    article: StoredArticle, score: float, reason: str, similarity: float | None, extra: dict[str, Any] | None = None
) -> Hit:
    metadata: dict[str, Any] = {**article.extra, **(extra or {})}
    for name in ("subcategory", "language", "canonical_url"):
        value = getattr(article, name)
        if value:
            metadata[name] = value
    if article.tags:
        metadata["tags"] = article.tags
    score = float(score) if math.isfinite(score) else 0.0  # finite by construction; never NaN in a list
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
