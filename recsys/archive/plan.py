"""The first step of an index job: decide, per input article, what the job must do.

``plan_job`` compares the input with the live version (content hashes of the embedded text and the model)
and says which articles keep their row, which need a vector (new text; a taken-down article that comes
back unchanged re-uses its parked vector), which changed only metadata, and which rows go. It writes
nothing, so every decision is testable on its own. ``Part`` and ``BuildReport`` are the records the later
steps (write a segment, publish, merge) pass along.
"""

from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recsys.archive.segment import Segment
from recsys.archive.store import article_row
from recsys.archive.version import VersionReader
from recsys.embedder import content_hash, text_of
from recsys.types import Article, InputProblem


@dataclass
class BuildReport:
    """What an index job did."""

    version: str | None = None
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    blocked: int = 0  # input articles refused because they were taken down
    embedded: int = 0
    articles: int = 0
    embed_seconds: float = 0.0
    seconds: float = 0.0
    rows: int = 0
    compacted: bool = False  # a merge rewrote segments (dropping deleted rows)
    segments: int = 0  # segments in the published version
    merged: int = 0  # segments folded together by the merge policy
    visible_seconds: float = 0.0  # when the change was live (an add's merges run after it is published)
    problems: list[InputProblem] = field(default_factory=list)
    not_indexed: list[str] = field(default_factory=list)  # ids a remove named that no version holds
    related_floor: float | None = None  # the similarity floor calibrated on this version (build, optimize)
    warnings: list[str] = field(default_factory=list)  # e.g. most articles in a language the model does not know

    @property
    def docs_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = [str(p) for p in self.problems]
        data["docs_per_second"] = round(self.docs_per_second, 1)
        return data


@dataclass
class Part:
    """A segment of the version being written, with its deleted local rows (sorted)."""

    segment: Segment
    deleted: np.ndarray

    @property
    def live(self) -> int:
        return self.segment.rows - int(self.deleted.size)

    def live_rows(self) -> np.ndarray:
        keep = np.ones(self.segment.rows, dtype=bool)
        keep[self.deleted.astype(np.int64)] = False
        return np.flatnonzero(keep)


@dataclass
class JobPlan:
    """What one job does to the live version (``plan_job``)."""

    articles: list[Article]  # the input less taken-down ids, in input order
    blocked: int  # input articles refused because they are taken down
    hashes: dict[str, str]  # id -> content hash of the embedded text and model
    known: dict[str, tuple[int, str]]  # what the live version holds of the ids involved: (global row, hash)
    keep_rows: dict[str, int]  # unchanged articles -> their row in the live version
    to_embed: list[Article]  # new text (or a new model): written again with a fresh or parked vector
    reuse: dict[str, str]  # of to_embed: id -> parked vector (base64 float32) whose text is unchanged
    changed_meta: list[Article]  # kept articles whose other fields changed (vector and terms carried)
    gone: list[str]  # ids whose rows this job deletes
    takedowns: dict[str, str]  # id -> when taken down, after this job
    parked: dict[str, list[str]]  # id -> [hash, vector] set aside with a takedown, after this job
    same_model: bool  # the live version was embedded with the configured model
    changes_state: bool  # takedowns or parked vectors differ from the live version's

    @property
    def updated(self) -> int:
        return sum(1 for a in self.to_embed if a.id in self.known)

    @property
    def added(self) -> int:
        return len(self.to_embed) - self.updated

    @property
    def writes_nothing(self) -> bool:
        """No row to write or delete and no state change: the live version already says it all."""
        return not self.to_embed and not self.gone and not self.changed_meta and not self.changes_state

    def fill(self, report: BuildReport) -> None:
        report.blocked = self.blocked
        report.removed = len(self.gone)
        report.updated = self.updated
        report.added = self.added
        report.unchanged = len(self.keep_rows)

    def state(self) -> dict[str, Any]:
        """The version's state.json after this job."""
        return {"takedowns": self.takedowns, "parked": self.parked}


def plan_job(
    prev: VersionReader | None,
    articles: list[Article],
    removals: set[str],
    restores: set[str],
    replace_all: bool,
    model: str,
    max_chars: int,
) -> JobPlan:
    """Decide the job: ``articles`` to upsert (``replace_all``: the index holds exactly these afterwards),
    ids to take down (``removals``) and takedowns to lift (``restores``), against the live version."""
    same_model = prev is not None and prev.manifest["model"]["name"] == model
    state = prev.state if prev is not None else {"takedowns": {}, "parked": {}}
    old_takedowns: dict[str, str] = dict(state["takedowns"])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    takedowns = {i: at for i, at in old_takedowns.items() if i not in restores}
    takedowns |= {i: old_takedowns.get(i, stamp) for i in removals}
    allowed = [a for a in articles if a.id not in takedowns]

    hashes = {a.id: content_hash(text_of(a, max_chars), model) for a in allowed}
    if prev is None:
        known: dict[str, tuple[int, str]] = {}
    elif replace_all:
        known = prev.store.live_ids()
    else:
        known = prev.store.hashes_of([*hashes, *removals])
    keep_rows: dict[str, int] = {}
    to_embed: list[Article] = []
    for article in allowed:
        old = known.get(article.id)
        if old is not None and same_model and old[1] == hashes[article.id]:
            keep_rows[article.id] = old[0]
        else:
            to_embed.append(article)
    gone = [i for i in known if i not in hashes] if replace_all else [i for i in removals if i in known]
    # Taken-down articles keep their vector aside; one that comes back unchanged is not re-embedded.
    parked: dict[str, list[str]] = dict(state["parked"])
    for article_id in removals & set(known):
        row, digest = known[article_id]
        vector = np.asarray(prev.vectors[row], dtype=np.float32)  # type: ignore[union-attr]
        parked[article_id] = [digest, base64.b64encode(vector.tobytes()).decode()]
    reuse = {a.id: parked[a.id][1] for a in to_embed if a.id in parked and parked[a.id][0] == hashes[a.id]}
    for article in to_embed:
        parked.pop(article.id, None)
    changed_meta = metadata_changes(prev, allowed, keep_rows, hashes) if prev is not None else []
    return JobPlan(
        articles=allowed,
        blocked=len(articles) - len(allowed),
        hashes=hashes,
        known=known,
        keep_rows=keep_rows,
        to_embed=to_embed,
        reuse=reuse,
        changed_meta=changed_meta,
        gone=gone,
        takedowns=takedowns,
        parked=parked,
        same_model=same_model,
        changes_state=takedowns.keys() != old_takedowns.keys() or parked.keys() != state["parked"].keys(),
    )


def metadata_changes(
    prev: VersionReader, articles: list[Article], keep_rows: dict[str, int], hashes: dict[str, str]
) -> list[Article]:
    """Kept articles whose non-embedded fields (url, date, category, ...) changed."""
    kept = [a for a in articles if a.id in keep_rows]
    stored = prev.store.records([keep_rows[a.id] for a in kept])
    return [a for a in kept if article_row(keep_rows[a.id], a, hashes[a.id]) != tuple(stored[keep_rows[a.id]])]


def carried_parts(prev: VersionReader | None, plan: JobPlan, replace_all: bool) -> list[Part]:
    """The previous version's segments with this job's deletions added: rows of removed articles, and
    the old rows of articles this job writes again (new text, or new metadata)."""
    if prev is None or (replace_all and not plan.same_model):
        return []
    known = plan.known
    dead = [known[i][0] for i in plan.gone]
    dead += [known[a.id][0] for a in plan.to_embed if a.id in known]
    dead += [plan.keep_rows[a.id] for a in plan.changed_meta]
    live = prev.live.copy()
    live[np.asarray(dead, dtype=np.int64)] = False
    parts = []
    for i, segment in enumerate(prev.segments):
        start, stop = int(prev.offsets[i]), int(prev.offsets[i + 1])
        parts.append(Part(segment, np.flatnonzero(~live[start:stop]).astype(np.int32)))
    return parts
