"""What every input reader shares: the format from a path, text decoding, JSON Lines and CSV records,
timestamps, and the check that a record holds no undecodable byte.

Files are decoded as UTF-8 with ``surrogateescape`` so one bad byte costs one record, not the
file: a record that still holds an undecodable byte is reported and skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from recsys.types import RecsysError

FORMATS = ("jsonl", "csv", "mind", "txtdir")
# Any surrogate code point: undecodable bytes (surrogateescape gives U+DC80-U+DCFF) and the lone
# surrogates a JSON "\\ud83d" escape produces. Neither can be encoded as UTF-8, so no record may keep one.
SURROGATE = re.compile("[\ud800-\udfff]")
UNDECODABLE = re.compile("[\udc80-\udcff]")
MAX_CELL_CHARS = 1_000_000  # longest CSV cell read (csv's own limit is 131,072 and raises on the whole file)
EARLIEST_YEAR, LATEST_YEAR = 1800, 2200  # published_at outside these years is a typo or a placeholder


def detect_format(path: Path) -> str:
    """The reader for a path, from its extension (or ``txtdir`` for a folder)."""
    if path.is_dir():
        return "txtdir"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "mind"
    raise RecsysError(
        f"{path}: cannot tell the format from the extension {suffix!r}; pass --format with one of: {', '.join(FORMATS)}"
    )


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (date, or date and time; naive means UTC) or epoch seconds, as an aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), tz=UTC)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), tz=UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date: {text!r} (expected e.g. 2026-11-20T08:30:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` with a four-digit year (strftime drops leading zeros of years < 1000)."""
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def split_lines(text: str) -> list[str]:
    """Physical lines: split at \\n only (a trailing \\r dropped). ``str.splitlines`` also splits at
    U+2028, U+2029, U+0085 and other characters that are valid inside a JSON string or a title."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def has_bad_bytes(value: Any, pattern: re.Pattern[str] = SURROGATE) -> bool:
    """True if a decoded record still holds a surrogate (an undecodable byte or a lone surrogate)."""
    if isinstance(value, str):
        return bool(pattern.search(value))
    if isinstance(value, list | tuple):
        return any(has_bad_bytes(v, pattern) for v in value)
    if isinstance(value, dict):
        return any(has_bad_bytes(k, pattern) or has_bad_bytes(v, pattern) for k, v in value.items())
    return False


def bad_text_reason(record: Any) -> str | None:
    """Why a decoded record cannot be stored as text, or None: an undecodable byte or a lone surrogate."""
    if not has_bad_bytes(record):
        return None
    if has_bad_bytes(record, UNDECODABLE):
        return "invalid UTF-8 in this record; re-save the file as UTF-8"
    return "lone UTF-16 surrogate (e.g. a broken emoji escape like \\ud83d) in this record; fix the text"


class ForeignEncoding(RecsysError):
    """The file is UTF-16 or UTF-32: one problem for the whole file, not one per line."""


def foreign_encoding(head: bytes) -> str | None:
    """Why the first bytes of a file say it is not UTF-8 (a UTF-16/32 byte order mark, or the NUL bytes
    of UTF-16 text without one), or None."""
    for mark, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                       (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):  # fmt: skip
        if head.startswith(mark):
            return f"the file is {name} (it starts with the byte order mark {mark.hex(' ').upper()}); save it as UTF-8"
    sample = head[:64]
    if len(sample) >= 8 and sample.count(0) * 3 >= len(sample):
        return "the file looks like UTF-16 or UTF-32 (every other byte is NUL); save it as UTF-8"
    return None


def _open_text(path: Path) -> BinaryIO:
    if not path.is_file():
        raise RecsysError(f"{path}: no such file")
    handle = open(path, "rb")
    problem = foreign_encoding(handle.read(64))
    if problem is not None:
        handle.close()
        raise ForeignEncoding(problem)
    handle.seek(0)
    return handle


def read_text(path: Path) -> str:
    """A small file as text: UTF-8 with ``surrogateescape`` (see module docstring), a leading BOM dropped.
    Raises ``ForeignEncoding`` for UTF-16/32. Input files are streamed with ``text_lines`` instead."""
    with _open_text(path) as handle:
        text = handle.read().decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def text_lines(path: Path) -> Iterator[str]:
    """The file's physical lines, read one at a time (memory: one line): split at \n only, a trailing \r
    dropped, UTF-8 with ``surrogateescape``, a leading BOM dropped. The encoding is checked now (raises
    ``ForeignEncoding``), the lines are read as the iterator is consumed."""
    handle = _open_text(path)

    def lines() -> Iterator[str]:
        with handle:
            for number, raw in enumerate(handle):
                line = raw.decode("utf-8", errors="surrogateescape")
                if line.endswith("\n"):
                    line = line[:-1]
                if line.endswith("\r"):
                    line = line[:-1]
                yield line[1:] if number == 0 and line.startswith("\ufeff") else line

    return lines()


class LineWindow:
    """Lines of a stream by number, read as far ahead as a reader looks and forgotten once passed, so a
    reader can look ahead (a CSV record over several lines) in memory bounded by what it looks at."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._held: deque[str] = deque()
        self._first = 0  # number (0-based) of the first held line
        self._done = False

    def get(self, index: int) -> str | None:
        """Line ``index`` (0-based), or None past the end."""
        while not self._done and index >= self._first + len(self._held):
            try:
                self._held.append(next(self._lines))
            except StopIteration:
                self._done = True
        offset = index - self._first
        if offset < 0:
            raise IndexError(f"line {index + 1} was already passed")
        return self._held[offset] if offset < len(self._held) else None

    def forget_before(self, index: int) -> None:
        while self._held and self._first < index:
            self._held.popleft()
            self._first += 1


def record_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, line, problem)`` per non-blank line, streamed; a UTF-16/32 file is one problem at line 1."""
    try:
        lines = text_lines(path)
    except ForeignEncoding as exc:
        yield 1, "", str(exc)
        return
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line, None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line, record or problem)`` per non-blank line of a JSON Lines file."""
    for number, line, problem in record_lines(path):
        if problem is not None:
            yield number, problem
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"malformed JSON: {exc.msg} at column {exc.colno}"
            continue
        if not isinstance(record, dict):
            yield number, f"expected a JSON object, got {type(record).__name__}"
            continue
        yield number, record


def _csv_row(lines: LineWindow, start: int) -> tuple[list[str] | None, int, str | None]:
    """Parse one CSV record beginning at line ``start``: (cells, lines consumed, problem)."""
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        while (line := lines.get(start + consumed)) is not None:
            consumed += 1
            yield line + "\n"

    try:
        row = next(csv.reader(feed()), None)
    except csv.Error as exc:
        return None, max(consumed, 1), f"malformed CSV: {exc}"
    return row, max(consumed, 1), None


def _swallows_rows(lines: LineWindow, start: int, consumed: int, width: int) -> bool:
    """A record over several lines whose inner lines each parse as a whole row of the header's width:
    the mark of a quote that was opened and never closed, not of a cell with line breaks."""
    for index in range(start + 1, start + consumed):
        line = lines.get(index) or ""
        try:
            cells = next(csv.reader([line]), [])
        except csv.Error:
            continue
        first = cells[0].strip() if cells else ""
        # a whole row of the header's width that starts with an id-like cell (one token): a line of body text
        # with commas in it starts with words
        if len(cells) == width and line.count('"') % 2 == 0 and first and not any(c.isspace() for c in first):
            return True
    return False


def iter_csv(path: Path, required: Sequence[str] = ("id", "title")) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line, record or problem)`` per CSV row; the header must name the ``required`` columns, each
    column once.

    Records are parsed one at a time from a stream (memory: one record) so that a bad one costs itself: a
    cell longer than ``MAX_CELL_CHARS``, a malformed quote, or an opening quote that never closes (which
    would otherwise swallow the following rows into one cell) is reported and reading resumes on the next
    line.
    """
    csv.field_size_limit(MAX_CELL_CHARS)
    try:
        lines = LineWindow(text_lines(path))
    except ForeignEncoding as exc:
        yield 1, str(exc)
        return
    header, used, problem = _csv_row(lines, 0) if lines.get(0) is not None else (None, 1, None)
    if problem or header is None or not set(required) <= {h.strip() for h in header}:
        yield 1, f"CSV header must name the columns and include {', '.join(required)}"
        return
    header = [h.strip() for h in header]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        yield 1, f"CSV header names {', '.join(repr(n) for n in repeated)} more than once; name each column once"
        return
    position = used
    while (line := lines.get(position)) is not None:
        lines.forget_before(position)
        number = position + 1
        if not line.strip():
            position += 1
            continue
        cells, consumed, problem = _csv_row(lines, position)
        if problem is None and cells is not None and consumed > 1:
            one_line = [i for i, name in enumerate(header) if name in required and i < len(cells)]
            if any("\n" in cells[i] for i in one_line) or _swallows_rows(lines, position, consumed, len(header)):
                problem = f"a quote opened on this line is never closed (it would swallow {consumed - 1} more lines)"
        if problem is not None or cells is None:
            yield number, problem or "malformed CSV row"
            position += 1  # resume on the next line: the rows after a bad quote are kept
            continue
        position += consumed
        if len(cells) != len(header):
            yield number, f"{len(cells)} cells for {len(header)} header columns"
            continue
        yield number, {k: v for k, v in zip(header, cells, strict=True) if v != "" or k in required}
