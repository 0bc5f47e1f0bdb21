"""Shared fixtures: a keyword-hashing embedder (rankings known by hand), small article sets, indexes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from recsys.archive.indexer import Indexer
from recsys.config import Settings
from recsys.ingest.articles import article_from_record
from recsys.types import Article

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DATA = Path(__file__).parent / "data"
SAMPLE = REPO / "recsys" / "data" / "sample_articles.jsonl"


class KeywordEmbedder:
    """Bag of words hashed into signed buckets: texts sharing words are close, others near-orthogonal.

    Deterministic across processes (hashlib, not hash()), needs no model, and counts what it embeds.
    """

    def __init__(self, dimension: int = 256, name: str = "keyword-test") -> None:
        self.name = name
        self._dimension = dimension
        self.calls: list[int] = []

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def embedded(self) -> int:
        return sum(self.calls)

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dimension
                out[i, bucket] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=out, where=norms > 0)
        self.calls.append(len(texts))
        if progress is not None:
            progress(len(texts))
        return out


def art(article_id: str, title: str, body: str = "", **fields: object) -> Article:
    """An article built the way readers build them (unknown fields become metadata)."""
    return article_from_record({"id": article_id, "title": title, "body": body, **fields})


def write_jsonl(path: Path, records: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def embedder() -> KeywordEmbedder:
    return KeywordEmbedder()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def make_indexer(tmp_path: Path, settings: Settings, embedder: KeywordEmbedder) -> Callable[..., Indexer]:
    def factory(root: Path | None = None, s: Settings | None = None, e: KeywordEmbedder | None = None) -> Indexer:
        return Indexer(root or tmp_path / "index", s or settings, e or embedder)

    return factory


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA} (present in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample indexed once with the real packaged model."""
    root = tmp_path_factory.mktemp("sample") / "index"
    Indexer(root, Settings()).build([SAMPLE])
    return root
