"""Segments: the immutable pieces a version is made of (Lucene's model).

A segment is a folder under ``index/segments/`` written once and never changed::

    segments/<name>/
      segment.json       rows, dimension, ANN settings, the size of every file (checked at open)
      articles.sqlite    article metadata and text, keyed by the segment's own row numbers 0..rows-1
      vectors.npy        float32 [rows, dim]
      rows.npy           per-row filter columns (published, category, language, story; codes into the
                         version's append-only vocab.json)
      lex_terms.npy      the lexical arrays (recsys/lexical.py), row-aligned
      lex_weights.npy
      ann/               the segment's ANN files (IVF or FAISS flat); none for an exact segment, which is
                         searched over vectors.npy itself

A version (recsys/version.py) lists its segments in order plus, per segment, the rows deleted since it
was written; its global row numbers run through the segments one after the other. ``index add`` writes
one small segment and ``remove`` only deletions, so a job costs what it changes, not the archive; the
merge policy (``plan_merges``) folds small segments together inside later jobs so their number stays
bounded. This module owns a segment's files: ``SegmentWriter`` writes one, ``Segment`` reads one, and
``RowConcat`` / ``SegmentedANN`` / ``SegmentedStore`` present several as one row space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from recsys.types import ConfigError


@dataclass(frozen=True)
class MergePolicy:
    """When to fold segments together (a log merge policy with a floor, as Lucene's).

    A segment's level is 0 up to ``floor`` live rows, 1 up to ``floor * factor``, 2 up to
    ``floor * factor**2`` and so on; a run of
    ``factor`` adjacent segments on one level is merged into one (so a merge copies at most about
    ``factor`` times the size of what it merges, and there are at most ``factor - 1`` segments per
    level), and a segment with more than ``dead_fraction`` of its rows deleted is rewritten without them.
    """

    factor: int = 8
    floor: int = 1_000
    dead_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.factor < 2:
            raise ConfigError(f"[index] merge_factor must be at least 2 (segments folded into one), not {self.factor}")
        if self.floor < 1:
            raise ConfigError(f"[index] merge_floor must be at least 1 row, not {self.floor}")
        if not 0.0 <= self.dead_fraction <= 1.0:
            raise ConfigError(
                f"[index] compact_dead_fraction must be in [0, 1] (the share of deleted rows that makes a segment "
                f"be rewritten), not {self.dead_fraction}"
            )

    def level(self, live: int) -> int:
        if live <= self.floor:
            return 0
        return max(1, math.ceil(math.log(live / self.floor) / math.log(self.factor) - 1e-9))


def plan_merge(sizes: Sequence[tuple[int, int]], policy: MergePolicy) -> tuple[int, int] | None:
    """The next run ``[start, stop)`` of adjacent segments to merge, or None.

    ``sizes`` holds ``(rows, deleted)`` per segment in version order. The newest full run on one level
    goes first (that is where small segments pile up); else the first segment with too many deletions."""
    levels = [policy.level(rows - deleted) for rows, deleted in sizes]
    stop = len(sizes)
    while stop > 0:
        start = stop - 1
        while start > 0 and levels[start - 1] == levels[stop - 1]:
            start -= 1
        if stop - start >= policy.factor:
            return stop - policy.factor, stop
        stop = start
    for position, (rows, deleted) in enumerate(sizes):
        if rows and deleted / rows > policy.dead_fraction:
            return position, position + 1
    return None
