"""The publish step of an index job: stage a version's small files and manifest, then swap it in.

A version lists segments (``Part``: a segment and its deleted rows); its own files are the deletions,
vocab.json, the lexical document frequencies (linked from the previous version when no text changed) and
state.json. ``IndexLayout.publish`` makes it live atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive import lexical
from recsys.archive.layout import FORMAT_VERSION, IndexLayout, library_versions
from recsys.archive.plan import BuildReport, Part
from recsys.archive.store import VOCAB_FILE
from recsys.archive.version import DELETES_DIR, STATE_FILE


@dataclass(frozen=True)
class JobInfo:
    """What a manifest records of the job that writes it."""

    model_name: str
    max_chars: int
    started: float  # time.perf_counter() when the job started
    empty_ann: str  # the ANN kind a version with no segment names


@dataclass
class VersionFiles:
    """A version's own content besides its segments."""

    vocab: dict[str, list[str]]
    df: np.ndarray  # lexical document frequencies
    documents: int  # texts those frequencies count
    same_df: Path | None  # a file already holding ``df`` (hard-linked instead of written), or None
    state: dict[str, Any]  # takedowns and parked vectors


def publish(
    layout: IndexLayout,
    staging: Path,
    previous: str | None,
    dimension: int,
    parts: list[Part],
    files: VersionFiles,
    report: BuildReport,
    job: JobInfo,
    keep: int,
) -> Path:
    """Stage a version listing ``parts`` in ``staging`` and make it the live one (keeping ``keep``
    versions); the report's segment and row counts are filled in first, as the manifest records them."""
    report.segments = len(parts)
    report.rows = sum(p.segment.rows for p in parts)
    report.articles = sum(p.live for p in parts)
    stage_files(staging, parts, files)
    return layout.publish(staging, manifest(previous, dimension, parts, files.documents, report, job), keep)


def stage_files(staging: Path, parts: list[Part], files: VersionFiles) -> None:
    deletes = staging / DELETES_DIR
    deletes.mkdir()
    for part in parts:
        if part.deleted.size:
            np.save(deletes / f"{part.segment.name}.npy", part.deleted.astype(np.int32))
    (staging / VOCAB_FILE).write_text(json.dumps(files.vocab, indent=2, ensure_ascii=False))
    if files.same_df is not None:
        os.link(files.same_df, staging / lexical.DF_FILE)
    else:
        np.save(staging / lexical.DF_FILE, files.df)
    (staging / STATE_FILE).write_text(json.dumps(files.state, sort_keys=True))


def manifest(
    previous: str | None, dimension: int, parts: list[Part], documents: int, report: BuildReport, job: JobInfo
) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    largest = max(parts, key=lambda p: p.segment.rows, default=None)
    ann = dict(largest.segment.info["ann"]) if largest is not None else {"kind": job.empty_ann}
    return {
        "format_version": FORMAT_VERSION,
        "created_at": created,
        "build_seconds": round(time.perf_counter() - job.started, 3),
        "model": {"name": job.model_name, "dimension": dimension},
        "text": {"fields": ["title", "abstract", "body"], "max_chars": job.max_chars},
        "counts": {"articles": report.articles, "rows": report.rows, "dead_rows": report.rows - report.articles},
        "segments": [{"name": p.segment.name, "rows": p.segment.rows, "deleted": int(p.deleted.size)} for p in parts],
        "ann": ann | {"size": report.articles, "segments": len(parts)},
        "lexical": {"terms": lexical.TERMS, "buckets": lexical.BUCKETS, "documents": documents},
        "library_versions": library_versions(),
        "previous_version": previous,
        "job": {k: v for k, v in report.to_dict().items() if k not in ("problems", "version")},
    }
