"""Readers that turn article files into ``Article`` records and located ``InputProblem``s.

Formats: JSON Lines (``.jsonl``), CSV with a header row (``.csv``), MIND ``news.tsv`` (``.tsv``),
and a folder of ``<category>/<name>.txt`` files whose first line is the headline (the BBC
corpus layout). Every bad record is reported as ``file:line: reason`` and skipped by the
reader; the caller decides whether any problem aborts the job (``--on-error fail``).

Files are decoded as UTF-8 with ``surrogateescape`` so one bad byte costs one record, not the
file: a record that still holds an undecodable byte is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from recsys.ingest.language import detect_language
from recsys.ingest.text import (
    EARLIEST_YEAR,
    FORMATS,
    LATEST_YEAR,
    SURROGATE,
    ForeignEncoding,
    bad_text_reason,
    detect_format,
    format_timestamp,
    iter_csv,
    iter_jsonl,
    parse_timestamp,
    read_text,
    record_lines,
    split_lines,
)
from recsys.types import Article, InputProblem, RecsysError

# Input fields an Article has a place for; any other field goes to ``extra``.
KNOWN_FIELDS = tuple(f.name for f in fields(Article) if f.name != "extra")
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


@dataclass
class ReadResult:
    """Articles read from a set of files, in input order, and every problem found."""

    articles: list[Article] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)


def _text(value: Any, name: str) -> str:
    """A text field: a string (or nothing). Numbers, lists and booleans are refused, not stringified."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, not {type(value).__name__} {_short(value)}")
    return value.strip()


def visible(text: str) -> bool:
    """True if some character would show: not only spaces, zero-width or other format and control characters
    (a title of U+200B alone is empty on the page)."""
    return any(not ch.isspace() and unicodedata.category(ch)[0] not in "CZ" for ch in text)


def _identifier(value: Any, name: str) -> str:
    """An id: a string, or a whole number (JSON ids like 123 are common); never a bool, list or float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, name)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ValueError(f"field 'tags' must be a list of strings or a comma-separated string, not {_short(value)}")
    return tuple(t for t in (v.strip() for v in items) if t)


def article_from_record(record: dict[str, Any]) -> Article:
    """Validate one record (a dict of input fields) into an Article; raise ValueError with the reason."""
    problem = bad_text_reason(record)
    if problem:
        raise ValueError(problem)
    article_id = _identifier(record.get("id"), "id")
    if not article_id:
        raise ValueError("missing required field 'id'")
    if "\n" in article_id or "\r" in article_id:
        raise ValueError(f"id {_short(article_id)} spans lines (an unclosed quote?); ids are one line")
    title = _text(record.get("title"), "title")
    if not title:
        raise ValueError(f"article {article_id!r}: missing required field 'title'")
    if not visible(title):
        raise ValueError(f"article {article_id!r}: the title has no visible character ({title!r})")
    published = record.get("published_at")
    published_at = None
    if published not in (None, ""):
        try:
            moment = parse_timestamp(published)
        except (ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"article {article_id!r}: bad published_at: {exc}") from None
        if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
            raise ValueError(
                f"article {article_id!r}: published_at {published!r} is outside {EARLIEST_YEAR}-{LATEST_YEAR}; "
                "fix the date or leave it empty"
            )
        published_at = format_timestamp(moment)
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS and v not in (None, "")}
    body, abstract = _text(record.get("body"), "body"), _text(record.get("abstract"), "abstract")
    # Not given: detected from the text (recsys/ingest/language.py); no format is assumed to be English.
    language = _text(record.get("language"), "language") or detect_language(f"{title}. {abstract} {body[:400]}")
    return Article(
        id=article_id,
        title=title,
        body=body,
        abstract=abstract,
        url=_text(record.get("url"), "url"),
        canonical_url=_text(record.get("canonical_url"), "canonical_url"),
        published_at=published_at,
        category=_text(record.get("category"), "category"),
        subcategory=_text(record.get("subcategory"), "subcategory"),
        language=language,
        tags=_tags(record.get("tags")),
        extra=extra,
    )


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
    for number, line, problem in record_lines(path):
        if problem is not None:
            yield number, problem
            continue
        cells = line.split("\t")
        if not 4 <= len(cells) <= len(MIND_NEWS_COLUMNS):
            yield number, f"MIND news.tsv rows have 8 tab-separated columns (4 at least), this one has {len(cells)}"
            continue
        cells += [""] * (len(MIND_NEWS_COLUMNS) - len(cells))
        row = dict(zip(MIND_NEWS_COLUMNS, cells, strict=False))
        record: dict[str, Any] = {k: row[k] for k in ("id", "category", "subcategory", "title", "abstract", "url")}
        record["tags"] = _mind_tags(row["title_entities"], row["abstract_entities"])
        yield number, record


def _txt_files(root: Path) -> Iterator[Path | tuple[Path, str]]:
    """The folder's .txt files, sorted; a symbolic link (file or folder) is never followed, so an
    input folder cannot pull in files from elsewhere on the machine."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if not name.lower().endswith(".txt") or name.upper() == "README.TXT":
                continue
            if path.is_symlink():
                yield path, "symbolic link not followed; copy the file into the folder instead"
            elif path.is_file():
                yield path


def _iter_txtdir(root: Path) -> Iterator[tuple[Path, int, dict[str, Any] | str]]:
    for found in _txt_files(root):
        if isinstance(found, tuple):
            yield found[0], 1, found[1]
            continue
        path = found
        try:
            lines = split_lines(read_text(path))  # one article per file: read whole
        except ForeignEncoding as exc:
            yield path, 1, str(exc)
            continue
        if not lines or not lines[0].strip():
            yield path, 1, "first line must be the headline"
            continue
        for number, line in enumerate(lines, start=1):
            if SURROGATE.search(line):
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
                },
            )


def iter_records(
    path: Path, fmt: str | None = None, required: tuple[str, ...] = ("id", "title")
) -> Iterator[tuple[str, int, dict[str, Any] | str]]:
    """Yield ``(file, line, record_or_problem)`` for one input path (``required``: the columns a CSV must have)."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise RecsysError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise RecsysError(f"{path}: no such file or folder")
    if fmt == "txtdir":
        for file, number, item in _iter_txtdir(path):
            yield str(file), number, item
        return
    readers = {"jsonl": iter_jsonl, "csv": lambda p: iter_csv(p, required), "mind": _iter_mind}
    for number, item in readers[fmt](path):
        yield str(path), number, item


ID_SOURCES = ("", "url", "hash")


def check_mapping(columns: dict[str, Any], id_from: str) -> dict[str, str]:
    """A column mapping checked: targets are Article fields, sources column names (RecsysError says which not)."""
    mapping = {str(k): str(v) for k, v in columns.items()}
    unknown = sorted(set(mapping) - set(KNOWN_FIELDS))
    if unknown:
        raise RecsysError(f"cannot map to {', '.join(unknown)}: an article's fields are {', '.join(KNOWN_FIELDS)}")
    if id_from not in ID_SOURCES:
        raise RecsysError(f"--id-from must be url or hash, not {id_from!r}")
    return mapping


def remap(record: dict[str, Any], mapping: dict[str, str], id_from: str) -> dict[str, Any]:
    """A record with its columns renamed to recsys's fields (``mapping``: field -> column) and, when asked, its id
    taken from its url or a hash of its title and text (the same text gives the same id on every run)."""
    if mapping:
        out = {k: v for k, v in record.items() if k not in mapping.values() or k in KNOWN_FIELDS}
        for target, source in mapping.items():
            if source in record:
                out[target] = record[source]
        record = out
    if id_from == "url":
        record = {**record, "id": record.get("url") or ""}
    elif id_from == "hash":
        text = "\x1f".join(str(record.get(k) or "") for k in ("title", "abstract", "body"))
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
        record = {**record, "id": digest}
    return record


def read_articles(
    paths: Iterable[str | Path], fmt: str | None = None, columns: dict[str, Any] | None = None, id_from: str = ""
) -> ReadResult:
    """Read every file; duplicates of an id within the input are problems (the first one wins). ``columns`` maps
    fields to the input's column names and ``id_from`` derives ids (see ``remap``)."""
    mapping = check_mapping(columns or {}, id_from)
    required = tuple(mapping.get(f, f) for f in ("id", "title") if not (f == "id" and id_from))
    result = ReadResult()
    seen: dict[str, str] = {}
    for raw in paths:
        for file, number, item in iter_records(Path(raw), fmt, required):
            if isinstance(item, str):
                result.problems.append(InputProblem(file, number, item))
                continue
            try:
                article = article_from_record(remap(item, mapping, id_from) if mapping or id_from else item)
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
