""" "Readers also read": item-to-item co-reads from reading histories, time-decayed and shrunk for significance.

Each new read of a reader is paired with that reader's ``window`` previous reads. A pair formed at time
``t`` weighs ``0.5 ** ((now - t) / half_life)``, like popularity's events, so last week's co-reads count
more than last year's. The association of two articles is a shrunk cosine over readers::

    assoc(a, b) = C(a, b) / (sqrt(N(a) * N(b)) + shrink)

with C the decayed pair weight and N the decayed number of pairs each article is in. ``shrink`` keeps two
articles read together by one reader from looking as related as two read together by hundreds.
``C`` is symmetric by construction (one pair feeds both directions).

The same object serves an honest replay (reads are added in time order and scoring uses only what was
added before) and the live service, which loads the table ``recsys train`` stores in the index as JSON:
each article's ``keep`` strongest neighbours.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive.layout import COREADS_FILE, load_trained
from recsys.types import IndexStateError

COREADS_FORMAT = 1
_MAX_EXPONENT = 900.0


@dataclass(frozen=True)
class CoReadConfig:
    """Defaults of the co-read table (in one place; ``[coreads]`` is not user-facing yet)."""

    window: int = 20  # a read pairs with this many earlier reads of the same reader
    half_life_days: float = 7.0
    shrink: float = 2.0
    keep: int = 30  # neighbours per article stored in the index


class CoReads:
    """Decayed co-read counts, updated read by read; queries at any later time."""

    def __init__(self, config: CoReadConfig | None = None) -> None:
        self.config = config or CoReadConfig()
        self.half_life = self.config.half_life_days * 86_400.0
        self.anchor: float | None = None
        self.pairs: dict[str, dict[str, float]] = defaultdict(dict)
        self.mass: dict[str, float] = defaultdict(float)
        self._recent: dict[str, list[str]] = defaultdict(list)  # reader -> last `window` reads, newest last
        self._seen: dict[str, set[str]] = defaultdict(set)
        # neighbours() answers until the next read is added, for the same minute (the association's decay moves
        # nothing within a minute on a news clock of days): a serving process folds new events every few seconds
        # and is asked for the same hot articles' neighbours by every request in between.
        self._answers: dict[tuple[str, int, int], list[tuple[str, float]]] = {}

    def __len__(self) -> int:
        return len(self.mass)

    def _weight(self, ts: float) -> float:
        if self.anchor is None:
            self.anchor = ts
        return 2.0 ** max(-_MAX_EXPONENT, min(_MAX_EXPONENT, (ts - self.anchor) / self.half_life))

    def add_reads(self, reader: str, reads: Iterable[tuple[str, float]]) -> int:
        """Add a reader's reads (article, time) in time order; a read already known for this reader is skipped."""
        recent, seen = self._recent[reader], self._seen[reader]
        self._answers.clear()
        added = 0
        for article, ts in reads:
            if not article or article in seen or not math.isfinite(ts):
                continue
            seen.add(article)
            weight = self._weight(ts)
            for other in recent:
                self.pairs[article][other] = self.pairs[article].get(other, 0.0) + weight
                self.pairs[other][article] = self.pairs[other].get(article, 0.0) + weight
                self.mass[article] += weight
                self.mass[other] += weight
            recent.append(article)
            if len(recent) > self.config.window:
                del recent[0]
            added += 1
        return added

    def _scale(self, at: float) -> float:
        if self.anchor is None:
            return 0.0
        return 2.0 ** max(-_MAX_EXPONENT, min(_MAX_EXPONENT, (self.anchor - at) / self.half_life))

    def association(self, a: str, b: str, at: float) -> float:
        scale = self._scale(at)
        together = self.pairs.get(a, {}).get(b, 0.0) * scale
        if together <= 0:
            return 0.0
        return together / (math.sqrt(self.mass[a] * scale * self.mass[b] * scale) + self.config.shrink)

    def score(self, history: Sequence[str], candidates: Sequence[str], at: float, last: int = 10) -> np.ndarray:
        """Per candidate: sum of its association with the reader's ``last`` most recent reads (newest first)."""
        out = np.zeros(len(candidates))
        scale = self._scale(at)
        if scale == 0.0:
            return out
        shrink = self.config.shrink
        slot: dict[str, int] = {}  # each distinct candidate's place in ``totals``
        inverse = np.fromiter((slot.setdefault(c, len(slot)) for c in candidates), np.int64, count=len(candidates))
        totals = np.zeros(len(slot))
        mass = self.mass
        # every read's shared candidates gathered first, then one computation over them all (the same float64
        # arithmetic per pair); the key views' intersection walks the shorter side (a hub read has thousands of
        # co-reads); np.add.at adds in read order, one term per candidate per read, as a loop over reads would
        slots: list[int] = []
        together: list[float] = []
        masses: list[float] = []
        read_masses: list[float] = []
        for read in history[:last]:
            row = self.pairs.get(read)
            if not row:
                continue
            common = list(slot.keys() & row.keys())
            if not common:
                continue
            slots.extend(map(slot.__getitem__, common))
            together.extend(map(row.__getitem__, common))
            masses.extend(map(mass.__getitem__, common))
            read_masses.extend(itertools.repeat(mass[read] * scale, len(common)))
        if slots:
            pair = np.asarray(together, dtype=np.float64)
            value = pair * scale / (np.sqrt(np.asarray(read_masses) * np.asarray(masses) * scale) + shrink)
            np.add.at(totals, np.asarray(slots, dtype=np.int64), np.where(pair > 0, value, 0.0))
        return totals[inverse]

    def neighbours(self, article: str, at: float, k: int) -> list[tuple[str, float]]:
        """The k articles most associated with ``article`` (strongest first)."""
        key = (article, k, int(at // 60.0))
        if key not in self._answers:
            if len(self._answers) > 100_000:
                self._answers.clear()
            self._answers[key] = self._strongest(article, at, k)
        return list(self._answers[key])

    def _strongest(self, article: str, at: float, k: int) -> list[tuple[str, float]]:
        """``neighbours`` computed afresh: ``association`` over the article's whole row at once (the same
        arithmetic, in the same order; a hub article has thousands of co-reads)."""
        row = self.pairs.get(article)
        scale = self._scale(at)
        if not row or scale == 0.0 or k <= 0:
            return []
        others = list(row)
        mass = self.mass
        together = np.fromiter(row.values(), dtype=np.float64, count=len(others)) * scale
        masses = np.fromiter((mass[o] for o in others), dtype=np.float64, count=len(others))
        scores = together / (np.sqrt(mass[article] * scale * masses * scale) + self.config.shrink)
        positive = np.flatnonzero(scores > 0)
        if positive.size > k:  # keep every tie of the k-th score: ties are broken by id below
            kth = -np.partition(-scores[positive], k - 1)[k - 1]
            positive = positive[scores[positive] >= kth]
        found = sorted(((others[i], float(scores[i])) for i in positive.tolist()), key=lambda item: (-item[1], item[0]))
        return found[:k]

    # -- the table stored in the index ---------------------------------------------------------

    def table(self, at: float) -> dict[str, list[tuple[str, float]]]:
        """Each article's ``keep`` strongest neighbours at ``at`` (each asked once: not through the answers kept
        for serving)."""
        return {a: n for a in sorted(self.pairs) if (n := self._strongest(a, at, self.config.keep))}


@dataclass(frozen=True)
class CoReadTable:
    """The stored neighbours (what the service reads): article -> [(neighbour, association), ...]."""

    neighbours: dict[str, list[tuple[str, float]]]
    built_at: float

    def of(self, article: str) -> list[tuple[str, float]]:
        return self.neighbours.get(article, [])

    def score(self, history: Sequence[str], candidates: Sequence[str], last: int = 10) -> np.ndarray:
        """Like CoReads.score, from the stored neighbour lists (pairs outside them count 0)."""
        wanted = {c: i for i, c in enumerate(candidates)}
        out = np.zeros(len(candidates))
        for read in history[:last]:
            for other, value in self.neighbours.get(read, ()):
                i = wanted.get(other)
                if i is not None:
                    out[i] += value
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": COREADS_FORMAT,
            "built_at": self.built_at,
            "neighbours": {a: [[o, round(v, 6)] for o, v in n] for a, n in self.neighbours.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CoReadTable:
        if data.get("format") != COREADS_FORMAT:
            raise IndexStateError(f"co-read table format {data.get('format')}; re-run `recsys train`")
        neighbours = {a: [(str(o), float(v)) for o, v in n] for a, n in data["neighbours"].items()}
        return cls(neighbours, float(data["built_at"]))

    @classmethod
    def load(cls, root: Path) -> CoReadTable | None:
        return load_trained(root, COREADS_FILE, cls.from_json)
