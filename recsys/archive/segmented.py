"""Several segments as one row space: a version's global rows run through its segments one after another.

``RowConcat`` gathers rows of per-segment arrays, ``SegmentedANN`` searches every segment and merges by
score (deleted rows dropped; exact segments scored as one matrix), ``SegmentedStore`` answers id and row
lookups across the segments' SQLite files, skipping deleted rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from recsys.archive.ann import HALF_SCAN_MIN, ExactIndex, HalfScan
from recsys.archive.segment import IVFRows, Segment, row_key
from recsys.archive.store import StoredArticle

K = TypeVar("K")
V = TypeVar("V")
EXACT_COPY_MAX = 20_000  # exact-segment rows searched as one in-memory matrix (30 MB at 384-d)


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
        self._of_rows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (row, k) -> search's answer
        self._half: HalfScan | None = None  # the exact rows' fp16 first pass, made on first use

    def search_row(self, row: int, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search`` of a stored row's own ``vector`` (one query), remembered per version (``ROW_SEARCHES``): a
        version never changes, so every reader of an article gets the same neighbours, and a news site's
        readers crowd onto the same articles. The arrays returned are shared: read them, never write."""
        key = (row, k)
        found = self._of_rows.get(key)
        if found is None:
            scores, rows = self.search(vector, k)
            found = (scores[0], rows[0])
            for array in found:
                array.setflags(write=False)
            if len(self._of_rows) >= ROW_SEARCHES:
                self._of_rows.clear()
            self._of_rows[key] = found
        return found

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
        scoring below a query's ``floor`` cannot make the merged top-k and are left out (padded with -1).
        Many rows with few deleted: a first pass over their fp16 copy (``HalfScan``, exact all the same)."""
        dead = self._exact_dead
        if self._exact_rows.size >= HALF_SCAN_MIN and 4 * int(dead.sum()) <= dead.size:
            scan = self._half
            if scan is None:  # built on the first search of this version (two threads may both build one)
                parts = [self.segments[i].vectors for i in self._exact]
                offsets = np.cumsum([0, *(part.shape[0] for part in parts)]).astype(np.int64)
                rows = self._exact_matrix if self._exact_matrix is not None else concat(parts, offsets, parts[0])
                scan = self._half = HalfScan(rows)  # the segments' own rows re-scored: no float32 copy of them
            scores, positions = scan.search(queries, min(k, dead.size), dead if dead.any() else None, floor)
            return scores, np.where(positions >= 0, self._exact_rows[np.maximum(positions, 0)], -1)
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


def remember(cache: dict[K, V], keys: list[K], limit: int, fetch: Callable[[list[K]], dict[K, V]]) -> None:
    """Make ``cache`` hold what ``fetch`` finds for ``keys`` (no repeats), fetching only those it lacks. A cache
    that would grow past ``limit`` is emptied first and all of ``keys`` are fetched again: what it remembered
    is gone (fetching only the missing ones then lost the rest: live ids came back unknown)."""
    missing = [key for key in keys if key not in cache]
    if missing and len(cache) + len(missing) > limit:
        cache.clear()
        missing = keys
    if missing:
        cache.update(fetch(missing))


LOOKUP_CACHE = 200_000  # ids (and rows) a version remembers from lookups, about 30 MB at most
ROW_SEARCHES = 4_096  # articles' neighbour searches a version remembers (~1.2 KB each at Related's 100)
ARTICLE_CACHE = 20_000  # articles (without their text) a version remembers from lists, about 20 MB at most


class SegmentedStore:
    """Article lookups over the segments of a version, in global rows; deleted rows are not found by id."""

    def __init__(self, segments: Sequence[Segment], offsets: np.ndarray, live: np.ndarray, takedowns: int) -> None:
        self.segments = list(segments)
        self.offsets = offsets
        self.live = live
        self._takedowns = takedowns
        self._newest_first = list(range(len(self.segments)))[::-1]
        self._row_cache: dict[str, int] = {}  # id -> row, -1: not live in this version
        self._id_cache: dict[int, str] = {}
        self._article_cache: dict[int, StoredArticle] = {}  # row -> article without its text

    def _global(self, segment: int, local: int) -> int | None:
        row = int(self.offsets[segment]) + local
        return row if self.live[row] else None

    def row_of(self, article_id: str) -> int | None:
        """The live row of an id (remembered, like ``rows_of``: a page asks for the article being read again and
        again, and an uncached look-up is one SQLite query per segment, newest first)."""
        return self.rows_of((article_id,)).get(article_id)

    def parked(self, article_id: str) -> StoredArticle | None:
        """A taken-down article's stored text and fields (its row is deleted but its segment still holds it), or
        None once a merge has dropped it."""
        for i in self._newest_first:
            store = self.segments[i].store
            local = store.row_of(article_id)
            if local is not None and self._global(i, local) is None:
                return store.get_rows([local], with_text=True).get(local)
        return None

    def rows_of(self, article_ids: Iterable[str]) -> dict[str, int]:
        """``id -> row`` of the live ones among these ids. A version never changes, so what was looked up is
        remembered (bounded): the lists of every request ask for the same hot articles again."""
        ids = list(dict.fromkeys(article_ids))
        cache = self._row_cache

        def look_up(missing: list[str]) -> dict[str, int]:
            found = self.hashes_of(missing)
            return {a: found[a][0] if a in found else -1 for a in missing}  # -1: not live, remembered too

        remember(cache, ids, LOOKUP_CACHE, look_up)
        out = {}
        for article_id in ids:
            row = cache.get(article_id, -1)
            if row >= 0:
                out[article_id] = row
        return out

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
        """``row -> id`` of these rows (remembered like ``rows_of``)."""
        rows = rows.tolist() if isinstance(rows, np.ndarray) else [int(r) for r in rows]
        cache = self._id_cache

        def look_up(missing: list[int]) -> dict[int, str]:
            found: dict[int, str] = {}
            for part, local in self._by_segment(missing):
                offset = int(self.offsets[part])
                for row, article_id in self.segments[part].store.ids_of(local).items():
                    found[row + offset] = article_id
            return found

        remember(cache, list(dict.fromkeys(rows)), LOOKUP_CACHE, look_up)
        return {r: cache[r] for r in rows if r in cache}

    def get_rows(self, rows: Sequence[int], with_text: bool = True) -> dict[int, StoredArticle]:
        """Articles by global row. Without their text (what lists read) they are remembered (bounded): a
        version never changes, and the lists of every request show the same hot articles again."""
        if with_text:
            return self._read_rows(rows, True)
        cache = self._article_cache
        wanted = [int(r) for r in rows]
        remember(cache, list(dict.fromkeys(wanted)), ARTICLE_CACHE, lambda missing: self._read_rows(missing, False))
        return {r: cache[r] for r in wanted if r in cache}

    def _read_rows(self, rows: Sequence[int], with_text: bool) -> dict[int, StoredArticle]:
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
