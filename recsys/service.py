"""The query functions a site calls in-process: Related, Ranking, Recommendation, a whole page, and
recording what readers do.

``Recommender`` is a small facade: a ``VersionFollower`` (recsys/archive/version.py) gives the live version, the
three pipelines in ``recsys/lists/`` build the lists from it, and the events store, buffer and
popularity tracker (recsys/signals/store/, recsys/signals/activity.py) hold what readers did. Opening an
index maps its arrays and opens SQLite; it reads no article text and imports neither torch nor
sentence-transformers (only ``related_to_text`` loads a model, on first use). Each call checks the
index's ``CURRENT`` pointer (one ``stat``) and moves to a newly published version before answering, so a
takedown or an ``index add`` is visible from the next query on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive.layout import RULES_FILE, IndexLayout
from recsys.archive.store import StoredArticle
from recsys.archive.version import VersionFollower, VersionReader
from recsys.config import DEFAULT_INDEX_DIR, EmbedderConfig, Settings, load_settings
from recsys.embedder import Embedder, article_text, make_embedder
from recsys.feedback.experiment import Arms
from recsys.feedback.log import ServedLog
from recsys.ingest.events import event_from_record
from recsys.learning.ranker import LearnedRanker
from recsys.learning.trained import StoredModels
from recsys.lists.base import (
    MAX_K,
    TimeLike,
    check_k,
    empty_reason,
    epoch,
    iso,
    make_filters,
    now_seconds,
)
from recsys.lists.editorial import NO_RULES, BoxRules, place_pins, rules_for
from recsys.lists.page import PageSizes, above_floor, compose_page, related_floor
from recsys.lists.ranking import ranking_reason
from recsys.signals.activity import EventBuffer, PopularityTracker
from recsys.signals.popularity import Popularity, PopularityScore
from recsys.signals.records import Event
from recsys.signals.store import open_event_store
from recsys.signals.store.base import EventStore, EventsUnavailable
from recsys.types import EventsAccepted, Filters, Hit, Hits, IndexStateError, Page, RecsysError, UnknownArticle

__all__ = ["EventsAccepted", "Page", "Recommender", "TimeLike", "ranking_reason"]
logger = logging.getLogger(__name__)


class Recommender:
    """The three lists and event recording over one index folder. Thread-safe; cheap to open."""

    def __init__(self, root: str | Path, settings: Settings | None = None, embedder: Embedder | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self._embedder = embedder
        self.layout = IndexLayout(root)
        self._events = open_event_store(self.layout.root, self.settings.events)
        self._versions = VersionFollower(self.layout.root, on_switch=self._promote_held_events)
        self._buffer = EventBuffer(self._events, self.settings.popularity)
        self._activity = PopularityTracker(self._events, self.settings.popularity)
        self._models = StoredModels(self.layout.root, self.settings.popularity.refresh_seconds)
        # the list pipelines: the configured ones, or each experiment variant's (recsys/feedback/experiment.py)
        self._arms = Arms(self.settings, self._activity, self._models)
        self._related = self._arms.default.related  # drafts (related_to_text) are not part of experiments
        self.served_log = ServedLog(self._events, self.settings.feedback)  # every list served, with its id
        self._past: tuple[float, Arms] | None = None  # the pipelines of the last past moment asked for

    @classmethod
    def open(
        cls, root: str | Path = DEFAULT_INDEX_DIR, settings: Settings | None = None, embedder: Embedder | None = None
    ) -> Recommender:
        """Open the live version of an index directory (fails with a how-to-fix message).

        ``embedder`` is only for ``related_to_text``; by default the index's own model is loaded
        from local disk on first use.
        """
        return cls(root, settings, embedder)

    # -- the version being served ------------------------------------------------------------------

    @property
    def view(self) -> VersionReader:
        """The current version, switching to a newly published one if the pointer moved."""
        return self._versions.current

    def warm(self) -> Recommender:
        """Fold the stored events and load the trained files now, not on the first request (a serving process
        calls this at start-up; a long-lived one may then ``gc.freeze()``, as ``recsys serve`` does)."""
        try:
            self._activity.current_state(force=True)
        except EventsUnavailable as exc:
            logger.warning("events not folded at start-up: %s", exc)
        self._models.ranker(), self._models.coreads(), self._models.clock()
        return self

    def state_tag(self) -> str:
        """What the lists are served from: index version, editorial rules and model (an HTTP ETag's base)."""
        rules, ranker = self.layout.root / RULES_FILE, self._models.ranker()
        stamp = rules.stat().st_mtime_ns if rules.exists() else 0
        return f"{self.version}|{stamp}|{'' if ranker is None else ranker.model_id}"

    @property
    def events_store(self) -> EventStore:
        """The events store (events, histories and the served-list log)."""
        return self._events

    @property
    def version(self) -> str:
        return self.view.version

    def __len__(self) -> int:
        return self.view.n_live

    def info(self) -> dict[str, Any]:
        """What is being served: the version, model, counts, ANN, size on disk, library versions."""
        return {"index": str(self.layout.root), **self.view.describe()}

    def problems(self) -> dict[str, Any]:
        """What this process is serving around (empty when all is well): a newer version it refused to open
        (``refused_version``, ``reason``) and trained files it ignores (``ignored_files``). ``/health`` reports
        ``degraded`` with these; the lists keep being served meanwhile."""
        found: dict[str, Any] = {}
        self.view  # noqa: B018 - follow the pointer first, so a newly refused version is reported now
        refused = self._versions.refused
        if refused is not None:
            found["refused_version"], found["reason"] = refused
        self._models.ranker()
        self._models.coreads()  # (re)load both, so a damaged one is reported even before a list needs it
        if self._models.problems:
            found["ignored_files"] = dict(self._models.problems)
        return found

    def learned_ranker(self) -> LearnedRanker | None:
        """The ranker ``recsys train`` stored in this index, or None (Recommendation then uses the hand-set blend)."""
        return self._models.ranker()

    def article(self, article_id: str) -> StoredArticle:
        found = self.view.store.get(article_id)
        if found is None:
            raise UnknownArticle(article_id)
        return found

    # -- the three lists ---------------------------------------------------------------------------

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
        reader: str | None = None,
        floor: float | str | None = None,
    ) -> list[Hit]:
        """Articles about the same story or topic as an indexed one (see recsys/lists/related.py). ``reader``:
        who it is for (their experiment variant; recorded with the list). ``floor``: leave out hits less similar
        than this cosine ("auto": the site's calibrated floor, as ``page()`` does; the list may then be short)."""
        now_s = now_seconds(now)
        max_age = self.settings.related.max_age_days if max_age_days is None else max_age_days
        filters = make_filters(category, language, published_after, published_before, exclude, max_age, now_s)
        view, k = self.view, check_k(self.settings.related.k if k is None else k)
        rules = rules_for(self._models, view, "related", now_s, article_id)
        fetch, filters = rules.fetch(k, MAX_K), rules.apply_to(filters)
        least = None if floor is None else related_floor(self.settings, self._models, floor)
        arms = [
            (n, above_floor(b.related.for_article(view, article_id, fetch, filters, now_s), least))
            for n, b in self._arms_at(now, now_s).for_reader(reader or "")
        ]
        return self._serve("related", arms, k, now_s, reader or "", article_id, rules, None, filters)

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
        text = article_text(title, abstract, body, self.settings.embedder.max_chars)
        query = self._embed_text(view, text)
        published = None if published_at is None else iso(epoch(published_at))
        draft = StoredArticle(-1, "", title, body, abstract, "", "", published, "", "", "", [], {}, "")
        now_s = now_seconds(filters.pop("now", None))
        max_age = filters.pop("max_age_days", None)
        unknown = set(filters) - {"category", "language", "published_after", "published_before", "exclude"}
        if unknown:
            raise TypeError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        max_age = self.settings.related.max_age_days if max_age is None else max_age
        conditions = make_filters(**filters, max_age_days=max_age, now_s=now_s)
        lexical = view.lexical_of_text(text)
        return self._related.for_vector(view, query, draft, k, conditions, now_s, lexical)

    def _embed_text(self, view: VersionReader, text: str) -> np.ndarray:
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

    def ranking(
        self,
        k: int | None = None,
        *,
        category: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        window_hours: float | None = None,
        exclude: Iterable[str] = (),
        now: TimeLike = None,
        reader: str | None = None,
    ) -> list[Hit]:
        """Most popular now (see recsys/lists/ranking.py); topped up with the newest articles when quiet.
        ``reader``: who it is for (their experiment variant; recorded with the list)."""
        now_s = now_seconds(now)
        filters = make_filters(category, language, exclude=exclude, now_s=now_s)
        view, k = self.view, check_k(self.settings.recommend.k if k is None else k)
        rules = rules_for(self._models, view, "ranking", now_s)
        fetch, filters = rules.fetch(k, MAX_K), rules.apply_to(filters)
        arms = [
            (n, b.ranking.top(view, fetch, filters, window_hours, now_s))
            for n, b in self._arms_at(now, now_s).for_reader(reader or "")
        ]
        return self._serve("ranking", arms, k, now_s, reader or "", "", rules, None, filters)

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

        Several interests are kept apart (recsys/signals/profile.py); each is searched on its own and every
        interest of some weight gets a place. Already-read articles never appear; with a ``user_id`` the learned
        ranker also knows what they were shown. No known reads: Ranking. See recsys/lists/recommendation.py.
        """
        now_s = now_seconds(now)
        reads = self._reads(history, user_id, now_s)
        filters = make_filters(category, language, exclude=exclude, now_s=now_s)
        view, k = self.view, check_k(self.settings.recommend.k if k is None else k)
        rules, reader = rules_for(self._models, view, "recommendation", now_s), user_id or ""
        filters, fetch = rules.apply_to(filters), rules.fetch(k, MAX_K)
        arms = self._arms_at(now, now_s).for_reader(reader)
        found = [(n, b.recommendation.for_reader(view, reads, fetch, filters, now_s, reader)) for n, b in arms]
        return self._serve("recommendation", found, k, now_s, reader, "", rules, None, filters)

    def _arms_at(self, now: TimeLike, now_s: float) -> Arms:
        """The pipelines for a list at ``now_s``: the live ones, or, for a ``now`` before the newest stored event
        (time travel: ``--now``, a replay), pipelines over what the logs said at that moment only (popularity,
        first sightings, live co-reads, the learned features, the reasons' counts), folded once per moment."""
        if now is None or now_s > time.time() - self.settings.popularity.refresh_seconds:
            return self._arms
        try:
            newest = self._events.last_event_time() if self._events.exists() else None
        except EventsUnavailable:
            return self._arms
        if newest is None or now_s >= newest:
            return self._arms
        found = self._past
        if found is None or found[0] != now_s:
            tracker = PopularityTracker(self._events, self.settings.popularity, as_of=now_s)
            found = self._past = (now_s, Arms(self.settings, tracker, self._models))
        return found[1]

    def _serve(
        self,
        box: str,
        arms: list[tuple[str, list[Hit]]],
        k: int,
        now_s: float,
        reader: str,
        article_id: str = "",
        rules: BoxRules = NO_RULES,
        taken: set[str] | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """One list as served: the arms' hits under the editorial rules (blocks and boosts per arm, then pins;
        ``taken``: ids it may not show), interleaved when two arms, a list id, recorded in the served log. An empty
        list says why (``Hits.why``, also logged as a warning: which filter emptied it)."""
        seed = f"{box}:{reader}:{article_id}:{now_s}"
        if rules:
            arms = [(n, rules.screen(hits, k)) for n, hits in arms]
        hits, variant, teams = self._arms.merge(arms, k, seed)
        hits, teams = place_pins(self.view, rules, hits, k, taken if taken is not None else {article_id}, teams)
        model = "+".join(self._arms.boxes(n).model_id() for n, _ in arms) if box != "related" else ""
        served = Hits(self.served_log.serve(box, hits, now_s, reader, article_id, model, variant, teams))
        if not served and k > 0 and filters is not None:
            served.why = empty_reason(self.view, filters, now_s, box)
            logger.warning("%s list is empty: %s", box, served.why)
        return served

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
        """The three lists for one page view: the current article in none, no article and no story in two.

        Filled most specific first: Related, then Recommendation, then Ranking. Ranking stays the
        same for every reader (a "most read" box), less what the other two lists already show. A story is
        told once on the page: a later box drops an article with the canonical URL of one already shown, or a
        cosine of at least ``[related] duplicate_similarity`` to one an earlier box showed (a syndicated copy,
        a rewrite). Recommendation takes the article being read as the reader's newest read (its co-reads and
        its subject are the best context there is for what they read next).
        """
        now_s = now_seconds(now)
        view = self.view  # one version for the whole page
        reads = self._reads(history, user_id, now_s)
        k_rel = check_k(self.settings.related.k if k_related is None else k_related)
        k_rank = check_k(self.settings.recommend.k if k_ranking is None else k_ranking)
        k_rec = check_k(self.settings.recommend.k if k_recommend is None else k_recommend)
        arms = self._arms_at(now, now_s).for_reader(user_id or "")
        sizes = {"related": k_rel, "ranking": k_rank, "recommendation": k_rec}
        rules = {box: rules_for(self._models, view, box, now_s, article_id) for box in sizes}
        fetch = PageSizes(*(rules[box].fetch(k, MAX_K) for box, k in sizes.items()))
        kept_out = {box: rules[box].apply_to(Filters()) for box in sizes}
        pages = [(n, compose_page(b, view, article_id, reads, fetch, now_s, kept_out, user_id or "")) for n, b in arms]
        k_rec += max(0, k_rel - max(len(page.related) for _, page in pages))  # slots the Related floor left
        boxes: dict[str, list[Hit]] = {}
        shown = {article_id}
        for box, k in (("related", k_rel), ("recommendation", k_rec), ("ranking", k_rank)):
            # interleaved pages merge box by box; an article one arm put in an earlier box stays out of later ones
            found = [(n, [h for h in getattr(page, box) if h.id not in shown]) for n, page in pages]
            boxes[box] = self._serve(box, found, k, now_s, user_id or "", article_id, rules[box], set(shown))
            shown.update(h.id for h in boxes[box])
        return Page(article_id, boxes["related"], boxes["ranking"], boxes["recommendation"])

    def _reads(self, history: Sequence[str] | None, user_id: str | None, now_s: float) -> list[str]:
        """Read article ids, newest first: a user's recorded reads (timed), then an explicit history (oldest first,
        no times: taken as older, as a site's stored history, e.g. MIND's, ends where the events it sends begin)."""
        reads: list[str] = []
        if user_id:
            try:
                self._buffer.flush()
                if self._events.exists():
                    reads.extend(a for a, _ in self._events.reads_of(user_id, now_s))
            except EventsUnavailable as exc:  # the list is still served, from the history passed
                logger.warning("reads of %r not available: %s", user_id, exc)
        if history:
            reads.extend(reversed([h for h in history if h]))
        return list(dict.fromkeys(reads))

    # -- what readers do ---------------------------------------------------------------------------

    def popularity(self, article_id: str, at: TimeLike = None) -> PopularityScore:
        """Popularity of one article now, or as of a past time from the stored events (for replay)."""
        if at is None:
            return self._activity.current(force=True).explain(article_id, time.time())
        at_s = float(epoch(at))
        past = Popularity(self.settings.popularity)
        past.fold(self._events.for_articles([article_id], until=at_s) if self._events.exists() else [])
        return past.explain(article_id, at_s)

    def record_view(self, article_id: str, user_id: str | None = None, ts: TimeLike = None) -> None:
        """Count one page view (cheap: buffered; see ``EventBuffer`` for when it is durable)."""
        self._buffer.record(Event(article_id, "view", now_seconds(ts), user_id=user_id or ""))

    def record_reaction(self, article_id: str, reaction: str, user_id: str | None = None, ts: TimeLike = None) -> None:
        """Count one reader reaction such as "veryGood" (weights in ``[popularity] reaction_weights``)."""
        if not reaction:
            raise RecsysError("a reaction needs a name, e.g. 'veryGood'")
        self._buffer.record(Event(article_id, "reaction", now_seconds(ts), reaction=reaction, user_id=user_id or ""))

    def record_events(
        self,
        records: Iterable[dict[str, Any]],
        *,
        source: str = "",
        hold_unindexed: bool = False,
        durable: bool = False,
    ) -> EventsAccepted:
        """Validate and record a batch of event records (the events file schema); all or nothing.

        ``source`` marks events from an untrusted sender (popularity then counts that sender as one
        reader, its ``event_id``s are its own, and a reaction must be one of ``[popularity]
        reaction_weights``). With ``hold_unindexed`` (the HTTP service), events for ids that are not indexed are
        held in a bounded table until the article is indexed, and refused once it is full. With
        ``durable`` the batch is written before this returns (the HTTP service: a 200 means stored), and
        ``EventsUnavailable`` means none of it was. Raises ValueError naming the first bad record.
        """
        now = time.time()
        events = []
        names = self.settings.popularity.reaction_weights
        for number, record in enumerate(records):
            try:
                event = event_from_record(record, self.settings.events, now, source)
            except ValueError as exc:
                raise ValueError(f"event {number}: {exc}") from None
            if source and event.type == "reaction" and event.reaction not in names:
                # Names are the site's: an untrusted client cannot invent 1,000 of them to count 1,000 times.
                raise ValueError(
                    f"event {number}: unknown reaction {event.reaction!r}; this site's reactions are "
                    f"{', '.join(names) or '(none configured)'} ([popularity] reaction_weights)"
                )
            events.append(event)
        unknown: list[Event] = []
        if hold_unindexed:
            known = self.view.store.rows_of({e.article_id for e in events})
            unknown = [e for e in events if e.article_id not in known]
            events = [e for e in events if e.article_id in known]
        stored, duplicates = len(events), 0
        if durable:
            self._buffer.flush()  # earlier buffered events first, so the store keeps their order
            stored = self._events.add([(self._buffer.key_of(e), e) for e in events])
            duplicates = len(events) - stored
            self._activity.forget_counts()
        else:
            for event in events:
                self._buffer.record(event)
        attributed = self.served_log.credit(events)  # clicks naming a recent list count for its box (/metrics)
        held = self._events.add_unindexed([(self._buffer.key_of(e), e) for e in unknown]) if unknown else 0
        return EventsAccepted(stored, held, len(unknown) - held, duplicates, attributed)

    def _promote_held_events(self, view: VersionReader) -> None:
        """Events held for ids that were not indexed join the counted ones once a version has the article."""
        try:
            waiting = self._events.unindexed_ids()
            if waiting:
                self._events.promote(list(view.store.rows_of(waiting)))
        except (sqlite3.Error, EventsUnavailable) as exc:  # never let bookkeeping stop a version switch or an open
            logger.warning("could not promote held events: %s", exc)

    def flush(self) -> int:
        """Write buffered events (and the served lists waiting) now; returns how many new events were stored."""
        self.served_log.flush()
        stored = self._buffer.flush()
        if stored:
            self._activity.forget_counts()
        return stored

    def last_event_time(self) -> float | None:
        """Time of the newest stored event (raises ``EventsUnavailable`` when the store cannot be reached)."""
        return self._events.last_event_time()

    def reaction_counts(self, article_id: str) -> dict[str, int]:
        """All-time reaction counts of an article, e.g. {"veryGood": 682} (for the reaction bar); empty while
        the events store cannot be reached."""
        try:
            self.flush()
        except EventsUnavailable as exc:
            logger.warning("%s", exc)
        if not self._events.exists():
            return {}
        counts = self._activity.window_counts([article_id], -1e18, 1e18)[article_id]
        return counts.reactions

    def close(self) -> None:
        """Write buffered events and release files (events the store cannot take now are reported, not lost
        silently: the log says how many)."""
        try:
            self._buffer.flush()
        except EventsUnavailable as exc:
            logger.error("closing with %d events not stored: %s", len(self._buffer), exc)
        self.served_log.close()
        self._versions.close()
        self._events.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
