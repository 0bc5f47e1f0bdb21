"""The merge step of index jobs: when to fold segments together, and folding them.

``MergePolicy`` / ``plan_merge`` decide (a log merge policy with a floor, as Lucene's); ``merge_parts``
applies the policy, copying the live rows of a run of adjacent segments into one new segment, and
``optimize_parts`` folds everything into one segment whose lexical weights are counted afresh (what a fresh
build computes). Merged-away segments are left for ``IndexLayout.collect_segments`` once no kept version
lists them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.archive import lexical
from recsys.archive.plan import Part
from recsys.archive.segment import Segment
from recsys.archive.segment_writer import SegmentWriter
from recsys.archive.write import AnnChoice
from recsys.embedder import article_text
from recsys.types import ConfigError

TEXT_CHUNK = 20_000  # rows whose texts are read at a time when optimize recounts the lexical frequencies


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


def merge_parts(
    parts: list[Part],
    segments_dir: Path,
    dimension: int,
    policy: MergePolicy,
    ann: AnnChoice,
    everything: bool,
    written: list[Segment],
) -> tuple[int, list[Part]]:
    """Apply the merge policy until it has nothing to do (``everything``: fold all into one segment).
    Returns how many segments were folded and the parts after merging; new segments join ``written``."""
    merged = 0
    while True:
        parts = [p for p in parts if p.live > 0]  # a segment with every row deleted is simply dropped
        if everything:
            compact = len(parts) == 1 and not parts[0].deleted.size
            compact = compact and parts[0].segment.ann_kind == ann.kind_for(parts[0].live)
            run = None if not parts or compact else (0, len(parts))
        else:
            run = plan_merge([(p.segment.rows, int(p.deleted.size)) for p in parts], policy)
        if run is None:
            return merged, parts
        start, stop = run
        writer = SegmentWriter(segments_dir, dimension, sum(p.live for p in parts[start:stop]))
        try:
            for part in parts[start:stop]:
                writer.copy_from(part.segment, part.live_rows())
            segment = ann.finish(writer)
        except BaseException:
            writer.abandon()
            raise
        written.append(segment)
        merged += stop - start
        parts = [*parts[:start], Part(segment, np.empty(0, dtype=np.int32)), *parts[stop:]]
        if everything:
            return merged, parts


def optimize_parts(
    parts: list[Part],
    segments_dir: Path,
    dimension: int,
    ann: AnnChoice,
    max_chars: int,
    written: list[Segment],
) -> tuple[int, list[Part], np.ndarray, int]:
    """Fold every live row into one new segment and weigh its lexical terms with document frequencies
    counted afresh over exactly those texts. Returns (segments folded, parts, frequencies, documents)."""
    parts = [p for p in parts if p.live > 0]
    df = np.zeros(lexical.BUCKETS, dtype=np.int32)
    if not parts:
        return 0, parts, df, 0
    rows = sum(p.live for p in parts)
    writer = SegmentWriter(segments_dir, dimension, rows)
    try:
        for part in parts:
            writer.copy_from(part.segment, part.live_rows())
        for start in range(0, rows, TEXT_CHUNK):
            lexical.add_frequencies(df, lexical.term_counts(*written_texts(writer, start, TEXT_CHUNK, max_chars)))
        for start in range(0, rows, TEXT_CHUNK):
            counts = lexical.term_counts(*written_texts(writer, start, TEXT_CHUNK, max_chars))
            stop = start + len(counts)
            writer.lex_ids[start:stop], writer.lex_weights[start:stop] = lexical.weigh(counts, df, rows)
        segment = ann.finish(writer)
    except BaseException:
        writer.abandon()
        raise
    written.append(segment)
    return len(parts), [Part(segment, np.empty(0, dtype=np.int32))], df, rows


def written_texts(writer: SegmentWriter, start: int, count: int, max_chars: int) -> tuple[list[str], list[str]]:
    """The embedded texts of rows [start, start + count) of a segment being written, and their languages."""
    found = writer.conn.execute(
        "SELECT title, abstract, body, language FROM articles WHERE row >= ? AND row < ? ORDER BY row",
        (start, start + count),
    ).fetchall()
    return [article_text(t, a, b, max_chars) for t, a, b, _ in found], [lang for *_, lang in found]
