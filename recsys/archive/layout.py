"""The on-disk shape of an index: immutable segments, versions listing them, a pointer to the live one.

::

    index/
      CURRENT                  name of the live version (replaced atomically)
      .lock                    held by the one writer at a time
      segments/<name>/         immutable pieces of the archive (recsys/archive/segment.py): articles.sqlite,
                               vectors.npy, rows.npy, lexical arrays, the segment's ANN
      segments/.staging-*      a segment being written (deleted if a crash left it behind)
      versions/<name>/         one published version (recsys/archive/version.py)
        manifest.json          format, model, counts, the segments in order, file sizes
        deletes/<segment>.npy  rows of a segment deleted since it was written
        vocab.json             category / language names behind the codes in the segments' rows.npy
        lex_df.npy             lexical document frequencies
        state.json             takedowns, and the vectors parked with them
      versions/.staging-*      a version being staged

A job writes its new segments (each renamed into ``segments/`` only when complete), stages a version
that lists them, fsyncs it, renames it into ``versions/`` and only then replaces ``CURRENT``. A reader
follows ``CURRENT`` once per open, so a crash at any point leaves the previous version serving; no
segment or version is modified after it is written, and segments no kept version lists are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import xxhash

from recsys.types import IndexStateError

T = TypeVar("T")
FORMAT_VERSION = 2  # 2: segments
POINTER = "CURRENT"
MANIFEST = "manifest.json"
VERSIONS = "versions"
SEGMENTS = "segments"
STAGING_PREFIX = ".staging-"
# Files beside versions/ that recsys train writes (owned by recsys.learning.ranker, recsys.learning.clock
# and recsys.signals.coreads, named here so a replica copies them without importing what reads them).
RANKER_FILE = "ranker.json"
COREADS_FILE = "coreads.json"
CLOCK_FILE = "clock.json"
TRAINED_FILES = (RANKER_FILE, COREADS_FILE, CLOCK_FILE)
RULES_FILE = "rules.json"  # editorial rules (owned by recsys.archive.rules)
CALIBRATION_FILE = "calibration.json"  # the site's similarity floor (owned by recsys.archive.calibrate)
ROOT_FILES = (*TRAINED_FILES, RULES_FILE, CALIBRATION_FILE)  # what a replica copies from the source's root
MODELS_DIR = "models"  # earlier ranker.json files, kept by recsys.learning.history for `recsys model rollback`
CRASH_ENV = "RECSYS_CRASH_AT"
VERSION_NAME = re.compile(r"v[0-9]{6}-[0-9A-Za-z-]{1,64}")
CHECKSUM_CHUNK = 1 << 20
SELF_CHECKSUM = "self_checksum"
# Files up to this size are checksummed whenever a process opens them (a new version is validated before
# it is served); larger ones get their headers and shapes checked, and `recsys index verify` reads them all.
OPEN_CHECKSUM_BYTES = 64 << 20
DAMAGE_FIX = (
    "run `recsys index verify` to list the damage, then re-pull the index (`recsys index pull`), rewrite it "
    "(`recsys index optimize` or `recsys index build ARTICLES`), or point CURRENT back at the previous version "
    "in versions/"
)  # test hook: SIGKILL ourselves at a named build stage


def load_trained(
    root: str | Path, name: str, parse: Callable[[Any], T], fix: str = "re-run `recsys train`"
) -> T | None:
    """A trained file beside the versions (``ranker.json``, ``coreads.json``, ``clock.json``) parsed by its
    owner's ``parse``; None when there is none. Unreadable text, bad JSON or fields ``parse`` cannot use are
    one ``IndexStateError`` naming the file and the fix."""
    path = Path(root) / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexStateError(f"{path} is unreadable ({exc}); {fix}") from None
    try:
        return parse(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IndexStateError(f"{path} is unreadable ({exc}); {fix}") from None


def write_json_atomic(path: Path, data: dict[str, Any], indent: int | None = None) -> Path:
    """Write JSON beside ``path``, fsync it, rename it into place and fsync the folder: a reader sees the old file or
    the new one, never half of one (the trained files, the rules, the calibration)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=indent)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


def crash_point(stage: str) -> None:
    """Die like ``kill -9`` at this stage when the crash-test hook asks for it."""
    if os.environ.get(CRASH_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("recsys", "numpy", "faiss-cpu", "sentence-transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under root, so a rename after this publishes complete data."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def file_sizes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def file_checksum(path: Path) -> str:
    """A file's xxh3-64 digest, hex (Lucene keeps a CRC32 per file; xxh3 reads at memory speed, so the
    archive's gigabytes cost about a second, and ``xxhash`` is a small, maintained binding). It guards
    against damage (disk, partial copies), not against a forger, who could rewrite the digest too."""
    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHECKSUM_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sealed(listing: dict[str, Any]) -> dict[str, Any]:
    """A manifest or segment.json with the checksum of its own content (key ``self_checksum``), so damage
    that still parses as JSON (a flipped digit in a row count or a checksum) is caught too."""
    body = {k: v for k, v in listing.items() if k != SELF_CHECKSUM}
    return {**body, SELF_CHECKSUM: xxhash.xxh3_64_hexdigest(json.dumps(body, sort_keys=True).encode())}


def check_sealed(listing: dict[str, Any], path: Path) -> None:
    """``listing`` (read from ``path``) matches its own checksum; one written before checksums has none."""
    if SELF_CHECKSUM in listing and sealed(listing)[SELF_CHECKSUM] != listing[SELF_CHECKSUM]:
        raise IndexStateError(f"{path}: does not match its checksum (it was damaged); {DAMAGE_FIX}")


def file_checksums(root: Path, sizes: dict[str, int]) -> dict[str, str]:
    """The checksum of every file ``file_sizes`` listed (recorded beside the sizes when a folder is sealed)."""
    return {name: file_checksum(root / name) for name in sizes}


class IndexLayout:
    """Paths and the publish protocol of one index directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions = self.root / VERSIONS
        self.segments = self.root / SEGMENTS
        self.pointer = self.root / POINTER

    def exists(self) -> bool:
        return self.pointer.is_file()

    def current_name(self) -> str | None:
        try:
            raw = self.pointer.read_bytes()
        except FileNotFoundError:
            return None
        try:
            name = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            name = "?"
        if name and not VERSION_NAME.fullmatch(name):
            raise IndexStateError(
                f"{self.pointer} is damaged (it should hold a version name such as v000012-20261201T080000-ab12); "
                f"write the name of a folder in {self.versions} into it, or rebuild with "
                f"`recsys index build ARTICLES --index {self.root}`"
            )
        return name or None

    def current(self) -> Path:
        """The live version's folder, or an error that says how to create one."""
        name = self.current_name()
        if name is None:
            if self.root.is_dir() and not any(self.root.iterdir()):
                hint = "it is empty"
            elif not self.root.exists():
                hint = "it does not exist"
            else:
                hint = f"it has no {POINTER} pointer"
            raise IndexStateError(
                f"no index at {self.root} ({hint}); build one with `recsys index build ARTICLES --index {self.root}`"
            )
        path = self.versions / name
        if not (path / MANIFEST).is_file():
            raise IndexStateError(
                f"{self.pointer} points at {name}, which is missing or incomplete; "
                f"rebuild with `recsys index build ARTICLES --index {self.root}`"
            )
        return path

    def pointer_stamp(self) -> tuple[int, int] | None:
        """Cheap change detector for the pointer (inode, mtime); None if there is none."""
        try:
            st = self.pointer.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One writer at a time; a second one fails at once with a clear message."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexStateError(
                    f"another recsys job is writing {self.root}; wait for it to finish and try again"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def stage(self) -> Path:
        """A fresh private folder to build a version in (call under writer_lock)."""
        self.versions.mkdir(parents=True, exist_ok=True)
        for leftover in self.versions.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a crashed build's; never served
        for leftover in self.segments.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a segment a crashed job did not finish
        for leftover in self.root.glob(f".{POINTER}.*.tmp"):
            leftover.unlink(missing_ok=True)  # a pointer a crashed job wrote but never swapped in
        # v<sequence>-<UTC time>: names sort in publish order, and say when they were made.
        numbers = [int(p.name[1:7]) for p in self.versions.glob("v[0-9][0-9][0-9][0-9][0-9][0-9]-*")]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"v{max(numbers, default=0) + 1:06d}-{stamp}-{secrets.token_hex(2)}"
        path = self.versions / f"{STAGING_PREFIX}{name}"
        path.mkdir()
        return path

    def publish(self, staging: Path, manifest: dict[str, Any], keep: int) -> Path:
        """Seal a staged version (every file's size and checksum in its manifest) and make it the live one
        atomically."""
        sizes = file_sizes(staging)
        manifest = sealed({**manifest, "files": sizes, "checksums": file_checksums(staging, sizes)})
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return self.swap_in(staging, staging.name[len(STAGING_PREFIX) :], keep)

    def swap_in(self, staging: Path, name: str, keep: int) -> Path:
        """Make a complete staged version (manifest included) the live one, as ``versions/<name>``.

        ``publish`` uses it for a version this job built; ``recsys index pull`` for one copied from
        another index, keeping the source's name so every replica reports the same version."""
        fsync_tree(staging)
        crash_point("before-rename")
        final = self.versions / name
        if final.exists():
            shutil.rmtree(final)  # never the live one: callers swap in only versions they do not serve
        os.rename(staging, final)
        fsync_path(self.versions)
        crash_point("before-pointer")
        tmp = self.root / f".{POINTER}.{os.getpid()}.tmp"
        tmp.write_text(final.name + "\n")
        fsync_path(tmp)
        crash_point("before-swap")
        os.replace(tmp, self.pointer)
        fsync_path(self.root)
        crash_point("after-pointer")
        self._collect(keep)
        return final

    def _collect(self, keep: int) -> None:
        """Delete old versions beyond ``keep`` (open readers keep their files until they close)."""
        live = self.current_name()
        done = sorted(
            (p for p in self.versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        for old in done[: max(0, len(done) - max(1, keep))]:
            if old.name != live:
                shutil.rmtree(old, ignore_errors=True)
        self.collect_segments()

    def listed_segments(self) -> set[str]:
        """Segments some kept version lists (a version whose manifest cannot be read protects nothing)."""
        listed: set[str] = set()
        for version in self.versions.iterdir() if self.versions.is_dir() else ():
            if version.name.startswith("."):
                continue
            try:
                manifest = json.loads((version / MANIFEST).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            listed |= {str(entry["name"]) for entry in manifest.get("segments", [])}
        return listed

    def collect_segments(self) -> None:
        """Delete segments no kept version lists: the merged-away inputs of old versions, and a segment
        written by a job killed before it published (call under writer_lock)."""
        if not self.segments.is_dir():
            return
        listed = self.listed_segments()
        for segment in self.segments.iterdir():
            if not segment.name.startswith(".") and segment.name not in listed:
                shutil.rmtree(segment, ignore_errors=True)


def read_manifest(version: Path) -> dict[str, Any]:
    """Load and check a version's manifest against this recsys and the files beside it."""
    try:
        manifest = json.loads((version / MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise IndexStateError(f"{version}: unreadable {MANIFEST} ({exc}); rebuild with `recsys index build`") from None
    found = manifest.get("format_version")
    if found != FORMAT_VERSION:
        raise IndexStateError(
            f"{version}: index format {found} but this recsys reads format {FORMAT_VERSION}; "
            "rebuild it with `recsys index build ARTICLES` (embeddings are re-used where the text is unchanged "
            "only within one format)"
        )
    check_sealed(manifest, version / MANIFEST)
    check_files(version, manifest.get("files", {}), manifest.get("checksums", {}), OPEN_CHECKSUM_BYTES)
    return manifest


def file_problems(
    folder: Path, sizes: dict[str, int], checksums: dict[str, str], up_to: float = math.inf
) -> Iterator[tuple[Path, str]]:
    """``(path, what is wrong)`` per listed file of ``folder`` that is missing, not at its recorded
    size, or (files of at most ``up_to`` bytes) not at its recorded checksum. A folder written before checksums
    were recorded has none and is checked on sizes alone."""
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            yield path, "missing"
            continue
        found = path.stat().st_size
        if found != size:
            yield path, f"{found:,} bytes, not the {size:,} it was written with"
        elif name in checksums and size <= up_to and file_checksum(path) != checksums[name]:
            yield path, "does not match its checksum"


def check_files(folder: Path, sizes: dict[str, int], checksums: dict[str, str], up_to: float) -> None:
    """Every file a version or segment lists is there at its recorded size, and files up to ``up_to`` bytes
    at their checksum; the first one that is not raises ``IndexStateError`` with the fix."""
    for path, problem in file_problems(folder, sizes, checksums, up_to):
        if problem.startswith("does not match"):
            raise IndexStateError(f"{folder}: {path.name} does not match its checksum (it was damaged); {DAMAGE_FIX}")
        raise IndexStateError(
            f"{folder}: {path.relative_to(folder)} is missing or has the wrong size (the index was modified after "
            f"it was written); {DAMAGE_FIX}"
        )
