"""``recsys index verify``: read every file of the live version and say what is damaged.

Every file a segment or version writes has its size and xxh3 checksum recorded (``segment.json``,
``manifest.json``). Verifying reads all of them in full (a serving process checks only files up to
``OPEN_CHECKSUM_BYTES`` when it opens a version). ``deep`` also checks what a checksum cannot vouch for in
an index written before checksums were recorded: no NaN or infinity in the vectors and lexical weights,
lexical term ids in range, SQLite's own ``quick_check``, and each segment opening as a server would open it.
The trained files beside the versions (``ranker.json``, ``coreads.json``) must at least parse.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.archive import lexical
from recsys.archive.layout import MANIFEST, SEGMENTS, TRAINED_FILES, IndexLayout, check_sealed, file_problems
from recsys.archive.segment import SEGMENT_FILE, VECTORS_FILE, Segment, checked_name
from recsys.archive.store import DB_FILE
from recsys.types import RecsysError

CHUNK_ROWS = 65_536


@dataclass
class VerifyReport:
    """What ``verify_index`` read and found."""

    version: str
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)  # one line each: path: what is wrong
    without_checksums: list[str] = field(default_factory=list)  # folders written before checksums were recorded

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def verify_files(folder: Path, sizes: dict[str, int], checksums: dict[str, str], report: VerifyReport) -> None:
    """Every listed file of ``folder`` is there, at its size and (where recorded) its checksum."""
    if not checksums:
        report.without_checksums.append(str(folder))
    for name in sizes:
        if (folder / name).is_file():
            report.files += 1
            report.bytes += (folder / name).stat().st_size
    report.problems += [f"{path}: {problem}" for path, problem in file_problems(folder, sizes, checksums)]


def _json(path: Path, report: VerifyReport, is_sealed: bool = True) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if is_sealed:
            check_sealed(data, path)
        return data
    except (OSError, ValueError) as exc:
        report.problems.append(f"{path}: unreadable ({exc})")
    except RecsysError as exc:
        report.problems.append(str(exc))
    return None


def check_segment_content(path: Path) -> list[str]:
    """What a checksum cannot vouch for: finite vectors and weights, term ids in range, SQLite's own check,
    and the segment opening as a server opens it."""
    problems = []
    try:
        segment = Segment(path)
    except RecsysError as exc:
        return [str(exc)]
    try:
        for array, name in ((segment.vectors, VECTORS_FILE), (segment.lex_weights, lexical.WEIGHTS_FILE)):
            for start in range(0, segment.rows, CHUNK_ROWS):
                if not np.isfinite(array[start : start + CHUNK_ROWS]).all():
                    problems.append(f"{path / name}: holds NaN or infinite values (from row {start})")
                    break
        for start in range(0, segment.rows, CHUNK_ROWS):
            ids = segment.lex_ids[start : start + CHUNK_ROWS]
            if ids.size and (int(ids.min()) < -1 or int(ids.max()) >= lexical.BUCKETS):
                problems.append(f"{path / lexical.TERMS_FILE}: term ids out of range (from row {start})")
                break
        try:
            with sqlite3.connect(f"file:{path / DB_FILE}?mode=ro", uri=True) as conn:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                problems.append(f"{path / DB_FILE}: SQLite quick_check says {verdict}")
        except sqlite3.Error as exc:
            problems.append(f"{path / DB_FILE}: {exc}")
    finally:
        segment.close()
    return problems


def verify_index(root: str | Path, deep: bool = False) -> VerifyReport:
    """Check the live version of the index at ``root``, its segments and its trained files."""
    layout = IndexLayout(root)
    version = layout.current()  # no index, or a damaged CURRENT: IndexStateError with the fix
    report = VerifyReport(version.name)
    manifest = _json(version / MANIFEST, report)
    if manifest is None:
        return report
    verify_files(version, manifest.get("files", {}), manifest.get("checksums", {}), report)
    for entry in manifest.get("segments", []):
        try:
            name = checked_name(entry.get("name"), version)
        except RecsysError as exc:
            report.problems.append(str(exc))
            continue
        folder = layout.root / SEGMENTS / name
        info = _json(folder / SEGMENT_FILE, report)
        if info is None:
            continue
        verify_files(folder, info.get("files", {}), info.get("checksums", {}), report)
        if deep:
            report.problems += check_segment_content(folder)
    for name in TRAINED_FILES:
        if (layout.root / name).is_file():
            _json(layout.root / name, report, is_sealed=False)
    return report
