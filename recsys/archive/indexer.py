"""Index jobs: build, add (upsert), remove, restore, optimize. Each publishes a new version atomically.

A job costs what it changes (recsys/archive/segment.py): ``add`` writes one segment with the new and changed
articles and marks their old rows deleted; ``remove`` writes only deletions; the merge policy then folds
small segments together, and ``build`` / ``optimize`` leave one compact segment. Embeddings are keyed by a
hash of the embedded text and the model, so an article whose text did not change is never embedded
again, whether it comes through ``add`` or a full ``build``.

``Indexer`` is the facade; each step of a job is its own module: ``plan`` (what to keep, embed, delete),
``embed``, ``write`` (the new segment), ``publish`` (the version), ``merge`` (the merge policy).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from recsys.archive import lexical
from recsys.archive.calibrate import Calibration, calibrate_version, store_calibration
from recsys.archive.embed import ProgressStart, embed_plan
from recsys.archive.layout import FORMAT_VERSION, MANIFEST, IndexLayout, crash_point
from recsys.archive.merge import MergePolicy, merge_parts, optimize_parts
from recsys.archive.plan import BuildReport, JobPlan, Part, carried_parts, plan_job
from recsys.archive.publish import JobInfo, VersionFiles, publish
from recsys.archive.segment import Segment
from recsys.archive.store import StoredArticle
from recsys.archive.version import VersionReader
from recsys.archive.write import AnnChoice, new_segment
from recsys.config import Settings
from recsys.embedder import Embedder, SentenceTransformerEmbedder, language_warning, make_embedder, resolve_model
from recsys.ingest.articles import read_articles
from recsys.types import Article, IndexStateError, InputError, RecsysError

__all__ = ["BuildReport", "Indexer", "ProgressStart"]

logger = logging.getLogger(__name__)


def stored_to_article(stored: StoredArticle) -> Article:
    """An indexed article's input fields, as ``index add`` would take them back."""
    return Article(
        id=stored.id,
        title=stored.title,
        body=stored.body,
        abstract=stored.abstract,
        url=stored.url,
        canonical_url=stored.canonical_url,
        published_at=stored.published_at,
        category=stored.category,
        subcategory=stored.subcategory,
        language=stored.language,
        tags=tuple(stored.tags),
        extra=dict(stored.extra),
    )


class Indexer:
    """Writes versions of one index directory. One writer at a time (a lock file enforces it)."""

    def __init__(self, root: str | Path, settings: Settings, embedder: Embedder | None = None) -> None:
        self.layout = IndexLayout(root)
        self.settings = settings
        self._embedder = embedder
        # The name recorded in the manifest and mixed into content hashes.
        self.model_name = embedder.name if embedder is not None else settings.embedder.model
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
        """Lift takedowns and bring the articles back at once, from the text their segment still holds and the
        vector parked with the takedown (nothing is embedded). One whose text a merge has since dropped comes
        back with the next add or build that carries it (``report.not_indexed`` names those)."""
        ids = set(article_ids)
        with self.layout.writer_lock():
            prev = self._open_previous()
            found = {a: prev.store.parked(a) for a in ids} if prev is not None else {}
            if prev is not None:
                prev.close()
            back = [stored_to_article(s) for s in found.values() if s is not None]
            report = self._write(back, set(), replace_all=False, progress=None, restores=ids)
        report.not_indexed = sorted(a for a in ids if found.get(a) is None)
        return report

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
        result = read_articles(paths, fmt, self.settings.input.columns, self.settings.input.id_from)
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
        if isinstance(self._embedder, SentenceTransformerEmbedder) or self._embedder is None:
            try:
                model_path = resolve_model(self.model_name)
            except RecsysError:
                model_path = None  # the job embedded nothing; the model's card is not needed
            if model_path is not None:
                warning = language_warning([a.language for a in result.articles], model_path, self.model_name)
                report.warnings += [warning] if warning else []
        return report

    def _calibrate(self, version: Path, rewrite: bool) -> float | None:
        """Measure the site's similarity floor on a rebuilt or optimized version (or the first time there is
        none); an add keeps the last one (sections and the model's scale change slowly)."""
        known = Calibration.load(self.layout.root) if not rewrite else None
        if known is not None:
            return None
        reader = VersionReader(version)
        try:
            found = calibrate_version(reader)
        finally:
            reader.close()
        if found is not None:
            store_calibration(self.layout.root, found)
        return None if found is None else found.floor

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
        started = time.perf_counter()
        report = BuildReport()
        settings = self.settings
        model = self.model_name
        max_chars = settings.embedder.max_chars
        self.layout.collect_segments()  # a segment a killed job wrote but never published
        prev = self._open_previous(replace_all)
        if prev is not None and prev.manifest["model"]["name"] != model and not replace_all:
            raise IndexStateError(
                f"the index was built with model {prev.manifest['model']['name']!r} but the configured model is "
                f"{model!r}; set [embedder] model back, or re-embed everything with `recsys index build`"
            )
        try:
            plan = plan_job(prev, articles, removals, restores or set(), replace_all, model, max_chars)
            plan.fill(report)
            archive_rows = len(plan.articles) if replace_all else (prev.n_live if prev is not None else 0)
            ann = AnnChoice(settings.index, archive_rows + (0 if replace_all else report.added - report.removed))
            job = JobInfo(model, max_chars, started, ann.kind_for(0))
            if prev is not None and plan.writes_nothing and not optimize:
                if not replace_all or self._is_compact_and_current(prev, ann):
                    report.articles = prev.n_live
                    report.version = prev.path.name
                    report.segments = len(prev.segments)
                    report.seconds = round(time.perf_counter() - started, 3)
                    return report  # nothing to do: no new version

            embedded = embed_plan(plan, lambda: self.embedder, max_chars, progress)
            report.embedded = embedded.count
            report.embed_seconds = embedded.seconds
            dimension = embedded.dimension if embedded.dimension is not None else self._dimension(prev)

            staging = self.layout.stage()  # also clears what a killed job left half-written
            written: list[Segment] = []
            try:
                final = self._write_version(
                    prev, plan, embedded.vectors, dimension, staging, written, ann, job, report, replace_all, optimize
                )
                report.compacted = report.merged > 0
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                for segment in written:
                    segment.close()
                self.layout.collect_segments()
                raise
            report.version = final.name
            report.related_floor = self._calibrate(final, replace_all or optimize)
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        finally:
            if prev is not None:
                prev.close()

    def _write_version(
        self,
        prev: VersionReader | None,
        plan: JobPlan,
        vectors_by_id: dict[str, np.ndarray],
        dimension: int,
        staging: Path,
        written: list[Segment],
        ann: AnnChoice,
        job: JobInfo,
        report: BuildReport,
        replace_all: bool,
        optimize: bool,
    ) -> Path:
        """Write the plan's segment, publish the version, then (an add, remove or restore) merge."""
        segments_dir = self.layout.segments
        parts = carried_parts(prev, plan, replace_all)
        vocab = json.loads(json.dumps(prev.vocab)) if prev is not None else {"category": [], "language": []}
        carried = prev if parts else None  # frequencies continue from the previous version's
        df, documents = self._frequencies(carried)
        max_chars = job.max_chars
        new_part = new_segment(
            segments_dir, prev, plan, vectors_by_id, dimension, vocab, (df, documents), max_chars, ann
        )
        if new_part is not None:
            written.append(new_part.segment)
            documents += len(plan.to_embed)
            parts.append(new_part)
        # Frequencies no new text changed are linked from the previous version, not written again.
        same_df = carried.path / lexical.DF_FILE if carried is not None and not (plan.to_embed or optimize) else None
        if optimize:
            folded = optimize_parts(parts, segments_dir, dimension, ann, max_chars, written)
            report.merged, parts, df, documents = folded
            same_df = None
        elif replace_all:
            report.merged, parts = self._merge(parts, dimension, ann, everything=True, written=written)
        parts = [p for p in parts if p.live > 0]  # a segment whose every row is deleted is dropped
        files = VersionFiles(vocab, df, documents, same_df, plan.state())
        keep = self.settings.index.keep_versions
        previous = prev.path.name if prev is not None else None
        final = publish(self.layout, staging, previous, dimension, parts, files, report, job, keep)
        report.visible_seconds = round(time.perf_counter() - job.started, 3)
        if not (optimize or replace_all):
            final = self._merge_after(final, dimension, parts, files, report, written, ann, job)
        return final

    def _merge_after(
        self,
        live: Path,
        dimension: int,
        parts: list[Part],
        files: VersionFiles,
        report: BuildReport,
        written: list[Segment],
        ann: AnnChoice,
        job: JobInfo,
    ) -> Path:
        """After an add/remove/restore is live: apply the merge policy and publish the merged version, if any.
        A merge that fails is logged and left to the next job (the change itself is already served)."""
        crash_point("before-merge")
        staging = self.layout.stage()
        try:
            report.merged, merged = self._merge(parts, dimension, ann, everything=False, written=written)
            if not report.merged:
                shutil.rmtree(staging, ignore_errors=True)
                return live
            files.same_df = live / lexical.DF_FILE
            keep = self.settings.index.keep_versions
            return publish(self.layout, staging, live.name, dimension, merged, files, report, job, keep)
        except Exception as exc:
            logger.warning("merging segments failed (%s); %s keeps serving and the next job merges", exc, live.name)
            shutil.rmtree(staging, ignore_errors=True)
            report.merged = 0
            return live

    def _merge(
        self, parts: list[Part], dimension: int, ann: AnnChoice, everything: bool, written: list[Segment]
    ) -> tuple[int, list[Part]]:
        """The merge step with this index's policy (``everything``: fold all into one segment)."""
        return merge_parts(parts, self.layout.segments, dimension, self.merge_policy, ann, everything, written)

    def _is_compact_and_current(self, prev: VersionReader, ann: AnnChoice) -> bool:
        """A build of unchanged content would rewrite the same version: one segment, nothing deleted, and
        the ANN the settings ask for."""
        if len(prev.segments) > 1 or not prev.live.all():
            return False
        return not prev.segments or prev.segments[0].ann_kind == ann.kind_for(prev.n_live)

    def _dimension(self, prev: VersionReader | None) -> int:
        if prev is not None:
            return int(prev.manifest["model"]["dimension"])
        return self.embedder.dimension

    def _frequencies(self, prev: VersionReader | None) -> tuple[np.ndarray, int]:
        if prev is None:
            return np.zeros(lexical.BUCKETS, dtype=np.int32), 0
        return np.array(prev.frequencies()), int(prev.manifest["lexical"]["documents"])
