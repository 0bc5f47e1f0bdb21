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

import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys import lexical
from recsys.ann import ANNIndex, ExactIndex, FaissIVFIndex, exact_search, make_index
from recsys.layout import check_sizes, crash_point, file_sizes, fsync_path, fsync_tree
from recsys.store import COLUMNS, DB_FILE, ROW_DTYPE, ROWS_FILE, ArticleStore, StoredArticle, connect_writable
from recsys.types import ConfigError, IndexStateError

SEGMENT_FILE = "segment.json"
VECTORS_FILE = "vectors.npy"
ANN_DIR = "ann"
STAGING_PREFIX = ".staging-"
COPY_CHUNK = 65_536  # rows copied at a time between array files
EXACT_COPY_MAX = 20_000  # exact-segment rows searched as one in-memory matrix (30 MB at 384-d)


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


class Segment:
    """One segment, opened read-only. Arrays are memory-mapped; the SQLite file opens per thread on use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        try:
            self.info: dict[str, Any] = json.loads((path / SEGMENT_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise IndexStateError(
                f"{path}: unreadable {SEGMENT_FILE} ({exc}); the index is damaged - rebuild it with "
                "`recsys index build ARTICLES`"
            ) from None
        check_sizes(path, self.info.get("files", {}))
        self.rows = int(self.info["rows"])
        self.vectors = mapped(path / VECTORS_FILE)
        self.columns = mapped(path / ROWS_FILE)
        self.lex_ids = mapped(path / lexical.TERMS_FILE)
        self.lex_weights = mapped(path / lexical.WEIGHTS_FILE)
        if self.vectors.shape[0] != self.rows or self.columns.shape[0] != self.rows:
            raise IndexStateError(f"{path}: arrays do not match {SEGMENT_FILE}; rebuild with `recsys index build`")
        self.store = ArticleStore(path / DB_FILE)
        self.ann_kind = str(self.info["ann"]["kind"])
        # An exact segment is searched over vectors.npy; FAISS files are memory-mapped (recsys/ann.py).
        self.ann: ANNIndex = (
            ExactIndex.over(self.vectors) if self.ann_kind == ExactIndex.kind else ANNIndex.load(path / ANN_DIR)
        )
        # What readers take rows' vectors from: an IVF's lists hold the same floats as vectors.npy and are
        # read by its searches anyway, so a serving process never maps the second copy (1.5 GB at 1M).
        # vectors.npy stays the source for merges and exact search.
        self.served_vectors: np.ndarray | IVFRows = (
            IVFRows(self.ann, self.rows) if isinstance(self.ann, FaissIVFIndex) else self.vectors
        )

    def close(self) -> None:
        self.store.close()


def mapped(path: Path) -> np.ndarray:
    """A .npy file memory-mapped read-only, as a plain ndarray view: indexing an ``np.memmap`` costs a few
    microseconds of subclass bookkeeping per call, and a Related list makes dozens of such calls."""
    return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))


NAME = re.compile(r"s[0-9]{6}-[0-9a-f]{1,32}")


def checked_name(name: object, where: Path) -> str:
    """A segment name from a manifest, refused unless it has the form this module writes (a manifest from
    another host must not point a reader or a pull outside ``segments/``)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise IndexStateError(f"{where}: {name!r} is not a segment name; the manifest is damaged or not from recsys")
    return name


def new_name(segments_dir: Path) -> str:
    """s<sequence>-<random>: names sort in the order they were written."""
    numbers = [int(p.name[1:7]) for p in segments_dir.glob("s[0-9][0-9][0-9][0-9][0-9][0-9]-*")]
    numbers += [int(p.name[len(STAGING_PREFIX) + 1 :][:6]) for p in segments_dir.glob(f"{STAGING_PREFIX}s*")]
    return f"s{max(numbers, default=0) + 1:06d}-{secrets.token_hex(3)}"


class SegmentWriter:
    """Writes one segment: rows appended from new articles or copied from other segments, then ``finish``.

    Everything goes to ``segments/.staging-<name>`` and is renamed into place only when complete and
    flushed, so a killed job leaves either a whole segment (unreferenced until a version lists it, and
    collected by the next job if none does) or a staging folder the next job deletes."""

    def __init__(self, segments_dir: Path, dimension: int, rows: int) -> None:
        segments_dir.mkdir(parents=True, exist_ok=True)
        self.name = new_name(segments_dir)
        self.final = segments_dir / self.name
        self.path = segments_dir / f"{STAGING_PREFIX}{self.name}"
        self.path.mkdir()
        self.rows = rows
        self.dimension = dimension
        self.vectors = np.lib.format.open_memmap(self.path / VECTORS_FILE, "w+", np.float32, (rows, dimension))
        self.columns = np.zeros(rows, dtype=ROW_DTYPE)
        self.lex_ids = np.lib.format.open_memmap(self.path / lexical.TERMS_FILE, "w+", np.int32, (rows, lexical.TERMS))
        self.lex_weights = np.lib.format.open_memmap(
            self.path / lexical.WEIGHTS_FILE, "w+", lexical.WEIGHT_DTYPE, (rows, lexical.TERMS)
        )
        self.conn = connect_writable(self.path / DB_FILE)
        self.conn.execute("BEGIN")
        self.written = 0

    def append(
        self,
        records: Sequence[tuple[Any, ...]],
        vectors: np.ndarray,
        lex: tuple[np.ndarray, np.ndarray],
        columns: np.ndarray,
    ) -> None:
        """New rows: ``records`` are ``store.article_row`` tuples (their row value is replaced)."""
        start, n = self.written, len(records)
        self.conn.executemany(
            f"INSERT INTO articles ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
            [(start + i, *record[1:]) for i, record in enumerate(records)],
        )
        self._arrays(start, vectors, lex[0], lex[1], columns)
        self.written += n

    def copy_from(self, segment: Segment, local_rows: np.ndarray) -> None:
        """Rows of another segment, in the given order (what a merge keeps)."""
        start = self.written
        local_rows = np.asarray(local_rows, dtype=np.int64)
        self.conn.execute("ATTACH DATABASE ? AS old", (f"file:{segment.path / DB_FILE}?mode=ro",))
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS row_map (old_row INTEGER PRIMARY KEY, new_row INTEGER)")
        self.conn.execute("DELETE FROM row_map")
        self.conn.executemany(
            "INSERT INTO row_map VALUES (?, ?)",
            zip(local_rows.tolist(), range(start, start + len(local_rows)), strict=False),
        )
        cols = ",".join(f"a.{c}" for c in COLUMNS[1:])
        self.conn.execute(
            f"INSERT INTO articles ({','.join(COLUMNS)}) SELECT m.new_row, {cols} "
            "FROM old.articles a JOIN row_map m ON a.row = m.old_row"
        )
        self.conn.execute("COMMIT")  # DETACH is refused inside a transaction
        self.conn.execute("DETACH DATABASE old")
        self.conn.execute("BEGIN")
        for at in range(0, len(local_rows), COPY_CHUNK):
            part = local_rows[at : at + COPY_CHUNK]
            self._arrays(
                start + at,
                segment.vectors[part],
                segment.lex_ids[part],
                segment.lex_weights[part],
                segment.columns[part],
            )
        self.written += len(local_rows)

    def _arrays(self, start: int, vectors: Any, ids: Any, weights: Any, columns: np.ndarray) -> None:
        stop = start + len(columns)
        self.vectors[start:stop] = vectors
        self.lex_ids[start:stop] = ids
        self.lex_weights[start:stop] = weights
        self.columns[start:stop] = columns

    def finish(self, ann_kind: str, tuning: dict[str, Any], tune: tuple[int, float] | None) -> Segment:
        """Flush, build the segment's ANN, seal and rename into place; returns the opened segment.

        ``tune``: (sample size, target recall@10) to choose an IVF's nprobe on its own vectors, or None."""
        if self.written != self.rows:
            raise ValueError(f"segment {self.name}: {self.written} rows written of {self.rows}")
        self.conn.execute("COMMIT")
        self.conn.close()
        crash_point("after-sqlite")
        self.vectors.flush()
        self.lex_ids.flush()
        self.lex_weights.flush()
        np.save(self.path / ROWS_FILE, self.columns)
        crash_point("after-vectors")
        vectors = mapped(self.path / VECTORS_FILE)
        ann_info: dict[str, Any] = {"kind": ann_kind}
        if ann_kind != ExactIndex.kind and self.rows:
            ann = build_ann(ann_kind, vectors, tuning, tune)
            ann.save(self.path / ANN_DIR)
            ann_info = ann.settings()
        crash_point("after-ann")
        info = {"rows": self.rows, "dimension": self.dimension, "ann": ann_info, "files": file_sizes(self.path)}
        (self.path / SEGMENT_FILE).write_text(json.dumps(info, indent=2))
        del self.vectors, self.lex_ids, self.lex_weights, vectors
        fsync_tree(self.path)
        os.rename(self.path, self.final)
        fsync_path(self.final.parent)  # the rename is durable before any version lists the segment
        crash_point("after-segment")
        return Segment(self.final)

    def abandon(self) -> None:
        """Drop the staging folder of a job that failed before ``finish``."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        shutil.rmtree(self.path, ignore_errors=True)


def build_ann(kind: str, vectors: np.ndarray, tuning: dict[str, Any], tune: tuple[int, float] | None) -> ANNIndex:
    """An ANN over all of ``vectors`` (ids = row numbers). IVF centroids come from a seeded sample sized for
    the whole segment; with ``tune`` the IVF's nprobe is the smallest reaching the target recall."""
    n, dimension = vectors.shape
    ann = make_index(kind, dimension, **(tuning if kind == FaissIVFIndex.kind else {}))
    rows = np.arange(n)
    if isinstance(ann, FaissIVFIndex):
        size = min(n, ann.lists_for(n) * ann.TRAIN_POINTS_PER_LIST)
        ann.train(vectors[np.sort(np.random.default_rng(0).choice(n, size, replace=False))], n)
    for start in range(0, n, COPY_CHUNK * 4):
        part = rows[start : start + COPY_CHUNK * 4]
        ann.add(vectors[part], part)
    if isinstance(ann, FaissIVFIndex) and tune is not None:
        size = min(tune[0], n)
        sample = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
        queries = np.asarray(vectors[sample], dtype=np.float32)
        _, truth = exact_search(vectors, queries, 11)
        ann.tune(queries, sample, truth, tune[1])
    return ann


def row_key(key: Any, n: int) -> int | np.ndarray:
    """An indexing key of an ``n``-row array as rows: one row (negative counts from the end; out of range
    is an IndexError), or an int64 array of rows (from rows, a boolean mask or a slice)."""
    if isinstance(key, (int, np.integer)):
        row = int(key) + (n if key < 0 else 0)
        if not 0 <= row < n:
            raise IndexError(f"row {key} out of range for {n} rows")
        return row
    if isinstance(key, slice):
        return np.arange(n)[key]
    rows = np.asarray(key)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    return rows.astype(np.int64, copy=False)


def by_part(offsets: np.ndarray, rows: np.ndarray) -> list[tuple[int, np.ndarray | None, np.ndarray]]:
    """Global ``rows`` (1-D) grouped by the part holding them, parts ascending and rows in their order:
    ``(part, positions in rows, local rows)``. Positions is None when all rows are in one part (the common
    case: nothing to scatter). One ``searchsorted`` and one stable sort, whatever the number of parts."""
    owner = np.searchsorted(offsets, rows, side="right") - 1
    if rows.size and owner[0] == owner.min() == owner.max():
        part = int(owner[0])
        return [(part, None, rows - offsets[part])]
    local = rows - offsets[owner]
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(offsets))).tolist()
    return [
        (part, order[start:stop], local[order[start:stop]])
        for part, (start, stop) in enumerate(itertools.pairwise(bounds))
        if start < stop
    ]


class IVFRows:
    """A segment's vectors read from its IVF (``FaissIVFIndex.reconstruct``), indexed like the ndarray they
    equal: by row, rows, a boolean mask or a slice; ``np.asarray`` reads them all (evaluation only)."""

    def __init__(self, ann: FaissIVFIndex, rows: int) -> None:
        self.ann = ann
        self.shape = (rows, ann.dimension)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = row_key(key, self.shape[0])
        if isinstance(rows, int):
            return self.ann.reconstruct(np.array([rows]))[0]
        return self.ann.reconstruct(rows).reshape(*rows.shape, self.shape[1])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.ann.reconstruct(np.arange(self.shape[0]))
        return whole if dtype is None else whole.astype(dtype)


class RowConcat:
    """Row-aligned arrays of several segments read as one array of global rows (``array[rows]``).

    It stands in for an ndarray where the lists use one: indexing by row, rows or a slice, ``shape``,
    ``len`` and ``np.asarray`` (which copies everything: evaluation only). A gather of a few hundred rows
    costs one ``searchsorted`` and one sort (``by_part``) plus one fancy index per segment touched."""

    def __init__(self, parts: Sequence[np.ndarray | IVFRows], offsets: np.ndarray) -> None:
        self.parts = list(parts)
        self.offsets = offsets  # start row of each part, then the total
        first = self.parts[0]
        self.shape = (int(offsets[-1]), *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = first.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = row_key(key, self.shape[0])
        if isinstance(rows, int):
            part = int(np.searchsorted(self.offsets, rows, side="right")) - 1
            return self.parts[part][rows - int(self.offsets[part])]
        groups = by_part(self.offsets, rows.reshape(-1))
        if len(groups) == 1 and groups[0][1] is None:
            part, _, local = groups[0]
            return self.parts[part][local]
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        for part, positions, local in groups:
            out[positions] = self.parts[part][local]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.concatenate([np.asarray(p) for p in self.parts])
        return whole if dtype is None else whole.astype(dtype)


def concat(
    parts: Sequence[np.ndarray | IVFRows], offsets: np.ndarray, empty: np.ndarray
) -> np.ndarray | IVFRows | RowConcat:
    """One segment's array as is (no indirection), several as a RowConcat, none as ``empty``."""
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else RowConcat(parts, offsets)


class SegmentedANN:
    """The ANN of a version: each segment searched, deleted rows dropped, results merged by score.

    Ids are global rows. An indexed segment (IVF, FAISS flat) is asked for ``k`` plus its deleted rows (at
    most ``k`` more); exact segments (the small ones adds write) are scored together: one product per
    segment and one top-k over all of them, instead of a search call each. Ties go to the lower row.
    The caller asks again with a larger ``k`` when filters leave too few."""

    def __init__(
        self, segments: Sequence[Segment], offsets: np.ndarray, live: np.ndarray, summary: dict[str, Any]
    ) -> None:
        self.segments = list(segments)
        self.offsets = offsets
        self.live = live
        self.summary = summary
        self.deleted = [
            int(self.segments[i].rows - live[offsets[i] : offsets[i + 1]].sum()) for i in range(len(self.segments))
        ]
        populated = [i for i, s in enumerate(self.segments) if s.rows]
        self._indexed = [i for i in populated if self.segments[i].ann_kind != ExactIndex.kind]
        self._exact = [i for i in populated if self.segments[i].ann_kind == ExactIndex.kind]
        self._exact_rows = np.concatenate(
            [np.arange(offsets[i], offsets[i + 1], dtype=np.int64) for i in self._exact] or [np.empty(0, np.int64)]
        )
        self._exact_dead = ~live[self._exact_rows]
        # Up to EXACT_COPY_MAX rows, the exact segments' vectors are copied into one matrix: one product per
        # query instead of one per segment (small segments are what frequent adds leave behind).
        self._exact_matrix: np.ndarray | None = None
        if 1 < len(self._exact) and self._exact_rows.size <= EXACT_COPY_MAX:
            self._exact_matrix = np.ascontiguousarray(np.concatenate([self.segments[i].vectors for i in self._exact]))

    @property
    def kind(self) -> str:
        return str(self.summary.get("kind", ExactIndex.kind))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        found_scores, found_rows = [], []
        for i in self._indexed:
            segment = self.segments[i]
            scores, rows = segment.ann.search(queries, min(segment.rows, k + min(self.deleted[i], k)))
            rows = np.where(rows >= 0, rows + self.offsets[i], -1)
            if self.deleted[i]:
                dead = rows >= 0
                dead[dead] = ~self.live[rows[dead]]
                rows = np.where(dead, -1, rows)
                scores = np.where(dead, -np.inf, scores)
            found_scores.append(scores)
            found_rows.append(rows)
        if self._exact:
            # An exact row can only enter the merged top-k above the k-th best score the indexed segments found.
            floor = np.full(queries.shape[0], -np.inf, dtype=np.float32)
            if found_scores:
                found = np.concatenate(found_scores, axis=1)
                if found.shape[1] >= k:
                    floor = -np.partition(-found, k - 1, axis=1)[:, k - 1]
            scores, rows = self._search_exact(queries, k, floor)
            found_scores.append(scores)
            found_rows.append(rows)
        shape = (queries.shape[0], k)
        if not found_rows:
            return np.full(shape, -np.inf, dtype=np.float32), np.full(shape, -1, dtype=np.int64)
        scores, rows = np.concatenate(found_scores, axis=1), np.concatenate(found_rows, axis=1)
        out_scores, out_rows = np.full(shape, -np.inf, dtype=np.float32), np.full(shape, -1, dtype=np.int64)
        for q in range(queries.shape[0]):
            order = np.lexsort((rows[q], -scores[q]))[:k]  # best score first, then the lower row
            out_scores[q, : order.size], out_rows[q, : order.size] = scores[q, order], rows[q, order]
        return out_scores, out_rows

    def _search_exact(self, queries: np.ndarray, k: int, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of all exact segments at once (deleted rows excluded), unsorted: the caller merges. Rows
        scoring below a query's ``floor`` cannot make the merged top-k and are left out (padded with -1)."""
        if self._exact_matrix is not None:
            sims = (self._exact_matrix @ queries.T).T
        else:
            sims = np.concatenate([queries @ self.segments[i].vectors.T for i in self._exact], axis=1)
        if self._exact_dead.any():
            sims[:, self._exact_dead] = -np.inf
        want = min(k, sims.shape[1])
        scores = np.full((queries.shape[0], want), -np.inf, dtype=np.float32)
        rows = np.full((queries.shape[0], want), -1, dtype=np.int64)
        for q, row in enumerate(sims):
            # the floor first: usually a handful of rows pass it, so the partition below is over few
            top = np.flatnonzero(row >= floor[q]) if np.isfinite(floor[q]) else np.arange(row.shape[0])
            if top.size > want:  # argpartition on the scores themselves: negating first doubled its cost
                top = top[np.argpartition(row[top], top.size - want)[top.size - want :]]
            scores[q, : top.size] = row[top]
            rows[q, : top.size] = np.where(np.isfinite(row[top]), self._exact_rows[top], -1)
        return scores, rows

    def __len__(self) -> int:
        return int(self.live.sum())


class SegmentedStore:
    """Article lookups over the segments of a version, in global rows; deleted rows are not found by id."""

    def __init__(self, segments: Sequence[Segment], offsets: np.ndarray, live: np.ndarray, takedowns: int) -> None:
        self.segments = list(segments)
        self.offsets = offsets
        self.live = live
        self._takedowns = takedowns
        self._newest_first = list(range(len(self.segments)))[::-1]

    def _global(self, segment: int, local: int) -> int | None:
        row = int(self.offsets[segment]) + local
        return row if self.live[row] else None

    def row_of(self, article_id: str) -> int | None:
        for i in self._newest_first:
            local = self.segments[i].store.row_of(article_id)
            if local is not None:
                row = self._global(i, local)
                if row is not None:
                    return row
        return None

    def rows_of(self, article_ids: Iterable[str]) -> dict[str, int]:
        return {article_id: row for article_id, (row, _) in self.hashes_of(article_ids).items()}

    def hashes_of(self, article_ids: Iterable[str]) -> dict[str, tuple[int, str]]:
        """``id -> (row, content hash)`` of the live rows of these ids (what an index job compares)."""
        ids = list(dict.fromkeys(article_ids))
        found: dict[str, tuple[int, str]] = {}
        for i in self._newest_first:
            missing = [a for a in ids if a not in found]
            if not missing:
                break
            for article_id, (local, digest) in self.segments[i].store.hashes_of(missing).items():
                row = self._global(i, local)
                if row is not None:
                    found[article_id] = (row, digest)
        return found

    def live_ids(self) -> dict[str, tuple[int, str]]:
        """``id -> (row, content hash)`` of every live article (a full build compares all of them)."""
        found: dict[str, tuple[int, str]] = {}
        for i, segment in enumerate(self.segments):
            for article_id, local, digest in segment.store.all_hashes():
                row = self._global(i, local)
                if row is not None:
                    found[article_id] = (row, digest)
        return found

    def _by_segment(self, rows: Sequence[int]) -> Iterable[tuple[int, list[int]]]:
        for part, _, local in by_part(self.offsets, np.asarray(rows, dtype=np.int64).reshape(-1)):
            yield part, local.tolist()

    def ids_of(self, rows: Iterable[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for part, local in self._by_segment(list(rows)):
            offset = int(self.offsets[part])
            for row, article_id in self.segments[part].store.ids_of(local).items():
                found[row + offset] = article_id
        return found

    def get_rows(self, rows: Sequence[int], with_text: bool = True) -> dict[int, StoredArticle]:
        found: dict[int, StoredArticle] = {}
        for part, local in self._by_segment(rows):
            offset = int(self.offsets[part])
            for row, article in self.segments[part].store.get_rows(local, with_text).items():
                found[row + offset] = article.moved(row + offset)
        return found

    def records(self, rows: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """Stored column values by row (in ``store.COLUMNS`` order, the row global)."""
        found: dict[int, tuple[Any, ...]] = {}
        for part, local in self._by_segment(rows):
            offset = int(self.offsets[part])
            for values in self.segments[part].store.records(local):
                found[values[0] + offset] = (values[0] + offset, *values[1:])
        return found

    def get(self, article_id: str) -> StoredArticle | None:
        row = self.row_of(article_id)
        return None if row is None else self.get_rows([row])[row]

    def labels(self, column: str) -> list[tuple[int, str, str]]:
        """``(row, id, value)`` of one metadata column for every live article, in row order (evaluation)."""
        out: list[tuple[int, str, str]] = []
        for i, segment in enumerate(self.segments):
            offset = int(self.offsets[i])
            out += [(r + offset, a, v) for r, a, v in segment.store.labels(column) if self.live[r + offset]]
        return out

    def takedowns(self) -> int:
        """How many ids are taken down in this version (``recsys index remove``)."""
        return self._takedowns

    def close(self) -> None:
        for segment in self.segments:
            segment.close()
