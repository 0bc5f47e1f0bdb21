"""Index jobs: build, add (upsert), remove. Each writes a new version and swaps it in atomically.

Embeddings are keyed by a hash of the embedded text and the model, so an article whose text
did not change is never embedded again, whether it comes through ``add`` or a full ``build``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys import lexical
from recsys.ann import ANNIndex, FaissIVFIndex, exact_search, make_index
from recsys.config import Settings
from recsys.embedder import Embedder, article_text, content_hash, make_embedder, text_of
from recsys.io import read_articles
from recsys.layout import FORMAT_VERSION, IndexLayout, crash_point, library_versions, read_manifest
from recsys.store import (
    COLUMNS,
    DB_FILE,
    ROWS_FILE,
    VOCAB_FILE,
    ArticleStore,
    article_row,
    build_row_columns,
    connect_writable,
)
from recsys.types import Article, IndexStateError, InputError, InputProblem, RecsysError
from recsys.version import ANN_DIR, VECTORS_FILE

COPY_CHUNK = 65_536  # rows copied at a time between vector files

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
    compacted: bool = False
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
class _Previous:
    path: Path
    manifest: dict[str, Any]
    conn: sqlite3.Connection
    vectors: np.ndarray
    hashes: dict[str, tuple[int, str]]  # id -> (row, content hash)
    takedowns: set[str]
    parked: dict[str, tuple[str, bytes]]  # taken-down id -> (content hash, float32 vector bytes)


class Indexer:
    """Writes versions of one index directory. One writer at a time (a lock file enforces it)."""

    def __init__(self, root: str | Path, settings: Settings, embedder: Embedder | None = None) -> None:
        self.layout = IndexLayout(root)
        self.settings = settings
        self._embedder = embedder
        # The name recorded in the manifest and mixed into content hashes.
        self.model_name = embedder.name if embedder is not None else settings.embedder.model
        self._lexical_documents = 0

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
            known = set() if prev is None else set(prev.hashes) | prev.takedowns
            if prev is not None:
                prev.conn.close()
            unknown = sorted(ids - known)
            report = self._write([], ids if block_unindexed else ids & known, replace_all=False, progress=None)
        report.not_indexed = unknown
        return report

    def restore(self, article_ids: Iterable[str]) -> BuildReport:
        """Lift takedowns; the articles come back with the next add or build that carries them."""
        with self.layout.writer_lock():
            return self._write([], set(), replace_all=False, progress=None, restores=set(article_ids))

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

    def _open_previous(self) -> _Previous | None:
        if not self.layout.exists():
            return None
        path = self.layout.current()
        manifest = read_manifest(path)
        conn = sqlite3.connect(f"file:{path / DB_FILE}?mode=ro&immutable=1", uri=True)
        hashes = {i: (int(r), h) for i, r, h in conn.execute("SELECT id, row, content_hash FROM articles")}
        vectors = np.load(path / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        takedowns = {i for (i,) in conn.execute("SELECT id FROM takedowns")}
        try:
            parked = {i: (h, v) for i, h, v in conn.execute("SELECT id, content_hash, vector FROM parked")}
        except sqlite3.OperationalError:  # a version written before vectors were parked
            parked = {}
        return _Previous(path, manifest, conn, vectors, hashes, takedowns, parked)

    def _write(
        self,
        articles: list[Article],
        removals: set[str],
        replace_all: bool,
        progress: ProgressStart | None,
        restores: set[str] | None = None,
    ) -> BuildReport:
        started = time.perf_counter()
        report = BuildReport()
        settings = self.settings
        model = self.model_name
        prev = self._open_previous()
        if prev is not None and prev.manifest["model"]["name"] != model and not replace_all:
            raise IndexStateError(
                f"the index was built with model {prev.manifest['model']['name']!r} but the configured model is "
                f"{model!r}; set [embedder] model back, or re-embed everything with `recsys index build`"
            )
        try:
            prev_hashes = prev.hashes if prev is not None else {}
            same_model = prev is not None and prev.manifest["model"]["name"] == model
            old_takedowns = prev.takedowns if prev is not None else set()
            takedowns = (old_takedowns - (restores or set())) | removals
            allowed = [a for a in articles if a.id not in takedowns]
            report.blocked = len(articles) - len(allowed)
            articles = allowed

            # Decide, per input article: unchanged (keep row), metadata-only, or needs a vector.
            keep_rows: dict[str, int] = {}  # id -> previous row whose vector is still right
            to_embed: list[Article] = []
            hashes: dict[str, str] = {}
            for article in articles:
                digest = content_hash(text_of(article, settings.embedder.max_chars), model)
                hashes[article.id] = digest
                old = prev_hashes.get(article.id)
                if old is not None and same_model and old[1] == digest:
                    keep_rows[article.id] = old[0]
                else:
                    to_embed.append(article)
            if replace_all:
                gone = [i for i in prev_hashes if i not in hashes]
            else:
                gone = [i for i in removals if i in prev_hashes]
            # Taken-down articles keep their vector aside; one that comes back unchanged is not re-embedded.
            parked = dict(prev.parked) if prev is not None else {}
            for article_id in removals & set(prev_hashes):
                row, digest = prev_hashes[article_id]
                parked[article_id] = (digest, np.asarray(prev.vectors[row], dtype=np.float32).tobytes())
            reuse = {a.id: parked[a.id][1] for a in to_embed if a.id in parked and parked[a.id][0] == hashes[a.id]}
            for article in to_embed:
                parked.pop(article.id, None)
            report.removed = len(gone)
            report.updated = sum(1 for a in to_embed if a.id in prev_hashes)
            report.added = len(to_embed) - report.updated
            report.unchanged = len(keep_rows)

            changed_meta = self._metadata_changes(prev, articles, keep_rows) if prev is not None else []
            unchanged = (
                prev is not None
                and not to_embed
                and not gone
                and not changed_meta
                and takedowns == old_takedowns
                and parked.keys() == prev.parked.keys()
            )
            if unchanged and (not replace_all or self._is_compact_and_current(prev)):
                report.articles = len(prev_hashes)
                report.version = prev.path.name
                report.seconds = round(time.perf_counter() - started, 3)
                return report  # nothing to do: no new version

            embed_started = time.perf_counter()
            fresh = [a for a in to_embed if a.id not in reuse]
            embedded = self._embed(fresh, progress)
            report.embedded = len(fresh)
            report.embed_seconds = time.perf_counter() - embed_started
            dimension = embedded.shape[1] if fresh else self._dimension(prev)
            new_vectors = np.empty((len(to_embed), dimension), dtype=np.float32)
            by_id = {a.id: i for i, a in enumerate(fresh)}
            for i, article in enumerate(to_embed):
                if article.id in reuse:
                    new_vectors[i] = np.frombuffer(reuse[article.id], dtype=np.float32)
                else:
                    new_vectors[i] = embedded[by_id[article.id]]

            staging = self.layout.stage()
            try:
                version = self._stage_version(
                    staging,
                    prev,
                    changed_meta,
                    keep_rows,
                    to_embed,
                    new_vectors,
                    hashes,
                    gone,
                    replace_all,
                    dimension,
                    report,
                    takedowns,
                    parked,
                )
                manifest = self._manifest(prev, dimension, version, report, started)
                final = self.layout.publish(staging, manifest, settings.index.keep_versions)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            report.version = final.name
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        finally:
            if prev is not None:
                prev.conn.close()

    def _is_compact_and_current(self, prev: _Previous) -> bool:
        """A build of unchanged content would rewrite the same version: no dead rows, same ANN choice."""
        wanted = self._backend_for(len(prev.hashes))
        return (
            prev.manifest["counts"]["dead_rows"] == 0
            and prev.manifest["ann"]["kind"] == wanted
            and (prev.path / lexical.TERMS_FILE).is_file()  # versions from before the lexical arrays get them
        )

    def _backend_for(self, live: int) -> str:
        """The configured ANN backend, or for "auto": exact up to exact_max articles, IVF above."""
        settings = self.settings.index
        if settings.backend != "auto":
            return settings.backend
        return "exact" if live <= settings.exact_max else "faiss-ivf"

    def _metadata_changes(self, prev: _Previous, articles: list[Article], keep_rows: dict[str, int]) -> list[Article]:
        """Kept articles whose non-embedded fields (url, date, category, ...) changed."""
        kept = [a for a in articles if a.id in keep_rows]
        changed = []
        cols = ",".join(COLUMNS)
        for start in range(0, len(kept), 500):
            chunk = kept[start : start + 500]
            marks = ",".join("?" * len(chunk))
            stored = {
                values[1]: values
                for values in prev.conn.execute(
                    f"SELECT {cols} FROM articles WHERE id IN ({marks})", [a.id for a in chunk]
                )
            }
            for article in chunk:
                values = stored[article.id]
                if article_row(values[0], article, values[-1]) != tuple(values):
                    changed.append(article)
        return changed

    def _dimension(self, prev: _Previous | None) -> int:
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

    def _stage_version(
        self,
        staging: Path,
        prev: _Previous | None,
        changed_meta: list[Article],
        keep_rows: dict[str, int],
        to_embed: list[Article],
        new_vectors: np.ndarray,
        hashes: dict[str, str],
        gone: list[str],
        replace_all: bool,
        dimension: int,
        report: BuildReport,
        takedowns: set[str],
        parked: dict[str, tuple[str, bytes]],
    ) -> ANNIndex:
        settings = self.settings.index
        prev_rows = 0 if prev is None else int(prev.vectors.shape[0])
        prev_live = 0 if prev is None else len(prev.hashes)
        replaced = sum(1 for a in to_embed if prev is not None and a.id in prev.hashes)
        dead_after = (0 if prev is None else prev_rows - prev_live) + replaced + len(gone)
        rows_after = prev_rows + len(to_embed)
        compact = (
            replace_all or prev is None or rows_after == 0 or dead_after / rows_after > settings.compact_dead_fraction
        )
        report.compacted = compact and prev is not None
        drop_ids = set(gone) | {a.id for a in to_embed}  # rows that stop being live

        db_path = staging / DB_FILE
        if compact:
            # Fresh row numbering: survivors in their old order, then the new vectors.
            if replace_all:
                survivors = sorted(keep_rows.values())
            else:
                survivors = sorted(r for i, (r, _) in (prev.hashes.items() if prev else []) if i not in drop_ids)
            row_map = {old: new for new, old in enumerate(survivors)}
            base = len(survivors)
            conn = connect_writable(db_path)
            conn.execute("BEGIN")
            if prev is not None and survivors:
                conn.execute("ATTACH DATABASE ? AS old", (f"file:{prev.path / DB_FILE}?mode=ro",))
                conn.execute("CREATE TEMP TABLE row_map (old_row INTEGER PRIMARY KEY, new_row INTEGER)")
                conn.executemany("INSERT INTO row_map VALUES (?, ?)", row_map.items())
                cols = ",".join(f"a.{c}" for c in COLUMNS[1:])
                conn.execute(
                    f"INSERT INTO articles ({','.join(COLUMNS)}) SELECT m.new_row, {cols} "
                    "FROM old.articles a JOIN row_map m ON a.row = m.old_row"
                )
        else:
            shutil.copyfile(prev.path / DB_FILE, db_path)
            row_map = None
            base = prev_rows
            conn = connect_writable(db_path)
            conn.execute("BEGIN")
            for start in range(0, len(drop_ids), 500):
                chunk = list(drop_ids)[start : start + 500]
                conn.execute(f"DELETE FROM articles WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        # Metadata-only updates of kept articles, then the newly embedded ones.
        conn.executemany(
            f"INSERT OR REPLACE INTO articles ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
            [
                article_row(row_map[keep_rows[a.id]] if row_map is not None else keep_rows[a.id], a, hashes[a.id])
                for a in changed_meta
            ],
        )
        conn.executemany(
            f"INSERT INTO articles ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
            [article_row(base + i, a, hashes[a.id]) for i, a in enumerate(to_embed)],
        )
        conn.execute("DELETE FROM takedowns")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        previous_at = dict(prev.conn.execute("SELECT id, at FROM takedowns")) if prev is not None else {}
        conn.executemany(
            "INSERT INTO takedowns (id, at) VALUES (?, ?)", [(i, previous_at.get(i, stamp)) for i in sorted(takedowns)]
        )
        conn.execute("DELETE FROM parked")
        conn.executemany(
            "INSERT INTO parked (id, content_hash, vector) VALUES (?, ?, ?)",
            [(i, digest, vector) for i, (digest, vector) in sorted(parked.items())],
        )
        conn.execute("COMMIT")
        n_rows = base + len(to_embed)
        report.rows = n_rows
        rows, vocab = build_row_columns(conn, n_rows)
        report.articles = int(rows["live"].sum())
        conn.close()
        crash_point("after-sqlite")

        vectors = np.lib.format.open_memmap(
            staging / VECTORS_FILE, mode="w+", dtype=np.float32, shape=(n_rows, dimension)
        )
        old_order = np.fromiter(row_map.keys(), dtype=np.int64, count=len(row_map)) if row_map else None
        _copy_rows(prev.vectors if prev is not None else None, vectors, compact, old_order, prev_rows)
        if len(to_embed):
            vectors[base:] = new_vectors
        vectors.flush()
        del vectors
        self._stage_lexical(staging, prev, compact, old_order, prev_rows, base, n_rows, to_embed, rows)
        np.save(staging / ROWS_FILE, rows)
        (staging / VOCAB_FILE).write_text(_json(vocab))
        crash_point("after-vectors")

        vectors = np.load(staging / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        ann = self._stage_ann(prev, rows, vectors, base, compact, dimension)
        ann.save(staging / ANN_DIR)
        crash_point("after-ann")
        return ann

    def _stage_lexical(
        self,
        staging: Path,
        prev: _Previous | None,
        compact: bool,
        old_order: np.ndarray | None,
        prev_rows: int,
        base: int,
        n_rows: int,
        to_embed: list[Article],
        rows: np.ndarray,
    ) -> None:
        """The lexical arrays (recsys/lexical.py): old rows copied like the vectors, new rows weighed now."""
        max_chars = self.settings.embedder.max_chars
        ids = np.lib.format.open_memmap(staging / lexical.TERMS_FILE, "w+", np.int32, (n_rows, lexical.TERMS))
        weights = np.lib.format.open_memmap(
            staging / lexical.WEIGHTS_FILE, "w+", lexical.WEIGHT_DTYPE, (n_rows, lexical.TERMS)
        )
        ids[:] = -1
        df = np.zeros(lexical.BUCKETS, dtype=np.int32)
        documents = 0
        have_previous = prev is not None and (prev.path / lexical.TERMS_FILE).is_file()
        if have_previous:
            df[:] = np.load(prev.path / lexical.DF_FILE, allow_pickle=False)
            documents = int(prev.manifest.get("lexical", {}).get("documents", 0))
            for name, target in ((lexical.TERMS_FILE, ids), (lexical.WEIGHTS_FILE, weights)):
                _copy_rows(
                    np.load(prev.path / name, mmap_mode="r", allow_pickle=False), target, compact, old_order, prev_rows
                )
            redo = np.arange(0)
        else:  # a version written before lexical arrays: weigh every kept row from its stored text
            redo = np.flatnonzero(rows["live"][:base])
        texts = [text_of(a, max_chars) for a in to_embed]
        if redo.size:
            stored = ArticleStore(staging / DB_FILE)
            found = stored.get_rows(redo)
            stored.close()
            texts = [
                article_text(a.title, a.abstract, a.body, max_chars) for a in (found[int(r)] for r in redo)
            ] + texts
        counts = lexical.term_counts(texts)
        lexical.add_frequencies(df, counts)
        documents += len(counts)
        new_ids, new_weights = lexical.weigh(counts, df, documents)
        targets = np.concatenate([redo, np.arange(base, n_rows)]).astype(np.int64)
        if targets.size:
            ids[targets] = new_ids
            weights[targets] = new_weights
        ids.flush()
        weights.flush()
        del ids, weights
        np.save(staging / lexical.DF_FILE, df)
        self._lexical_documents = documents

    def _stage_ann(
        self, prev: _Previous | None, rows: np.ndarray, vectors: np.ndarray, base: int, compact: bool, dimension: int
    ) -> ANNIndex:
        settings = self.settings.index
        live_rows = np.flatnonzero(rows["live"])
        kind = self._backend_for(len(live_rows))
        tuning = {"lists_per_sqrt_n": settings.ivf_lists_per_sqrt_n, "nprobe": settings.ivf_nprobe or 16}
        if not compact and prev is not None:
            previous = ANNIndex.load(prev.path / ANN_DIR)
            if previous.kind == kind:
                dead = np.flatnonzero(~rows["live"][: prev.vectors.shape[0]])
                previous.remove(dead)
                fresh = np.arange(base, rows.shape[0])
                if fresh.size:
                    previous.add(vectors[fresh], fresh)
                return previous
        ann = make_index(kind, dimension, **(tuning if kind == "faiss-ivf" else {}))
        if isinstance(ann, FaissIVFIndex) and len(live_rows):
            # Centroids from a seeded sample of everything, sized for the whole collection.
            size = min(len(live_rows), ann.lists_for(len(live_rows)) * ann.TRAIN_POINTS_PER_LIST)
            sample = np.sort(np.random.default_rng(0).choice(live_rows, size, replace=False))
            ann.train(vectors[sample], len(live_rows))
        for start in range(0, len(live_rows), COPY_CHUNK * 4):
            part = live_rows[start : start + COPY_CHUNK * 4]
            ann.add(vectors[part], part)
        if isinstance(ann, FaissIVFIndex) and settings.ivf_nprobe is None and len(live_rows):
            size = min(settings.ivf_tune_queries, len(live_rows))
            sample = np.sort(np.random.default_rng(0).choice(live_rows, size, replace=False))
            queries = np.asarray(vectors[sample], dtype=np.float32)
            _, truth = exact_search(vectors, queries, 11, None if len(live_rows) == rows.shape[0] else live_rows)
            ann.tune(queries, sample, truth, settings.ivf_target_recall)
        return ann

    def _manifest(
        self, prev: _Previous | None, dimension: int, ann: ANNIndex, report: BuildReport, started: float
    ) -> dict[str, Any]:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {
            "format_version": FORMAT_VERSION,
            "created_at": created,
            "build_seconds": round(time.perf_counter() - started, 3),
            "model": {"name": self.model_name, "dimension": dimension},
            "text": {"fields": ["title", "abstract", "body"], "max_chars": self.settings.embedder.max_chars},
            "counts": {"articles": report.articles, "rows": report.rows, "dead_rows": report.rows - report.articles},
            "ann": ann.settings() | {"size": len(ann)},
            "lexical": {"terms": lexical.TERMS, "buckets": lexical.BUCKETS, "documents": self._lexical_documents},
            "library_versions": library_versions(),
            "previous_version": None if prev is None else prev.path.name,
            "job": {k: v for k, v in report.to_dict().items() if k not in ("problems", "version")},
        }


def _copy_rows(
    source: np.ndarray | None, target: np.ndarray, compact: bool, old_order: np.ndarray | None, prev_rows: int
) -> None:
    """Carry a previous version's row-aligned array into the new one: renumbered on compaction, else as is."""
    if source is None:
        return
    if compact and old_order is not None:
        for start in range(0, len(old_order), COPY_CHUNK):
            part = old_order[start : start + COPY_CHUNK]
            target[start : start + len(part)] = source[part]
    elif not compact:
        for start in range(0, prev_rows, COPY_CHUNK):
            stop = min(prev_rows, start + COPY_CHUNK)
            target[start:stop] = source[start:stop]


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
