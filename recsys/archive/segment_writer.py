"""Writing a segment (recsys/archive/segment.py describes its files): rows appended from new articles or
copied from other segments, then sealed with its ANN and renamed into ``segments/`` in one step.

Everything goes to ``segments/.staging-<name>`` first and is fsynced before the rename, so a killed job
leaves either a whole segment (unreferenced until a version lists it, and collected by the next job if none
does) or a staging folder the next job deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive import lexical
from recsys.archive.ann import ANNIndex, ExactIndex, FaissIVFIndex, exact_search, make_index
from recsys.archive.layout import crash_point, file_checksums, file_sizes, fsync_path, fsync_tree, sealed
from recsys.archive.segment import ANN_DIR, SEGMENT_FILE, VECTORS_FILE, Segment, mapped
from recsys.archive.store import COLUMNS, DB_FILE, ROW_DTYPE, ROWS_FILE, connect_writable
from recsys.types import RecsysError

STAGING_PREFIX = ".staging-"
COPY_CHUNK = 65_536  # rows copied at a time between array files


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
        check_finite(vectors, self.path / VECTORS_FILE)
        check_finite(self.lex_weights, self.path / lexical.WEIGHTS_FILE)
        ann_info: dict[str, Any] = {"kind": ann_kind}
        if ann_kind != ExactIndex.kind and self.rows:
            ann = build_ann(ann_kind, vectors, tuning, tune)
            ann.save(self.path / ANN_DIR)
            ann_info = ann.settings()
        crash_point("after-ann")
        sizes = file_sizes(self.path)
        info = sealed(
            {
                "rows": self.rows,
                "dimension": self.dimension,
                "ann": ann_info,
                "files": sizes,
                "checksums": file_checksums(self.path, sizes),
            }
        )
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


def check_finite(array: np.ndarray, path: Path) -> None:
    """A segment never holds a NaN or infinite vector or weight (it would make every score it touches
    non-finite): checked in chunks before the segment is sealed."""
    for start in range(0, len(array), COPY_CHUNK):
        if not np.isfinite(array[start : start + COPY_CHUNK]).all():
            row = start + int(np.flatnonzero(~np.isfinite(array[start : start + COPY_CHUNK]).all(axis=1))[0])
            raise RecsysError(
                f"{path.name}: row {row} is not finite (NaN or infinity); the embedder or the source segment "
                "produced it: check the model files, or run `recsys index verify --deep`"
            )


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
