"""Readers that turn article files into ``Article`` records and located ``InputProblem``s.

Formats: JSON Lines (``.jsonl``), CSV with a header row (``.csv``), MIND ``news.tsv`` (``.tsv``),
and a folder of ``<category>/<name>.txt`` files whose first line is the headline (the BBC
corpus layout). Every bad record is reported as ``file:line: reason`` and skipped by the
reader; the caller decides whether any problem aborts the job (``--on-error fail``).

Files are decoded as UTF-8 with ``surrogateescape`` so one bad byte costs one record, not the
file: a record that still holds an undecodable byte is reported and skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.types import Article, InputProblem, RecsysError

FORMATS = ("jsonl", "csv", "mind", "txtdir")
KNOWN_FIELDS = (
    "id",
    "title",
    "body",
    "abstract",
    "url",
    "canonical_url",
    "published_at",
    "category",
    "subcategory",
    "language",
    "tags",
)
MIND_NEWS_COLUMNS = (
    "id",
    "category",
    "subcategory",
    "title",
    "abstract",
    "url",
    "title_entities",
    "abstract_entities",
)
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass
class ReadResult:
    """Articles read from a set of files, in input order, and every problem found."""

    articles: list[Article] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)


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
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def has_bad_bytes(value: Any) -> bool:
    """True if a decoded record still holds an undecodable byte (see module docstring)."""
    if isinstance(value, str):
        return bool(_SURROGATE.search(value))
    if isinstance(value, list | tuple):
        return any(has_bad_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(has_bad_bytes(k) or has_bad_bytes(v) for k, v in value.items())
    return False


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(t for t in (str(v).strip() for v in items) if t)


def article_from_record(record: dict[str, Any]) -> Article:
    """Validate one record (a dict of input fields) into an Article; raise ValueError with the reason."""
    if has_bad_bytes(record):
        raise ValueError("invalid UTF-8 in this record; re-save the file as UTF-8")
    article_id = _text(record.get("id"))
    if not article_id:
        raise ValueError("missing required field 'id'")
    title = _text(record.get("title"))
    if not title:
        raise ValueError(f"article {article_id!r}: missing required field 'title'")
    published = record.get("published_at")
    published_at = None
    if published not in (None, ""):
        try:
            published_at = format_timestamp(parse_timestamp(published))
        except (ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"article {article_id!r}: bad published_at: {exc}") from None
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS and v not in (None, "")}
    return Article(
        id=article_id,
        title=title,
        body=_text(record.get("body")),
        abstract=_text(record.get("abstract")),
        url=_text(record.get("url")),
        canonical_url=_text(record.get("canonical_url")),
        published_at=published_at,
        category=_text(record.get("category")),
        subcategory=_text(record.get("subcategory")),
        language=_text(record.get("language")),
        tags=_tags(record.get("tags")),
        extra=extra,
    )


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise RecsysError(f"{path}: no such file")
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line, record or problem)`` per non-blank line of a JSON Lines file."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
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


def iter_csv(path: Path, required: Sequence[str] = ("id", "title")) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line, record or problem)`` per CSV row; the header must name the ``required`` columns."""
    lines = _read_text(path).splitlines(keepends=True)
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or not set(required) <= set(reader.fieldnames):
        yield 1, f"CSV header must name the columns and include {', '.join(required)}"
        return
    start = 2
    for row in reader:
        number, start = start, reader.line_num + 1
        if None in row:  # more cells than header columns
            yield number, f"{len(row) - 1 + len(row[None])} cells for {len(reader.fieldnames)} header columns"
            continue
        yield number, {k: v for k, v in row.items() if v is not None}


def _mind_tags(*cells: str) -> list[str]:
    labels: list[str] = []
    for cell in cells:
        if not cell or cell == "[]":
            continue
        try:
            for entity in json.loads(cell):
                label = entity.get("Label") if isinstance(entity, dict) else None
                if label and label not in labels:
                    labels.append(label)
        except json.JSONDecodeError:
            continue  # entities are optional enrichment; a bad cell costs the tags only
    return labels


def _iter_mind(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 4:
            yield number, f"MIND news.tsv rows have 8 tab-separated columns, this one has {len(cells)}"
            continue
        cells += [""] * (len(MIND_NEWS_COLUMNS) - len(cells))
        row = dict(zip(MIND_NEWS_COLUMNS, cells, strict=False))
        record: dict[str, Any] = {k: row[k] for k in ("id", "category", "subcategory", "title", "abstract", "url")}
        record["tags"] = _mind_tags(row["title_entities"], row["abstract_entities"])
        record["language"] = "en"
        yield number, record


def _iter_txtdir(root: Path) -> Iterator[tuple[Path, int, dict[str, Any] | str]]:
    files = sorted(p for p in root.rglob("*.txt") if p.is_file() and p.name.upper() != "README.TXT")
    for path in files:
        text = _read_text(path)
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            yield path, 1, "first line must be the headline"
            continue
        for number, line in enumerate(lines, start=1):
            if _SURROGATE.search(line):
                yield path, number, "invalid UTF-8 in this file; re-save it as UTF-8"
                break
        else:
            relative = path.relative_to(root)
            category = relative.parts[0] if len(relative.parts) > 1 else ""
            body = "\n".join(lines[1:]).strip()
            yield (
                path,
                1,
                {
                    "id": str(relative.with_suffix("")),
                    "title": lines[0].strip(),
                    "body": body,
                    "category": category,
                    "language": "en",
                },
            )


def iter_records(path: Path, fmt: str | None = None) -> Iterator[tuple[str, int, dict[str, Any] | str]]:
    """Yield ``(file, line, record_or_problem)`` for one input path."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise RecsysError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise RecsysError(f"{path}: no such file or folder")
    if fmt == "txtdir":
        for file, number, item in _iter_txtdir(path):
            yield str(file), number, item
        return
    readers = {"jsonl": iter_jsonl, "csv": iter_csv, "mind": _iter_mind}
    for number, item in readers[fmt](path):
        yield str(path), number, item


def read_articles(paths: Iterable[str | Path], fmt: str | None = None) -> ReadResult:
    """Read every file; duplicates of an id within the input are problems (the first one wins)."""
    result = ReadResult()
    seen: dict[str, str] = {}
    for raw in paths:
        for file, number, item in iter_records(Path(raw), fmt):
            if isinstance(item, str):
                result.problems.append(InputProblem(file, number, item))
                continue
            try:
                article = article_from_record(item)
            except ValueError as exc:
                result.problems.append(InputProblem(file, number, str(exc)))
                continue
            if article.id in seen:
                result.problems.append(
                    InputProblem(file, number, f"duplicate id {article.id!r} (first at {seen[article.id]})")
                )
                continue
            seen[article.id] = f"{file}:{number}"
            result.articles.append(article)
    return result
