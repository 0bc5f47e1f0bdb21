"""Replicas: ``recsys index pull SOURCE --index DIR`` makes DIR serve the version SOURCE serves.

SOURCE is another index folder (a shared mount, or a path synced by any means); DIR is this host's own
copy, which its serving processes follow as they follow any new version. A pull copies what the replica
lacks into a staging folder, checks it against the source's manifest (every file, every size), and swaps
``CURRENT`` atomically under the replica's writer lock: a pull killed at any point leaves the previous
version serving, and the next pull starts clean. Files that a version the replica already has holds with
the same name, size and modification time (rsync's quick check) are hard-linked instead of copied, so an
unchanged file crosses the network once. What ``recsys train`` stored at the source's root (ranker.json,
coreads.json) comes along, each replaced atomically. Events are not copied: replicas share one events
store (``[events] url``), or keep their own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.coreads import COREADS_FILE
from recsys.layout import MANIFEST, IndexLayout, crash_point, fsync_path, read_manifest
from recsys.ranker import RANKER_FILE
from recsys.types import IndexStateError

ORIGINS = ".pulled.json"  # per pulled version: relative path -> [size, mtime_ns] of the source file
ROOT_FILES = (RANKER_FILE, COREADS_FILE)


@dataclass(frozen=True)
class PullReport:
    """What one pull did."""

    version: str
    changed: bool  # False when the replica already served the source's version
    files_copied: int
    bytes_copied: int
    files_linked: int
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
            return PullReport(version.name, False, 0, 0, 0, models, time.perf_counter() - started)
        staging = dst.stage()  # removes what a killed pull left behind
        known = _known_files(dst)
        copied = linked = size = 0
        origins: dict[str, list[int]] = {}
        try:
            for path in sorted(version.rglob("*")):
                if not path.is_file():
                    continue
                relative = str(path.relative_to(version))
                stat = path.stat()
                origins[relative] = [stat.st_size, stat.st_mtime_ns]
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                local = known.get((relative, stat.st_size, stat.st_mtime_ns))
                if local is not None and relative != MANIFEST:
                    os.link(local, target)
                    linked += 1
                else:
                    shutil.copyfile(path, target)
                    copied += 1
                    size += stat.st_size
                    crash_point("pull-copying")
        except FileNotFoundError as exc:
            raise IndexStateError(
                f"{version.name} was removed from {src.root} while it was being copied ({exc.filename}): the source "
                "published newer versions meanwhile; pull again"
            ) from None
        (staging / ORIGINS).write_text(json.dumps(origins))
        try:
            read_manifest(staging)  # every file the source's manifest lists, at its size
        except IndexStateError as exc:
            raise IndexStateError(
                f"the copy of {version} does not match its manifest ({exc}); the source may have been "
                "collected mid-copy: pull again"
            ) from None
        dst.swap_in(staging, version.name, keep_versions)
    return PullReport(version.name, True, copied, size, linked, models, time.perf_counter() - started)


def _known_files(layout: IndexLayout) -> dict[tuple[str, int, int], Path]:
    """Files of the replica's pulled versions, by (relative path, source size, source mtime)."""
    known: dict[tuple[str, int, int], Path] = {}
    if not layout.versions.is_dir():
        return known
    for version in layout.versions.iterdir():
        if version.name.startswith("."):
            continue  # a staging folder
        try:
            origins = json.loads((version / ORIGINS).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            continue
        for relative, (size, mtime) in origins.items():
            local = version / relative
            if local.is_file() and local.stat().st_size == size:
                known[(relative, int(size), int(mtime))] = local
    return known


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
        tmp = replica / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        fsync_path(tmp)
        os.replace(tmp, ours)
        updated.append(name)
    return updated
