"""Index jobs: build, add (upsert), remove, restore, optimize. Each publishes a new version atomically.

A job costs what it changes (recsys/segments.py): ``add`` writes one segment with the new and changed
articles and marks their old rows deleted; ``remove`` writes only deletions; the merge policy then folds
small segments together, and ``build`` / ``optimize`` leave one compact segment. Embeddings are keyed by a
hash of the embedded text and the model, so an article whose text did not change is never embedded
again, whether it comes through ``add`` or a full ``build``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive import lexical
from recsys.archive.ann import FaissIVFIndex
from recsys.archive.layout import FORMAT_VERSION, MANIFEST, IndexLayout, crash_point, library_versions
from recsys.archive.merge import MergePolicy, plan_merge
from recsys.archive.segment import Segment
from recsys.archive.segment_writer import SegmentWriter
from recsys.archive.store import VOCAB_FILE, article_row, row_columns
from recsys.archive.version import DELETES_DIR, STATE_FILE, VersionReader
from recsys.config import Settings
from recsys.embedder import Embedder, article_text, content_hash, make_embedder, text_of
from recsys.ingest.articles import read_articles
from recsys.types import Article, IndexStateError, InputError, InputProblem, RecsysError

logger = logging.getLogger(__name__)
ProgressStart = Callable[[int], Callable[[int], None]]  # total -> advance(n)


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

    @property
    def docs_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = [str(p) for p in self.problems]
        data["docs_per_second"] = round(self.docs_per_second, 1)
        return data


@dataclass
class _Part:
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


class Indexer:
    """Writes versions of one index directory. One writer at a time (a lock file enforces it)."""

    def __init__(self, root: str | Path, settings: Settings, embedder: Embedder | None = None) -> None:
        self.layout = IndexLayout(root)
        self.settings = settings
        self._embedder = embedder
        # The name recorded in the manifest and mixed into content hashes.
        self.model_name = embedder.name if embedder is not None else settings.embedder.model
        self._started = time.perf_counter()
        self._archive_rows = 0  # live articles once the running job is done (sets the ANN of its segments)
        self.merge_policy = MergePolicy(
            factor=settings.index.merge_factor,
            floor=settings.index.merge_floor,
            dead_fraction=settings.index.compact_dead_fraction,
        )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.settings.embedder)
        return self._embedder

    # -- public jobs ---------------------------------------------------------------------------

    def build(
        self,
        paths: Sequence[str | Path],
        fmt: str | None = None,
        on_error: str = "skip",
        progress: ProgressStart | None = None,
    ) -> BuildReport:
        """Make the index hold exactly these articles (unchanged texts re-use their vectors)."""
        return self._run(paths, fmt, on_error, progress, replace_all=True)

    def add(
        self,
        paths: Sequence[str | Path],
        fmt: str | None = None,
        on_error: str = "skip",
        progress: ProgressStart | None = None,
    ) -> BuildReport:
        """Insert new articles and re-embed changed ones; unchanged ones cost nothing."""
        return self._run(paths, fmt, on_error, progress, replace_all=False)

    def add_articles(self, articles: Iterable[Article], progress: ProgressStart | None = None) -> BuildReport:
        """Upsert already-parsed articles (the Python API behind ``add``)."""
        latest = {a.id: a for a in articles}  # a repeated id: the last version wins
        with self.layout.writer_lock():
            return self._write(list(latest.values()), set(), replace_all=False, progress=progress)

    def remove(self, article_ids: Iterable[str], block_unindexed: bool = True) -> BuildReport:
        """Take articles down: in no list from the next query on, and refused by later add/build runs
        (a feed that still carries them cannot bring them back) until ``restore``.

        Ids that are not indexed are listed in ``not_indexed``; with ``block_unindexed`` they are taken
        down too (refused if they are ever added), else they are left alone. Nothing to do writes no version.
        """
        ids = set(article_ids)
        with self.layout.writer_lock():
            prev = self._open_previous()
            known = set() if prev is None else set(prev.store.rows_of(ids)) | set(prev.state["takedowns"])
            if prev is not None:
                prev.close()
            unknown = sorted(ids - known)
            report = self._write([], ids if block_unindexed else ids & known, replace_all=False, progress=None)
        report.not_indexed = unknown
        return report

    def restore(self, article_ids: Iterable[str]) -> BuildReport:
        """Lift takedowns; the articles come back with the next add or build that carries them."""
        with self.layout.writer_lock():
            return self._write([], set(), replace_all=False, progress=None, restores=set(article_ids))

    def optimize(self) -> BuildReport:
        """Merge every segment into one and re-weigh the lexical arrays with frequencies counted afresh over
        the live articles (Lucene's force merge): afterwards the index equals a fresh build of its articles.
        Costs a rewrite of the archive; the merge policy keeps the segment count bounded without it."""
        self.layout.current()  # no index: fails with how to build one
        with self.layout.writer_lock():
            return self._write([], set(), replace_all=False, progress=None, optimize=True)

    # -- internals -----------------------------------------------------------------------------

    def _run(
        self,
        paths: Sequence[str | Path],
        fmt: str | None,
        on_error: str,
        progress: ProgressStart | None,
        replace_all: bool,
    ) -> BuildReport:
        if on_error not in ("skip", "fail"):
            raise RecsysError(f"--on-error must be 'skip' or 'fail', not {on_error!r}")
        result = read_articles(paths, fmt)
        if result.problems and on_error == "fail":
            raise InputError(result.problems)
        if replace_all and not result.articles:
            if result.problems:
                raise InputError(result.problems)
            raise RecsysError("no articles in the input; refusing to build an empty index")
        with self.layout.writer_lock():
            report = self._write(result.articles, set(), replace_all=replace_all, progress=progress)
        report.read = len(result.articles)
        report.problems = result.problems
        return report

    def _open_previous(self, replace_all: bool = False) -> VersionReader | None:
        """The live version, or None. A full build over an index written in another format starts afresh
        (logged) rather than failing: that build is what the format error tells the user to run."""
        if not self.layout.exists():
            return None
        path = self.layout.current()
        if replace_all:
            try:
                found = json.loads((path / MANIFEST).read_text()).get("format_version")
            except (OSError, json.JSONDecodeError):
                found = None
            if found != FORMAT_VERSION:
                logger.warning("%s is in index format %s; building format %s afresh", path, found, FORMAT_VERSION)
                return None
        return VersionReader(path)

    def _write(
        self,
        articles: list[Article],
        removals: set[str],
        replace_all: bool,
        progress: ProgressStart | None,
        restores: set[str] | None = None,
        optimize: bool = False,
    ) -> BuildReport:
        started = self._started = time.perf_counter()
        report = BuildReport()
        settings = self.settings
        model = self.model_name
        self.layout.collect_segments()  # a segment a killed job wrote but never published
        prev = self._open_previous(replace_all)
        if prev is not None and prev.manifest["model"]["name"] != model and not replace_all:
            raise IndexStateError(
                f"the index was built with model {prev.manifest['model']['name']!r} but the configured model is "
                f"{model!r}; set [embedder] model back, or re-embed everything with `recsys index build`"
            )
        try:
            same_model = prev is not None and prev.manifest["model"]["name"] == model
            state = prev.state if prev is not None else {"takedowns": {}, "parked": {}}
            old_takedowns: dict[str, str] = dict(state["takedowns"])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            takedowns = {i: at for i, at in old_takedowns.items() if i not in (restores or set())}
            takedowns |= {i: old_takedowns.get(i, stamp) for i in removals}
            allowed = [a for a in articles if a.id not in takedowns]
            report.blocked = len(articles) - len(allowed)
            articles = allowed

            # What the previous version holds of these ids: id -> (global row, content hash).
            hashes = {a.id: content_hash(text_of(a, settings.embedder.max_chars), model) for a in articles}
            if prev is None:
                known: dict[str, tuple[int, str]] = {}
            elif replace_all:
                known = prev.store.live_ids()
            else:
                known = prev.store.hashes_of([*hashes, *removals])
            # Decide, per input article: unchanged (keep row), metadata-only, or needs a vector.
            keep_rows: dict[str, int] = {}
            to_embed: list[Article] = []
            for article in articles:
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
            report.removed = len(gone)
            report.updated = sum(1 for a in to_embed if a.id in known)
            report.added = len(to_embed) - report.updated
            report.unchanged = len(keep_rows)
            changed_meta = self._metadata_changes(prev, articles, keep_rows, hashes) if prev is not None else []
            if replace_all:
                self._archive_rows = len(articles)
            else:
                self._archive_rows = (prev.n_live if prev is not None else 0) + report.added - report.removed

            unchanged = (
                prev is not None
                and not to_embed
                and not gone
                and not changed_meta
                and takedowns.keys() == old_takedowns.keys()
                and parked.keys() == state["parked"].keys()
            )
            if unchanged and not optimize and (not replace_all or self._is_compact_and_current(prev)):
                report.articles = prev.n_live  # type: ignore[union-attr]
                report.version = prev.path.name  # type: ignore[union-attr]
                report.segments = len(prev.segments)  # type: ignore[union-attr]
                report.seconds = round(time.perf_counter() - started, 3)
                return report  # nothing to do: no new version

            embed_started = time.perf_counter()
            fresh = [a for a in to_embed if a.id not in reuse]
            embedded = self._embed(fresh, progress)
            report.embedded = len(fresh)
            report.embed_seconds = time.perf_counter() - embed_started
            dimension = embedded.shape[1] if fresh else self._dimension(prev)
            vectors_by_id = {a.id: embedded[i] for i, a in enumerate(fresh)}
            for article_id, encoded in reuse.items():
                vectors_by_id[article_id] = np.frombuffer(base64.b64decode(encoded), dtype=np.float32)

            staging = self.layout.stage()  # also clears what a killed job left half-written
            written: list[Segment] = []
            try:
                parts = self._carried_parts(
                    prev, replace_all, same_model, keep_rows, known, to_embed, changed_meta, gone
                )
                vocab = json.loads(json.dumps(prev.vocab)) if prev is not None else {"category": [], "language": []}
                carried = prev if parts else None  # frequencies continue from the previous version's
                df, documents = self._frequencies(carried)
                new_part = self._new_segment(
                    prev,
                    articles,
                    to_embed,
                    changed_meta,
                    keep_rows,
                    hashes,
                    vectors_by_id,
                    dimension,
                    vocab,
                    df,
                    documents,
                )
                if new_part is not None:
                    written.append(new_part.segment)
                    documents += len(to_embed)
                    parts.append(new_part)
                state = {"takedowns": takedowns, "parked": parked}
                # Frequencies no new text changed are linked from the previous version, not written again.
                same_df = carried.path / lexical.DF_FILE if carried is not None and not (to_embed or optimize) else None
                if optimize:
                    report.merged, parts, df, documents = self._optimize(parts, dimension, written)
                    same_df = None
                elif replace_all:
                    report.merged, parts = self._merge(parts, dimension, everything=True, written=written)
                parts = [p for p in parts if p.live > 0]  # a segment whose every row is deleted is dropped
                final = self._publish(staging, prev, dimension, parts, vocab, (df, documents, same_df), state, report)
                report.visible_seconds = round(time.perf_counter() - started, 3)
                if not (optimize or replace_all):
                    final = self._merge_after(final, dimension, parts, vocab, (df, documents), state, report, written)
                report.compacted = report.merged > 0
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                for segment in written:
                    segment.close()
                self.layout.collect_segments()
                raise
            report.version = final.name
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        finally:
            if prev is not None:
                prev.close()

    def _publish(
        self,
        staging: Path,
        previous: VersionReader | Path | None,
        dimension: int,
        parts: list[_Part],
        vocab: dict[str, list[str]],
        lexical_state: tuple[np.ndarray, int, Path | None],
        state: dict[str, Any],
        report: BuildReport,
    ) -> Path:
        """Stage a version listing ``parts`` and make it the live one. ``lexical_state``: frequencies, document
        count, and a file already holding those frequencies (linked instead of written), or None."""
        df, documents, same_df = lexical_state
        report.segments = len(parts)
        report.rows = sum(p.segment.rows for p in parts)
        report.articles = sum(p.live for p in parts)
        self._stage_files(staging, parts, vocab, df, same_df, state)
        name = None if previous is None else (previous.name if isinstance(previous, Path) else previous.path.name)
        manifest = self._manifest(name, dimension, parts, documents, report)
        return self.layout.publish(staging, manifest, self.settings.index.keep_versions)

    def _merge_after(
        self,
        live: Path,
        dimension: int,
        parts: list[_Part],
        vocab: dict[str, list[str]],
        lexical_state: tuple[np.ndarray, int],
        state: dict[str, Any],
        report: BuildReport,
        written: list[Segment],
    ) -> Path:
        """After an add/remove/restore is live: apply the merge policy and publish the merged version, if any.
        A merge that fails is logged and left to the next job (the change itself is already served)."""
        crash_point("before-merge")
        staging = self.layout.stage()
        try:
            report.merged, merged = self._merge(parts, dimension, everything=False, written=written)
            if not report.merged:
                shutil.rmtree(staging, ignore_errors=True)
                return live
            df, documents = lexical_state
            return self._publish(
                staging, live, dimension, merged, vocab, (df, documents, live / lexical.DF_FILE), state, report
            )
        except Exception as exc:
            logger.warning("merging segments failed (%s); %s keeps serving and the next job merges", exc, live.name)
            shutil.rmtree(staging, ignore_errors=True)
            report.merged = 0
            return live

    def _is_compact_and_current(self, prev: VersionReader) -> bool:
        """A build of unchanged content would rewrite the same version: one segment, nothing deleted, and
        the ANN the settings ask for."""
        if len(prev.segments) > 1 or not prev.live.all():
            return False
        return not prev.segments or prev.segments[0].ann_kind == self._backend_for(prev.n_live)

    def _backend_for(self, rows: int) -> str:
        """The configured ANN backend for a segment of ``rows``, or for "auto": exact while the whole archive
        has at most exact_max articles; in a larger archive exact only up to segment_exact_max rows (every
        query scans an exact segment whole, so a 50k-row one would cost more than the IVF of the rest)."""
        settings = self.settings.index
        if settings.backend != "auto":
            return settings.backend
        small = rows <= settings.exact_max and (
            self._archive_rows <= settings.exact_max or rows <= settings.segment_exact_max
        )
        return "exact" if small else "faiss-ivf"

    def _metadata_changes(
        self, prev: VersionReader, articles: list[Article], keep_rows: dict[str, int], hashes: dict[str, str]
    ) -> list[Article]:
        """Kept articles whose non-embedded fields (url, date, category, ...) changed."""
        kept = [a for a in articles if a.id in keep_rows]
        stored = prev.store.records([keep_rows[a.id] for a in kept])
        return [a for a in kept if article_row(keep_rows[a.id], a, hashes[a.id]) != tuple(stored[keep_rows[a.id]])]

    def _dimension(self, prev: VersionReader | None) -> int:
        if prev is not None:
            return int(prev.manifest["model"]["dimension"])
        return self.embedder.dimension

    def _embed(self, articles: list[Article], progress: ProgressStart | None) -> np.ndarray:
        if not articles:
            return np.empty((0, 0), dtype=np.float32)
        texts = [text_of(a, self.settings.embedder.max_chars) for a in articles]
        advance = progress(len(texts)) if progress is not None else None
        vectors = self.embedder.encode(texts, progress=advance)
        if vectors.shape != (len(texts), vectors.shape[1]) or vectors.dtype != np.float32:
            raise RecsysError(f"embedder returned {vectors.shape} {vectors.dtype} for {len(texts)} texts")
        return vectors

    @staticmethod
    def _carried_parts(
        prev: VersionReader | None,
        replace_all: bool,
        same_model: bool,
        keep_rows: dict[str, int],
        known: dict[str, tuple[int, str]],
        to_embed: list[Article],
        changed_meta: list[Article],
        gone: list[str],
    ) -> list[_Part]:
        """The previous version's segments with this job's deletions added: rows of removed articles, and
        the old rows of articles this job writes again (new text, or new metadata)."""
        if prev is None or (replace_all and not same_model):
            return []
        dead = [known[i][0] for i in gone]
        dead += [known[a.id][0] for a in to_embed if a.id in known]
        dead += [keep_rows[a.id] for a in changed_meta]
        live = prev.live.copy()
        live[np.asarray(dead, dtype=np.int64)] = False
        parts = []
        for i, segment in enumerate(prev.segments):
            start, stop = int(prev.offsets[i]), int(prev.offsets[i + 1])
            parts.append(_Part(segment, np.flatnonzero(~live[start:stop]).astype(np.int32)))
        return parts

    def _frequencies(self, prev: VersionReader | None) -> tuple[np.ndarray, int]:
        if prev is None:
            return np.zeros(lexical.BUCKETS, dtype=np.int32), 0
        return np.array(prev.frequencies()), int(prev.manifest["lexical"]["documents"])

    def _new_segment(
        self,
        prev: VersionReader | None,
        articles: list[Article],
        to_embed: list[Article],
        changed_meta: list[Article],
        keep_rows: dict[str, int],
        hashes: dict[str, str],
        vectors_by_id: dict[str, np.ndarray],
        dimension: int,
        vocab: dict[str, list[str]],
        df: np.ndarray,
        documents: int,
    ) -> _Part | None:
        """One segment with this job's new and changed articles, in input order (``df`` counts the new texts)."""
        writing = {a.id for a in to_embed} | {a.id for a in changed_meta}
        ordered = [a for a in articles if a.id in writing]
        if not ordered:
            return None
        embedded = {a.id for a in to_embed}
        records = [article_row(i, a, hashes[a.id]) for i, a in enumerate(ordered)]
        vectors = np.empty((len(ordered), dimension), dtype=np.float32)
        lex_ids = np.full((len(ordered), lexical.TERMS), -1, dtype=np.int32)
        lex_weights = np.zeros((len(ordered), lexical.TERMS), dtype=lexical.WEIGHT_DTYPE)
        fresh = [i for i, a in enumerate(ordered) if a.id in embedded]
        moved = [i for i, a in enumerate(ordered) if a.id not in embedded]
        for i in fresh:
            vectors[i] = vectors_by_id[ordered[i].id]
        if moved and prev is not None:  # metadata-only: vector and lexical terms carried from the old row
            old = np.asarray([keep_rows[ordered[i].id] for i in moved], dtype=np.int64)
            vectors[moved] = prev.vectors[old]
            lex_ids[moved] = prev.lexical[0][old]
            lex_weights[moved] = prev.lexical[1][old]
        if fresh:
            counts = lexical.term_counts([text_of(ordered[i], self.settings.embedder.max_chars) for i in fresh])
            lexical.add_frequencies(df, counts)
            lex_ids[fresh], lex_weights[fresh] = lexical.weigh(counts, df, documents + len(fresh))
        writer = SegmentWriter(self.layout.segments, dimension, len(ordered))
        try:
            writer.append(records, vectors, (lex_ids, lex_weights), row_columns(records, vocab))
            return _Part(self._finish(writer), np.empty(0, dtype=np.int32))
        except BaseException:
            writer.abandon()
            raise

    def _finish(self, writer: SegmentWriter) -> Segment:
        settings = self.settings.index
        kind = self._backend_for(writer.rows)
        tuning = {"lists_per_sqrt_n": settings.ivf_lists_per_sqrt_n, "nprobe": settings.ivf_nprobe or 16}
        tune = (settings.ivf_tune_queries, settings.ivf_target_recall) if settings.ivf_nprobe is None else None
        return writer.finish(kind, tuning if kind == FaissIVFIndex.kind else {}, tune)

    def _merge(
        self, parts: list[_Part], dimension: int, everything: bool, written: list[Segment]
    ) -> tuple[int, list[_Part]]:
        """Apply the merge policy until it has nothing to do (``everything``: fold all into one segment).
        Returns how many segments were folded and the parts after merging."""
        merged = 0
        while True:
            parts = [p for p in parts if p.live > 0]  # a segment with every row deleted is simply dropped
            if everything:
                compact = len(parts) == 1 and not parts[0].deleted.size
                compact = compact and parts[0].segment.ann_kind == self._backend_for(parts[0].live)
                run = None if not parts or compact else (0, len(parts))
            else:
                run = plan_merge([(p.segment.rows, int(p.deleted.size)) for p in parts], self.merge_policy)
            if run is None:
                return merged, parts
            start, stop = run
            writer = SegmentWriter(self.layout.segments, dimension, sum(p.live for p in parts[start:stop]))
            try:
                for part in parts[start:stop]:
                    writer.copy_from(part.segment, part.live_rows())
                segment = self._finish(writer)
            except BaseException:
                writer.abandon()
                raise
            written.append(segment)
            merged += stop - start
            parts = [*parts[:start], _Part(segment, np.empty(0, dtype=np.int32)), *parts[stop:]]
            if everything:
                return merged, parts

    def _optimize(
        self, parts: list[_Part], dimension: int, written: list[Segment]
    ) -> tuple[int, list[_Part], np.ndarray, int]:
        """Fold every live row into one new segment and weigh its lexical terms with document frequencies
        counted afresh over exactly those texts (what a fresh build computes)."""
        parts = [p for p in parts if p.live > 0]
        df = np.zeros(lexical.BUCKETS, dtype=np.int32)
        if not parts:
            return 0, parts, df, 0
        rows = sum(p.live for p in parts)
        writer = SegmentWriter(self.layout.segments, dimension, rows)
        try:
            for part in parts:
                writer.copy_from(part.segment, part.live_rows())
            chunk = 20_000
            for start in range(0, rows, chunk):
                lexical.add_frequencies(df, lexical.term_counts(self._texts(writer, start, chunk)))
            for start in range(0, rows, chunk):
                counts = lexical.term_counts(self._texts(writer, start, chunk))
                stop = start + len(counts)
                writer.lex_ids[start:stop], writer.lex_weights[start:stop] = lexical.weigh(counts, df, rows)
            segment = self._finish(writer)
        except BaseException:
            writer.abandon()
            raise
        written.append(segment)
        return len(parts), [_Part(segment, np.empty(0, dtype=np.int32))], df, rows

    def _texts(self, writer: SegmentWriter, start: int, count: int) -> list[str]:
        """The embedded texts of rows [start, start + count) of a segment being written."""
        found = writer.conn.execute(
            "SELECT title, abstract, body FROM articles WHERE row >= ? AND row < ? ORDER BY row",
            (start, start + count),
        )
        return [article_text(t, a, b, self.settings.embedder.max_chars) for t, a, b in found]

    def _stage_files(
        self,
        staging: Path,
        parts: list[_Part],
        vocab: dict[str, list[str]],
        df: np.ndarray,
        same_df: Path | None,
        state: dict[str, Any],
    ) -> None:
        deletes = staging / DELETES_DIR
        deletes.mkdir()
        for part in parts:
            if part.deleted.size:
                np.save(deletes / f"{part.segment.name}.npy", part.deleted.astype(np.int32))
        (staging / VOCAB_FILE).write_text(_json(vocab))
        if same_df is not None:
            os.link(same_df, staging / lexical.DF_FILE)
        else:
            np.save(staging / lexical.DF_FILE, df)
        (staging / STATE_FILE).write_text(json.dumps(state, sort_keys=True))

    def _manifest(
        self, previous: str | None, dimension: int, parts: list[_Part], documents: int, report: BuildReport
    ) -> dict[str, Any]:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        largest = max(parts, key=lambda p: p.segment.rows, default=None)
        ann = dict(largest.segment.info["ann"]) if largest is not None else {"kind": self._backend_for(0)}
        return {
            "format_version": FORMAT_VERSION,
            "created_at": created,
            "build_seconds": round(time.perf_counter() - self._started, 3),
            "model": {"name": self.model_name, "dimension": dimension},
            "text": {"fields": ["title", "abstract", "body"], "max_chars": self.settings.embedder.max_chars},
            "counts": {"articles": report.articles, "rows": report.rows, "dead_rows": report.rows - report.articles},
            "segments": [
                {"name": p.segment.name, "rows": p.segment.rows, "deleted": int(p.deleted.size)} for p in parts
            ],
            "ann": ann | {"size": report.articles, "segments": len(parts)},
            "lexical": {"terms": lexical.TERMS, "buckets": lexical.BUCKETS, "documents": documents},
            "library_versions": library_versions(),
            "previous_version": previous,
            "job": {k: v for k, v in report.to_dict().items() if k not in ("problems", "version")},
        }


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
