"""The write step of an index job: one new segment with the job's new and changed articles.

``AnnChoice`` decides which ANN a segment gets (exact or FAISS IVF, from ``[index]`` and the size the
archive will have) and seals a ``SegmentWriter`` with it; the merge step uses the same choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.archive import lexical
from recsys.archive.ann import FaissIVFIndex
from recsys.archive.plan import JobPlan, Part
from recsys.archive.segment import Segment
from recsys.archive.segment_writer import SegmentWriter
from recsys.archive.store import article_row, row_columns
from recsys.archive.version import VersionReader
from recsys.config import IndexConfig
from recsys.embedder import text_of


@dataclass(frozen=True)
class AnnChoice:
    """Which ANN a segment written by this job gets, for an archive of ``archive_rows`` live articles."""

    config: IndexConfig
    archive_rows: int

    def kind_for(self, rows: int) -> str:
        """The configured ANN backend for a segment of ``rows``, or for "auto": exact while the whole archive
        has at most exact_max articles; in a larger archive exact only up to segment_exact_max rows (every
        query scans an exact segment whole, so a 50k-row one would cost more than the IVF of the rest)."""
        config = self.config
        if config.backend != "auto":
            return config.backend
        small = rows <= config.exact_max and (self.archive_rows <= config.exact_max or rows <= config.segment_exact_max)
        return "exact" if small else "faiss-ivf"

    def finish(self, writer: SegmentWriter) -> Segment:
        """Seal ``writer`` with the ANN its size calls for (an IVF's nprobe tuned unless configured)."""
        config = self.config
        kind = self.kind_for(writer.rows)
        tuning = {"lists_per_sqrt_n": config.ivf_lists_per_sqrt_n, "nprobe": config.ivf_nprobe or 16}
        tune = (config.ivf_tune_queries, config.ivf_target_recall) if config.ivf_nprobe is None else None
        return writer.finish(kind, tuning if kind == FaissIVFIndex.kind else {}, tune)


def new_segment(
    segments_dir: Path,
    prev: VersionReader | None,
    plan: JobPlan,
    vectors_by_id: dict[str, np.ndarray],
    dimension: int,
    vocab: dict[str, list[str]],
    lexical_state: tuple[np.ndarray, int],
    max_chars: int,
    ann: AnnChoice,
) -> Part | None:
    """One segment with the plan's new and changed articles, in input order, or None when there are none.

    ``lexical_state`` is (document frequencies, documents counted); the frequencies are updated in place
    with the new texts. A metadata-only change carries the old row's vector and lexical terms."""
    df, documents = lexical_state
    writing = {a.id for a in plan.to_embed} | {a.id for a in plan.changed_meta}
    ordered = [a for a in plan.articles if a.id in writing]
    if not ordered:
        return None
    embedded = {a.id for a in plan.to_embed}
    records = [article_row(i, a, plan.hashes[a.id]) for i, a in enumerate(ordered)]
    vectors = np.empty((len(ordered), dimension), dtype=np.float32)
    lex_ids = np.full((len(ordered), lexical.TERMS), -1, dtype=np.int32)
    lex_weights = np.zeros((len(ordered), lexical.TERMS), dtype=lexical.WEIGHT_DTYPE)
    fresh = [i for i, a in enumerate(ordered) if a.id in embedded]
    moved = [i for i, a in enumerate(ordered) if a.id not in embedded]
    for i in fresh:
        vectors[i] = vectors_by_id[ordered[i].id]
    if moved and prev is not None:  # metadata-only: vector and lexical terms carried from the old row
        old = np.asarray([plan.keep_rows[ordered[i].id] for i in moved], dtype=np.int64)
        vectors[moved] = prev.vectors[old]
        lex_ids[moved] = prev.lexical[0][old]
        lex_weights[moved] = prev.lexical[1][old]
    if fresh:
        counts = lexical.term_counts(
            [text_of(ordered[i], max_chars) for i in fresh], [ordered[i].language for i in fresh]
        )
        lexical.add_frequencies(df, counts)
        lex_ids[fresh], lex_weights[fresh] = lexical.weigh(counts, df, documents + len(fresh))
    writer = SegmentWriter(segments_dir, dimension, len(ordered))
    try:
        writer.append(records, vectors, (lex_ids, lex_weights), row_columns(records, vocab))
        return Part(ann.finish(writer), np.empty(0, dtype=np.int32))
    except BaseException:
        writer.abandon()
        raise
