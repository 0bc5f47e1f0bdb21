"""Replicas: ``recsys index pull SOURCE --index DIR`` makes DIR serve the version SOURCE serves.

SOURCE is another index folder (a shared mount, or a path synced by any means); DIR is this host's own
copy, which its serving processes follow as they follow any new version. Segments are immutable and
named uniquely, so a pull copies only the segments the replica does not hold yet (after an ``index add``
at the source: one small segment) plus the version's own small files, checks everything against the
source's manifests (every file, its size and its checksum: a damaged source is refused), and swaps
``CURRENT`` atomically under the replica's writer lock: a pull killed at any point leaves the previous
version serving, and the next pull starts clean (a segment is renamed into place only once complete).
What ``recsys train`` stored at the source's root (ranker.json, coreads.json, clock.json) and the editorial
rules (rules.json) come along, each checked
to parse and replaced atomically. Events are not copied: replicas share one events store (``[events]
url``), or keep their own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.archive.layout import (
    MANIFEST,
    ROOT_FILES,
    STAGING_PREFIX,
    IndexLayout,
    check_sealed,
    crash_point,
    fsync_path,
    fsync_tree,
    read_manifest,
)
from recsys.archive.segment import SEGMENT_FILE, Segment, checked_name
from recsys.archive.verify import VerifyReport, check_segment_content, verify_files
from recsys.types import IndexStateError


@dataclass(frozen=True)
class PullReport:
    """What one pull did."""

    version: str
    changed: bool  # False when the replica already served the source's version
    files_copied: int
    bytes_copied: int
    segments_copied: int
    segments_reused: int  # segments the replica already held
    models_updated: list[str]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def pull(source: str | Path, replica: str | Path, keep_versions: int = 3) -> PullReport:
    """Bring ``replica`` to the version ``source`` serves (see the module docstring)."""
    started = time.perf_counter()
    src = IndexLayout(source)
    dst = IndexLayout(replica)
    if src.root.resolve() == dst.root.resolve():
        raise IndexStateError(f"{src.root} is the index itself; pull from another index folder into --index")
    version = src.current()  # fails with how to build one when SOURCE has no index
    with dst.writer_lock():
        models = _pull_models(src.root, dst.root)
        if dst.current_name() == version.name:
            return PullReport(version.name, False, 0, 0, 0, 0, models, time.perf_counter() - started)
        staging = dst.stage()  # removes what a killed pull left behind
        try:
            manifest = json.loads((version / MANIFEST).read_text())
            files, size = _copy_tree(version, staging)
            copied = reused = 0
            dst.segments.mkdir(parents=True, exist_ok=True)
            for entry in manifest.get("segments", []):
                name = checked_name(entry.get("name"), version)
                if (dst.segments / name).is_dir():
                    reused += 1
                    continue
                partial = dst.segments / f"{STAGING_PREFIX}{name}"
                more, more_size = _copy_tree(src.segments / name, partial)
                _check_copy(partial, SEGMENT_FILE, src.segments / name, dst.current_name())
                fsync_tree(partial)
                os.rename(partial, dst.segments / name)
                fsync_path(dst.segments)
                files, size, copied = files + more, size + more_size, copied + 1
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise IndexStateError(
                f"{version.name} was removed from {src.root} while it was being copied ({exc}): the source "
                "published newer versions meanwhile; pull again"
            ) from None
        try:
            read_manifest(staging)  # every file the source's manifest lists, at its size
        except IndexStateError as exc:
            raise IndexStateError(
                f"the copy of {version} does not match its manifest ({exc}); the source may have been "
                "collected mid-copy: pull again"
            ) from None
        _check_copy(staging, MANIFEST, version, dst.current_name())
        dst.swap_in(staging, version.name, keep_versions)
    return PullReport(version.name, True, files, size, copied, reused, models, time.perf_counter() - started)


def _check_copy(copy: Path, listing: str, source: Path, serving: str | None) -> None:
    """Every file of a copied segment or version matches the size and checksum its ``listing`` records (a
    segment from before checksums: its values are checked instead, and it must open as a server opens it).
    Refuses the pull, leaving the replica on the version it serves."""
    report = VerifyReport(copy.name)
    try:
        info = json.loads((copy / listing).read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        check_sealed(info, copy / listing)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{listing} unreadable ({exc})")
        info = {}
    except IndexStateError as exc:
        report.problems.append(str(exc))
        info = {}
    verify_files(copy, info.get("files", {}), info.get("checksums", {}), report)
    if not report.problems and listing == SEGMENT_FILE:
        report.problems += check_segment_content(copy) if not info.get("checksums") else []
        if not report.problems:
            try:
                Segment(copy).close()  # opens as a server would: headers, shapes, SQLite, ANN
            except IndexStateError as exc:
                report.problems.append(str(exc))
    if report.problems:
        shutil.rmtree(copy, ignore_errors=True)
        found = "; ".join(p.replace(str(copy), str(source)) for p in report.problems[:3])
        raise IndexStateError(
            f"refusing to pull {source}: {found}. The source is damaged (or changed while it was copied); run "
            f"`recsys index verify --index {source.parent.parent}` there, repair it, and pull again. This replica "
            f"keeps serving {serving or 'nothing (it has no version yet)'}"
        )


def _copy_tree(source: Path, target: Path) -> tuple[int, int]:
    """Copy a folder's files; returns (files, bytes)."""
    files = size = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        files += 1
        size += destination.stat().st_size
        crash_point("pull-copying")
    return files, size


def _pull_models(source: Path, replica: Path) -> list[str]:
    """Copy the source root's trained files that differ from the replica's, each replaced atomically."""
    updated = []
    for name in ROOT_FILES:
        theirs = source / name
        ours = replica / name
        if not theirs.is_file():
            continue
        data = theirs.read_bytes()
        if ours.is_file() and ours.read_bytes() == data:
            continue
        try:
            if not isinstance(json.loads(data), dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise IndexStateError(
                f"refusing to pull {theirs}: unreadable ({exc}); fix it on the source (`recsys train`, "
                "`recsys rules`) and pull again (this replica keeps its own copy)"
            ) from None
        tmp = replica / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        fsync_path(tmp)
        os.replace(tmp, ours)
        updated.append(name)
    return updated
