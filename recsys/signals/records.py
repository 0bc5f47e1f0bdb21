"""Reader event records: what a reader did (or was shown), as plain frozen dataclasses.

``Event`` is one counted thing (view, click, impression, reaction); ``Impression`` one logged list a
reader was shown with what they clicked; ``impression_events`` turns one into the other; ``ServedList`` one
list the engine served (recsys/feedback/). Parsing them from files is ``recsys.ingest.events``; storing
them is ``recsys.signals.store``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from recsys.types import InputProblem

EVENT_TYPES = ("view", "click", "impression", "reaction")


@dataclass(frozen=True)
class Event:
    """One counted thing a reader did (or was shown), ``count`` times, at ``ts`` (epoch seconds).

    ``source`` names an untrusted sender (e.g. ``ip:<hash>`` for a public HTTP client): popularity
    then counts the event for that sender, so one client is one reader whatever ids it claims.
    """

    article_id: str
    type: str
    ts: float
    reaction: str = ""
    user_id: str = ""
    count: int = 1
    event_id: str = ""
    source: str = ""
    list_id: str = ""  # a click on a served list names it (its ``list_id``) and the 1-based position clicked
    position: int = 0

    @property
    def reader(self) -> str:
        return self.source or self.user_id

    def fingerprint(self, occurrence: int = 0) -> str:
        """The stored key. A sender's ``event_id`` is scoped to an untrusted sender (``source``), so no
        client can take the id another client or the site's own feed will use and suppress that event;
        trusted senders (the CLI, a write-key holder) share one global id space."""
        if self.event_id:
            return f"id:{self.source}:{self.event_id}" if self.source else f"id:{self.event_id}"
        raw = json.dumps(
            [self.article_id, self.type, self.reaction, self.user_id, self.ts, self.count, occurrence],
            ensure_ascii=False,
        )
        return "fp:" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class EventBatch:
    """What one ingest read: keyed events, history entries and located problems."""

    events: list[tuple[str, Event]] = field(default_factory=list)
    history: list[tuple[str, str, float]] = field(default_factory=list)  # user, article, before-ts
    problems: list[InputProblem] = field(default_factory=list)


@dataclass(frozen=True)
class Impression:
    """One MIND behaviors row: what a user was shown at a time, what they clicked, what they had read."""

    impression_id: str
    user_id: str
    ts: float
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    clicked: tuple[bool, ...]
    # 1-based place of each candidate in the list as the reader saw it (a served list's order); () unknown, as
    # in MIND files, whose candidate order is not the order on the page
    positions: tuple[int, ...] = ()


def impression_events(impression: Impression) -> list[tuple[str, Event]]:
    """The keyed impression and click events of one behaviors row."""
    events = []
    for news_id, clicked in zip(impression.candidates, impression.clicked, strict=True):
        key = f"mind:{impression.impression_id}:{news_id}"
        events.append((key + ":imp", Event(news_id, "impression", impression.ts, user_id=impression.user_id)))
        if clicked:
            events.append((key + ":click", Event(news_id, "click", impression.ts, user_id=impression.user_id)))
    return events


@dataclass(frozen=True)
class IngestReport:
    read: int
    stored: int
    duplicates: int
    history: int
    problems: list[InputProblem]
    unindexed: int = 0  # of the events read, those for ids the index does not hold (yet): held until indexed
    unindexed_ids: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "problems": [str(p) for p in self.problems]}


@dataclass(frozen=True)
class ServedList:
    """One list the engine served: which box, to whom (a reader id, an untrusted client's pseudonym, or ""), on
    which article's page (or ""), under which experiment variant and model, and the article ids in order."""

    list_id: str
    ts: float
    box: str
    ids: tuple[str, ...]
    reader: str = ""
    article_id: str = ""
    variant: str = ""
    model: str = ""
    teams: str = ""  # interleaved lists: per position, the variant that placed it ("a" or "b")
    explored: int = 0  # the position given to exploration ([explore]), 0: none


@dataclass(frozen=True)
class AttributedClick:
    """A stored click that named a list and position (whether the list holds that article is the reader's
    business: ``recsys.feedback.report`` counts it for the list only if it does)."""

    list_id: str
    position: int
    article_id: str
    ts: float
    reader: str
