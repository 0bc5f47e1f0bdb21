"""Article metadata in SQLite, and the per-row filter columns kept beside it as a numpy array.

SQLite holds everything about an article (text included) keyed by its vector row; a result list
fetches only the rows it shows. The filters Related needs on every query (alive, published time,
category, language, story) live in ``rows.npy``, memory-mapped, so filtering a million rows is a
vectorised numpy expression and opening an index reads no article into Python.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from recsys.ingest.text import parse_timestamp
from recsys.sqlite import PerThreadConnection
from recsys.types import Article

DB_FILE = "articles.sqlite"
ROWS_FILE = "rows.npy"
VOCAB_FILE = "vocab.json"
NO_TIME = np.iinfo(np.int64).min  # "no published date" in the published column

ROW_DTYPE = np.dtype(
    [
        ("live", "?"),
        ("published", "<i8"),  # epoch seconds, NO_TIME if unknown
        ("category", "<i4"),  # code into vocab["category"], -1 if none
        ("language", "<i4"),  # code into vocab["language"], -1 if none
        ("story", "<i8"),  # hash of the canonical URL, 0 if none
    ]
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    abstract TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    canonical_url TEXT NOT NULL DEFAULT '',
    published_at TEXT,
    category TEXT NOT NULL DEFAULT '',
    subcategory TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    extra TEXT NOT NULL DEFAULT '{}',
    content_hash TEXT NOT NULL
);
"""
# The articles table: a row number, every Article field in order, and the content hash.
COLUMNS = ("row", *(f.name for f in dataclasses.fields(Article)), "content_hash")


def story_key(canonical_url: str) -> int:
    """A 63-bit key equal for URLs that differ only in scheme, case of host, 'www.', query or slash."""
    if not canonical_url:
        return 0
    parts = urlsplit(canonical_url.strip())
    host = parts.netloc.lower().removeprefix("www.")
    key = f"{host}{parts.path.rstrip('/')}" if host else canonical_url.strip().lower()
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1 or 1


def article_row(row: int, article: Article, content_hash: str) -> tuple[Any, ...]:
    return (
        row,
        article.id,
        article.title,
        article.body,
        article.abstract,
        article.url,
        article.canonical_url,
        article.published_at,
        article.category,
        article.subcategory,
        article.language,
        json.dumps(list(article.tags), ensure_ascii=False),
        json.dumps(article.extra, ensure_ascii=False, default=str),
        content_hash,
    )


TEXT_COLUMNS = ("body", "abstract")


@dataclass(frozen=True)
class StoredArticle:
    """An article as stored, with its vector row."""

    row: int
    id: str
    title: str
    body: str
    abstract: str
    url: str
    canonical_url: str
    published_at: str | None
    category: str
    subcategory: str
    language: str
    tags: list[str]
    extra: dict[str, Any]
    content_hash: str

    def moved(self, row: int) -> StoredArticle:
        """The same article under another row number (a segment's local row made global)."""
        return self if row == self.row else dataclasses.replace(self, row=row)

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> StoredArticle:
        """From a row of ``COLUMNS`` (the fields' order, checked below at import)."""
        *head, tags, extra, content_hash = values
        # Most articles have neither: skip the JSON parser for the empty forms (a list reads a dozen rows).
        return cls(
            *head,
            [] if tags == "[]" else json.loads(tags),
            {} if extra == "{}" else json.loads(extra),
            content_hash,
        )


if tuple(field.name for field in dataclasses.fields(StoredArticle)) != COLUMNS:
    raise AssertionError("StoredArticle's fields must follow store.COLUMNS (from_row builds it positionally)")


def connect_writable(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


class ArticleStore:
    """Read-only access to one published version's articles (safe to share across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Published versions never change: immutable=1 skips locking and change detection.
        self._connections = PerThreadConnection(
            lambda: sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        )

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def probe(self) -> tuple[int | None, int | None, str | None]:
        """(first row, last row, id of the last row): reads the header, the schema and both ends of the table
        in O(log n) pages, so a damaged file raises ``sqlite3.Error`` here, at open."""
        first, last = self._conn.execute("SELECT min(row), max(row) FROM articles").fetchone()
        found = (
            self._conn.execute("SELECT id FROM articles WHERE row = ?", (last,)).fetchone()
            if last is not None
            else None
        )
        return first, last, None if found is None else str(found[0])

    def row_of(self, article_id: str) -> int | None:
        found = self._conn.execute("SELECT row FROM articles WHERE id = ?", (article_id,)).fetchone()
        return None if found is None else int(found[0])

    def hashes_of(self, article_ids: Iterable[str]) -> dict[str, tuple[int, str]]:
        """``id -> (row, content hash)`` for the ids stored here."""
        ids = list(dict.fromkeys(article_ids))
        found: dict[str, tuple[int, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, row, content_hash FROM articles WHERE id IN ({marks})"
            for article_id, row, digest in self._conn.execute(query, chunk):
                found[article_id] = (int(row), digest)
        return found

    def all_hashes(self) -> list[tuple[str, int, str]]:
        """``(id, row, content hash)`` of every stored article."""
        return [(i, int(r), h) for i, r, h in self._conn.execute("SELECT id, row, content_hash FROM articles")]

    def records(self, rows: Sequence[int]) -> list[tuple[Any, ...]]:
        """Stored column values (``COLUMNS`` order) of these rows."""
        rows = [int(r) for r in rows]
        out: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out += self._conn.execute(f"SELECT {','.join(COLUMNS)} FROM articles WHERE row IN ({marks})", chunk)
        return out

    def ids_of(self, rows: Iterable[int]) -> dict[int, str]:
        rows = [int(r) for r in rows]
        found: dict[int, str] = {}
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row, article_id in self._conn.execute(f"SELECT row, id FROM articles WHERE row IN ({marks})", chunk):
                found[int(row)] = article_id
        return found

    def get_rows(self, rows: Sequence[int], with_text: bool = True) -> dict[int, StoredArticle]:
        """Articles by row. ``with_text=False`` leaves body and abstract empty: lists show neither, and a long
        body is the costliest part of a row to read."""
        result: dict[int, StoredArticle] = {}
        rows = [int(r) for r in rows]
        cols = ",".join(COLUMNS if with_text else [c if c not in TEXT_COLUMNS else "''" for c in COLUMNS])
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for values in self._conn.execute(f"SELECT {cols} FROM articles WHERE row IN ({marks})", chunk):
                result[int(values[0])] = StoredArticle.from_row(values)
        return result

    def labels(self, column: str) -> list[tuple[int, str, str]]:
        """``(row, id, value)`` of one metadata column for every article, in row order (evaluation)."""
        if column not in ("category", "subcategory", "language"):
            raise ValueError(f"not a label column: {column}")
        return self._conn.execute(f"SELECT row, id, {column} FROM articles ORDER BY row").fetchall()

    def close(self) -> None:
        self._connections.close()


def _epochs(values: list[str | None]) -> np.ndarray:
    """Epoch seconds of stored published_at values (NO_TIME where missing)."""
    try:  # readers store "YYYY-MM-DDTHH:MM:SSZ": numpy parses that in bulk
        parsed = np.array([v[:19] if v else "NaT" for v in values], dtype="datetime64[s]")
        return np.where(np.isnat(parsed), NO_TIME, parsed.astype(np.int64))
    except ValueError:
        return np.array([int(parse_timestamp(v).timestamp()) if v else NO_TIME for v in values], dtype=np.int64)


def _codes(values: Sequence[str], names: list[str]) -> np.ndarray:
    """Integer codes of strings into ``names`` (-1 for empty); names not seen yet are appended, so the
    codes already written in older segments keep their meaning."""
    index = {name: code for code, name in enumerate(names)}
    out = np.empty(len(values), dtype=np.int32)
    for i, value in enumerate(values):
        if not value:
            out[i] = -1
            continue
        code = index.get(value)
        if code is None:
            code = index[value] = len(names)
            names.append(value)
        out[i] = code
    return out


def row_columns(records: Sequence[Sequence[Any]], vocab: dict[str, list[str]]) -> np.ndarray:
    """The filter columns (``ROW_DTYPE``) of ``article_row`` records; ``vocab`` grows by new names."""
    rows = np.zeros(len(records), dtype=ROW_DTYPE)
    if not records:
        return rows
    at = {name: i for i, name in enumerate(COLUMNS)}
    rows["live"] = True
    rows["published"] = _epochs([r[at["published_at"]] for r in records])
    rows["category"] = _codes([str(r[at["category"]]) for r in records], vocab.setdefault("category", []))
    languages = [str(r[at["language"]]).lower() for r in records]
    rows["language"] = _codes(languages, vocab.setdefault("language", []))
    rows["story"] = [story_key(r[at["canonical_url"]]) if r[at["canonical_url"]] else 0 for r in records]
    return rows
