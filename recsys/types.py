"""Plain data shared by every layer: articles in, hits out, and the errors users see."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


class RecsysError(Exception):
    """Base for errors whose message tells the user what to do."""


class ConfigError(RecsysError):
    """A setting is unknown or has a value of the wrong type."""


class IndexStateError(RecsysError):
    """An index directory is missing, incompatible or corrupt."""


class UnknownArticle(RecsysError, KeyError):
    """An article id is not in the index (never indexed, or taken down)."""

    def __init__(self, article_id: str) -> None:
        super().__init__(article_id)
        self.article_id = article_id

    def __str__(self) -> str:
        return (
            f"article {self.article_id!r} is not in the index (never indexed, or removed); "
            "check the id, or index it with `recsys index add FILE`"
        )


class InputError(RecsysError):
    """Input files had bad records (each is listed in ``problems``)."""

    def __init__(self, problems: list[InputProblem]) -> None:
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad record(s):\n{shown}{more}")


@dataclass(frozen=True)
class InputProblem:
    """One bad input record, located as ``file:line``."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Article:
    """One news article as read from input. Only ``id`` and ``title`` are required."""

    id: str
    title: str
    body: str = ""
    abstract: str = ""
    url: str = ""
    canonical_url: str = ""
    published_at: str | None = None  # ISO 8601, normalised to UTC by the readers
    category: str = ""
    subcategory: str = ""
    language: str = ""
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # unknown input fields, returned with hits


@dataclass(frozen=True)
class Hit:
    """One entry of a result list, ready to serialise to JSON."""

    id: str
    title: str
    url: str
    published_at: str | None
    score: float
    reason: str
    category: str = ""
    similarity: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    list_id: str = ""  # the served list this hit is in (a click posted back names it, and the position)
    position: int = 0  # 1-based place in that list

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Hits(list):
    """A served list: a plain ``list[Hit]``, and ``why`` says what emptied it when it is empty (e.g. "max_age_days
    = 90 leaves 0 of 120 articles: the newest was published 2023-05-24; 40 are undated")."""

    why: str = ""


@dataclass(frozen=True)
class Filters:
    """Restrictions on which articles may appear in a list (every list takes the same ones)."""

    categories: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    published_after: float | None = None  # epoch seconds; undated articles fail a window
    published_before: float | None = None
    exclude_ids: tuple[str, ...] = ()
    blocked_categories: tuple[str, ...] = ()  # an editor's block of whole sections (recsys/archive/rules.py)

    @property
    def restricts_rows(self) -> bool:
        return bool(
            self.categories
            or self.languages
            or self.published_after is not None
            or self.published_before is not None
            or self.blocked_categories
        )

    def excluding(self, ids: tuple[str, ...] = (), categories: tuple[str, ...] = ()) -> Filters:
        """These filters, also keeping out ``ids`` and the sections ``categories``."""
        if not ids and not categories:
            return self
        return replace(
            self,
            exclude_ids=(*self.exclude_ids, *ids),
            blocked_categories=(*self.blocked_categories, *categories),
        )


@dataclass(frozen=True)
class EventsAccepted:
    """What ``record_events`` did: ``accepted`` events counted for indexed ids (with ``durable``: newly
    stored, so a retried batch says 0), ``duplicates`` (durable only: keys already stored, nothing changed),
    ``held`` (ids not indexed yet), ``refused`` (the hold is full) and ``attributed``."""

    accepted: int
    held: int = 0
    refused: int = 0
    duplicates: int = 0
    attributed: int = 0  # clicks that named a list recently served with their article in it


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
