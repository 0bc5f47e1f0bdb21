"""Nearest-neighbour search over unit vectors (inner product = cosine), behind one interface.

Backends:

- ``exact``: brute force with numpy. The ground truth for recall, and the default for small
  archives (no faiss import at all on the query path).
- ``faiss-flat``: FAISS ``IndexFlatIP`` with ids; exact as well, FAISS's kernels.
- ``faiss-ivf``: FAISS ``IVF<n>,Flat``; approximate, for large archives. Its settings
  (lists per sqrt(n), nprobe) come from ``benchmarks/ann_recall.py``.

Ids are int64 (the builder uses vector row numbers). ``search`` returns ``(scores, ids)`` arrays
of shape ``(n_queries, k)``, best first, padded with ``-inf`` / ``-1`` when fewer exist.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recsys.types import IndexStateError, RecsysError

ANN_SETTINGS_FILE = "ann.json"


def _faiss():
    try:
        import faiss
    except ImportError:
        raise RecsysError("faiss is not available - install faiss-cpu (`pip install -e .`)") from None
    return faiss


SMALL_QUERY_BATCH = 8  # up to this many queries are searched by the calling thread alone (see calling_thread_only)


@contextlib.contextmanager
def calling_thread_only(queries: int) -> Iterator[None]:
    """FAISS on the calling thread only for a small batch of queries (a served list asks one, or a reader's few
    interests). FAISS splits a search over queries with OpenMP, so a single query leaves the other threads of its
    team spinning at the barrier: on a 2-core machine whose other core is busy (another request, an index job)
    that cost 10x the search itself. OpenMP's thread count is per calling thread, so concurrent requests do not
    see each other's setting; large batches (evaluation, tuning, merges) keep every core."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    if queries > SMALL_QUERY_BATCH or before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def limit_compute_threads(threads: int) -> None:
    """Cap the threads of FAISS (OpenMP) and numpy's BLAS for this process: what a serving process wants
    (``recsys serve`` applies ``[http] compute_threads``, 1 by default; a site calling ``Recommender`` in its own
    busy process calls this once at start). A list's products are small, and on a busy machine a BLAS team waiting
    for a core costs more than the product: measured on 2 cores with an index job running beside the queries,
    page() p50 118 -> 24 ms (a quiet machine loses a little: README, "Serving in-process"). 0 or less leaves the
    libraries' defaults (every core: what batch jobs want)."""
    if threads <= 0:
        return
    from threadpoolctl import threadpool_limits

    _faiss().omp_set_num_threads(threads)
    threadpool_limits(threads)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores of a 1-D array, best first (ties: lower position first)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < scores.shape[0]:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(scores.shape[0])
    return part[np.lexsort((part, -scores[part]))]


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search over ``vectors`` (or only the given ``rows`` of it; on equal scores the row
    given first wins)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
    masked = rows is not None and 2 * rows.size >= vectors.shape[0] > 0 and bool(np.all(np.diff(rows) > 0))
    if masked:
        # Most rows wanted, in order (a segment with a few deletions): one product over all of them with the
        # others masked reads the vectors once; copying the wanted rows out first reads them and writes a copy.
        sims = queries @ vectors.T
        unwanted = np.ones(vectors.shape[0], dtype=bool)
        unwanted[rows] = False
        sims[:, unwanted] = -np.inf
        k_found = min(k, int(rows.size))
    else:
        pool = vectors if rows is None else vectors[rows]
        if pool.shape[0] == 0:
            return scores, ids
        sims = queries @ pool.T
        k_found = k
    for i in range(queries.shape[0]):
        best = top_k(sims[i], k_found)
        scores[i, : best.size] = sims[i, best]
        ids[i, : best.size] = best if rows is None or masked else rows[best]
    return scores, ids


HALF_SCAN_MIN = 2_048  # exact scans of at least this many rows read an fp16 copy first (``HalfScan``)
_HALF_ERROR = 2.0**-11  # fp16 keeps 11 significant bits: each component within 2^-11 of itself (relative)


class HalfScan:
    """Exact top-k inner products over many rows, reading half the bytes: a first pass over an fp16 copy
    (FAISS's scalar quantizer, SIMD kernels), then a shortlist re-scored in float32.

    Why: an exact scan is bound by memory bandwidth (1.5 KB per 384-d row per query: 3.4 ms for 15,500 rows
    here), and fp16 halves it (1.8 ms). Still exact, provably: rounding to fp16 moves each component by at most
    2^-11 of itself, so a row's first-pass score is within ``eps`` = 2^-11 |q| max|v| (plus float32 summation
    slack) of its float32 score. Once the shortlist's last first-pass score plus ``eps`` is below the k-th best
    float32 score found (or the caller's floor), no row left out can beat it; otherwise the shortlist grows,
    at worst to every row."""

    def __init__(self, vectors: Any) -> None:
        """``vectors``: float32 rows, an ndarray or anything indexed like one by slices and row arrays (the
        segments' ``RowConcat``): read a block at a time here, and gathered by row to re-score."""
        faiss = _faiss()
        self.vectors = vectors
        n, d = vectors.shape
        self.index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        self.max_norm = 0.0
        for start in range(0, n, 65_536):  # a block at a time: no second float32 copy of them all
            block = np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32)
            self.index.add(block)
            norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            self.max_norm = max(self.max_norm, float(norms.max()))

    def search(
        self, queries: np.ndarray, k: int, dead: np.ndarray | None, floor: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per query the best ``k`` positions (-1 padding) and float32 scores (-inf padding) among rows not
        ``dead`` (a bool mask) scoring at least ``floor`` (per query; -inf: no floor), best first."""
        n = self.vectors.shape[0]
        dead_count = 0 if dead is None else int(dead.sum())
        out_scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        out_rows = np.full((queries.shape[0], k), -1, dtype=np.int64)
        if k <= 0 or n == 0:
            return out_scores, out_rows
        shortlist = min(n, 2 * k + 32 + dead_count)
        pending = np.arange(queries.shape[0])
        while pending.size:
            with calling_thread_only(pending.size):
                first, rows = self.index.search(np.ascontiguousarray(queries[pending]), shortlist)
            again = []
            for q, first_q, rows_q in zip(pending.tolist(), first, rows, strict=True):
                query = queries[q]
                eps = _HALF_ERROR * 1.01 * float(np.linalg.norm(query)) * self.max_norm + 1e-5
                keep = rows_q[rows_q >= 0]
                if dead is not None:
                    keep = keep[~dead[keep]]
                exact = self.vectors[keep] @ query
                keep, exact = keep[exact >= floor[q]], exact[exact >= floor[q]]
                order = np.lexsort((keep, -exact))[:k]  # best first, then the lower row
                kth = float(exact[order[-1]]) if order.size == k else -np.inf
                bound = float(first_q[-1]) + eps if rows_q[-1] >= 0 else -np.inf  # what a left-out row could score
                if shortlist < n and bound >= max(kth, float(floor[q])):
                    again.append(q)  # a row left out might still beat the k-th: look further
                    continue
                out_scores[q, : order.size], out_rows[q, : order.size] = exact[order], keep[order]
            pending = np.asarray(again, dtype=np.int64)
            shortlist = min(n, shortlist * 4)
        return out_scores, out_rows


class ANNIndex(ABC):
    """Vectors with int64 ids; add, remove, search, save, load."""

    kind: ClassVar[str]

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    @abstractmethod
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under ids that are not in the index yet."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Forget these ids (unknown ids are ignored)."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best ``(scores, ids)`` per query row."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _save(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, settings: dict[str, Any]) -> ANNIndex: ...

    def settings(self) -> dict[str, Any]:
        """What the manifest records about this index (kind and tuning)."""
        return {"kind": self.kind, "dimension": self.dimension}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._save(directory)
        (directory / ANN_SETTINGS_FILE).write_text(json.dumps(self.settings(), indent=2))

    @staticmethod
    def load(directory: Path) -> ANNIndex:
        try:
            settings = json.loads((directory / ANN_SETTINGS_FILE).read_text())
        except FileNotFoundError:
            raise IndexStateError(f"{directory}: no {ANN_SETTINGS_FILE}; rebuild with `recsys index build`") from None
        backend = BACKENDS.get(settings.get("kind"))
        if backend is None:
            raise IndexStateError(
                f"{directory}: unknown ANN backend {settings.get('kind')!r}; this recsys knows "
                f"{', '.join(BACKENDS)} - upgrade recsys or rebuild the index"
            )
        return backend._load(directory, settings)

    def _check(self, vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"{vectors.shape[0]} vectors but {ids.shape[0]} ids")
        return vectors, ids


class ExactIndex(ANNIndex):
    """Brute-force search with numpy; the reference every other backend is measured against."""

    kind = "exact"

    def __init__(self, dimension: int) -> None:
        super().__init__(dimension)
        self._vectors = np.empty((0, dimension), dtype=np.float32)
        self._ids = np.empty(0, dtype=np.int64)
        self._live = np.empty(0, dtype=bool)

    @classmethod
    def over(cls, vectors: np.ndarray) -> ExactIndex:
        """A read-only exact index over row-aligned vectors (ids = row numbers), without a copy."""
        index = cls(int(vectors.shape[1]))
        index._vectors = vectors
        index._ids = np.arange(vectors.shape[0], dtype=np.int64)
        index._live = np.ones(vectors.shape[0], dtype=bool)
        return index

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors, ids = self._check(vectors, ids)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._ids = np.concatenate([self._ids, ids])
        self._live = np.concatenate([self._live, np.ones(ids.shape[0], dtype=bool)])

    def remove(self, ids: np.ndarray) -> None:
        self._live &= ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self._ids.size == 0:
            return exact_search(self._vectors, queries, k)  # all padding
        if self._live.all():
            scores, rows = exact_search(self._vectors, queries, k)
        else:
            scores, rows = exact_search(self._vectors, queries, k, np.flatnonzero(self._live))
        return scores, np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    def __len__(self) -> int:
        return int(self._live.sum())

    def _save(self, directory: Path) -> None:
        np.save(directory / "exact_vectors.npy", self._vectors[self._live])
        np.save(directory / "exact_ids.npy", self._ids[self._live])

    @classmethod
    def _load(cls, directory: Path, settings: dict[str, Any]) -> ExactIndex:
        index = cls(int(settings["dimension"]))
        index._vectors = np.load(directory / "exact_vectors.npy", mmap_mode="r", allow_pickle=False)
        index._ids = np.load(directory / "exact_ids.npy", allow_pickle=False)
        index._live = np.ones(index._ids.shape[0], dtype=bool)
        return index


class _FaissIndex(ANNIndex):
    """Shared save/load/remove for FAISS backends, whose native index keeps ids."""

    FILE = "ann.faiss"
    MMAP = False  # read with IO_FLAG_MMAP_IFC (read-only afterwards; a published index never changes)

    def __init__(self, dimension: int) -> None:
        super().__init__(dimension)
        self._index: Any = None

    def remove(self, ids: np.ndarray) -> None:
        if self._index is not None and len(ids):
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def _search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self._index is None or self._index.ntotal == 0:
            return (
                np.full((queries.shape[0], k), -np.inf, dtype=np.float32),
                np.full((queries.shape[0], k), -1, dtype=np.int64),
            )
        with calling_thread_only(queries.shape[0]):
            scores, ids = self._index.search(queries, k, params=params)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _save(self, directory: Path) -> None:
        _faiss().write_index(self._index, str(directory / self.FILE))

    @classmethod
    def _load(cls, directory: Path, settings: dict[str, Any]) -> _FaissIndex:
        index = cls(int(settings["dimension"]))
        index._restore(settings)
        faiss = _faiss()
        # Memory-mapped where FAISS can (an IVF's inverted lists): opening costs milliseconds instead of
        # reading the whole file, and the pages are the page cache's, shared by every serving process.
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if cls.MMAP else 0
        index._index = faiss.read_index(str(directory / cls.FILE), flags)
        return index

    def _restore(self, settings: dict[str, Any]) -> None:
        """Take tuning values back from the saved settings."""


class FaissFlatIndex(_FaissIndex):
    """Exact search with FAISS's inner-product kernels."""

    kind = "faiss-flat"

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors, ids = self._check(vectors, ids)
        if self._index is None:
            faiss = _faiss()
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        self._index.add_with_ids(vectors, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._search(queries, k)


class FaissIVFIndex(_FaissIndex):
    """Inverted-file index: vectors bucketed by nearest centroid; a query scans ``nprobe`` buckets.

    ``train`` fits the centroids on a sample of the whole collection (the segment writer calls it with the
    segment's final size); an ``add`` to an untrained index trains on that batch. Each segment trains its
    own, so a merge or a build retrains for the rows it holds. A loaded IVF is memory-mapped and read-only.

    The centroids are scanned (FAISS's flat quantizer). An HNSW graph over them was measured at a million
    articles and not kept: interleaved with the scan in one process, IVF top-100 p50 0.42 vs 0.38 ms at
    efSearch 64 and 0.29 vs 0.30 ms at 32 (4,000 centroids are 6 MB, which stay in cache), and assigning
    vectors to lists through the graph capped recall@10 near 0.99 whatever nprobe.
    """

    kind = "faiss-ivf"
    MMAP = True
    TRAIN_POINTS_PER_LIST = 100  # FAISS warns below 39; k-means gains little past a few hundred

    def __init__(self, dimension: int, lists_per_sqrt_n: float = 4.0, nprobe: int = 16) -> None:
        super().__init__(dimension)
        self.lists_per_sqrt_n = lists_per_sqrt_n
        self.nprobe = nprobe
        self.nlist = 0
        self.measured_recall: float | None = None  # recall@10 against exact search, when tuned at build
        self._direct_map_lock = threading.Lock()
        self._direct_map = False

    def lists_for(self, size: int) -> int:
        """lists_per_sqrt_n * sqrt(size), at most size / 39 (FAISS's minimum training points per list)."""
        return max(1, min(int(self.lists_per_sqrt_n * math.sqrt(size)), size // 39))

    def train(self, sample: np.ndarray, size: int) -> None:
        """Fit centroids for a collection of ``size`` vectors on ``sample`` (a seeded subset of them)."""
        faiss = _faiss()
        self.nlist = self.lists_for(size)
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        self._index = faiss.index_factory(self.dimension, f"IVF{self.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        self._index.train(sample)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors, ids = self._check(vectors, ids)
        if self._index is None:
            self.train(vectors, len(vectors))
        self._index.add_with_ids(vectors, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = _faiss().SearchParametersIVF(nprobe=self.nprobe)
        return self._search(queries, k, params)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (ids 0..n-1, as a segment adds them), exactly as added: an IVF-Flat
        list keeps each vector whole, so a serving process reads candidates' vectors from the lists it
        searches instead of from a second copy. The first call builds FAISS's id -> list position map (8
        bytes per vector, ~40 ms per million)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if self._index is None or ids.size == 0:
            return np.zeros((ids.size, self.dimension), dtype=np.float32)
        ivf = _faiss().extract_index_ivf(self._index)
        if not self._direct_map:
            with self._direct_map_lock:
                if not self._direct_map:
                    ivf.make_direct_map(True)
                    self._direct_map = True
        if ids.min() < 0 or ids.max() >= ivf.ntotal:
            raise IndexError(f"rows {ids.min()}..{ids.max()} outside an IVF of {ivf.ntotal} vectors")
        return ivf.reconstruct_batch(ids)

    def tune(self, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray, target: float, k: int = 10) -> float:
        """Set nprobe to the smallest power of two whose recall@k against ``truth`` reaches ``target``.

        ``truth`` holds the exact top-(k+1) ids per query; each query's own id is left out of both
        sides, so an article trivially finding itself does not flatter the figure. Returns the recall.
        """
        owners = query_ids.tolist()
        expected = [[i for i in row if i != own][:k] for row, own in zip(truth.tolist(), owners, strict=True)]
        nprobe = 1
        while True:
            self.nprobe = min(nprobe, max(1, self.nlist))
            _, found = self.search(queries, k + 1)
            got = [[i for i in row if i != own][:k] for row, own in zip(found.tolist(), owners, strict=True)]
            recall = float(np.mean([len(set(e) & set(g)) / max(1, len(e)) for e, g in zip(expected, got, strict=True)]))
            if recall >= target or self.nprobe >= self.nlist:
                self.measured_recall = round(recall, 4)
                return recall
            nprobe *= 2

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "lists_per_sqrt_n": self.lists_per_sqrt_n,
            "measured_recall_at_10": self.measured_recall,
        }

    def _restore(self, settings: dict[str, Any]) -> None:
        self.nlist = int(settings.get("nlist", 0))
        self.nprobe = int(settings.get("nprobe", self.nprobe))
        self.lists_per_sqrt_n = float(settings.get("lists_per_sqrt_n", self.lists_per_sqrt_n))
        self.measured_recall = settings.get("measured_recall_at_10")


BACKENDS: dict[str, type[ANNIndex]] = {b.kind: b for b in (ExactIndex, FaissFlatIndex, FaissIVFIndex)}


def make_index(kind: str, dimension: int, **tuning: Any) -> ANNIndex:
    """A new empty index of a backend by name."""
    if kind not in BACKENDS:
        raise RecsysError(f"unknown ANN backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    if kind == FaissIVFIndex.kind:
        return FaissIVFIndex(dimension, **tuning)
    return BACKENDS[kind](dimension)
