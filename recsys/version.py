"""One published index version: the file names in it, reading it, and following ``CURRENT`` to the newest.

``indexer.py`` writes a version into a staging folder and ``layout.py`` publishes it; this module is the
only reader. ``VersionFollower`` is what a serving process holds: each call checks the pointer (one
``stat``) and moves to a newly published version before answering, while calls already holding the
old reader finish with it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from recsys import lexical
from recsys.ann import ANNIndex
from recsys.layout import IndexLayout, read_manifest
from recsys.store import DB_FILE, NO_TIME, ROWS_FILE, VOCAB_FILE, ArticleStore
from recsys.types import Filters, IndexStateError, RecsysError

logger = logging.getLogger(__name__)
VECTORS_FILE = "vectors.npy"
ANN_DIR = "ann"
COMMON_DOC_SHARE = 0.1  # a word in more than 10% of the articles' texts is generic (people, back, work, came)


class VersionReader:
    """One published version, opened read-only: manifest, arrays, SQLite, ANN, lexical arrays.

    Rows are positions in ``vectors.npy``/``rows.npy``; ``live`` marks the ones still served (a removed
    article keeps its row until the next full build). Everything is memory-mapped, so opening costs the
    manifest, the vocabulary and the ANN file, not the archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        self.vectors = _mapped(path / VECTORS_FILE)
        self.rows = _mapped(path / ROWS_FILE)
        self.vocab: dict[str, list[str]] = json.loads((path / VOCAB_FILE).read_text())
        self.store = ArticleStore(path / DB_FILE)
        self.ann = ANNIndex.load(path / ANN_DIR)
        dimension = int(self.manifest["model"]["dimension"])
        counts = self.manifest["counts"]
        if self.vectors.ndim != 2 or self.vectors.shape[1] != dimension or self.vectors.shape[0] != counts["rows"]:
            raise IndexStateError(
                f"{path}: vectors.npy is {self.vectors.shape} but the manifest says {counts['rows']} x {dimension}; "
                "rebuild with `recsys index build`"
            )
        if self.rows.shape[0] != counts["rows"] or int(self.rows["live"].sum()) != counts["articles"]:
            raise IndexStateError(f"{path}: rows.npy does not match the manifest; rebuild with `recsys index build`")
        self.live = np.asarray(self.rows["live"])
        self.n_live = int(counts["articles"])
        self._df: np.ndarray | None = None
        # The lexical arrays (recsys/lexical.py); absent in versions written before them.
        self.lexical: tuple[np.ndarray, np.ndarray] | None = None
        if (path / lexical.TERMS_FILE).is_file():
            self.lexical = (
                _mapped(path / lexical.TERMS_FILE),
                _mapped(path / lexical.WEIGHTS_FILE),
            )

    def _frequencies(self) -> np.ndarray:
        if self._df is None:
            self._df = _mapped(self.path / lexical.DF_FILE)
        return self._df

    def lexical_of_text(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The lexical terms of a text that is not indexed (a draft), weighed by this version's frequencies."""
        if self.lexical is None:
            return None
        documents = int(self.manifest["lexical"]["documents"])
        ids, weights = lexical.weigh(lexical.term_counts([text]), self._frequencies(), documents)
        return ids[0], weights[0]

    def lexical_similarity(self, source: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> np.ndarray:
        """Lexical cosine of the source to each row (zeros when the version has no lexical arrays)."""
        if self.lexical is None or source is None or rows.size == 0:
            return np.zeros(rows.shape[0])
        ids, weights = self.lexical
        return lexical.similarity(source[0], source[1], np.asarray(ids[rows]), np.asarray(weights[rows]))

    def is_common(self, word: str) -> bool:
        """True for a (lower-case) word in more than COMMON_DOC_SHARE of this archive's articles (the lexical
        document frequencies): too common to explain why two articles go together. A version written before
        the lexical arrays judges no word common (the reasons' stop list still applies) until its next job."""
        if self.lexical is None:
            return False
        documents = max(1, int(self.manifest["lexical"]["documents"]))
        return bool(self._frequencies()[lexical.term_id(word)] > max(3.0, COMMON_DOC_SHARE * documents))

    @property
    def version(self) -> str:
        return self.path.name

    def codes(self, column: str, names: Iterable[str]) -> list[int]:
        """Codes of the given names in rows.npy's column, matched case-insensitively.

        A name no article has is an error that lists the known ones, so a typo is not an empty list."""
        known = self.vocab.get(column, [])
        vocab: dict[str, list[int]] = {}
        for code, name in enumerate(known):
            vocab.setdefault(name.lower(), []).append(code)
        codes: list[int] = []
        for name in names:
            found = vocab.get(name.strip().lower())
            if found is None:
                shown = ", ".join(sorted({n for n in known if n})[:30]) or "(none)"
                raise RecsysError(f"unknown {column} {name!r}; this index has: {shown}")
            codes += found
        return codes

    def allowed(self, filters: Filters, positions: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of rows that pass the filters (over ``positions`` if given, else all rows)."""
        rows = self.rows if positions is None else self.rows[positions]
        mask = np.asarray(rows["live"]).copy()
        if filters.categories:
            mask &= np.isin(rows["category"], self.codes("category", filters.categories))
        if filters.languages:
            mask &= np.isin(rows["language"], self.codes("language", filters.languages))
        published = rows["published"]
        if filters.published_after is not None:
            mask &= (published != NO_TIME) & (published >= filters.published_after)
        if filters.published_before is not None:
            mask &= (published != NO_TIME) & (published <= filters.published_before)
        return mask

    def close(self) -> None:
        self.store.close()


def _mapped(path: Path) -> np.ndarray:
    """A .npy file memory-mapped read-only, as a plain ndarray view: indexing an ``np.memmap`` costs a few
    microseconds of subclass bookkeeping per call, and a Related list makes dozens of such calls."""
    return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))


class VersionFollower:
    """The live version of an index folder for a long-running reader (a serving process).

    ``current`` is the reader to answer with: when the pointer has moved, one caller opens the new
    version while everyone else keeps answering from the old one; a version that fails to open is
    logged and retried after a second, and the old one keeps serving. ``on_switch`` runs once per
    newly opened version (the service promotes held events there).
    """

    def __init__(self, root: str | Path, on_switch: Callable[[VersionReader], None] | None = None) -> None:
        self.layout = IndexLayout(root)
        self._on_switch = on_switch
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._stamp = self.layout.pointer_stamp()
        self._reader = VersionReader(self.layout.current())
        if on_switch is not None:
            on_switch(self._reader)

    @property
    def current(self) -> VersionReader:
        stamp = self.layout.pointer_stamp()
        if stamp != self._stamp and time.monotonic() >= self._retry_at and self._lock.acquire(blocking=False):
            try:
                fresh = self.layout.current()
                if fresh.name != self._reader.version:
                    self._reader = VersionReader(fresh)  # calls already holding the old reader finish with it
                    if self._on_switch is not None:
                        self._on_switch(self._reader)
                self._stamp = stamp
            except RecsysError as exc:
                logger.warning("staying on index version %s: %s", self._reader.version, exc)
                self._retry_at = time.monotonic() + 1.0
            finally:
                self._lock.release()
        return self._reader

    def close(self) -> None:
        self._reader.close()
