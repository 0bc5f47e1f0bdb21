"""One published index version: the file names in it, reading it, and following ``CURRENT`` to the newest.

``indexer.py`` writes a version into a staging folder and ``layout.py`` publishes it; this module is the
only reader. ``VersionFollower`` is what a serving process holds: each call checks the pointer (one
``stat``) and moves to a newly published version before answering, while calls already holding the
old reader finish with it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive import lexical
from recsys.archive.layout import SEGMENTS, IndexLayout, read_manifest
from recsys.archive.segment import Segment, checked_name, mapped
from recsys.archive.segmented import SegmentedANN, SegmentedStore, concat
from recsys.archive.store import NO_TIME, ROW_DTYPE, VOCAB_FILE
from recsys.ingest.language import detect_language
from recsys.types import Filters, IndexStateError, RecsysError

logger = logging.getLogger(__name__)
STATE_FILE = "state.json"  # takedowns and the vectors parked with them
DELETES_DIR = "deletes"  # deletes/<segment>.npy: the segment's deleted local rows (sorted int32)
COMMON_DOC_SHARE = 0.1  # a word in more than 10% of the articles' texts is generic (people, back, work, came)


class VersionReader:
    """One published version, opened read-only: its segments presented as one row space.

    Rows are global positions: the segments' rows one after the other, in the order the manifest lists
    them. ``live`` marks the rows still served (an updated or removed article keeps its row, deleted,
    until a merge rewrites its segment). Arrays are memory-mapped and the IVF lists too, so opening
    costs the manifest, the filter columns and the vocabulary, not the archive."""

    def __init__(self, path: Path, opened: dict[str, Segment] | None = None) -> None:
        """``opened``: segments already open in this process (a previous version's), used as they are: a
        segment never changes, and its mapped pages stay warm across versions."""
        self.path = path
        self.manifest = read_manifest(path)
        self.vocab: dict[str, list[str]] = _json_file(path / VOCAB_FILE)
        segments_dir = path.parent.parent / SEGMENTS
        listed = self.manifest["segments"]
        opened = opened or {}
        names = [checked_name(entry.get("name"), path) for entry in listed]
        self.segments = [opened.get(name) or Segment(segments_dir / name) for name in names]
        dimension = int(self.manifest["model"]["dimension"])
        for segment, entry in zip(self.segments, listed, strict=True):
            if segment.rows != int(entry["rows"]) or segment.vectors.shape[1] != dimension:
                raise IndexStateError(
                    f"{path}: segment {segment.name} holds {segment.vectors.shape} but the manifest says "
                    f"{entry['rows']} x {dimension}; rebuild with `recsys index build`"
                )
        self.offsets = np.cumsum([0, *(s.rows for s in self.segments)]).astype(np.int64)
        self.deleted = {s.name: self._deleted(s) for s in self.segments}
        self.rows = self._columns()
        self.live = np.asarray(self.rows["live"])
        counts = self.manifest["counts"]
        if self.rows.shape[0] != counts["rows"] or int(self.live.sum()) != counts["articles"]:
            raise IndexStateError(f"{path}: segments do not match the manifest; rebuild with `recsys index build`")
        self.n_live = int(counts["articles"])
        self.state: dict[str, Any] = _json_file(path / STATE_FILE)
        self.vectors = concat(
            [s.served_vectors for s in self.segments], self.offsets, np.zeros((0, dimension), np.float32)
        )
        self.lexical = (
            concat([s.lex_ids for s in self.segments], self.offsets, np.zeros((0, lexical.TERMS), np.int32)),
            concat(
                [s.lex_weights for s in self.segments], self.offsets, np.zeros((0, lexical.TERMS), lexical.WEIGHT_DTYPE)
            ),
        )
        self.store = SegmentedStore(self.segments, self.offsets, self.live, len(self.state.get("takedowns", {})))
        self.ann = SegmentedANN(self.segments, self.offsets, self.live, self.manifest["ann"])
        self._df: np.ndarray | None = None
        self._by_publication: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def by_publication(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(live dated rows newest first, ties lower row first; minus their publication times, ascending; live
        undated rows, the last indexed first): the order a "newest" list walks, sorted once per version (it never
        changes) instead of ranking the whole archive's dates on every request."""
        if self._by_publication is None:
            published = np.asarray(self.rows["published"])
            dated = np.flatnonzero(self.live & (published != NO_TIME))
            order = dated[np.lexsort((dated, -published[dated]))]
            undated = np.flatnonzero(self.live & (published == NO_TIME))[::-1]
            self._by_publication = (order, -published[order].astype(np.float64), undated)
        return self._by_publication

    def _deleted(self, segment: Segment) -> np.ndarray:
        file = self.path / DELETES_DIR / f"{segment.name}.npy"
        if not file.is_file():
            return np.empty(0, dtype=np.int32)
        rows = np.load(file, allow_pickle=False)
        if rows.size and (rows.min() < 0 or rows.max() >= segment.rows):
            raise IndexStateError(f"{file}: deleted rows outside the segment; rebuild with `recsys index build`")
        return rows

    def _columns(self) -> np.ndarray:
        """The filter columns of all rows, with ``live`` cleared for deleted ones (one segment without
        deletions is used as mapped; otherwise one copy, about 30 bytes per row)."""
        if len(self.segments) == 1 and not self.deleted[self.segments[0].name].size:
            return self.segments[0].columns
        if not self.segments:
            return np.zeros(0, dtype=ROW_DTYPE)
        rows = np.concatenate([s.columns for s in self.segments])
        for segment, offset in zip(self.segments, self.offsets[:-1].tolist(), strict=True):
            rows["live"][offset + self.deleted[segment.name].astype(np.int64)] = False
        return rows

    def frequencies(self) -> np.ndarray:
        """The lexical document frequencies of this version (lex_df.npy, mapped on first use)."""
        if self._df is None:
            self._df = mapped(self.path / lexical.DF_FILE)
        return self._df

    def lexical_of_text(self, text: str, language: str = "") -> tuple[np.ndarray, np.ndarray] | None:
        """The lexical terms of a text that is not indexed (a draft, in ``language``: "" detects it), weighed by
        this version's frequencies."""
        documents = int(self.manifest["lexical"]["documents"])
        language = language or detect_language(text)
        ids, weights = lexical.weigh(lexical.term_counts([text], [language]), self.frequencies(), documents)
        return ids[0], weights[0]

    def lexical_similarity(self, source: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> np.ndarray:
        """Lexical cosine of the source to each row (zeros without a source's terms)."""
        if source is None or rows.size == 0:
            return np.zeros(rows.shape[0])
        ids, weights = self.lexical
        return lexical.similarity(source[0], source[1], np.asarray(ids[rows]), np.asarray(weights[rows]))

    def is_common(self, word: str) -> bool:
        """True for a (lower-case) word in more than COMMON_DOC_SHARE of this archive's articles (the lexical
        document frequencies): too common to explain why two articles go together."""
        documents = max(1, int(self.manifest["lexical"]["documents"]))
        return bool(self.frequencies()[lexical.term_id(word)] > max(3.0, COMMON_DOC_SHARE * documents))

    @property
    def version(self) -> str:
        return self.path.name

    def codes(self, column: str, names: Iterable[str]) -> list[int]:
        """Codes of the given names in rows.npy's column, matched case-insensitively.

        A name no article has is an error that lists the known ones, so a typo is not an empty list."""
        known = self.vocab.get(column, [])
        vocab: dict[str, list[int]] = {}
        for code, name in enumerate(known):
            vocab.setdefault(name.lower(), []).append(code)
        codes: list[int] = []
        for name in names:
            found = vocab.get(name.strip().lower())
            if found is None:
                shown = ", ".join(sorted({n for n in known if n})[:30]) or "(none)"
                raise RecsysError(f"unknown {column} {name!r}; this index has: {shown}")
            codes += found
        return codes

    def allowed(self, filters: Filters, positions: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of rows that pass the filters (over ``positions`` if given, else all rows)."""
        if positions is not None and not filters.restricts_rows:
            return self.live[positions]  # the usual list: nothing but liveness to check
        rows = self.rows if positions is None else self.rows[positions]
        mask = np.asarray(rows["live"]).copy()
        if filters.categories:
            mask &= np.isin(rows["category"], self.codes("category", filters.categories))
        if filters.languages:
            mask &= np.isin(rows["language"], self.codes("language", filters.languages))
        if filters.blocked_categories:
            known = self.vocab.get("category", [])
            blocked = {n.lower() for n in filters.blocked_categories}
            mask &= ~np.isin(rows["category"], [c for c, name in enumerate(known) if name.lower() in blocked])
        published = rows["published"]
        if filters.published_after is not None:
            mask &= (published != NO_TIME) & (published >= filters.published_after)
        if filters.published_before is not None:
            mask &= (published != NO_TIME) & (published <= filters.published_before)
        return mask

    def describe(self) -> dict[str, Any]:
        """The version as ``recsys index info`` shows it: model, counts, segments, takedowns, ANN, size on disk."""
        folders = [self.path, *(segment.path for segment in self.segments)]
        size = sum(p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file())
        manifest = self.manifest
        return {
            "version": self.version,
            "model": manifest["model"],
            "articles": self.n_live,
            "rows": manifest["counts"]["rows"],
            "segments": len(self.segments),
            "takedowns": self.store.takedowns(),
            "ann": manifest["ann"],
            "created_at": manifest["created_at"],
            "build_seconds": manifest["build_seconds"],
            "size_bytes": size,
            "library_versions": manifest["library_versions"],
        }

    def close(self) -> None:
        self.store.close()


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexStateError(f"{path}: unreadable ({exc}); rebuild with `recsys index build ARTICLES`") from None


class VersionFollower:
    """The live version of an index folder for a long-running reader (a serving process).

    ``current`` is the reader to answer with: when the pointer has moved, one caller opens the new
    version fully (every check ``VersionReader`` makes: sizes, checksums of the small files, array
    headers, SQLite probed, ANN loaded) while everyone else keeps answering from the old one. A version
    that fails to open is refused: the old one keeps serving, the reason is logged once and kept in
    ``refused`` (for ``/health``), and the open is retried with a growing pause (1 s up to a minute), or at
    once when the pointer moves again. ``on_switch`` runs once per newly opened version (the service
    promotes held events there).
    """

    MAX_RETRY_SECONDS = 60.0

    def __init__(self, root: str | Path, on_switch: Callable[[VersionReader], None] | None = None) -> None:
        self.layout = IndexLayout(root)
        self._on_switch = on_switch
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._pause = 1.0
        self.refused: tuple[str, str] | None = None  # (version, reason) of a version that failed to open
        self._refused_stamp: tuple[int, int] | None = None
        self._stamp = self.layout.pointer_stamp()
        self._reader = VersionReader(self.layout.current())
        if on_switch is not None:
            on_switch(self._reader)

    @property
    def current(self) -> VersionReader:
        stamp = self.layout.pointer_stamp()
        if stamp != self._stamp and self._lock.acquire(blocking=False):
            try:
                self._follow(stamp)
            finally:
                self._lock.release()
        return self._reader

    def _follow(self, stamp: tuple[int, int] | None) -> None:
        retrying = self.refused is not None and self._refused_stamp == stamp
        if retrying and time.monotonic() < self._retry_at:
            return
        name = "?"
        try:
            name = self.layout.current_name() or "?"
            fresh = self.layout.current()
            if fresh.name != self._reader.version:
                # Calls already holding the old reader finish with it; segments both list are shared.
                self._reader = VersionReader(fresh, {s.name: s for s in self._reader.segments})
                if self._on_switch is not None:
                    self._on_switch(self._reader)
            self._stamp = stamp
            self.refused = None
            self._pause = 1.0
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RecsysError) else f"{type(exc).__name__}: {exc}"
            if self.refused != (name, reason):
                logger.warning("refusing index version %s, staying on %s: %s", name, self._reader.version, reason)
            self._pause = min(self.MAX_RETRY_SECONDS, self._pause * 2) if retrying else 1.0
            self.refused = (name, reason)
            self._refused_stamp = stamp
            self._retry_at = time.monotonic() + self._pause

    def close(self) -> None:
        self._reader.close()
