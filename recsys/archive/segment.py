"""Segments: the immutable pieces a version is made of (Lucene's model).

A segment is a folder under ``index/segments/`` written once and never changed::

    segments/<name>/
      segment.json       rows, dimension, ANN settings, the size of every file (checked at open)
      articles.sqlite    article metadata and text, keyed by the segment's own row numbers 0..rows-1
      vectors.npy        float32 [rows, dim]
      rows.npy           per-row filter columns (published, category, language, story; codes into the
                         version's append-only vocab.json)
      lex_terms.npy      the lexical arrays (recsys/archive/lexical.py), row-aligned
      lex_weights.npy
      ann/               the segment's ANN files (IVF or FAISS flat); none for an exact segment, which is
                         searched over vectors.npy itself

A version (recsys/archive/version.py) lists its segments in order plus, per segment, the rows deleted since it
was written; its global row numbers run through the segments one after the other. ``index add`` writes
one small segment and ``remove`` only deletions, so a job costs what it changes, not the archive; the
merge policy (``recsys/archive/merge.py``) folds small segments together inside later jobs so their number stays
bounded. The segment's files are owned by two modules: ``segment_writer`` writes one, this module reads one
(``Segment``: arrays memory-mapped, SQLite opened per thread, the ANN loaded); ``segmented`` presents
several as one row space.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive import lexical
from recsys.archive.ann import ANNIndex, ExactIndex, FaissIVFIndex
from recsys.archive.layout import DAMAGE_FIX, OPEN_CHECKSUM_BYTES, check_files, check_sealed
from recsys.archive.store import DB_FILE, ROW_DTYPE, ROWS_FILE, ArticleStore
from recsys.types import IndexStateError

SEGMENT_FILE = "segment.json"
VECTORS_FILE = "vectors.npy"
ANN_DIR = "ann"


class Segment:
    """One segment, opened read-only. Arrays are memory-mapped; the SQLite file opens per thread on use."""

    def __init__(self, path: Path) -> None:
        """Open and check a segment: every file at its recorded size, files up to OPEN_CHECKSUM_BYTES at
        their checksum, array headers and shapes, the SQLite file probed and the ANN loaded. Whatever is
        damaged raises ``IndexStateError`` naming the file and the fix, never a stray library error."""
        self.path = path
        self.name = path.name
        try:
            self.info: dict[str, Any] = json.loads((path / SEGMENT_FILE).read_text())
            if not isinstance(self.info, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise IndexStateError(f"{path}: unreadable {SEGMENT_FILE} ({exc}); {DAMAGE_FIX}") from None
        check_sealed(self.info, path / SEGMENT_FILE)
        sizes = self.info.get("files", {})
        check_files(path, sizes, self.info.get("checksums", {}), OPEN_CHECKSUM_BYTES)
        self.rows = int(self.info["rows"])
        self.vectors = mapped(path / VECTORS_FILE)
        self.columns = mapped(path / ROWS_FILE)
        self.lex_ids = mapped(path / lexical.TERMS_FILE)
        self.lex_weights = mapped(path / lexical.WEIGHTS_FILE)
        if (
            self.vectors.ndim != 2
            or self.vectors.shape[0] != self.rows
            or self.columns.shape != (self.rows,)
            or self.columns.dtype != ROW_DTYPE
            or self.lex_ids.shape != (self.rows, lexical.TERMS)
            or self.lex_weights.shape != (self.rows, lexical.TERMS)
        ):
            raise IndexStateError(f"{path}: arrays do not match {SEGMENT_FILE}; {DAMAGE_FIX}")
        self.store = ArticleStore(path / DB_FILE)
        self._probe_store()
        self.ann_kind = str(self.info["ann"]["kind"])
        # An exact segment is searched over vectors.npy; FAISS files are memory-mapped (recsys/archive/ann.py).
        try:
            self.ann: ANNIndex = (
                ExactIndex.over(self.vectors) if self.ann_kind == ExactIndex.kind else ANNIndex.load(path / ANN_DIR)
            )
        except IndexStateError:
            raise
        except Exception as exc:  # FAISS raises RuntimeError on a damaged file
            raise IndexStateError(f"{path / ANN_DIR}: unreadable ANN ({exc}); {DAMAGE_FIX}") from None
        if len(self.ann) != self.rows:
            raise IndexStateError(
                f"{path / ANN_DIR}: the ANN holds {len(self.ann)} rows, not {self.rows}; {DAMAGE_FIX}"
            )
        # What readers take rows' vectors from: an IVF's lists hold the same floats as vectors.npy and are
        # read by its searches anyway, so a serving process never maps the second copy (1.5 GB at 1M).
        # vectors.npy stays the source for merges and exact search.
        self.served_vectors: np.ndarray | IVFRows = (
            IVFRows(self.ann, self.rows) if isinstance(self.ann, FaissIVFIndex) else self.vectors
        )

    def _probe_store(self) -> None:
        """Queries that read the SQLite header, schema and both ends of the rows (a damaged file fails here,
        at open, rather than on some later request)."""
        try:
            found = self.store.probe()
        except sqlite3.Error as exc:
            self.store.close()
            raise IndexStateError(f"{self.path / DB_FILE}: unreadable ({exc}); {DAMAGE_FIX}") from None
        expected = (0, self.rows - 1) if self.rows else (None, None)
        if found[:2] != expected or (self.rows and not found[2]):
            self.store.close()
            raise IndexStateError(f"{self.path / DB_FILE}: holds rows {found[:2]}, not {expected}; {DAMAGE_FIX}")

    def close(self) -> None:
        self.store.close()


def mapped(path: Path) -> np.ndarray:
    """A .npy file memory-mapped read-only, as a plain ndarray view: indexing an ``np.memmap`` costs a few
    microseconds of subclass bookkeeping per call, and a Related list makes dozens of such calls.
    A damaged header is an ``IndexStateError`` naming the file."""
    try:
        return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise IndexStateError(f"{path}: not a readable array ({exc}); {DAMAGE_FIX}") from None


NAME = re.compile(r"s[0-9]{6}-[0-9a-f]{1,32}")


def checked_name(name: object, where: Path) -> str:
    """A segment name from a manifest, refused unless it has the form this module writes (a manifest from
    another host must not point a reader or a pull outside ``segments/``)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise IndexStateError(f"{where}: {name!r} is not a segment name; the manifest is damaged or not from recsys")
    return name


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
